"""Crash points for the tests of a hitless restart's failures.

``PESIGITG_FAULT=<point>`` in a successor's environment makes it die at that point of
the hand-over, as a crash would (exit status 70, a line on stderr first), so the
tests can prove the running daemon takes everything back from each of them. The
points, in the order a successor passes them:

    takeover-start        before it has said anything (the installed code is broken)
    before-workers        after the old daemon stopped its workers
    after-link-update     after it replaced the XDP program on the link
    after-pidfile         after it wrote its pid into the pidfile

Nothing else reads the variable; a daemon that is not taking over never checks it.
"""

from __future__ import annotations

import os
import sys

__all__ = ["POINTS", "fault"]

POINTS = ("takeover-start", "before-workers", "after-link-update", "after-pidfile")
VARIABLE = "PESIGITG_FAULT"


def fault(point: str) -> None:
    """Die here if the environment asks for it."""
    assert point in POINTS, point
    if os.environ.get(VARIABLE) == point:
        print(f"pesigitgd: {VARIABLE}: dying at {point}", file=sys.stderr, flush=True)
        os._exit(70)
