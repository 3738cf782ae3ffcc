"""Restarts and crashes under a paced stream of routable QUIC, every frame counted.

The generator (BPF_PROG_TEST_RUN live frames) sends from the peer's v1 at a fixed rate
to the real daemon on v0; the daemon forwards to two backends whose MACs the sink,
an XDP program on v1, counts. Lost frames are those sent and never counted.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from pesigitg.testing.daemon import PESIGITGD, RunningDaemon, running
from pesigitg.testing.traffic import PacedStream, Traffic
from tests import frames as f
from tests.netns.lbtoml import lb_toml
from tests.netns.test_daemon import CONFIG, MAC1, MAC2, STATIC, xdp_attached

CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")
RATE = 50_000                  # frames/s: well within what copy-mode AF_XDP sustains here
SINK = {MAC1[5], MAC2[5]}      # the sink counts frames by their MAC's last octet


@pytest.fixture(autouse=True)
def _nothing_left_running(lab):
    yield
    leftovers = subprocess.run(["ip", "netns", "pids", lab.lb_ns], capture_output=True,
                               text=True).stdout.split()
    for pid in leftovers:
        os.kill(int(pid), signal.SIGKILL)
    assert not leftovers, f"processes left in the namespace: {leftovers}"


def stream_of(lab) -> PacedStream:
    """Routable 1-RTT packets for both backends, from many client ports."""
    frames = [f.ether(f.ipv4(f.udp(f.quic_short(CONFIG.encode(bytes([1 + i % 2]) * 3,
                                                              os.urandom(4)), bytes(64)),
                                   sport=20000 + i), f.PROTO_UDP, src="10.9.0.2",
                             dst="10.9.0.1"), f.ETH_P_IP, src=lab.peer_mac, dst=lab.lb_mac)
              for i in range(256)]
    return PacedStream(lab.peer_ns, "v1", frames, RATE).start()


def settled(traffic: Traffic, sent: int, timeout: float = 5.0) -> int:
    """The sink's count once the last frames have come back (or stopped coming)."""
    deadline = time.monotonic() + timeout
    count, previous = traffic.sink_count(SINK), -1
    while count != sent and time.monotonic() < deadline:
        time.sleep(0.05)
        count, previous = traffic.sink_count(SINK), count
        if count == previous and count > 0:
            time.sleep(0.2)
            count = traffic.sink_count(SINK)
            if count == previous:
                break
    return count


def start(lab, daemons, *args: str, env: dict[str, str] | None = None,
          decode: str = "off") -> RunningDaemon:
    daemon = RunningDaemon(lab.lb_ns, lab.workdir, extra_conf=f"xdp_decode = {decode}\n")
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    return daemon.start(*args, env=env)


def ctl(daemon: RunningDaemon, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", daemon.ns, CTL, "-s",
                           str(daemon.status_socket), *command], capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("decode", ["off", "all"], ids=["af_xdp", "kernel_tier"])
def test_restart_mid_stream_loses_no_frame_and_keeps_the_counters(lab, daemons, traffic,
                                                                  decode):
    """Also with the kernel tier on (xdp_decode = all: this four-pass config is
    decoded in XDP where the kernel has the crypto kfuncs, by the workers elsewhere)."""
    daemon = start(lab, daemons, decode=decode)
    old = daemon.pid
    stream = stream_of(lab)
    try:
        time.sleep(0.4)
        forwarded_before = daemon.get("/stats")["total"]["forwarded"]
        restart = ctl(daemon, "restart")
        assert restart.returncode == 0, restart.stderr
        assert restart.stdout.strip() == f"restarted: pid {old} handed over to pid {daemon.pid}"
        time.sleep(0.4)
    finally:
        sent = stream.stop()
    assert daemon.proc is not None
    assert daemon.pid != old and daemon.proc.wait(10) == 0     # the old one exited, 0
    assert settled(traffic, sent) == sent, "frames lost across the restart"
    stats = daemon.get("/stats")
    assert stats["total"]["forwarded"] == sent >= forwarded_before > 0   # carried on
    health = daemon.get("/health")
    in_xdp = stats["kernel_tier"]["forwarded"]
    tier = health["xdp"]["kernel_tier"]["configs"]["1"]["path"]
    assert in_xdp == (sent if tier == "xdp" else 0)
    assert stats["xdp"]["redirect_udp"] == sent - in_xdp
    assert stats["xdp"]["drop_no_socket"] == 0
    assert health["status"] == "ok" and health["xdp"]["attach"] == "link"
    # The new daemon is a daemon like any other: it can hand over in turn, and stop.
    assert ctl(daemon, "restart").returncode == 0
    assert daemon.stop() == 0
    assert not xdp_attached(lab) and not daemon.pidfile.exists()
    assert not daemon.status_socket.exists()


def test_a_killed_worker_costs_at_most_50_ms_of_traffic(lab, daemons, traffic):
    daemon = start(lab, daemons)
    stream = stream_of(lab)
    try:
        time.sleep(0.3)
        worker = daemon.get("/stats")["workers"][0]["pid"]
        os.kill(worker, signal.SIGKILL)
        daemon.wait_log(rf"worker q0 \(pid {worker}\) was killed by SIGKILL")
        daemon.wait_log(rf"worker q0 up \(pid (?!{worker})")
        time.sleep(0.3)
    finally:
        sent = stream.stop()
    lost = sent - settled(traffic, sent)
    assert 0 <= lost <= RATE * 0.050, f"{lost} of {sent} frames lost"
    assert daemon.get("/stats")["workers"][0]["restarts"] == 1


def test_workers_killed_under_load_leave_every_frame_in_its_place(lab, daemons, traffic):
    daemon = start(lab, daemons)
    stream = stream_of(lab)
    try:
        for _ in range(6):      # quick kills: the later replacements come after a delay
            time.sleep(0.05)
            worker = daemon.get("/stats")["workers"][0]["pid"]
            mark = daemon.mark()
            os.kill(worker, signal.SIGKILL)
            daemon.wait_log(r"worker q0 up", after=mark)
    finally:
        stream.stop()
    # (Frames are lost here: a crash loop is replaced after delays longer than the RX
    # ring holds.) Quiet again, every frame is back in the fill ring, once: none leaked
    # by the kills, none in two places.
    everything = {"fill": 3840, "rx": 0, "tx": 0, "comp": 0, "stash": 256, "kernel": 0}
    daemon.wait_until(lambda: daemon.get("/stats")["workers"][0]["frames"] == everything,
                      what="every frame back in the fill ring")


def test_a_killed_supervisor_leaves_nothing_and_a_new_daemon_forwards_at_once(
        lab, daemons, traffic):
    daemon = start(lab, daemons)
    worker = daemon.get("/stats")["workers"][0]["pid"]
    stream = stream_of(lab)
    try:
        time.sleep(0.2)
        os.kill(daemon.pid, signal.SIGKILL)
        killed = time.monotonic()
        # The worker dies with it, and the XDP link with the last of them.
        # (A dying worker leaves the namespace's pid list before it is a zombie.)
        while (subprocess.run(["ip", "netns", "pids", lab.lb_ns], capture_output=True,
                              text=True).stdout.split() or xdp_attached(lab)
               or running(worker)):
            assert time.monotonic() - killed < 1.0, "pesigitgd processes or XDP left behind"
            time.sleep(0.01)
        # Same command line, no cleanup by hand: the stale pidfile and socket give way.
        before = traffic.sink_count(SINK)
        restarted = RunningDaemon(lab.lb_ns, lab.workdir)
        daemons.append(restarted)
        started = time.monotonic()
        restarted.start(wait=False)
        while traffic.sink_count(SINK) == before:
            assert time.monotonic() - started < 2.0, "no frame forwarded 2 s after the start"
            time.sleep(0.01)
    finally:
        stream.stop()
    restarted.wait_log("took over the stale pidfile")


@pytest.mark.parametrize("breakage", ["config", "queues"])
def test_a_restart_with_a_bad_configuration_leaves_the_old_daemon(lab, daemons, traffic,
                                                                  breakage):
    daemon = start(lab, daemons)
    old = daemon.pid
    if breakage == "config":
        daemon.routes.write_text(lb_toml(STATIC).replace('id = "020202"', 'id = "0202"'))
        reason = "the new configuration is invalid: .*servers\\[1\\].id = '0202'"
    else:
        daemon.conf.write_text(daemon.conf.read_text() + "queues = 2\n")
        reason = "queues \\(1 -> 2\\) changed: a restart keeps those"
    stream = stream_of(lab)
    try:
        time.sleep(0.2)
        restart = ctl(daemon, "restart")
        time.sleep(0.2)
    finally:
        sent = stream.stop()
    assert restart.returncode == 1
    assert f"restart failed, still running as pid {old}" in restart.stderr
    assert re.search(reason, restart.stderr), restart.stderr
    assert daemon.pid == old and daemon.get("/health")["status"] == "ok"
    assert settled(traffic, sent) == sent      # untouched: it never stopped forwarding


@pytest.mark.parametrize("point", ["takeover-start", "before-workers"])
def test_a_failing_new_process_leaves_the_old_daemon_forwarding(lab, daemons, traffic, point):
    # The successor dies where a broken install would: before it says anything, or after
    # the old daemon stopped its workers (which are then started again).
    daemon = start(lab, daemons, env={"PESIGITG_FAULT": point})
    old = daemon.pid
    restart = ctl(daemon, "restart")
    assert restart.returncode == 1, restart.stderr
    assert f"still running as pid {old}" in restart.stderr
    assert "exit status 70" in restart.stderr, restart.stderr
    # Before it has the old daemon's stderr its words come back in the answer, after
    # that in the log.
    if point == "takeover-start":
        assert f"PESIGITG_FAULT: dying at {point}" in restart.stderr, restart.stderr
    daemon.wait_log(f"PESIGITG_FAULT: dying at {point}")
    stream = stream_of(lab)
    try:
        time.sleep(0.3)
    finally:
        sent = stream.stop()
    assert daemon.pid == old and daemon.get("/health")["workers"]["alive"] == 1
    assert settled(traffic, sent) == sent


def test_a_second_restart_request_meanwhile_is_refused(lab, daemons):
    daemon = start(lab, daemons)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as first:
        first.connect(str(daemon.status_socket))
        first.sendall(b"POST /restart\n")
        daemon.wait_log("restarting: starting the installed pesigitgd")
        second = ctl(daemon, "restart")
        assert second.returncode == 1 and "a restart is already under way" in second.stderr
        first.settimeout(60)
        assert b'"restarted": true' in first.recv(4096)

