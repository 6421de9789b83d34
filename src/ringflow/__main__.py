"""``python -m ringflow``: the same as the ``ringflow`` command."""

import sys

from ringflow.cli import main

sys.exit(main())
