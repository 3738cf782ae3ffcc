"""BGP for the ECMP demo and its test: BIRD 2 on the router, ExaBGP beside each
pesigitgd, configured from contrib/bgp by contrib/bgp/render.sh (the very files and
the tool an operator uses), and the router's view of the VIPs' routes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

from pesigitg.demo.topology import CONTRIB, Host, version_of

__all__ = ["BALANCER_AS", "ROUTER_AS", "Speaker", "bird_sessions", "missing_tools",
           "next_hops", "render"]

BGP_DIR = CONTRIB / "bgp"
ROUTER_AS, BALANCER_AS = 64512, 64513
EXABGP_PYTHON = "/usr/bin/python3"          # the interpreter of Debian's exabgp package
TOOLS = {"bird": "bird2", "birdc": "bird2", "exabgp": "exabgp"}
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=SBIN)


def missing_tools() -> str | None:
    """What to install when BIRD or ExaBGP is missing, else None."""
    packages = sorted({TOOLS[t] for t in TOOLS if which(t) is None})
    return f"apt-get install {' '.join(packages)}" if packages else None


def render(template: str, destination: Path, **values: object) -> Path:
    """contrib/bgp/``template`` with its @NAME@ placeholders filled in, written to
    ``destination``."""
    result = subprocess.run(["sh", str(BGP_DIR / "render.sh"), str(BGP_DIR / template),
                             *(f"{k}={v}" for k, v in values.items())],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    destination.write_text(result.stdout)
    return destination


class Speaker:
    """A BGP daemon in a namespace, its output in ``log``, in a session of its own (a
    Ctrl-C of the demo reaches the demo, which stops it in order)."""

    def __init__(self, name: str, host: Host, command: list[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.host, self.command, self.log = name, host, command, log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Speaker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.host.ns, *self.command],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, **self.env})
        return self

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n"
                                 + self.log.read_text(errors="replace")[-3000:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL after ``timeout``; then the same for every process it had
        started, by PID: ExaBGP gives its health checks process groups of their own,
        and an orphaned one would run on under a subreaper."""
        if self.proc is None:
            return
        try:
            started = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _, alive = psutil.wait_procs(started, timeout=timeout)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=timeout)


def bird(router: Host, workdir: Path, **values: object) -> Speaker:
    """BIRD on ``router`` from contrib/bgp/bird-router.conf."""
    conf = render("bird-router.conf", workdir / "bird.conf", **values)
    return Speaker("BIRD", router, [str(which("bird")), "-f", "-c", str(conf),
                                    "-s", str(workdir / "bird.ctl")], workdir / "bird.log")


def bird_sessions(router: Host, workdir: Path) -> dict[str, str]:
    """BIRD's BGP sessions (protocol name -> state, e.g. "Established"), by birdc."""
    out = subprocess.run(["ip", "netns", "exec", router.ns, str(which("birdc")), "-s",
                          str(workdir / "bird.ctl"), "show", "protocols"],
                         capture_output=True, text=True, check=True).stdout
    sessions = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "BGP":
            sessions[fields[0]] = fields[5]
    return sessions


def exabgp(host: Host, workdir: Path, **values: object) -> Speaker:
    """ExaBGP on a balancer host from contrib/bgp/exabgp-balancer.conf; it stays root
    here (the demo's pesigitg-ctl lives where only root may look), the CLI's named
    pipes are not needed."""
    conf = render("exabgp-balancer.conf", workdir / f"exabgp-{host.role}.conf",
                  PYTHON=EXABGP_PYTHON, **values)
    return Speaker(f"ExaBGP on {host.role}", host, [str(which("exabgp")), str(conf)],
                   workdir / f"exabgp-{host.role}.log",
                   {"exabgp_daemon_drop": "false", "exabgp_api_cli": "false",
                    "exabgp_daemon_daemonize": "false", "exabgp_log_destination": "stdout"})


def _route_json(ns: str, version: int, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-n", ns, "-j", f"-{version}", "route", *args],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def next_hops(router: Host, vip: str) -> list[str]:
    """The gateways of the router's route to ``vip``, sorted (none: no route)."""
    version = version_of(vip)
    hops: list[str] = []
    for route in _route_json(router.ns, version, "show", "exact", vip):
        for hop in route.get("nexthops", [route]):
            if "gateway" in hop:
                hops.append(hop["gateway"])
    return sorted(hops)
