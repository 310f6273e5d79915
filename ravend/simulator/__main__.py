"""``python -m ravend.simulator``: the same as ``ravenctl simulate``."""

import sys

from ravend.cli.simulate_command import main

sys.exit(main())
