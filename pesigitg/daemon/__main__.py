"""``python -m pesigitg.daemon``: pesigitgd (how a running daemon starts its successor)."""

import sys

from pesigitg.daemon.entry import main

sys.exit(main())
