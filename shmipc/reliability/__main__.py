"""``python -m shmipc.reliability``: see shmipc.reliability."""
import sys

from . import main

sys.exit(main())
