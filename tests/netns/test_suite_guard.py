"""The suite stops only what it started: a balancer running beside it is never touched.

The guard at the end of a run (tests/conftest.py) looks for processes in the network
namespaces the run made and for descendants of the test process; a process on the
host named pesigitgd, bird or exabgp that the run did not start is not among them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from pesigitg.testing.daemon import running
from pesigitg.testing.netns import namespace
from tests.conftest import leftover_processes


def orphan(command: list[str], pidfile: Path) -> int:
    """Run ``command[1:]`` as ``command[0]`` (argv[0]) detached from this process (its
    parent exits at once, so it is nobody's descendant here); its pid once it runs as
    ``command[-2]``."""
    script = 'exec -a "$0" "$@" & echo $! > ' + str(pidfile)
    subprocess.run(["setsid", "bash", "-c", script, *command], check=True)
    deadline = time.monotonic() + 5
    while True:
        assert time.monotonic() < deadline, f"{command} never started"
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            with contextlib.suppress(OSError), open(f"/proc/{text}/comm") as comm:
                if comm.read().strip() == command[-2]:
                    return int(text)
        time.sleep(0.01)


def stop(pid: int) -> None:
    if running(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_balancer_beside_the_suite_is_not_ours_but_what_a_test_left_in_its_namespace_is(
        tmp_path):
    outside = orphan(["pesigitgd", "sleep", "60"], tmp_path / "outside.pid")
    try:
        with open(f"/proc/{outside}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"pesigitgd"      # what the old guard killed
        with namespace("pesi-guard") as ns:
            inside = orphan(["ip", "ip", "netns", "exec", ns, "sleep", "60"],
                            tmp_path / "inside.pid")
            try:
                left = leftover_processes()
                assert inside in left
                assert outside not in left
            finally:
                stop(inside)
        assert inside not in leftover_processes()
        assert running(outside)
    finally:
        stop(outside)
