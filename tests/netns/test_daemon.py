"""pesigitgd as an operator runs it: the real daemon as a subprocess in a namespace."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pesigitg.routing.quiclb import CidConfig
from pesigitg.testing.daemon import PESIGITGD, RunningDaemon
from pesigitg.testing.netns import ip
from tests import frames as f
from tests.netns.lbtoml import lb_toml
from tests.netns.peer import PeerSocket, VersionNegotiationResponder

KEY_HEX = "8f95f09245765f80256934e50c66207f"
CONFIG = CidConfig(1, 3, 4, bytes.fromhex(KEY_HEX), encode_length=True)
MAC1, MAC2, MAC3 = (bytes([2, 0xBE, 0, 0, 0, n]) for n in (1, 2, 3))
STATIC = [{"sid": "010101", "address": "10.9.0.11", "mac": MAC1.hex(":")},
          {"sid": "020202", "address": "10.9.0.12", "mac": MAC2.hex(":")}]


def make(lab, daemons, servers=STATIC, health=False, extra_conf="") -> RunningDaemon:
    daemon = RunningDaemon(lab.lb_ns, lab.workdir, extra_conf=extra_conf)
    daemon.routes.write_text(lb_toml(servers, health))
    daemons.append(daemon)
    return daemon


def xdp_attached(lab, dev="v0") -> bool:
    return "prog/xdp" in ip("-d", "link", "show", "dev", dev, ns=lab.lb_ns)


def datagram_listener(path: Path, timeout: float = 15) -> socket.socket:
    """A Unix datagram socket standing in for syslog or systemd's notify socket."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(timeout)
    return listener


def pool(daemon: RunningDaemon) -> list[str]:
    return daemon.get("/config")["fallback_pool"]


# -- lifecycle --------------------------------------------------------------------------

def test_foreground_daemon_serves_status_and_cleans_up_on_term(lab, daemons):
    daemon = make(lab, daemons).start()
    health = daemon.get("/health")
    assert health["status"] == "ok" and health["workers"] == {"alive": 1, "expected": 1}
    assert health["xdp"] == {"attached": True, "mode": "native", "attach": "link",
                             "kernel_tier": {"xdp_decode": "off", "configs": {
                                 "1": {"path": "af_xdp", "why": "xdp_decode = off"}}}}
    assert set(daemon.get("/")["endpoints"]) == {
        "/", "/health", "/stats", "/config", "/metrics", "/restart", "/version", "/whoami",
        "/drain", "/undrain", "/reload", "/stop", "/dump-stats", "/dump-config"}
    assert stat.S_IMODE(daemon.status_socket.stat().st_mode) == 0o660
    assert xdp_attached(lab)
    assert daemon.stop() == 0
    assert not xdp_attached(lab)
    assert not daemon.pidfile.exists() and not daemon.status_socket.exists()
    daemon.wait_log("stopped")


def test_daemon_mode_detaches_holds_the_pidfile_and_logs_to_syslog(lab, daemons):
    daemon = make(lab, daemons)
    log_path = lab.workdir / "log.sock"
    syslog = datagram_listener(log_path)
    try:
        started = subprocess.run(daemon.command("--syslog-socket", str(log_path)),
                                 capture_output=True, text=True, timeout=30)
        assert started.returncode == 0, started.stderr
        pid = daemon.pid
        assert os.path.exists(f"/proc/{pid}") and pid != started.returncode
        messages: list[str] = []
        while not any("started:" in m for m in messages):
            messages.append(syslog.recv(4096).decode())
        assert any(m.startswith("<30>pesigitgd[v0]: ") for m in messages)   # daemon.info
        assert daemon.get("/health")["status"] == "ok"
        os.kill(pid, signal.SIGTERM)
        daemon.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon exit")
        assert not daemon.pidfile.exists() and not xdp_attached(lab)
    finally:
        syslog.close()


def test_a_second_instance_refuses_while_the_first_runs(lab, daemons):
    daemon = make(lab, daemons).start()
    second = subprocess.run(daemon.command("-f"), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"pesigitgd is already running as pid {daemon.pid}" in second.stderr
    assert daemon.get("/health")["status"] == "ok"


def test_a_stale_pidfile_is_taken_over(lab, daemons):
    daemon = make(lab, daemons)
    daemon.pidfile.write_text("999999\n")
    daemon.start()
    daemon.wait_log("took over the stale pidfile .* of pid 999999")
    # The pidfile names the running daemon now, and it holds its lock.
    assert daemon.proc is not None and daemon.pid == daemon.proc.pid
    with pytest.raises(BlockingIOError), open(daemon.pidfile) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_refuses_to_leave_rx_queues_without_a_socket(lab, daemons):
    ip("link", "add", "m0", "numrxqueues", "2", "numtxqueues", "2", "type", "veth", "peer",
       "name", "m1", "numrxqueues", "2", "numtxqueues", "2", ns=lab.lb_ns)
    ip("link", "set", "m0", "up", ns=lab.lb_ns)
    daemon = RunningDaemon(lab.lb_ns, lab.workdir, interface="m0", extra_conf="queues = 1\n")
    daemon.routes.write_text(lb_toml(STATIC))
    result = subprocess.run(daemon.command("-f"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert ("m0 has 2 RX queues but only 1 workers are configured" in result.stderr
            and "run 'ethtool -L m0 rx 1' or set queues = 2" in result.stderr)
    assert not xdp_attached(lab, "m0")


def test_one_worker_per_rx_queue(lab, daemons):
    ip("link", "add", "m0", "numrxqueues", "2", "numtxqueues", "2", "type", "veth", "peer",
       "name", "m1", "numrxqueues", "2", "numtxqueues", "2", ns=lab.lb_ns)
    ip("link", "set", "m0", "up", ns=lab.lb_ns)
    ip("link", "set", "m1", "up", ns=lab.lb_ns)
    daemon = RunningDaemon(lab.lb_ns, lab.workdir, interface="m0")
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    daemon.start()
    workers = daemon.get("/stats")["workers"]
    assert [w["queue"] for w in workers] == [0, 1] and all(w["alive"] for w in workers)
    assert len({w["pid"] for w in workers}) == 2


# -- status socket ----------------------------------------------------------------------

def raw_request(path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_status_socket_answers_bad_requests_with_precise_errors(lab, daemons):
    daemon = make(lab, daemons).start()
    cases = {
        b"POST /health\n": "method POST not allowed on /health",
        b"DELETE /health\n": "method DELETE not allowed on /health",
        b"PUT /x\n": "method PUT not supported",
        b"GET /restart\n": "method GET not allowed on /restart",
        b"GET /nope\n": "no such endpoint: /nope",
        b"GET\n": "expected 'GET <path>' or 'POST <path>'",
        b"GET / extra words\n": "expected 'GET <path>' or 'POST <path>'",
        b"\xff\xfe\n": "request is not ASCII",
        b"GET /" + b"a" * 5000 + b"\n": "request line longer than 1024 octets",
    }
    for request, message in cases.items():
        answer = json.loads(raw_request(daemon.status_socket, request))
        assert answer["error"] == message
    http = raw_request(daemon.status_socket, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = http.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and json.loads(body)["status"] == "ok"
    missing = raw_request(daemon.status_socket, b"GET /x HTTP/1.0\r\n\r\n")
    assert missing.startswith(b"HTTP/1.0 404 Not Found")
    assert daemon.get("/health")["status"] == "ok"


def test_config_and_usr2_never_show_keys(lab, daemons):
    daemon = make(lab, daemons).start()
    text = json.dumps(daemon.get("/config"))
    assert KEY_HEX not in text and '"key": "set"' in text
    mark = daemon.mark()
    daemon.signal(signal.SIGUSR2)
    daemon.wait_log("config fallback pool: ", after=mark)
    assert not any(KEY_HEX in line for line in daemon.lines)
    assert any('"mode": "four_pass"' in line for line in daemon.lines[mark:])
    assert any('"address": "10.9.0.11"' in line and '"mac_source": "static"' in line
               for line in daemon.lines[mark:])


def test_metrics_parse_as_prometheus_text(lab, daemons):
    daemon = make(lab, daemons).start()
    families = {fam.name: fam for fam in text_string_to_metric_families(daemon.get("/metrics"))}
    assert families["pesigitg_up"].samples[0].value == 1
    labels = {tuple(sorted(s.labels)) for s in families["pesigitg_cid_routed_frames"].samples}
    # A worker's frames (path af_xdp) and the kernel tier's (path xdp, no worker).
    assert labels == {("config_id", "path", "worker"), ("config_id", "path")}
    backends = {s.labels["backend"]: s.value for s in families["pesigitg_backend_up"].samples}
    assert backends == {"10.9.0.11": 1, "10.9.0.12": 1}
    assert "pesigitg_xdp_verdicts" in families and "pesigitg_dropped_frames" in families


# -- signals ----------------------------------------------------------------------------

def test_usr1_logs_counters_summed_and_per_worker(lab, daemons):
    daemon = make(lab, daemons).start()
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        peer.send([f.udp4_frame(f.quic_short(CONFIG.encode(b"\x01\x01\x01", b"abcd")),
                                dst="10.9.0.1")] * 3)
        daemon.wait_until(lambda: daemon.get("/stats")["total"]["forwarded"] == 3,
                          what="3 forwarded frames")
    finally:
        peer.close()
    mark = daemon.mark()
    daemon.signal(signal.SIGUSR1)
    assert "forwarded=3" in daemon.wait_log("stats total: ", after=mark)
    assert "cid_routed_1=3" in daemon.wait_log(r"stats worker q0 \(alive, restarts 0\)",
                                               after=mark)
    assert "redirect_udp=3" in daemon.wait_log("stats xdp: ", after=mark)


def test_hup_with_invalid_config_keeps_old_routes(lab, daemons):
    daemon = make(lab, daemons).start()
    before = daemon.get("/config")["servers"]
    daemon.routes.write_text(lb_toml(STATIC).replace('id = "020202"', 'id = "0202"'))
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    line = daemon.wait_log("reload failed", after=mark)
    assert ("still running the previous configuration: " in line
            and "configs[0].servers[1].id = '0202': is 2 octets, server_id_length is 3"
            in line)
    assert daemon.get("/config")["servers"] == before
    assert daemon.get("/health")["status"] == "ok"


def test_hup_applies_drain_and_new_servers_and_keeps_state(lab, daemons):
    daemon = make(lab, daemons).start()
    assert sorted(pool(daemon)) == ["10.9.0.11", "10.9.0.12"]
    servers: list[dict[str, Any]] = [STATIC[0], dict(STATIC[1], draining=True),
               {"sid": "030303", "address": "10.9.0.13", "mac": MAC3.hex(":")}]
    daemon.routes.write_text(lb_toml(servers))
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded: ", after=mark)
    assert sorted(pool(daemon)) == ["10.9.0.11", "10.9.0.13"]
    drained = [s for s in daemon.get("/config")["servers"] if s["address"] == "10.9.0.12"]
    assert drained[0]["draining"] is True


def test_hup_that_needs_a_restart_says_so(lab, daemons):
    daemon = make(lab, daemons).start()
    daemon.conf.write_text(daemon.conf.read_text().replace("interface = v0", "interface = v9"))
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("interface changed from v0 to v9: that needs a restart; keeping v0",
                    after=mark)
    assert daemon.get("/health")["interface"] == "v0"


def test_valid_reloads_under_a_stream_lose_no_packet(lab, daemons):
    daemon = make(lab, daemons).start()
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    configs = [lb_toml(STATIC), lb_toml([STATIC[0], dict(STATIC[1], draining=True)])]
    sent = 0
    try:
        for burst in range(12):
            frames = [f.udp4_frame(f.quic_short(CONFIG.encode(bytes([1 + i % 2]) * 3,
                                                              os.urandom(4))),
                                   sport=20000 + burst * 50 + i, dst="10.9.0.1")
                      for i in range(50)]
            mark = daemon.mark()
            daemon.routes.write_text(configs[burst % 2])
            daemon.signal(signal.SIGHUP)
            peer.send(frames)
            sent += len(frames)
            daemon.wait_log("reloaded: ", after=mark)
        daemon.wait_until(lambda: daemon.get("/stats")["total"]["rx"] >= sent,
                          what=f"{sent} frames at the worker")
        got = peer.capture({MAC1, MAC2}, sent, timeout=5)
    finally:
        peer.close()
    total = daemon.get("/stats")["total"]
    assert total["forwarded"] == sent and len(got) == sent
    assert total["table_swaps"] >= 6     # draining on/off changes the table every time


def test_a_killed_worker_is_replaced_at_once_on_the_same_socket(lab, daemons):
    daemon = make(lab, daemons).start()
    worker = daemon.get("/stats")["workers"][0]["pid"]
    mark = daemon.mark()
    os.kill(worker, signal.SIGKILL)
    daemon.wait_log(rf"worker q0 \(pid {worker}\) was killed by SIGKILL after .*; "
                    "replacing it now", after=mark)
    daemon.wait_log("worker q0 up", after=mark)
    replaced = daemon.get("/stats")["workers"][0]
    assert replaced["pid"] != worker and replaced["restarts"] == 1 and replaced["alive"]
    assert daemon.get("/health")["status"] == "ok"


def test_a_worker_that_keeps_dying_is_replaced_with_growing_delays(lab, daemons):
    daemon = make(lab, daemons).start()
    delays: list[float] = []
    while not delays or delays[-1] < 0.4:
        pid = daemon.get("/stats")["workers"][0]["pid"]
        mark = daemon.mark()
        os.kill(pid, signal.SIGKILL)
        line = daemon.wait_log(rf"\(pid {pid}\) was killed by SIGKILL.*"
                               r"replacing it (now|in [0-9.]+ s)",
                               after=mark)
        delays.append(0.0 if line.endswith("now") else float(line.split(" in ")[-1][:-2]))
        if delays[-1] >= 0.4:
            # Waiting for its replacement: the only worker is missing, nothing is
            # forwarded.
            health = daemon.get("/health")
            assert health["status"] == "down" and "no worker is running" in health["reasons"]
            assert health["workers"] == {"alive": 0, "expected": 1}
        daemon.wait_log("worker q0 up", after=mark)
    assert delays[0] == 0.0 and delays == sorted(delays) and len(set(delays)) == len(delays)
    daemon.wait_until(lambda: daemon.get("/health")["status"] == "ok", what="/health ok")


def test_systemd_notify_protocol(lab, daemons):
    daemon = make(lab, daemons)
    notify = lab.workdir / "notify.sock"
    listener = datagram_listener(notify)

    def next_message(containing: str) -> dict[str, str]:
        while True:
            fields = dict(line.split("=", 1) for line in
                          listener.recv(4096).decode().splitlines())
            if containing in fields:
                return fields

    try:
        # No -f: NOTIFY_SOCKET alone must keep it in the foreground.
        daemon.proc = proc = subprocess.Popen(
            daemon.command(), stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"})
        ready = next_message("READY")
        assert ready["READY"] == "1" and ready["STATUS"].startswith("v0: 1/1 workers")
        assert proc.poll() is None and int(ready["MAINPID"]) == daemon.pid
        assert next_message("WATCHDOG")["WATCHDOG"] == "1"
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.signal(signal.SIGHUP)
        reloading = next_message("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) >= before
        assert next_message("READY")["READY"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert next_message("STOPPING")["STOPPING"] == "1"
        assert proc.wait(15) == 0
    finally:
        listener.close()


# -- backends ---------------------------------------------------------------------------

def test_health_flips_follow_version_negotiation(lab, daemons):
    lab.add_backend_address("10.9.0.3")
    responders = [VersionNegotiationResponder(lab.peer_ns, a) for a in ("10.9.0.2", "10.9.0.3")]
    try:
        servers = [{"sid": "010101", "address": "10.9.0.2"},
                   {"sid": "020202", "address": "10.9.0.3"}]
        daemon = make(lab, daemons, servers, health=True).start()
        daemon.wait_until(lambda: sorted(pool(daemon)) == ["10.9.0.2", "10.9.0.3"],
                          what="both backends resolved and in the pool")
        mark = daemon.mark()
        responders[1].answering.clear()
        daemon.wait_log("backend 10.9.0.3 is DOWN: no version negotiation", after=mark)
        assert pool(daemon) == ["10.9.0.2"]
        down = [s for s in daemon.get("/config")["servers"] if s["address"] == "10.9.0.3"]
        assert down[0]["health"] == "down (probed)"
        responders[1].answering.set()
        daemon.wait_log("backend 10.9.0.3 is up: version negotiation received", after=mark)
        assert sorted(pool(daemon)) == ["10.9.0.2", "10.9.0.3"]
        assert responders[0].answered > 0
    finally:
        for r in responders:
            r.close()


def test_a_backend_whose_neighbour_entry_appears_later_joins_the_pool(lab, daemons):
    servers = [{"sid": "070707", "address": "10.9.0.7"}]
    daemon = make(lab, daemons, servers).start()
    entry = daemon.get("/config")["servers"][0]
    assert entry["mac_source"] == "unresolved" and pool(daemon) == []
    lab.add_backend_address("10.9.0.7")
    daemon.wait_log("backend 10.9.0.7 is at " + lab.peer_mac.hex(":"), timeout=15)
    daemon.wait_until(lambda: pool(daemon) == ["10.9.0.7"], what="10.9.0.7 in the pool")
    assert daemon.get("/config")["servers"][0]["mac_source"] == "neighbour"


def test_ctl_health_exit_status(lab, daemons):
    daemon = make(lab, daemons).start()
    ctl = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")
    ok = subprocess.run([ctl, "-s", str(daemon.status_socket), "--json", "health"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "ok"
    bad = subprocess.run([ctl, "-s", str(lab.workdir / "nothing.sock")], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "cannot reach pesigitgd" in bad.stderr
    ok_sh = str(Path(__file__).resolve().parents[2] / "contrib" / "ok.sh")
    env = {**os.environ, "PATH": f"{Path(ctl).parent}:{os.environ['PATH']}"}
    assert subprocess.run([ok_sh, str(daemon.status_socket)], env=env).returncode == 0
    assert subprocess.run([ok_sh, str(lab.workdir / "nothing.sock")], env=env,
                          stderr=subprocess.DEVNULL).returncode == 1


@pytest.fixture(autouse=True)
def _no_leftover_processes(lab):
    yield
    leftovers = subprocess.run(["ip", "netns", "pids", lab.lb_ns], capture_output=True,
                               text=True).stdout.split()
    for pid in leftovers:
        os.kill(int(pid), signal.SIGKILL)
    assert not leftovers, f"processes left in the namespace: {leftovers}"


def test_a_status_socket_in_use_stops_the_start_and_is_left_alone(lab, daemons):
    daemon = make(lab, daemons)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(daemon.status_socket))
    squatter.listen()
    try:
        result = subprocess.run(daemon.command("-f"), capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 1
        assert f"status socket {daemon.status_socket} is in use by another process" \
            in result.stderr
        assert daemon.status_socket.exists() and not xdp_attached(lab)
    finally:
        squatter.close()
