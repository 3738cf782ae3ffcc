"""The client/backend side of a test wire: raw frames and QUIC version negotiation.

``PeerSocket`` sends client frames to the load balancer and captures what it sends
to backends (by destination MAC). ``VersionNegotiationResponder`` answers
pesigitgd's health probes the way any QUIC server does (RFC 9000 §6.1).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time

from pesigitg.testing.netns import inside
from tests.frames import checksum

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33


class PeerSocket:
    def __init__(self, ns: str, dev: str, lb_mac: bytes) -> None:
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                      socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.bind((dev, 0))
        self.lb_mac = lb_mac

    def close(self) -> None:
        self.sock.close()

    def send(self, frames: list[bytes]) -> None:
        """Send client frames to the LB (destination MAC rewritten to the LB's)."""
        for frame in frames:
            self.sock.send(self.lb_mac + frame[6:])

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

    def drain(self) -> None:
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while self.sock.recv(4096):
                pass
        self.sock.setblocking(True)


def version_negotiation(probe: bytes) -> bytes | None:
    """RFC 9000 §17.2.1 answer to a long-header packet, or None if it is not one."""
    if len(probe) < 7 or not probe[0] & 0x80:
        return None
    dcid_len = probe[5]
    dcid = probe[6:6 + dcid_len]
    pos = 6 + dcid_len
    if pos >= len(probe):
        return None
    scid = probe[pos + 1:pos + 1 + probe[pos]]
    return (bytes([0x80 | os.urandom(1)[0] & 0x7F]) + b"\0\0\0\0" + bytes([len(scid)]) + scid
            + bytes([len(dcid)]) + dcid + struct.pack("!I", 1))


class VersionNegotiationResponder:
    """A UDP socket in ``ns`` on (address, port) answering like a QUIC server.

    ``forge_icmp`` first sends the prober a forged ICMP port unreachable quoting its
    probe, as an attacker on the path could (IPv4); ``delay`` holds the answer back (a
    slow but healthy backend). ``sources`` holds every address a probe came from."""

    def __init__(self, ns: str, address: str, port: int = 443, forge_icmp: bool = False,
                 delay: float = 0.0) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with inside(ns):
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) \
                if forge_icmp else None
        self.address, self.port, self.delay = address, port, delay
        self.forged = 0
        self.sock.bind((address, port))
        self.sock.settimeout(0.1)
        self.answering = threading.Event()
        self.answering.set()
        self.answered = 0
        self.sources: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            reply = version_negotiation(data)
            if reply:
                self.sources.add(peer[0])
            if reply and self.answering.is_set():
                if self.icmp is not None:
                    self.icmp.sendto(self._port_unreachable(peer, len(data)), (peer[0], 0))
                    self.forged += 1
                time.sleep(self.delay)
                self.sock.sendto(reply, peer)
                self.answered += 1

    def _port_unreachable(self, peer: tuple[str, int], length: int) -> bytes:
        """ICMP destination unreachable (port) quoting the prober's datagram to us."""
        quoted_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + length, 0, 0, 64, 17, 0,
                                socket.inet_aton(peer[0]), socket.inet_aton(self.address))
        quoted = quoted_ip + struct.pack("!HHHH", peer[1], self.port, 8 + length, 0)
        head = struct.pack("!BBHI", 3, 3, 0, 0)
        return head[:2] + struct.pack("!H", checksum(head + quoted)) + head[4:] + quoted

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        if self.icmp is not None:
            self.icmp.close()

