"""``python -m shmipc``: the command line (see shmipc/cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
