"""``python -m ablate.cli ARGS``: the ``ablate`` command without its console script (worker processes)."""

import sys

from ablate.cli.main import main

sys.exit(main())
