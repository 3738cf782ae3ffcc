"""``python -m pesigitg.demo``: the end-to-end demo (``make demo``)."""

import sys

from pesigitg.demo.scenario import main

sys.exit(main())
