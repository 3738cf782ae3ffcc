"""Least privilege: the supervisor as a dedicated user with five capabilities, workers
with none under a seccomp allow-list, the status socket's group deciding who may ask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pesigitg.daemon.privileges import capability_sets, confine_worker, lose_privileges
from pesigitg.errors import CAP_BPF, CAP_IPC_LOCK, CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON
from pesigitg.testing.daemon import PESIGITGD, RunningDaemon
from tests import frames as f
from tests.netns.lbtoml import lb_toml
from tests.netns.peer import PeerSocket
from tests.netns.test_daemon import CONFIG, MAC1, STATIC, make

NOBODY = 65534
SUPERVISOR = sum(1 << cap for cap in (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON,
                                      CAP_IPC_LOCK))
CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")


def forwards(lab, daemon: RunningDaemon) -> bool:
    """A routable frame comes back rewritten to its backend, and is counted (a worker
    publishes its counters after the batch it sent)."""
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        frame = f.udp4_frame(f.quic_short(CONFIG.encode(b"\x01\x01\x01", os.urandom(4))),
                             dst="10.9.0.1")
        before = daemon.get("/stats")["total"]["forwarded"]
        peer.send([frame])
        assert len(peer.capture({MAC1}, 1)) == 1, "the frame did not come back"
        daemon.wait_until(lambda: daemon.get("/stats")["total"]["forwarded"] == before + 1,
                          timeout=2, what="the frame counted as forwarded")
        return True
    finally:
        peer.close()


def test_workers_hold_no_capability_and_run_under_seccomp_yet_forward(lab, daemons):
    daemon = make(lab, daemons).start()
    worker = daemon.get("/stats")["workers"][0]["pid"]
    sets = capability_sets(worker)
    assert (sets["CapEff"], sets["CapPrm"], sets["CapInh"], sets["CapAmb"]) == (0, 0, 0, 0)
    assert sets["NoNewPrivs"] == 1 and sets["Seccomp"] == 2    # 2: a filter
    assert forwards(lab, daemon)
    # A worker replaced after a crash is confined the same way.
    mark = daemon.mark()
    os.kill(worker, signal.SIGKILL)
    daemon.wait_log("worker q0 up", after=mark)
    daemon.wait_until(lambda: daemon.get("/stats")["workers"][0]["pid"] != worker,
                      what="a new worker")
    replaced = capability_sets(daemon.get("/stats")["workers"][0]["pid"])
    assert replaced["CapEff"] == 0 and replaced["Seccomp"] == 2
    assert forwards(lab, daemon)


def test_the_worker_filter_refuses_files_sockets_exec_and_fork():
    """The allow-list itself, in a forked child: what a subverted worker would try."""
    results_r, results_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(results_r)
            lose_privileges()
            sleeper = threading.Thread(target=os.read, args=(release_r, 1))
            sleeper.start()
            confine_worker()
            tried: dict[str, object] = {}
            for name, attempt in (("open", lambda: os.open("/etc/hostname", os.O_RDONLY)),
                                  ("socket", socket.socket),
                                  ("exec", lambda: os.execv("/bin/true", ["true"])),
                                  ("fork", os.fork),
                                  ("kill", lambda: os.kill(1, 0))):
                try:
                    attempt()
                    tried[name] = "allowed"
                except OSError as exc:
                    tried[name] = exc.errno
            tried["memory"] = len(bytearray(20 << 20))
            os.write(results_w, json.dumps(tried).encode())
            sleeper.join()          # threads (futex) and pipes still work
        finally:
            os._exit(0)
    os.close(results_w)
    tried = json.loads(os.read(results_r, 4096))
    sets = capability_sets(pid)
    os.write(release_w, b"x")
    assert os.waitpid(pid, 0)[1] == 0
    assert tried == {"open": 1, "socket": 1, "exec": 1, "fork": 1, "kill": 1,
                     "memory": 20 << 20}           # 1: EPERM
    assert sets["CapEff"] == 0 and sets["NoNewPrivs"] == 1 and sets["Seccomp"] == 2


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """Configuration another user can read (the lab's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pesi-user-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def interpreter_view(work: Path) -> list[str]:
    """A command prefix that lets another user run this Python: this machine keeps the
    interpreter under /root (mode 0700). In a private mount namespace, /root becomes a
    tmpfs holding only .pyenv, as a system with Python in /usr would be. Nothing of it
    outlives the daemon's process tree."""
    if os.access(os.path.realpath(PESIGITGD), os.R_OK) and \
            not os.path.realpath(shutil.which("python3") or "").startswith("/root/"):
        return []
    view = work / "pyenv"
    view.mkdir()
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount --bind /root/.pyenv {view} && mount -t tmpfs -o mode=0755 tmpfs /root "
            f"&& mkdir /root/.pyenv && mount --bind {view} /root/.pyenv && exec \"$@\"",
            "pesigitgd-under-a-readable-root"]


def daemon_in(lab, daemons, directory: Path, extra_conf: str, run: Path | None = None
              ) -> RunningDaemon:
    """A daemon whose files live in ``directory`` (its runtime files in ``run``)."""
    daemon = RunningDaemon(lab.lb_ns, directory, extra_conf=extra_conf)
    if run is not None:
        conf = daemon.conf.read_text()
        for name in ("status.sock", "pesigitgd.pid"):
            conf = conf.replace(str(directory / name), str(run / name))
        daemon.conf.write_text(conf)
        daemon.status_socket, daemon.pidfile = run / "status.sock", run / "pesigitgd.pid"
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    return daemon


def test_the_supervisor_runs_as_its_user_with_five_capabilities(readable_dir, lab, daemons):
    run = readable_dir / "run"
    run.mkdir()
    os.chown(run, NOBODY, NOBODY)
    daemon = daemon_in(lab, daemons, readable_dir, "user = nobody\n", run)
    daemon.wrapper = interpreter_view(readable_dir)
    daemon.start()
    sets = capability_sets(daemon.pid)
    assert Path(f"/proc/{daemon.pid}/status").read_text().count(f"\t{NOBODY}\t") >= 2   # uid, gid
    assert sets["CapEff"] == sets["CapPrm"] == sets["CapAmb"] == sets["CapBnd"] == SUPERVISOR
    assert os.stat(daemon.status_socket).st_uid == NOBODY
    worker = capability_sets(daemon.get("/stats")["workers"][0]["pid"])
    assert worker["CapEff"] == 0 and worker["Seccomp"] == 2
    assert forwards(lab, daemon)
    # As that user it re-reads its files, and restarts into the same privileges.
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded: ", after=mark)
    restart = subprocess.run(["ip", "netns", "exec", lab.lb_ns, CTL, "-s",
                              str(daemon.status_socket), "restart"], capture_output=True,
                             text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    assert capability_sets(daemon.pid)["CapEff"] == SUPERVISOR
    assert forwards(lab, daemon)
    assert daemon.stop() == 0
    assert not daemon.pidfile.exists() and not daemon.status_socket.exists()


def test_only_root_the_daemon_and_the_socket_group_may_change_its_state(
        readable_dir, lab, daemons):
    daemon = daemon_in(lab, daemons, readable_dir, "status_group = nogroup\n").start()
    assert os.stat(daemon.status_socket).st_gid == NOBODY          # nogroup
    # Pretend the socket were opened to everyone: the daemon still checks who asks.
    daemon.status_socket.chmod(0o666)
    mark = daemon.mark()

    def ask(uid: int, gid: int, request: bytes) -> bytes:
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(daemon.status_socket))
                    s.sendall(request)
                    os.write(reply_w, s.recv(65536))
            finally:
                os._exit(0)
        os.close(reply_w)
        answer = os.read(reply_r, 65536)
        os.waitpid(pid, 0)
        return answer

    for request in (b"POST /restart\n", b"POST /drain?address=10.9.0.11\n",
                    b"POST /reload\n", b"POST /stop\n"):
        stranger = ask(65533, 65533, request)
        assert json.loads(stranger)["error"] == ("only root or members of the socket's "
                                                 "group may change the daemon's state")
    assert daemon.get("/config")["servers"][0]["draining"] is False
    assert json.loads(ask(65533, 65533, b"GET /health\n"))["status"]   # reads stay open
    daemon.wait_log(r"refused POST /restart from uid 65533 pid \d+", after=mark)
    time.sleep(0.1)
    assert daemon.get("/health")["status"] in ("ok", "degraded")


def start_logging_to_a_file(readable_dir, lab, daemons):
    """As root with user = nobody, in daemon mode without syslog: (daemon, the log
    file, what pesigitgd said)."""
    run = readable_dir / "run"
    run.mkdir()
    os.chown(run, NOBODY, NOBODY)
    log_file = readable_dir / "pesigitgd.log"
    daemon = daemon_in(lab, daemons, readable_dir, f"user = nobody\nlog_file = {log_file}\n",
                       run)
    daemon.wrapper = interpreter_view(readable_dir)
    started = subprocess.run(daemon.command("--syslog-socket", str(readable_dir / "no.sock")),
                             capture_output=True, text=True, timeout=60)
    return daemon, log_file, started


def test_the_log_file_is_made_for_the_daemons_user_and_written_as_that_user(
        readable_dir, lab, daemons):
    daemon, log_file, started = start_logging_to_a_file(readable_dir, lab, daemons)
    try:
        assert started.returncode == 0, started.stderr
        daemon.wait_until(lambda: "started: " in log_file.read_text(), what="the log")
        info = log_file.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == \
            (NOBODY, NOBODY, 0o640)
        # Its successor, already that user, opens it the same way.
        restart = subprocess.run(["ip", "netns", "exec", lab.lb_ns, CTL, "-s",
                                  str(daemon.status_socket), "restart"], capture_output=True,
                                 text=True, timeout=120)
        assert restart.returncode == 0, restart.stderr
        daemon.wait_until(lambda: "took over: " in log_file.read_text(), what="the successor")
    finally:
        if daemon.pidfile.exists():
            os.kill(daemon.pid, signal.SIGTERM)
            daemon.wait_until(lambda: not daemon.pidfile.exists(), what="the daemon gone")


def test_a_root_owned_log_file_is_never_handed_to_the_daemons_user(readable_dir, lab,
                                                                   daemons):
    log_file = readable_dir / "pesigitgd.log"
    log_file.write_text("written by root\n")
    log_file.chmod(0o600)
    daemon, _, started = start_logging_to_a_file(readable_dir, lab, daemons)
    assert started.returncode == 1
    assert f"cannot open the log file {log_file} as uid {NOBODY}: Permission denied" \
        in started.stderr, started.stderr
    assert log_file.stat().st_uid == 0 and log_file.read_text() == "written by root\n"
    assert not daemon.pidfile.exists()


CONTRIB_UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "pesigitgd.service"


def test_the_daemon_lives_under_the_shipped_units_restrictions(readable_dir, lab, daemons):
    """contrib/systemd/pesigitgd.service's user, capabilities, no_new_privs, system-call
    filter and address families, applied as systemd would (pesigitg.testing.systemd_unit):
    a call or a socket family the filter lacks kills the daemon or fails its start."""
    run = readable_dir / "run"
    run.mkdir()
    os.chown(run, NOBODY, NOBODY)
    daemon = daemon_in(lab, daemons, readable_dir, "", run)
    under_unit = [sys.executable, "-m", "pesigitg.testing.systemd_unit", "--user", "nobody",
                  str(CONTRIB_UNIT)]
    daemon.wrapper, daemon.launcher = interpreter_view(readable_dir), under_unit
    daemon.start()
    sets = capability_sets(daemon.pid)
    assert sets["CapEff"] == sets["CapAmb"] == sets["CapBnd"] == SUPERVISOR
    assert sets["NoNewPrivs"] == 1 and sets["Seccomp"] == 2
    assert forwards(lab, daemon)
    worker = daemon.get("/stats")["workers"][0]["pid"]
    os.kill(worker, signal.SIGKILL)
    daemon.wait_until(lambda: daemon.get("/stats")["workers"][0]["pid"] != worker,
                      what="a new worker")
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded: ", after=mark)
    # ExecReload= runs as the unit's user under the same restrictions.
    restart = subprocess.run([*daemon.wrapper, "ip", "netns", "exec", lab.lb_ns, *under_unit,
                              CTL, "-s", str(daemon.status_socket), "restart"],
                             capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    assert capability_sets(daemon.pid)["Seccomp"] == 2
    assert forwards(lab, daemon)
    assert daemon.stop() == 0
    assert not daemon.pidfile.exists() and not daemon.status_socket.exists()
    assert "Traceback" not in "\n".join(daemon.lines)
