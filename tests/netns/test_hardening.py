"""The control plane against careless and hostile input, through the real daemon: logs
that are never lost, reloads that are all or nothing, signals during start-up, health
that forged ICMP cannot push down, and a /health a BGP speaker can rely on."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from pesigitg.daemon.status import MAX_CONNECTIONS
from pesigitg.testing.daemon import PESIGITGD
from tests.netns.lbtoml import lb_toml
from tests.netns.peer import VersionNegotiationResponder
from tests.netns.test_daemon import KEY_HEX, STATIC, datagram_listener, make

CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")


def messages(listener, until: str) -> list[dict[str, str]]:
    """Notify messages up to the first that has ``until``."""
    seen: list[dict[str, str]] = []
    while not seen or until not in seen[-1]:
        seen.append(dict(line.split("=", 1)
                         for line in listener.recv(4096).decode().splitlines()))
    return seen


# -- logs ---------------------------------------------------------------------------------

def test_daemon_mode_without_syslog_logs_to_its_file(lab, daemons):
    log_file = lab.workdir / "pesigitgd.log"
    daemon = make(lab, daemons, extra_conf=f"log_file = {log_file}\n")
    started = subprocess.run(daemon.command("--syslog-socket", str(lab.workdir / "no.sock")),
                             capture_output=True, text=True, timeout=30)
    try:
        assert started.returncode == 0, started.stderr
        assert f"no syslog at {lab.workdir / 'no.sock'}; logging to {log_file}" \
            in started.stderr
        daemon.wait_until(lambda: log_file.exists() and "started: " in log_file.read_text(),
                          what="the start logged to the file")
    finally:
        if daemon.pidfile.exists():
            os.kill(daemon.pid, signal.SIGTERM)
            daemon.wait_until(lambda: not daemon.pidfile.exists(), what="the daemon gone")
    assert "stopped" in log_file.read_text()


def test_daemon_mode_refuses_to_start_when_it_cannot_log_anywhere(lab, daemons):
    daemon = make(lab, daemons, extra_conf="log_file = /proc/pesigitg/none.log\n")
    started = subprocess.run(daemon.command("--syslog-socket", str(lab.workdir / "no.sock")),
                             capture_output=True, text=True, timeout=30)
    assert started.returncode == 1
    assert ("and the log file cannot be used: the directory of the log file "
            "/proc/pesigitg/none.log: No such file or directory") in started.stderr
    assert not daemon.pidfile.exists()


def log_file_start(lab, daemons, log_file, *args: str):
    daemon = make(lab, daemons, extra_conf=f"log_file = {log_file}\n")
    return daemon, subprocess.run(daemon.command("--syslog-socket", str(lab.workdir / "no.sock"),
                                                 *args), capture_output=True, text=True,
                                  timeout=30)


@pytest.mark.parametrize("planted", ["symlink", "hard link", "others' directory", "fifo"])
def test_a_planted_log_file_is_refused_and_left_untouched(lab, daemons, tmp_path, planted):
    secret = tmp_path / "shadow"
    secret.write_text("root's\n")
    os.chmod(secret, 0o600)
    log_file = lab.workdir / "pesigitgd.log"
    if planted == "symlink":
        log_file.symlink_to(secret)
        said = f"the log file {log_file} is a symbolic link: refusing to follow it"
    elif planted == "hard link":
        os.link(secret, log_file)
        said = f"the log file {log_file} has 2 links (another file's hard link?)"
    elif planted == "fifo":
        os.mkfifo(log_file)
        said = f"the log file {log_file} is not a regular file"
    else:
        shared = lab.workdir / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        log_file = shared / "pesigitgd.log"
        said = f"the log file {log_file} would be in {shared}, which users other than root"
    daemon, started = log_file_start(lab, daemons, log_file)
    assert started.returncode == 1 and said in started.stderr, started.stderr
    assert not daemon.pidfile.exists()
    assert secret.read_text() == "root's\n" and secret.stat().st_uid == 0
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


# -- reloads ------------------------------------------------------------------------------

RELOAD_BREAKAGES = {
    "table-then-array": lambda toml: toml.replace("[fallback]", "[[health]]\n[fallback]"),
    "too-many-vips": lambda toml: "vips = [" + ", ".join(
        f'"10.8.{i // 250}.{i % 250 + 1}"' for i in range(300)) + "]\n" + toml,
    "key-unquoted": lambda toml: toml.replace(f'key = "{KEY_HEX}"', f"key = {KEY_HEX}"),
}


@pytest.mark.parametrize("breakage", [*RELOAD_BREAKAGES, "too-many-ports"])
def test_a_failed_reload_changes_nothing_and_says_ready_again(lab, daemons, breakage):
    notify = lab.workdir / "notify.sock"
    listener = datagram_listener(notify)
    try:
        daemon = make(lab, daemons)
        daemon.routes.write_text('vips = ["10.9.0.1"]\n' + lb_toml(STATIC))
        daemon.start(env={"NOTIFY_SOCKET": str(notify)})
        messages(listener, "READY")
        before = daemon.get("/config")
        if breakage == "too-many-ports":
            daemon.conf.write_text(daemon.conf.read_text() + "".join(
                f"port = {p}\n" for p in range(2000, 2070)))
        else:
            daemon.routes.write_text(RELOAD_BREAKAGES[breakage](daemon.routes.read_text()))
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload failed, still running the previous configuration: ",
                        after=mark)
        sent = messages(listener, "READY")
        assert sent[0]["RELOADING"] == "1" and sent[-1]["READY"] == "1"
        after = daemon.get("/config")
        assert after["steering"] == before["steering"] == {"ports": [443], "vips": ["10.9.0.1"]}
        assert after["routes"] == before["routes"] and after["daemon"] == before["daemon"]
        served = "".join(json.dumps(daemon.get(path)) for path in ("/config", "/stats"))
        assert KEY_HEX.lower() not in ("\n".join(daemon.lines) + served
                                       + daemon.get("/metrics")).lower()
        assert "Traceback" not in "\n".join(daemon.lines)
        assert daemon.get("/health")["status"] in ("ok", "degraded")
    finally:
        listener.close()


# -- signals during start-up --------------------------------------------------------------

def read_all(sock: socket.socket) -> bytes:
    """Everything until the other side closes."""
    return b"".join(iter(lambda: sock.recv(4096), b""))


def blocks_sighup(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        mask = next(line for line in status if line.startswith("SigBlk:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


def test_sighup_during_start_up_is_a_reload_once_started(lab, daemons):
    notify = lab.workdir / "notify.sock"
    listener = datagram_listener(notify)
    try:
        daemon = make(lab, daemons)
        daemon.start(env={"NOTIFY_SOCKET": str(notify)}, wait=False)
        assert daemon.proc is not None
        # SIGHUP is blocked from the first line of ours the interpreter runs (the window
        # before it is the interpreter's own start, ~25 ms here); the old code never did.
        daemon.wait_until(lambda: blocks_sighup(daemon.proc.pid), timeout=5,
                          what="SIGHUP blocked during start-up")
        # From then until it is up: each would have killed it, or reloaded with no workers.
        while not any("started: " in line for line in daemon.lines):
            assert daemon.proc.poll() is None, "\n".join(daemon.lines)
            daemon.proc.send_signal(signal.SIGHUP)
            time.sleep(0.005)
        sent = messages(listener, "RELOADING") + messages(listener, "READY")
        daemon.wait_log("reloaded: ")
        ready = [m for m in sent if "READY" in m]
        assert ready and all("1/1 workers" in m["STATUS"] for m in ready), ready
        assert [line for line in daemon.lines if "reloading configuration" in line]
        assert daemon.proc.poll() is None
    finally:
        listener.close()


# -- health -------------------------------------------------------------------------------

def test_forged_icmp_does_not_take_a_slow_backend_down(lab, daemons):
    lab.add_backend_address("10.9.0.3")
    responders = [VersionNegotiationResponder(lab.peer_ns, a, forge_icmp=True, delay=0.05)
                  for a in ("10.9.0.2", "10.9.0.3")]
    try:
        servers = [{"sid": "010101", "address": "10.9.0.2"},
                   {"sid": "020202", "address": "10.9.0.3"}]
        daemon = make(lab, daemons, servers, health=True).start()
        # Ten probe rounds (fall = 2), every probe met by a forged port unreachable first.
        daemon.wait_until(lambda: all(r.forged >= 10 for r in responders), timeout=20,
                          what="ten forged ICMP errors per backend")
        servers = daemon.get("/config")["servers"]
        assert [s["health"] for s in servers] == ["up (probed)", "up (probed)"]
        assert all(s["last_check"] == "version negotiation received" for s in servers)
        assert not [line for line in daemon.lines if "DOWN" in line]
    finally:
        for r in responders:
            r.close()


def ctl_health(daemon) -> tuple[int, str]:
    done = subprocess.run([CTL, "-s", str(daemon.status_socket), "--json", "health"],
                          capture_output=True, text=True)
    return done.returncode, done.stdout


def test_health_is_down_when_nothing_can_be_forwarded_and_degraded_in_between(lab, daemons):
    lab.add_backend_address("10.9.0.3")
    servers = [{"sid": "010101", "address": "10.9.0.2"},
               {"sid": "020202", "address": "10.9.0.3"}]
    daemon = make(lab, daemons, servers, health=True).start()
    daemon.wait_until(lambda: daemon.get("/health")["status"] == "down", timeout=15,
                      what="both backends down")
    assert "no backend is up with a known MAC" in daemon.get("/health")["reasons"]
    assert ctl_health(daemon)[0] == 1
    first = VersionNegotiationResponder(lab.peer_ns, "10.9.0.2")
    try:
        daemon.wait_until(lambda: daemon.get("/health")["status"] == "degraded", timeout=15,
                          what="one backend up")
        assert daemon.get("/health")["reasons"] == ["1 of 2 backends are down or unresolved"]
        assert ctl_health(daemon)[0] == 0
        second = VersionNegotiationResponder(lab.peer_ns, "10.9.0.3")
        try:
            daemon.wait_until(lambda: daemon.get("/health")["status"] == "ok", timeout=15,
                              what="both backends up")
            code, out = ctl_health(daemon)
            assert code == 0 and '"reasons": []' in out
        finally:
            second.close()
    finally:
        first.close()


# -- the status socket's limits ---------------------------------------------------------

def test_a_client_trickling_header_lines_is_cut_off_at_the_requests_deadline(lab, daemons):
    daemon = make(lab, daemons).start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(daemon.status_socket))
        client.sendall(b"GET /health HTTP/1.1\r\n")
        answer = b""
        for _ in range(40):                 # one line a second, each within 5 s of the last
            client.settimeout(1)
            try:
                answer = client.recv(4096)
                break
            except TimeoutError:
                client.sendall(b"X-Slow: 1\r\n")
        assert answer.startswith(b"HTTP/1.0 408"), "still trickling after 40 header lines"
    assert daemon.get("/health")["status"] == "ok"


def test_connections_beyond_the_cap_are_told_so_and_the_rest_are_cut_at_the_deadline(
        lab, daemons):
    daemon = make(lab, daemons).start()
    clients = []
    try:
        for _ in range(MAX_CONNECTIONS + 1):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(daemon.status_socket))
            client.settimeout(30)
            clients.append(client)
        answers = [json.loads(read_all(c))["error"] for c in clients]
    finally:
        for client in clients:
            client.close()
    refused = [a for a in answers if "connections are open already" in a]
    assert len(refused) == 1
    assert answers.count("no whole request within 5 s") == MAX_CONNECTIONS
    assert daemon.get("/health")["status"] == "ok"
