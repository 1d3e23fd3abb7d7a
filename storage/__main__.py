"""``python -m storage``: the command line (see :mod:`storage.cli`)."""

import sys

from .cli import main

<<<<<<< HEAD
# Guarded: Dask's LocalCluster starts its workers with ``spawn``, which imports this
# module again (as ``__mp_main__``) in every worker process.
if __name__ == "__main__":
=======
if __name__ == "__main__":  # not when a spawned worker process (a DataLoader's) imports this module again
>>>>>>> main
    sys.exit(main())
