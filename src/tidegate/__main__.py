"""`python -m tidegate` runs the command line."""

import sys

from tidegate.cli import main

sys.exit(main())
