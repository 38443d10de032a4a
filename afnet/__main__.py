"""``python -m afnet bench`` runs the same command line as the ``afnet`` console script."""

import sys

from afnet.cli import main

sys.exit(main())
