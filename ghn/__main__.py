"""`python -m ghn` runs the `ghn` command line."""

import sys

from ghn.cli import main

sys.exit(main())
