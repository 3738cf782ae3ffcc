"""Frames lost per lifecycle event at a fixed rate: SIGHUP, a killed worker, a restart.

Two namespaces joined by a veth pair. pesigitgd runs on ``v0`` with two backends
(static MACs); a raw socket on ``v1`` sends routable 1-RTT packets at ``--rate``
frames/s in 1 ms bursts, and an XDP sink on ``v1`` counts every frame pesigitgd sends
to the backends. Each event happens mid-stream, with a second of traffic on either
side; lost = sent - counted.

    python benchmarks/lifecycle_loss.py [--rate N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pesigitg.ebpf.attach import ifindex  # noqa: E402
from pesigitg.routing.quiclb import CidConfig  # noqa: E402
from pesigitg.testing.daemon import PESIGITGD, RunningDaemon  # noqa: E402
from pesigitg.testing.netns import inside, ip, mac_of, namespace, veth_pair  # noqa: E402
from pesigitg.testing.traffic import PacedStream, Traffic, compile_traffic  # noqa: E402
from tests import frames as f  # noqa: E402
from tests.netns.lbtoml import lb_toml  # noqa: E402

CONFIG = CidConfig(1, 3, 4, bytes.fromhex("8f95f09245765f80256934e50c66207f"), True)
MACS = [bytes([2, 0xBE, 0, 0, 0, n]) for n in (1, 2)]
SERVERS = [{"sid": f"{n:02x}" * 3, "address": f"10.9.0.{10 + n}", "mac": m.hex(":")}
           for n, m in zip((1, 2), MACS, strict=True)]
CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")


def frames(peer_mac: bytes, lb_mac: bytes) -> list[bytes]:
    return [f.ether(f.ipv4(f.udp(f.quic_short(CONFIG.encode(bytes([1 + i % 2]) * 3,
                                                            os.urandom(4)), bytes(64)),
                                 sport=20000 + i), f.PROTO_UDP, src="10.9.0.2",
                           dst="10.9.0.1"), f.ETH_P_IP, src=peer_mac, dst=lb_mac)
            for i in range(512)]


def settled(sink: Traffic, sent: int) -> int:
    count, previous = sink.sink_count({1, 2}), -1
    while count != previous:
        time.sleep(0.3)
        count, previous = sink.sink_count({1, 2}), count
        if count == sent:
            break
    return count


def events(daemon: RunningDaemon, lb_ns: str) -> list[tuple[str, Callable[[], None]]]:
    def hup() -> None:
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded: ", after=mark)

    def kill_worker() -> None:
        worker = daemon.get("/stats")["workers"][0]["pid"]
        mark = daemon.mark()
        os.kill(worker, signal.SIGKILL)
        daemon.wait_log("worker q0 up", after=mark)

    def restart() -> None:
        done = subprocess.run(["ip", "netns", "exec", lb_ns, CTL, "-s",
                               str(daemon.status_socket), "restart"],
                              capture_output=True, text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(done.stderr)

    return [("SIGHUP (reload)", hup), ("kill -9 of a worker", kill_worker),
            ("pesigitg-ctl restart", restart)]


@dataclass
class Round:
    sent: int
    lost: int
    took: float         # seconds the event took


def one_round(sink: Traffic, peer_ns: str, stream_frames: list[bytes], rate: int,
              event: Callable[[], None]) -> Round:
    """A second of traffic, the event, a second of traffic; what the sink missed."""
    before = sink.sink_count({1, 2})
    stream = PacedStream(peer_ns, "v1", stream_frames, rate).start()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        event()
        took = time.monotonic() - started
        time.sleep(1.0)
    finally:
        sent = stream.stop()
    counted = settled(sink, before + sent) - before
    return Round(sent, sent - counted, took)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=100_000, help="frames/s (default 100k)")
    parser.add_argument("--rounds", type=int, default=3, help="times each event happens")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, XDP, AF_XDP)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, list[Round]] = {}
    with tempfile.TemporaryDirectory(prefix="pesi-loss-") as tmp, \
            namespace("pesi-lb") as lb_ns, namespace("pesi-peer") as peer_ns:
        work = Path(tmp)
        veth_pair(lb_ns, "v0", "v1", peer_ns)
        ip("addr", "add", "10.9.0.1/24", "dev", "v0", ns=lb_ns)
        ip("addr", "add", "10.9.0.2/24", "dev", "v1", ns=peer_ns)
        with inside(peer_ns):
            sink = Traffic(compile_traffic(work), peer_ns, ifindex("v1"))
        sink.count_macs(MACS[0])
        daemon = RunningDaemon(lb_ns, work)
        daemon.routes.write_text(lb_toml(SERVERS))
        stream_frames = frames(mac_of(peer_ns, "v1"), mac_of(lb_ns, "v0"))
        try:
            daemon.start()
            for name, event in events(daemon, lb_ns):
                for _ in range(args.rounds):
                    r = one_round(sink, peer_ns, stream_frames, args.rate, event)
                    results.setdefault(name, []).append(r)
                    print(f"{name}: sent {r.sent:,}, lost {r.lost:,} "
                          f"(event took {r.took * 1000:.0f} ms)", flush=True)
        finally:
            daemon.stop()
            sink.close()
    print(f"\nframes lost per event at {args.rate:,} frames/s, {args.rounds} rounds each "
          "(veth, copy-mode AF_XDP, one worker):")
    print(f"{'event':24} {'lost per round':>22} {'event took (ms)':>22}")
    for name, rounds in results.items():
        lost = ", ".join(str(r.lost) for r in rounds)
        took = ", ".join(f"{r.took * 1000:.0f}" for r in rounds)
        print(f"{name:24} {lost:>22} {took:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
