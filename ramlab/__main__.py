"""``python -m ramlab``: the ``ramlab`` command line (see :mod:`ramlab.cli`)."""

import sys

from ramlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
