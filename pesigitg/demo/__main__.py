"""``python -m pesigitg.demo``: the end-to-end demo (``make demo``)."""

import sys

try:
    from pesigitg.demo.main import main
except ImportError as exc:     # the aioquic extra is missing
    print(f"the demo needs aioquic ({exc}): pip install 'pesigitg[aioquic]'", file=sys.stderr)
    sys.exit(1)

sys.exit(main())
