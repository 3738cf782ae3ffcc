"""The status socket: ``METHOD <path>`` on a Unix socket, one request per connection.

What it serves is a table of :class:`Endpoint` rows (daemon/api.py has the daemon's).
Reads (``GET``) answer JSON (``/metrics``: Prometheus text). An endpoint that writes
(changes the daemon's state, ``POST``) is refused unless the peer (SO_PEERCRED) is
root, the daemon's own user or in the socket's group, and each is logged with the
peer's uid and pid. A request line that
ends in ``HTTP/1.x`` gets an HTTP/1.0 response, so ``curl --unix-socket`` works too.
Requests are bounded in size and time; anything malformed gets an error answer, never
a crash. A connection has one deadline for its whole request (not one per line: a
client trickling header lines cannot hold it), at most MAX_CONNECTIONS are served at
once (the next ones are told so and closed), and closing the server aborts whatever
is still open after a short grace, so a slow client never holds up a stop or a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pesigitg.daemon.daemonize import check_runtime_dir

__all__ = ["Endpoint", "Peer", "Refused", "Request", "RequestServer", "Response",
           "StatusServer"]

log = logging.getLogger("pesigitg.status")

MAX_REQUEST = 1024
MAX_HEADERS = 8192
IO_TIMEOUT = 5.0        # seconds to read a whole request, and again to write the answer
MAX_CONNECTIONS = 64    # served at once; beyond, an answer that says so
BUSY_READ = 0.5        # seconds to read what a connection over the cap sent, then 503
ACCEPTED_SETTLE = 0.05  # seconds for connections accepted as serving stops to arrive
CLOSE_GRACE = 1.0       # seconds the requests under way get to finish when serving stops
_UCRED = struct.Struct("3i")


class Refused(Exception):
    """A request the daemon will not carry out: an HTTP status and the reason;
    ``retry``: asking again will reach the daemon that can (a restart replaced this
    one while the request waited)."""

    def __init__(self, status: int, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.retry = status, message, retry


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} pid {self.pid}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    peer: Peer


@dataclass
class Response:
    body: Any                       # JSON-able, or str for text
    status: int = 200
    content_type: str = "application/json"
    after: Callable[[], None] | None = field(default=None, repr=False)  # once sent


Handler = Callable[[Any, Request], Awaitable[Response]]     # (the control, the request)


@dataclass(frozen=True)
class Endpoint:
    """One row of the status socket's table."""
    method: str                 # "GET" or "POST"
    path: str
    doc: str                    # for ``GET /`` and the man page
    handler: Handler
    writes: bool = False        # changes the daemon's state: only for the socket's group

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
            413: "Request Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


class RequestServer:
    """Serves ``endpoints`` on a listening socket, each handler called with ``control``
    and the request: the request's bounds, deadline and connection cap, and the
    orderly close. :class:`StatusServer` (Unix) and the metrics listeners (TCP,
    daemon/metrics_listen.py) are made of it. ``http_only``: a request line without
    ``HTTP/1.x`` is refused."""

    http_only = False
    max_connections = MAX_CONNECTIONS

    def __init__(self, endpoints: Iterable[Endpoint], control: Any = None) -> None:
        self.control = control
        self.endpoints = {(e.method, e.path): e for e in endpoints}
        self._server: asyncio.base_events.Server | None = None
        self._listener: socket.socket | None = None
        self._answering: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # being served

    @property
    def listener(self) -> socket.socket | None:
        return self._listener

    @property
    def open_connections(self) -> int:
        """Connections being served now."""
        return len(self._answering)

    def adopt(self, fd: int) -> None:
        """Serve on a listening socket handed over by the previous daemon (a duplicate)."""
        self._listener = socket.socket(fileno=os.dup(fd))

    async def _start(self, listener: socket.socket) -> asyncio.base_events.Server:
        return await asyncio.start_server(self._serve, sock=listener, limit=MAX_REQUEST)

    async def serve(self) -> None:
        assert self._listener is not None
        self._server = await self._start(self._listener)

    async def close(self) -> None:
        """Stop serving. Requests already accepted are answered first (up to
        CLOSE_GRACE): a health check asked while a restart hands over must not get an
        empty answer."""
        if self._server is not None:
            # No more accepts; connections the loop accepted just now reach _serve a
            # few loop turns later (a task sets up their transport), and only while the
            # server is open (Python 3.11 drops, unanswered, a connection whose
            # transport comes after Server.close): let them in first.
            if self._listener is not None:
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            await asyncio.sleep(ACCEPTED_SETTLE)
            self._server.close()
            # (Python 3.11's wait_closed does not wait for the connections.)
            current = asyncio.current_task()
            waiting = [t for t in self._answering if t is not current]
            if waiting:
                await asyncio.wait(waiting, timeout=CLOSE_GRACE)
            # Whatever is still open (a client that sends nothing, or reads nothing) is
            # cut: Python >= 3.12.1's wait_closed would wait for it. Its socket is closed
            # once the loop has run the abort, before its task ends: wait for that.
            cut = []
            for task, writer in list(self._answering.items()):
                if task is not current and not task.done():
                    writer.transport.abort()
                    task.cancel()
                    cut.append(task)
            if cut:
                await asyncio.wait(cut, timeout=CLOSE_GRACE)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        elif self._listener is not None:
            self._listener.close()
        self._listener = None

    def _allowed(self, peer: Peer) -> bool:
        """Whether ``peer`` may change the daemon's state (no one, unless a subclass
        knows who asks)."""
        return False

    async def _answer(self, request: Request) -> Response:
        endpoint = self.endpoints.get((request.method, request.path))
        if endpoint is None:
            if any(path == request.path for _, path in self.endpoints):
                raise Refused(405, f"method {request.method} not allowed on {request.path}")
            if request.method not in {m for m, _ in self.endpoints}:
                raise Refused(405, f"method {request.method} not supported")
            raise Refused(404, f"no such endpoint: {request.path}")
        if endpoint.writes:
            if not self._allowed(request.peer):
                log.warning("refused %s %s from %s: not root nor in the socket's group",
                            request.method, request.path, request.peer)
                raise Refused(403, "only root or members of the socket's group may "
                                   "change the daemon's state")
            log.info("%s %s from %s", request.method, request.path, request.peer)
        return await endpoint.handler(self.control, request)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._answering) >= self.max_connections:
            # What the client sent already is read first (briefly): a TCP socket closed
            # with it unread is reset, and the client would never read the answer.
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(BUSY_READ):
                    await reader.read(MAX_HEADERS)
            await self._send(writer, Response({"error": f"{self.max_connections} "
                                               "connections are open already: try again "
                                               "later"}, 503), self.http_only)
            return
        self._answering[task] = writer
        try:
            await self._answer_connection(reader, writer)
        finally:
            self._answering.pop(task, None)

    async def _answer_connection(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        said: dict[str, bool] = {"http": False}     # known once the request line is in
        response: Response
        try:
            try:
                async with asyncio.timeout(IO_TIMEOUT):
                    line = await self._read_request(reader, said)
            except TimeoutError:
                raise Refused(408, f"no whole request within {IO_TIMEOUT:.0f} s") from None
            if line is None:
                writer.close()
                return
            parts = line.split()
            if len(parts) not in (2, 3) or (len(parts) == 3 and not said["http"]):
                raise Refused(400, "expected 'GET <path>' or 'POST <path>'")
            if self.http_only and not said["http"]:
                raise Refused(400, "expected 'GET <path> HTTP/1.1'")
            path, _, query = parts[1].partition("?")
            response = await self._answer(Request(parts[0], path, query,
                                                  _peer(writer.get_extra_info("socket"))))
        except Refused as refused:
            response = Response({"error": refused.message,
                                 "endpoints": sorted({p for _, p in self.endpoints}),
                                 **({"retry": True} if refused.retry else {})},
                                refused.status)
        except Exception:  # a bug must not take the daemon down: answer and log it
            log.exception("status request failed")
            response = Response({"error": "internal error, see the daemon's log"}, 500)
        await self._send(writer, response, said["http"] or self.http_only)
        if response.after is not None:
            response.after()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, http: bool) -> None:
        """Write the answer and close, within IO_TIMEOUT (a client that does not read
        is cut off)."""
        body = response.body
        text_body = body if isinstance(body, str) else \
            json.dumps(body, indent=2, sort_keys=True) + "\n"
        data = text_body.encode()
        if http:
            head = (f"HTTP/1.0 {response.status} {_REASONS[response.status]}\r\n"
                    f"Content-Type: {response.content_type}\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
            data = head.encode() + data
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                writer.write(data)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader, said: dict[str, bool]
                            ) -> str | None:
        """The request line (None: the client sent nothing), with any HTTP headers read
        and bounded; ``said["http"]`` tells, as soon as the line is in, whether the
        answer is HTTP."""
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise Refused(413, f"request line longer than {MAX_REQUEST} octets") from None
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
            if not line:
                return None
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            raise Refused(400, "request is not ASCII") from None
        parts = text.split()
        said["http"] = http = len(parts) == 3 and parts[2] in ("HTTP/1.0", "HTTP/1.1")
        seen = 0
        while http:
            try:
                header = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                break
            except asyncio.LimitOverrunError:
                raise Refused(413, "header line too long") from None
            seen += len(header)
            if seen > MAX_HEADERS:
                raise Refused(413, "headers too long")
            if header in (b"\r\n", b"\n"):
                break
        return text


class StatusServer(RequestServer):
    """The status socket: a Unix socket at ``path``; who may change the daemon's state
    is root, the daemon's own user, or the socket's group (``group``)."""

    def __init__(self, path: Path, endpoints: Iterable[Endpoint], control: Any = None,
                 group: int | None = None) -> None:
        super().__init__(endpoints, control)
        self.path = path
        self.group = group

    def bind(self) -> None:
        """Create the socket (mode 0660, in a directory no other user can write) or refuse
        if another daemon answers there."""
        check_runtime_dir(self.path, "status socket")
        if os.path.lexists(self.path) and not is_socket(self.path):
            raise OSError(f"status socket {self.path} exists and is not a socket: remove it "
                          "or choose another status_socket")
        if self.path.exists():
            # Another daemon answering there? Then refuse; else it is a leftover.
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()
            else:
                raise OSError(f"status socket {self.path} is in use by another process")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        if self.group is not None:
            # The socket's group decides who may query (mode 0660). Not following a
            # link: in a directory only we can write, there is none, but still.
            os.chown(self.path, -1, self.group, follow_symlinks=False)
        listener.listen(64)
        self._listener = listener

    async def _start(self, listener: socket.socket) -> asyncio.base_events.Server:
        return await asyncio.start_unix_server(self._serve, sock=listener, limit=MAX_REQUEST)

    async def close(self, unlink: bool = True) -> None:
        """Stop serving (see RequestServer.close); remove the socket only if ``unlink``
        (not when handed over)."""
        held = self._listener is not None
        await super().close()
        if held and unlink:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _allowed(self, peer: Peer) -> bool:
        if peer.uid in (0, os.geteuid()):
            return True
        try:
            group = os.stat(self.path).st_gid
        except OSError:
            return False
        return peer.gid == group or group in _groups(peer.pid)


def _peer(sock: socket.socket | None) -> Peer:
    if sock is None or sock.family != socket.AF_UNIX:
        return Peer(0, -1, -1)
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
    return Peer(pid, uid, gid)


def _groups(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def is_socket(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    return False

