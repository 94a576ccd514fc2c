"""``python -m core.cli ARGS``: the ``ablate`` command without its console script (worker processes)."""

import sys

from core.cli.main import main

sys.exit(main())
