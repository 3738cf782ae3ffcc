"""The worker pipe's messages: one definition for both ends, fixed binary layouts.

A worker parses hostile frames, and one that a frame subverted owns its end of the
pipe. Everything it sends is decoded here with fixed, length-bounded layouts (never
pickle): a 5-octet header (kind, body length) and a body whose size and values each
kind fixes. The supervisor's reader never blocks on a worker: it takes what the
socket has, and a message that breaks the rules (an unknown kind, a kind the worker
may not send, a wrong or too long body, a bad value) is refused with
:class:`WorkerMessageError`; the pool counts it and replaces the worker.

    supervisor -> worker   TABLE (the route table blob), STOP
    worker -> supervisor   READY (mode, CPU, recovered), FAILED (reason), SWAPPED,
                           REJECTED (reason)
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["FROM_WORKER", "MAX_REASON", "MAX_TABLE", "TO_WORKER", "Kind", "Message",
           "MessageReader", "WorkerMessageError", "encode", "failed", "ready", "read_message",
           "rejected"]

_HEAD = struct.Struct("<BI")            # kind, body octets
_READY = struct.Struct("<BiBB")         # zero-copy, CPU (-1: none), recovered, repaired
MAX_REASON = 512                        # octets of a FAILED or REJECTED reason
MAX_TABLE = 64 << 20                    # octets of a route table (far beyond the limits)
MAX_CPU = 65535
# What a new worker refused in what its predecessor left (XskSocket.repaired bits).
REPAIRS = {1: "journal", 2: "stash", 4: "rings"}


class Kind(enum.IntEnum):
    TABLE = 1           # -> worker: a route table to swap to
    STOP = 2            # -> worker: publish the last batch and exit
    READY = 3           # <- worker: it runs the loop on its queue
    FAILED = 4          # <- worker: it could not start, and why
    SWAPPED = 5         # <- worker: the loop took the last table
    REJECTED = 6        # <- worker: the table did not validate, and why


FROM_WORKER = frozenset({Kind.READY, Kind.FAILED, Kind.SWAPPED, Kind.REJECTED})
TO_WORKER = frozenset({Kind.TABLE, Kind.STOP})
# The body size each kind allows: (least, most).
_BODY = {Kind.TABLE: (1, MAX_TABLE), Kind.STOP: (0, 0), Kind.READY: (_READY.size, _READY.size),
         Kind.FAILED: (0, MAX_REASON), Kind.SWAPPED: (0, 0), Kind.REJECTED: (0, MAX_REASON)}
MAX_FROM_WORKER = _HEAD.size + max(_BODY[k][1] for k in FROM_WORKER)


class WorkerMessageError(ValueError):
    """Bytes that are not a message the other end may send; the text says why."""


@dataclass(frozen=True)
class Message:
    kind: Kind
    body: bytes

    # -- what the worker's messages say, checked ------------------------------------------

    def ready(self) -> tuple[str, int | None, bool, list[str]]:
        """READY: (mode, CPU or None, recovered, what it repaired)."""
        zero_copy, cpu, recovered, repaired = _READY.unpack(self.body)
        if zero_copy > 1 or recovered > 1 or not -1 <= cpu <= MAX_CPU \
                or repaired & ~sum(REPAIRS):
            raise WorkerMessageError(f"READY with values out of range ({zero_copy}, {cpu}, "
                                     f"{recovered}, {repaired})")
        return ("zero-copy" if zero_copy else "copy"), (None if cpu < 0 else cpu), \
            bool(recovered), [name for bit, name in REPAIRS.items() if repaired & bit]

    def reason(self) -> str:
        """FAILED, REJECTED: the reason, as text fit for a log line (no control
        characters, invalid UTF-8 replaced)."""
        text = self.body.decode("utf-8", errors="replace")
        return "".join(c if c.isprintable() else "?" for c in text)


def encode(kind: Kind, body: bytes = b"") -> bytes:
    least, most = _BODY[kind]
    if not least <= len(body) <= most:
        raise ValueError(f"a {kind.name} body of {len(body)} octets ({least}..{most})")
    return _HEAD.pack(kind, len(body)) + body


def ready(mode: str, cpu: int | None, recovered: bool, repaired: int = 0) -> bytes:
    return encode(Kind.READY, _READY.pack(mode == "zero-copy", -1 if cpu is None else cpu,
                                          recovered, repaired))


def _text(text: str) -> bytes:
    data = text.encode("utf-8", errors="replace")
    return data[:MAX_REASON].decode("utf-8", errors="ignore").encode()


def failed(reason: str) -> bytes:
    return encode(Kind.FAILED, _text(reason))


def rejected(reason: str) -> bytes:
    return encode(Kind.REJECTED, _text(reason))


def _check_head(kind_value: int, length: int, allowed: frozenset[Kind]) -> Kind:
    try:
        kind = Kind(kind_value)
    except ValueError:
        raise WorkerMessageError(f"unknown message kind {kind_value}") from None
    if kind not in allowed:
        raise WorkerMessageError(f"a {kind.name} message, which this end never receives")
    least, most = _BODY[kind]
    if not least <= length <= most:
        raise WorkerMessageError(f"a {kind.name} message of {length} octets "
                                 f"(allowed {least}..{most})")
    return kind


class MessageReader:
    """The supervisor's decoder of one worker's byte stream: feed it what the socket
    had, take the whole messages. It holds at most one message's worth of octets and
    raises WorkerMessageError at the first octet that breaks the rules."""

    def __init__(self, allowed: frozenset[Kind] = FROM_WORKER) -> None:
        self.allowed = allowed
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Message]:
        """The whole messages ``data`` completes, one by one, so that each is carried
        out before a later octet can break the rules."""
        self._buffer += data
        while len(self._buffer) >= _HEAD.size:
            kind_value, length = _HEAD.unpack_from(self._buffer)
            kind = _check_head(kind_value, length, self.allowed)
            end = _HEAD.size + length
            if len(self._buffer) < end:
                break
            message = Message(kind, bytes(self._buffer[_HEAD.size:end]))
            del self._buffer[:end]
            yield message


def read_message(sock: socket.socket, allowed: frozenset[Kind]) -> Message | None:
    """The worker's blocking read of the next message from the supervisor; None at the
    end of the stream."""
    head = _read_exactly(sock, _HEAD.size)
    if head is None:
        return None
    kind_value, length = _HEAD.unpack(head)
    kind = _check_head(kind_value, length, allowed)
    body = _read_exactly(sock, length) if length else b""
    if body is None:
        return None
    return Message(kind, body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
