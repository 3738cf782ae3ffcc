"""How a demo runs: each step checks what it shows (:func:`expect`), and the whole run
is narrated, a failed step said with exit status 1 (:func:`narrate`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

__all__ = ["StepFailed", "expect", "narrate"]


class StepFailed(AssertionError):
    """A behaviour the demo shows did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def narrate(intro: str, steps: Callable[[], None]) -> int:
    """A demo's whole run: root checked, ``intro`` printed, ``steps`` run (they build
    and remove their network themselves); a failed step is said, exit status 1."""
    if os.geteuid() != 0:
        print("the demo needs root: it creates network namespaces and attaches XDP",
              file=sys.stderr)
        return 1
    print(intro)
    try:
        steps()
    except (StepFailed, AssertionError, OSError, subprocess.CalledProcessError,
            TimeoutError, RuntimeError) as exc:
        print(f"\nDEMO FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("\nAll steps passed; everything the demo created has been removed.")
    return 0
