"""``python -m storage``: the command line (see :mod:`storage.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned worker process (a DataLoader's) imports this module again
    sys.exit(main())
