"""`python -m evolve.cli`: the same as `evolve`."""

import sys

from evolve.cli.main import main

sys.exit(main())
