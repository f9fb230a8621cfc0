"""``python -m kd_search.cli``: the ``kd-search`` command, for a Python whose scripts are not on PATH."""

import sys

from kd_search.cli import main

sys.exit(main())
