"""``python -m caanet``: the ``caanet`` command (:mod:`caanet.cli`)."""

import sys

from caanet.cli import main

sys.exit(main())
