"""``python -m ringflow.cli``: the ``ringflow`` command."""

import sys

from ringflow.cli import main

sys.exit(main())
