"""A load balancer on a veth pair for data-path tests.

Namespace ``lb`` holds ``v0`` with the XDP program and one engine on queue 0;
namespace ``peer`` holds ``v1`` and a raw AF_PACKET socket that sends client frames
and captures what the engine transmits back (frames addressed to backend MACs).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from pesigitg._fastpath.engine import Engine
from pesigitg._fastpath.xsk import XskSocket
from pesigitg.ebpf import XdpProgram
from pesigitg.netns import inside, mac_of, namespace, veth_pair
from pesigitg.routes import CompiledRoutes

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33


class Forwarder:
    def __init__(self, lb_ns: str, peer_ns: str, xdp: XdpProgram, xsk: XskSocket,
                 engine: Engine, sock: socket.socket, lb_mac: bytes) -> None:
        self.lb_ns, self.peer_ns = lb_ns, peer_ns
        self.xdp, self.xsk, self.engine, self.sock = xdp, xsk, engine, sock
        self.lb_mac = lb_mac
        self.sent = 0
        self.engine_thread: threading.Thread | None = None
        self.routes: CompiledRoutes | None = None

    def send(self, frames: list[bytes]) -> None:
        """Send client frames to the LB (destination MAC rewritten to v0's)."""
        for frame in frames:
            self.sock.send(self.lb_mac + frame[6:])
        self.sent += len(frames)

    def wait_rx(self, total: int, timeout: float = 5.0) -> None:
        """Wait until the engine has taken ``total`` frames off its RX ring."""
        deadline = time.monotonic() + timeout
        while self.engine.counters()["rx"] < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"engine saw {self.engine.counters()['rx']} of "
                                     f"{total} frames")
            time.sleep(0.002)

    def capture(self, macs: set[bytes], count: int, timeout: float = 3.0) -> list[bytes]:
        """Frames whose destination MAC is in ``macs``, until ``count`` or the timeout."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            if data[:6] in macs:
                got.append(data)
        return got

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
        with inside(peer_ns):
            with open("/proc/sys/net/ipv6/conf/v1/disable_ipv6", "w") as f:
                f.write("1")
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
            sock.bind(("v1", 0))
            lb_mac = mac_of(lb_ns, "v0")
            if routes is None:
                raise ValueError("routes are required")
            with inside(lb_ns), XdpProgram.load() as xdp:
                xdp.set_ports(ports)
                xdp.attach("v0")
                try:
                    with XskSocket("v0", 0) as xsk:
                        xdp.register_socket(0, xsk.fd)
                        engine = Engine(xsk, routes.table, batch=batch)
                        thread = threading.Thread(target=engine.run, daemon=True)
                        thread.start()
                        try:
                            fw = Forwarder(lb_ns, peer_ns, xdp, xsk, engine, sock, lb_mac)
                            fw.engine_thread = thread
                            yield fw
                        finally:
                            engine.stop()
                            thread.join(timeout=5)
                finally:
                    xdp.detach()
        finally:
            sock.close()
