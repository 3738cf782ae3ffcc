"""pesigitg-ctl against the real daemon in a namespace: every command, its exit status,
and the daemon-side features behind them (drains at run time, fully drained, periodic
stats, JSON logs, key ages)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pyte
import pytest

from pesigitg.routing.quiclb import CidConfig
from pesigitg.testing.daemon import PESIGITGD, RunningDaemon
from tests import frames as f
from tests.netns.lbtoml import lb_toml
from tests.netns.peer import PeerSocket
from tests.netns.test_daemon import CONFIG, KEY_HEX, MAC1, MAC2, STATIC, make

CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")
PLAIN = CidConfig(0, 3, 4)
SINGLE = CidConfig(2, 8, 8, bytes.fromhex("00112233445566778899aabbccddeeff"))
MODES = """
[[configs]]
config_id = 0
server_id_length = 3
nonce_length = 4
  [[configs.servers]]
  id = "010101"
  address = "10.9.0.11"
  mac = "{mac1}"
  [[configs.servers]]
  id = "020202"
  address = "10.9.0.12"
  mac = "{mac2}"

[[configs]]
config_id = 2
server_id_length = 8
nonce_length = 8
key = "00112233445566778899aabbccddeeff"
  [[configs.servers]]
  id = "0101010101010101"
  address = "10.9.0.11"
  [[configs.servers]]
  id = "0909090909090909"
  address = "10.9.0.99"
"""


def ctl(daemon: RunningDaemon, *args: str, json_out: bool = False
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CTL, "-s", str(daemon.status_socket), *(["--json"] if json_out
                                                                     else []), *args],
                          capture_output=True, text=True, timeout=150)


def ctl_json(daemon: RunningDaemon, *args: str) -> Any:
    done = ctl(daemon, *args, json_out=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- reading ----------------------------------------------------------------------------------

def test_health_stats_config_metrics_version_for_people_and_scripts(lab, daemons):
    daemon = make(lab, daemons).start()
    health = ctl(daemon, "health")
    assert health.returncode == 0 and health.stdout.startswith("ok: v0, up ")
    fingerprint = ctl_json(daemon, "health")["fingerprint"]
    assert f"  routing fingerprint {fingerprint} " in health.stdout
    assert ctl_json(daemon, "health")["status"] == "ok"
    stats = ctl(daemon, "stats")
    assert stats.returncode == 0 and "WORKER" in stats.stdout and "BACKEND" in stats.stdout
    assert "rx" in ctl_json(daemon, "stats")["total"]
    config = ctl(daemon, "config")
    assert config.returncode == 0 and "10.9.0.11" in config.stdout
    assert "key set" in config.stdout and KEY_HEX not in config.stdout
    assert f"routing fingerprint: {fingerprint} " in config.stdout
    assert ctl(daemon, "metrics").stdout.startswith("# HELP")
    version = ctl_json(daemon, "version")
    assert version["pid"] == daemon.pid and version["xdp_mode"] == "native"
    assert version["aes_ni"] is True and version["kernel"] == os.uname().release
    assert "pesigitg: " in ctl(daemon, "version").stdout
    # --json after the command works too.
    assert json.loads(ctl(daemon, "health", "--json").stdout)["status"] == "ok"
    gone = subprocess.run([CTL, "-s", str(lab.workdir / "nothing.sock"), "stats"],
                          capture_output=True, text=True)
    assert gone.returncode == 1 and "cannot reach pesigitgd" in gone.stderr
    usage = subprocess.run([CTL, "-s", str(daemon.status_socket), "whoami", "zz"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "'zz' is not hex octets" in usage.stderr


def test_list_and_status_find_the_daemon_and_flag_stale_files(lab, daemons, tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    conf = daemon.conf.read_text()
    conf = conf.replace(str(daemon.status_socket), str(run / "pesigitgd-v0.sock"))
    daemon.conf.write_text(conf.replace(str(daemon.pidfile), str(run / "pesigitgd-v0.pid")))
    daemon.status_socket, daemon.pidfile = run / "pesigitgd-v0.sock", run / "pesigitgd-v0.pid"
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    daemon.start()
    # A crashed daemon's leftovers: a pidfile nobody holds, a socket nobody answers on.
    (run / "pesigitgd-gone.pid").write_text("999999\n")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(run / "pesigitgd-gone.sock"))
    dead.close()
    listed = subprocess.run([CTL, "--runtime-dir", str(run), "--json", "list"],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    by_name = {i["interface"]: i for i in json.loads(listed.stdout)}
    v0 = by_name["v0"]
    assert v0["pid"] == daemon.pid and v0["status"] == "ok" and v0["problems"] == []
    assert set(v0["sources"]["pid"]) == {"pidfile", "process", "socket"}
    gone = by_name["gone"]
    assert gone["status"] == "unreachable"
    assert any("stale pidfile" in p for p in gone["problems"])
    assert any("stale socket" in p for p in gone["problems"])
    text = subprocess.run([CTL, "--runtime-dir", str(run), "list"], capture_output=True,
                          text=True).stdout
    assert "INTERFACE" in text and "! gone: stale pidfile" in text
    status = subprocess.run([CTL, "--runtime-dir", str(run), "-i", "v0", "status"],
                            capture_output=True, text=True)
    assert status.returncode == 0
    assert status.stdout.startswith(f"v0: ok, pid {daemon.pid}, up ")
    # With two daemons' files there, -i may not be left out.
    alone = subprocess.run([CTL, "--runtime-dir", str(run), "health"], capture_output=True,
                           text=True)
    assert alone.returncode == 2 and "there is not exactly one" in alone.stderr
    (run / "pesigitgd-gone.sock").unlink()
    assert subprocess.run([CTL, "--runtime-dir", str(run), "health"],
                          capture_output=True).returncode == 0


# -- whoami -----------------------------------------------------------------------------------

def test_whoami_agrees_with_the_packet_path_for_every_mode(lab, daemons):
    daemon = make(lab, daemons)
    daemon.routes.write_text(lb_toml(STATIC).replace('[[configs]]', MODES.format(
        mac1=MAC1.hex(":"), mac2=MAC2.hex(":")) + "\n[[configs]]", 1))
    daemon.start()
    four = CONFIG            # config 1, four-pass (3 + 4 octets)
    cases = [
        (PLAIN.encode(b"\x02\x02\x02", os.urandom(4)), "cid", "cid_routed_0", MAC2),
        (SINGLE.encode(b"\x01" * 8, os.urandom(8)), "cid", "cid_routed_2", MAC1),
        (four.encode(b"\x01\x01\x01", os.urandom(4)), "cid", "cid_routed_1", MAC1),
        (four.encode(b"\x07\x07\x07", os.urandom(4)), "unknown_server",
         "unroutable_unknown_server", None),
        (SINGLE.encode(b"\x09" * 8, os.urandom(8)), "server_down",
         "unroutable_server_down", None),
        (b"\xe4" + os.urandom(7), "no_config", "unroutable_no_config", None),
    ]
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        for cid, verdict, counter, mac in cases:
            online = ctl(daemon, "whoami", cid.hex(), json_out=True)
            answer = json.loads(online.stdout)
            assert answer["verdict"] == verdict, answer
            assert online.returncode == (0 if verdict == "cid" else 1)
            offline = json.loads(ctl(daemon, "whoami", cid.hex(), "-r", str(daemon.routes),
                                     json_out=True).stdout)
            if verdict != "server_down":            # offline every server is assumed up
                assert offline["verdict"] == verdict and offline["offline"] is True
            # The same CID through the daemon: the counter the verdict names moves.
            before = daemon.get("/stats")["total"][counter]
            peer.send([f.udp4_frame(f.quic_short(cid), dst="10.9.0.1")])
            got = peer.capture({MAC1, MAC2}, 1, timeout=1)
            daemon.wait_until(lambda c=counter, b=before: daemon.get("/stats")["total"][c]
                              == b + 1, what=counter)
            if mac is not None:
                assert [g[:6] for g in got] == [mac]
                assert answer["backend"]["address"] == {MAC1: "10.9.0.11",
                                                        MAC2: "10.9.0.12"}[mac]
        text = ctl(daemon, "whoami", cases[3][0].hex()).stdout
        assert ("not routable (decoded server ID is not in the config): config 1, "
                "server 070707") in text
        assert "10.9.0.99" in ctl(daemon, "whoami", cases[4][0].hex()).stdout
    finally:
        peer.close()


def test_backend_config_gives_a_backend_what_it_needs_from_the_file(lab, tmp_path):
    routes = tmp_path / "lb.toml"
    routes.write_text(lb_toml(STATIC))
    done = subprocess.run([CTL, "backend-config", "020202", "-r", str(routes)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'server_id = "020202"' in done.stdout and f'key = "{KEY_HEX}"' in done.stdout
    assert "await serve(VIP, 443" in done.stdout and "first_octet_encodes_cid_length = true" \
        in done.stdout
    config = json.loads(subprocess.run([CTL, "backend-config", "020202", "-r", str(routes),
                                        "--json"], capture_output=True, text=True).stdout)
    (one,) = config["configs"]
    rebuilt = CidConfig(one["config_id"], one["server_id_length"], one["nonce_length"],
                        bytes.fromhex(one["key"]), encode_length=True)
    assert CONFIG.decode(rebuilt.encode(b"\x02\x02\x02", b"\0\0\0\1"))[0] == b"\x02\x02\x02"
    missing = subprocess.run([CTL, "backend-config", "0a0b0c", "-r", str(routes)],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "lists server ID 0a0b0c" in missing.stderr


# -- drains -------------------------------------------------------------------------------------

def test_a_runtime_drain_survives_a_reload_and_a_restart_and_is_found_drained(lab, daemons):
    daemon = make(lab, daemons, extra_conf="drain_quiet_s = 1\n").start()
    assert daemon.get("/config")["fallback_pool"] == ["10.9.0.11", "10.9.0.12"]
    done = ctl(daemon, "drain", "10.9.0.11")
    assert done.returncode == 0 and done.stdout.strip() == "10.9.0.11: draining (override)"

    def server(address: str) -> dict:
        return next(s for s in daemon.get("/config")["servers"] if s["address"] == address)

    assert daemon.get("/config")["fallback_pool"] == ["10.9.0.12"]
    assert server("10.9.0.11")["draining_source"] == "override"
    # No CID-routed frame for drain_quiet_s: fully drained, said once.
    line = daemon.wait_log("backend 10.9.0.11 is fully drained, safe to remove")
    assert server("10.9.0.11")["fully_drained_since"] is not None
    time.sleep(1.5)
    assert sum("fully drained" in text for text in daemon.lines) == 1, line
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded: ", after=mark)
    assert server("10.9.0.11")["draining"] is True
    assert ctl(daemon, "restart").returncode == 0
    assert server("10.9.0.11")["draining"] is True
    assert daemon.get("/config")["fallback_pool"] == ["10.9.0.12"]
    again = ctl(daemon, "drain", "10.9.0.11")
    assert again.returncode == 0 and again.stdout.strip().endswith("as it already was")
    undone = ctl_json(daemon, "undrain", "10.9.0.11")
    assert undone == {"address": "10.9.0.11", "draining": False, "changed": True,
                      "source": None}
    assert daemon.get("/config")["fallback_pool"] == ["10.9.0.11", "10.9.0.12"]
    unknown = ctl(daemon, "drain", "10.9.0.77")
    assert unknown.returncode == 1 and "no backend 10.9.0.77" in unknown.stderr


# -- watch ------------------------------------------------------------------------------------

def traffic(lab) -> PeerSocket:
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    peer.send([f.udp4_frame(f.quic_short(CONFIG.encode(b"\x01\x01\x01", os.urandom(4))),
                            dst="10.9.0.1")] * 50)
    return peer


def spawn_watch(daemon: RunningDaemon) -> tuple[int, int, pyte.Screen, pyte.ByteStream]:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.environ["LINES"], os.environ["COLUMNS"] = "30", "100"
        os.execv(CTL, [CTL, "-s", str(daemon.status_socket), "watch", "-n", "0.2"])
    screen = pyte.Screen(100, 30)
    return pid, fd, screen, pyte.ByteStream(screen)


def read_until(fd: int, stream: pyte.ByteStream, screen: pyte.Screen, done, timeout=10.0
               ) -> None:
    deadline = time.monotonic() + timeout
    while not done(screen):
        assert time.monotonic() < deadline, "\n".join(screen.display)
        if select.select([fd], [], [], 0.1)[0]:
            try:
                stream.feed(os.read(fd, 65536))
            except OSError:
                return


def exit_status(pid: int, timeout: float = 5.0) -> int | None:
    """Its exit status once it exits (None: still running after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


@pytest.mark.parametrize("quit_with", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_watch_redraws_in_place_and_quits(lab, daemons, quit_with):
    daemon = make(lab, daemons).start()
    pid, fd, screen, stream = spawn_watch(daemon)
    peer = None
    try:
        read_until(fd, stream, screen,
                   lambda s: any(text.startswith("10.9.0.12") for text in s.display))
        assert screen.display[0].startswith("pesigitgd v0 - ok - up ")
        peer = traffic(lab)
        # The same rows are redrawn with new numbers: the forwarded total reaches 50 on
        # the line it started on, and the title stays on top (no scrolling).
        rows = [i for i, text in enumerate(screen.display) if text.startswith("forwarded")]
        assert rows, "\n".join(screen.display)
        row = rows[0]
        read_until(fd, stream, screen, lambda s: s.display[row].rstrip().endswith(" 50"))
        assert screen.display[0].startswith("pesigitgd v0")
        assert any(text.startswith("10.9.0.11") for text in screen.display)
        os.write(fd, quit_with)
        assert exit_status(pid) == 0
        pid = 0
    finally:
        if peer is not None:
            peer.close()
        os.close(fd)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_watch_prints_lines_when_not_on_a_terminal(lab, daemons):
    daemon = make(lab, daemons).start()
    done = subprocess.run([CTL, "-s", str(daemon.status_socket), "watch", "-n", "0.1",
                           "-c", "4"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(" ok rx=" in line for line in lines)


# -- acting ---------------------------------------------------------------------------------

def test_reload_stop_and_dumps_wait_for_their_effect(lab, daemons):
    daemon = make(lab, daemons).start()
    ok = ctl(daemon, "reload")
    assert ok.returncode == 0 and ok.stdout.startswith("reloaded: v0: 1/1 workers")
    daemon.routes.write_text(lb_toml(STATIC).replace('id = "020202"', 'id = "0202"'))
    bad = ctl(daemon, "reload")
    assert bad.returncode == 1
    assert "reload failed, still running the previous configuration" in bad.stderr
    assert "servers[1].id" in bad.stderr
    mark = daemon.mark()
    assert ctl(daemon, "dump-stats").returncode == 0
    daemon.wait_log("stats total: ", after=mark)
    assert ctl(daemon, "dump-config").returncode == 0
    daemon.wait_log("config daemon: ", after=mark)
    pid = daemon.pid
    stop = ctl(daemon, "stop")
    assert stop.returncode == 0 and stop.stdout.strip() == f"stopped: pid {pid}"
    assert daemon.proc is not None
    assert not Path(f"/proc/{pid}").exists() or daemon.proc.poll() is not None
    assert daemon.proc.wait(10) == 0


# -- the daemon's side ----------------------------------------------------------------------

def test_periodic_stats_and_json_logs(lab, daemons):
    daemon = make(lab, daemons, extra_conf="stats_interval = 1\nlog_format = json\n").start()
    first = json.loads(daemon.wait_log('"message": "started: '))
    assert first["level"] == "INFO" and first["pid"] == daemon.pid
    peer = traffic(lab)
    try:
        line = daemon.wait_log("stats last 1 s: ", timeout=10)
    finally:
        peer.close()
    assert "rx=50" in json.loads(line)["message"]
    assert all(json.loads(text) for text in daemon.lines if text.startswith("{"))


def test_key_ages_survive_reloads_and_warn_once(lab, daemons):
    from pesigitg.daemon.state import key_fingerprint

    daemon = make(lab, daemons)
    daemon.routes.write_text(lb_toml(STATIC).replace(
        "first_octet_encodes_cid_length = true",
        "first_octet_encodes_cid_length = true\nmax_key_age_days = 5"))
    # This host first saw the key ten days ago.
    state = daemon.pidfile.with_name("pesigitgd.state")
    state.write_text(json.dumps({"keys_seen": {
        key_fingerprint(bytes.fromhex(KEY_HEX)): time.time() - 10 * 86400}}))
    daemon.start()
    daemon.wait_log("QUIC-LB config 1's key is 10 days old, more than its max_key_age_days "
                    "of 5: rotate it")
    ages = daemon.get("/config")["key_ages_days"]
    assert 9.9 < ages["QUIC-LB config 1"] < 10.1
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded: ", after=mark)
    assert not [text for text in daemon.lines[mark:] if "rotate it" in text]
    assert KEY_HEX not in state.read_text() and KEY_HEX not in json.dumps(
        daemon.get("/config"))
    # The status socket's group may read it (where the socket is), nobody else.
    assert oct(state.stat().st_mode & 0o777) == "0o640"


def test_a_status_socket_configured_elsewhere_is_found_through_the_state_file(
        lab, daemons, tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "sockets"
    run.mkdir(mode=0o755)
    elsewhere.mkdir(mode=0o755)
    daemon = RunningDaemon(lab.lb_ns, lab.workdir)
    conf = daemon.conf.read_text().replace(str(daemon.status_socket),
                                           str(elsewhere / "lb.sock"))
    daemon.conf.write_text(conf.replace(str(daemon.pidfile), str(run / "pesigitgd-v0.pid")))
    daemon.status_socket, daemon.pidfile = elsewhere / "lb.sock", run / "pesigitgd-v0.pid"
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    daemon.start()
    state = run / "pesigitgd-v0.state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o640
    listed = subprocess.run([CTL, "--runtime-dir", str(run), "--json", "list"],
                            capture_output=True, text=True)
    v0 = next(i for i in json.loads(listed.stdout) if i["interface"] == "v0")
    assert v0["status"] == "ok" and v0["socket"] == str(elsewhere / "lb.sock"), v0
    assert v0["sources"]["socket"] == ["state file"] and v0["problems"] == []
    for how in (["-i", "v0"], []):
        health = subprocess.run([CTL, "--runtime-dir", str(run), *how, "health"],
                                capture_output=True, text=True)
        assert health.returncode == 0 and health.stdout.startswith("ok: v0"), health
    watched = subprocess.run([CTL, "--runtime-dir", str(run), "-i", "v0", "watch", "-n",
                              "0.1", "-c", "1"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "TERM": "dumb"})
    assert watched.returncode == 0, watched.stderr
