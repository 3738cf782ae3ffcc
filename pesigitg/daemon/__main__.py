"""``python -m pesigitg.daemon``: pesigitgd (how a running daemon starts its successor)."""

import sys

from pesigitg.daemon.main import daemon_main

sys.exit(daemon_main())
