"""`python -m oscbridge.sim --plugins 3 --bridge 127.0.0.1:8999 [--duration S]`."""

import sys

from oscbridge.sim.cli import main

sys.exit(main())
