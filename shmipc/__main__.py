"""``python -m shmipc``: see shmipc.cli."""
import sys

from .cli import main

sys.exit(main())
