"""Restarts and upgrades where they used to go wrong silently: the code a successor
runs, the program it keeps, a stop or a drain meanwhile, systemd's main PID, and a
successor that dies late. The real daemon, driven as an operator would."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pesigitg.daemon.steering import shipped_object
from pesigitg.testing.daemon import PESIGITGD, RunningDaemon
from pesigitg.testing.netns import ip
from tests.netns.lbtoml import lb_toml
from tests.netns.test_daemon import STATIC, xdp_attached

ROOT = Path(__file__).resolve().parents[2]

CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")


def ctl(daemon: RunningDaemon, *command: str, timeout: float = 180
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", daemon.ns, CTL, "-s",
                           str(daemon.status_socket), *command], capture_output=True,
                          text=True, timeout=timeout)


def test_a_restart_runs_the_installed_code_not_a_package_in_the_working_directory(
        lab, daemons):
    # Started with relative paths from a directory that holds a pesigitg package.
    planted = lab.workdir / "pesigitg"
    planted.mkdir()
    marker = lab.workdir / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                         "raise SystemExit('planted code')\n")
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    daemon.conf.write_text("interface = v0\nport = 443\nstatus_socket = status.sock\n")
    daemon.routes.write_text(lb_toml(STATIC))
    daemon.cwd, daemon.config_arg = lab.workdir, "pesigitgd.conf"
    daemons.append(daemon)
    daemon.start("--pidfile", "pesigitgd.pid", "-r", "lb.toml")
    old = daemon.pid
    assert daemon.get("/config")["daemon"]["pidfile"] == str(lab.workdir / "pesigitgd.pid")
    restart = ctl(daemon, "restart")
    assert restart.returncode == 0, restart.stderr
    assert not marker.exists(), "the successor imported the working directory's package"
    assert daemon.pid != old
    config = daemon.get("/config")["daemon"]
    assert config["route_config"] == str(lab.workdir / "lb.toml")
    assert config["status_socket"] == str(lab.workdir / "status.sock")
    assert daemon.stop() == 0
    assert not daemon.pidfile.exists() and not xdp_attached(lab)


def test_daemon_mode_with_relative_paths_keeps_them_after_changing_directory(lab, daemons):
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    daemon.conf.write_text("interface = v0\nroute_config = lb.toml\n"
                           "status_socket = status.sock\n")
    daemon.routes.write_text(lb_toml(STATIC))
    daemon.config_arg = "pesigitgd.conf"
    daemons.append(daemon)
    started = subprocess.run(daemon.command("--pidfile", "pesigitgd.pid", "--syslog-socket",
                                            str(lab.workdir / "no-syslog.sock"),
                                            "--log-file", "pesigitgd.log"),
                             cwd=lab.workdir, capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    pid = daemon.pid
    assert (lab.workdir / "pesigitgd.log").exists()
    daemon.signal(signal.SIGHUP)        # re-reads lb.toml after chdir("/")
    daemon.wait_until(lambda: "reloaded: " in (lab.workdir / "pesigitgd.log").read_text(),
                      what="the reload")
    daemon.signal(signal.SIGTERM)
    daemon.wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="daemon exit")
    assert not daemon.pidfile.exists() and not daemon.status_socket.exists()


# -- the program an upgrade installs ----------------------------------------------------

def link_program(lab) -> int:
    """The id of the XDP program on v0."""
    shown = ip("-d", "link", "show", "dev", "v0", ns=lab.lb_ns)
    match = re.search(r"prog/xdp id (\d+)", shown)
    assert match, shown
    return int(match.group(1))


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """The shipped object and one rebuilt with another constant (BUILD_TAG)."""
    out = tmp_path_factory.mktemp("bpf")
    subprocess.run(["make", "-s", "-C", str(ROOT / "bpf"), f"OUT={out}", "BUILD_TAG=1"],
                   check=True)
    other = (out / "pesigitg.bpf.o").read_bytes()
    shipped = shipped_object().read_bytes()
    assert other != shipped
    return shipped, other


def installed(lab, daemons, objects, **env: str) -> tuple[RunningDaemon, Path]:
    """A daemon loading its XDP object from a file the test can replace, as an
    upgrade in place replaces the installed one."""
    path = lab.workdir / "pesigitg.bpf.o"
    path.write_bytes(objects[0])
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    daemon.start(env={"PESIGITG_XDP_OBJECT": str(path), **env})
    return daemon, path


def test_an_upgrade_in_place_replaces_the_running_xdp_program(lab, daemons, objects):
    daemon, path = installed(lab, daemons, objects)
    first = link_program(lab)
    path.write_bytes(objects[1])                 # `pip install` over the same path
    mark = daemon.mark()
    assert ctl(daemon, "restart").returncode == 0
    upgraded = link_program(lab)
    assert upgraded != first
    daemon.wait_log("the installed XDP object differs from the running one: replaced the "
                    "program on v0", after=mark)
    # Nothing installed since: the next restart keeps the program it runs.
    assert ctl(daemon, "restart").returncode == 0
    assert link_program(lab) == upgraded
    assert daemon.get("/health")["status"] == "ok"


# -- a successor that dies late ---------------------------------------------------------

@pytest.mark.parametrize("point", ["after-link-update", "after-pidfile"])
def test_a_successor_dying_late_gives_back_the_program_and_the_pidfile(lab, daemons, objects,
                                                                      point):
    daemon, path = installed(lab, daemons, objects, PESIGITG_FAULT=point)
    old, program = daemon.pid, link_program(lab)
    path.write_bytes(objects[1])                 # so the successor updates the link
    restart = ctl(daemon, "restart")
    assert restart.returncode == 1 and "exit status 70" in restart.stderr, restart.stderr
    daemon.wait_log(f"PESIGITG_FAULT: dying at {point}")
    assert link_program(lab) == program, "the old daemon runs the dead successor's program"
    assert daemon.pid == old, "the pidfile names the dead successor"
    health = daemon.get("/health")
    assert health["status"] == "ok" and health["workers"] == {"alive": 1, "expected": 1}
    assert daemon.get("/version")["pid"] == old


# -- a stop, a drain, a reload while a restart is under way ------------------------------

def restart_under_way(daemon: RunningDaemon) -> subprocess.Popen[str]:
    """``pesigitg-ctl restart``, returned once the old daemon has begun handing over
    (the successor's start takes far longer than what the test does next)."""
    mark = daemon.mark()
    proc = subprocess.Popen(["ip", "netns", "exec", daemon.ns, CTL, "-s",
                             str(daemon.status_socket), "restart"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    daemon.wait_log("restarting: starting the installed pesigitgd", after=mark)
    return proc


def nothing_left(lab) -> None:
    deadline = time.monotonic() + 15
    while ip("netns", "pids", lab.lb_ns).split():
        assert time.monotonic() < deadline, "processes left in the namespace"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["SIGTERM", "pesigitg-ctl stop"])
def test_a_stop_during_a_restart_stops_the_new_daemon_and_undoes_nothing_it_holds(
        lab, daemons, how):
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    daemon.start()
    old = daemon.pid
    restart = restart_under_way(daemon)
    if how == "SIGTERM":
        os.kill(old, signal.SIGTERM)
    else:
        stopped = ctl(daemon, "stop")
        assert stopped.returncode == 0, stopped.stderr
    out, err = restart.communicate(timeout=60)
    assert restart.returncode == 0, err          # the restart finished first
    new = int(re.search(r"handed over to pid (\d+)", out).group(1))  # type: ignore[union-attr]
    daemon.wait_log(f"stop asked during the restart: passing it on to pid {new}")
    nothing_left(lab)                            # the new daemon stopped too
    assert not xdp_attached(lab), "detached by nobody"
    assert not daemon.pidfile.exists() and not daemon.status_socket.exists()
    assert daemon.proc is not None and daemon.proc.wait(10) == 0


def test_a_drain_asked_during_a_restart_is_kept_by_the_new_daemon(lab, daemons):
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    daemon.start()
    restart = restart_under_way(daemon)
    drained = ctl(daemon, "--json", "drain", "10.9.0.11")
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["changed"] is True
    assert restart.wait(60) == 0
    server = next(s for s in daemon.get("/config")["servers"] if s["address"] == "10.9.0.11")
    assert server["draining"] and server["draining_source"] == "override"
    assert daemon.get("/config")["fallback_pool"] == ["10.9.0.12"]


# -- systemd ------------------------------------------------------------------------------

class NotifySocket:
    """systemd's notify socket, as the test's: each datagram with its sender's pid."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(20)

    def next(self) -> tuple[int, dict[str, str]]:
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = next(struct.unpack("<3i", d)[0] for level, kind, d in ancillary
                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
        return pid, dict(line.split("=", 1) for line in data.decode().splitlines())

    def until(self, done: Callable[[int, dict[str, str]], bool]
              ) -> list[tuple[int, dict[str, str]]]:
        seen = []
        while True:
            seen.append(self.next())
            if done(*seen[-1]):
                return seen

    def close(self) -> None:
        self.sock.close()


def test_under_systemd_the_successor_is_the_main_process_before_the_old_one_exits(
        lab, daemons):
    notify = NotifySocket(lab.workdir / "notify.sock")
    try:
        daemon = RunningDaemon(lab.lb_ns, lab.workdir)
        slow = lb_toml(STATIC, health=True).replace("interval_ms = 200", "interval_ms = 5000") \
            .replace("timeout_ms = 150", "timeout_ms = 3000")
        daemon.routes.write_text(slow)
        daemons.append(daemon)
        daemon.start(env={"NOTIFY_SOCKET": str(notify.sock.getsockname()),
                          "WATCHDOG_USEC": "60000000"})
        old = daemon.pid
        # What it says as it starts: READY, then its first watchdog ping (the next
        # would be 30 s later).
        notify.until(lambda pid, m: pid == old and m.get("READY") == "1")
        notify.until(lambda pid, m: pid == old and "WATCHDOG" in m)
        # The restart adds a backend that never answers its probe.
        daemon.routes.write_text(slow + '\n  [[configs.servers]]\n  id = "030303"\n'
                                        '  address = "10.9.0.13"\n  mac = "02:be:00:00:00:03"\n')
        mark = daemon.mark()
        restart = restart_under_way(daemon)
        os.kill(old, signal.SIGHUP)               # a reload asked mid-hand-over
        assert restart.wait(60) == 0, restart.stderr.read() if restart.stderr else ""
        new = daemon.pid
        reloading = []

        def reloaded(pid: int, message: dict[str, str]) -> bool:
            if "RELOADING" in message:
                reloading.append(pid)
            return bool(reloading) and message.get("READY") == "1"

        seen = notify.until(reloaded)
        assert {pid for pid, _ in seen} == {new}, f"the old daemon spoke: {seen}"
        assert seen[0][1] == {"MAINPID": str(new)}
        assert reloading == [new], "the reload was not passed on"
        # systemd heard the new main PID before the old daemon let go: in the shared
        # log the successor says so before the old one says it was replaced.
        lines = daemon.lines[mark:]
        told = next(i for i, line in enumerate(lines)
                    if f"told systemd the main process is now pid {new}" in line)
        replaced = next(i for i, line in enumerate(lines)
                        if f"pid {new} has taken over" in line)
        assert told < replaced
        assert any("WATCHDOG" in m for _, m in seen), "the new daemon feeds no watchdog"
    finally:
        notify.close()
