"""The hand-over's wire: its messages as one enum, the socketpair they travel on, and
what the old daemon hands over (daemon/handover.py runs both sides).

The old process (O) starts the new one (N) from the code installed now, with one end
of a Unix socketpair as ``--takeover-fd``. Messages are a 4-octet length and JSON;
file descriptors travel with the length (SCM_RIGHTS). The steps:

    N -> O  hello      N has imported its code and validated its configuration
    O -> N  state      what N takes over, with the fds: the XDP link, program and
                       maps, each queue's AF_XDP socket and UMEM memfd, the counters
                       memfd, the pidfile (its lock), the status socket, O's stderr
    N -> O  ready      N is fully ready: tables compiled, everything adopted
    O                  stops its workers; frames wait in the RX rings meanwhile
    O -> N  quiesced
    N                  starts its workers on the same sockets (each takes its queue
                       only once O's worker is gone, and finishes any half-published
                       batch); with a new XDP program, swaps it on the link
    N -> O  committed  N is the daemon now (systemd: MAINPID=N)
    O                  exits without detaching or removing anything

At any step N may say ``failed`` with a reason, or die: O then keeps running, or
restarts its own workers on the same sockets, and the restart command says why.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TAKEOVER_TIMEOUT", "Channel", "HandoverError", "Inheritance", "Message",
           "PeerGone"]

TAKEOVER_TIMEOUT = 30.0     # seconds for each step of the other side
MAX_FDS = 253               # SCM_MAX_FD
_LEN = struct.Struct("<I")
MAX_MESSAGE = 64 << 20


class Message(enum.Enum):
    """The hand-over's messages, in their order (see above)."""
    HELLO = "hello"
    STATE = "state"
    READY = "ready"
    QUIESCED = "quiesced"
    COMMITTED = "committed"
    FAILED = "failed"


class HandoverError(RuntimeError):
    """The other side failed, went away, or broke the protocol; the text says which."""


class PeerGone(HandoverError):
    """The other process closed its end (it exited, or died)."""

    def __init__(self) -> None:
        super().__init__("the other process went away")


class Channel:
    """One end of the hand-over socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: Message, body: dict[str, Any] | None = None, fds: Sequence[int] = ()
             ) -> None:
        data = json.dumps({"kind": kind.value, **(body or {})}).encode()
        if len(fds) > MAX_FDS:
            raise HandoverError(f"{len(fds)} descriptors to hand over, at most {MAX_FDS}")
        socket.send_fds(self.sock, [_LEN.pack(len(data))], list(fds))
        self.sock.sendall(data)

    def recv(self, expect: Message, timeout: float = TAKEOVER_TIMEOUT
             ) -> tuple[dict[str, Any], list[int]]:
        """The next message, which must be ``expect``: ``(body, fds)``. A FAILED message,
        the other side going away, a timeout or another kind raise HandoverError."""
        self.sock.settimeout(timeout)
        try:
            head, fds, _, _ = socket.recv_fds(self.sock, _LEN.size, MAX_FDS)
            if not head:
                raise PeerGone()
            while len(head) < _LEN.size:
                more = self.sock.recv(_LEN.size - len(head))
                if not more:
                    raise PeerGone()
                head += more
            (length,) = _LEN.unpack(head)
            if length > MAX_MESSAGE:
                raise HandoverError(f"a message of {length} octets")
            data = b""
            while len(data) < length:
                chunk = self.sock.recv(length - len(data))
                if not chunk:
                    raise PeerGone()
                data += chunk
        except TimeoutError:
            raise HandoverError(f"no answer within {timeout:.0f} s") from None
        except OSError as exc:
            raise HandoverError(f"the hand-over socket failed: {exc.strerror}") from None
        try:
            body = json.loads(data)
            kind = Message(body.pop("kind"))
        except (ValueError, TypeError, AttributeError, KeyError):
            _close_all(fds)
            raise HandoverError("a message that is not one of the hand-over's") from None
        if kind is Message.FAILED:
            _close_all(fds)
            raise HandoverError(str(body.get("reason", "no reason given")))
        if kind is not expect:
            _close_all(fds)
            raise HandoverError(f"expected {expect.value}, got {kind.value}")
        return body, fds


@dataclass
class Inheritance:
    """What a daemon hands its successor: facts (JSON) and kernel objects (named fds)."""
    facts: dict[str, Any]
    fds: dict[str, int]

    def send(self, channel: Channel) -> None:
        names = list(self.fds)
        channel.send(Message.STATE, {"facts": self.facts, "fds": names},
                     [self.fds[name] for name in names])

    @classmethod
    def receive(cls, channel: Channel) -> Inheritance:
        body, fds = channel.recv(Message.STATE)
        names = body.get("fds", [])
        if len(names) != len(fds):
            _close_all(fds)
            raise HandoverError(f"{len(fds)} descriptors came for {len(names)} names")
        return cls(body["facts"], dict(zip(names, fds, strict=True)))

    def close(self) -> None:
        """Close the received fds (whoever takes them over duplicated what it keeps)."""
        _close_all(self.fds.values())
        self.fds = {}


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)
