"""`python -m oscbridge` runs the same command line as the `oscbridge` script."""

import sys

from oscbridge.cli import main

sys.exit(main())
