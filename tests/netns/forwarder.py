"""A load balancer on a veth pair for data-path tests.

Namespace ``lb`` holds ``v0`` with the XDP program and one engine on queue 0;
namespace ``peer`` holds ``v1`` and a :class:`PeerSocket` that sends client frames
and captures what the engine transmits back (frames addressed to backend MACs).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from pesigitg._fastpath import Engine, XskSocket
from pesigitg.daemon.steering import Steering
from pesigitg.routing.routes import CompiledRoutes
from pesigitg.testing.netns import inside, mac_of, namespace, veth_pair
from tests.netns.peer import PeerSocket


class Forwarder:
    def __init__(self, lb_ns: str, peer_ns: str, xdp: Steering, xsk: XskSocket,
                 engine: Engine, peer: PeerSocket, lb_mac: bytes) -> None:
        self.lb_ns, self.peer_ns = lb_ns, peer_ns
        self.xdp, self.xsk, self.engine, self.peer = xdp, xsk, engine, peer
        self.lb_mac = lb_mac
        self.engine_thread: threading.Thread | None = None
        self.routes: CompiledRoutes | None = None

    def send(self, frames: list[bytes]) -> None:
        self.peer.send(frames)

    def capture(self, macs: set[bytes], count: int, timeout: float = 3.0) -> list[bytes]:
        return self.peer.capture(macs, count, timeout)

    def wait_rx(self, total: int, timeout: float = 5.0) -> None:
        """Wait until the engine has taken ``total`` frames off its RX ring."""
        deadline = time.monotonic() + timeout
        while self.engine.counters()["rx"] < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"engine saw {self.engine.counters()['rx']} of "
                                     f"{total} frames")
            time.sleep(0.002)

    def roundtrip(self, frames: list[bytes], macs: set[bytes]) -> list[bytes]:
        before = self.engine.counters()["rx"]
        self.send(frames)
        self.wait_rx(before + len(frames))
        forwarded = self.engine.counters()["forwarded"]
        return self.capture(macs, len(frames), timeout=1.0 if forwarded else 0.2)


@contextlib.contextmanager
def forwarder(routes: CompiledRoutes | None = None, ports: tuple[int, ...] = (443,),
              batch: int = 64) -> Iterator[Forwarder]:
    with namespace("pesi-lb") as lb_ns, namespace("pesi-peer") as peer_ns:
        veth_pair(lb_ns, "v0", "v1", peer_ns)
        # Quiet the peer: no IPv6 autoconfiguration chatter on the capture socket.
        with inside(peer_ns), open("/proc/sys/net/ipv6/conf/v1/disable_ipv6", "w") as f:
            f.write("1")
        lb_mac = mac_of(lb_ns, "v0")
        peer = PeerSocket(peer_ns, "v1", lb_mac)
        try:
            if routes is None:
                raise ValueError("routes are required")
            with inside(lb_ns), Steering.load() as xdp:
                xdp.set_ports(ports)
                xdp.attach("v0")
                try:
                    with XskSocket("v0", 0) as xsk:
                        xdp.register_socket(0, xsk.fd)
                        engine = Engine(xsk, routes.table, batch=batch)
                        thread = threading.Thread(target=engine.run, daemon=True)
                        thread.start()
                        try:
                            fw = Forwarder(lb_ns, peer_ns, xdp, xsk, engine, peer, lb_mac)
                            fw.engine_thread = thread
                            yield fw
                        finally:
                            engine.stop()
                            thread.join(timeout=5)
                finally:
                    xdp.detach()
        finally:
            peer.close()
