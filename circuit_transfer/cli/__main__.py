"""`python -m circuit_transfer.cli` runs the console script."""

import sys

from circuit_transfer.cli import main

sys.exit(main())
