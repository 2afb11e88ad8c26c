"""``python -m fdseg.cli …`` (what the run executors start)."""

import sys

from fdseg.cli import main

sys.exit(main())
