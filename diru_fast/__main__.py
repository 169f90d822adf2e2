"""``python -m diru_fast <command>``: see :mod:`diru_fast.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
