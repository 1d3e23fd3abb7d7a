"""``python -m storage``: the command line (see :mod:`storage.cli`)."""

import sys

from .cli import main

sys.exit(main())
