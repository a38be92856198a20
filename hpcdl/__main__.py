"""`python -m hpcdl ...` (what job scripts run, so the job uses the submitting interpreter)."""

import sys

from hpcdl.cli import main

sys.exit(main())
