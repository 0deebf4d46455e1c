"""``python -m marlkd``: the ``marlkd`` command line."""

import sys

from marlkd.cli import main

sys.exit(main())
