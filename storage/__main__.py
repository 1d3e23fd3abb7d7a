"""``python -m storage``: the command line (see :mod:`storage.cli`)."""

import sys

from .cli import main

# Not when a spawned worker process (a DataLoader's, or a Dask LocalCluster's) imports this module again.
if __name__ == "__main__":
    sys.exit(main())
