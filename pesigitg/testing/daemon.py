"""The real pesigitgd as a subprocess inside a namespace (demo and tests)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["PESIGITGD", "RunningDaemon", "running"]

from pesigitg.ctl.client import query

PESIGITGD = shutil.which("pesigitgd", path=str(Path(sys.executable).parent)) or "pesigitgd"

def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child waits for its parent, or init, to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RunningDaemon:
    """pesigitgd in namespace ``ns`` with its files in ``workdir``."""

    def __init__(self, ns: str, workdir: Path, interface: str = "v0",
                 extra_conf: str = "", port: int = 443) -> None:
        self.ns, self.workdir, self.interface = ns, workdir, interface
        self.status_socket = workdir / "status.sock"
        self.pidfile = workdir / "pesigitgd.pid"
        self.conf = workdir / "pesigitgd.conf"
        self.routes = workdir / "lb.toml"
        self.conf.write_text(f"# written by pesigitg.demo\ninterface = {interface}\n"
                             f"port = {port}\n"
                             f"route_config = lb.toml\nstatus_socket = {self.status_socket}\n"
                             f"pidfile = {self.pidfile}\n{extra_conf}")
        self.proc: subprocess.Popen[str] | None = None
        self.cwd: Path | None = None        # where it starts (None: here)
        self.config_arg = str(self.conf)    # what -c says (relative to cwd, maybe)
        self.wrapper: list[str] = []        # a command the daemon runs under
        self.launcher: list[str] = []       # the same, inside the namespace
        self.lines: list[str] = []
        self._last_pid: int | None = None
        self._cond = threading.Condition()

    def command(self, *args: str) -> list[str]:
        return [*self.wrapper, "ip", "netns", "exec", self.ns, *self.launcher, PESIGITGD,
                "-c", self.config_arg, *args]

    def start(self, *args: str, env: dict[str, str] | None = None, wait: bool = True
              ) -> RunningDaemon:
        mark = self.mark()      # started again: its own "started" line, not the last one's
        self.proc = subprocess.Popen(self.command("-f", *args), stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, cwd=self.cwd,
                                     env={**os.environ, **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            self.wait_log("started: ", timeout=20, after=mark)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_log(self, pattern: str, timeout: float = 10.0, after: int = 0) -> str:
        """The first log line (from index ``after``) matching ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if regex.search(line):
                        return line
                if self.proc is not None and self.proc.poll() is not None and \
                        not self._cond.wait(0.2):
                    raise AssertionError(f"pesigitgd exited ({self.proc.returncode}) without "
                                         f"logging {pattern!r}:\n" + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern!r} within "
                                         f"{timeout} s:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def get(self, path: str) -> Any:
        answer = query(self.status_socket, path)
        return answer if path == "/metrics" else json.loads(answer)

    def wait_until(self, predicate: Any, timeout: float = 10.0, what: str = "condition"
                   ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        self._last_pid = int(self.pidfile.read_text())
        return self._last_pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the daemon and wait for it: the one the pidfile names (after a restart,
        the started process has handed over to another), then the one started."""
        if self.proc is None:
            return 0
        # The pidfile may be gone with a test's directory: then the last pid it named.
        current = self.pid if self.pidfile.exists() else self._last_pid or self.proc.pid
        if current != self.proc.pid and running(current):
            os.kill(current, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while running(current):
                if time.monotonic() > deadline:
                    os.kill(current, signal.SIGKILL)
                    raise AssertionError(f"pesigitgd (pid {current}) did not stop on SIGTERM")
                time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("pesigitgd did not stop on SIGTERM") from None
        return self.proc.returncode
