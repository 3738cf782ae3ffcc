"""The status socket: ``GET <path>`` on a Unix socket, one request per connection.

Answers are JSON (``/metrics``: Prometheus text). A request line that ends in
``HTTP/1.x`` gets an HTTP/1.0 response, so ``curl --unix-socket`` works too. Requests
are bounded in size and time; anything malformed gets an error answer, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ENDPOINTS", "StatusServer", "StatusSource", "prometheus"]

log = logging.getLogger("pesigitg.daemon.status")

MAX_REQUEST = 1024
MAX_HEADERS = 8192
IO_TIMEOUT = 5.0
ENDPOINTS = {
    "/": "this list",
    "/health": "ok or degraded, uptime, workers alive/expected",
    "/stats": "counters: summed, per worker, and the XDP program's verdicts",
    "/config": "daemon settings, QUIC-LB configs (no keys), servers, fallback pool",
    "/metrics": "Prometheus text exposition",
}


class StatusSource(Protocol):
    def health(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def config(self) -> dict[str, Any]: ...
    def metrics(self) -> str: ...


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Request Too Large", 500: "Internal Server Error"}


class StatusServer:
    def __init__(self, path: Path, source: StatusSource) -> None:
        self.path = path
        self.source = source
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
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
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        """Stop serving and remove the socket, only if this server created it."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _answer(self, path: str) -> tuple[str, str]:
        handlers: dict[str, Callable[[], Any]] = {
            "/": lambda: {"endpoints": ENDPOINTS},
            "/health": self.source.health, "/stats": self.source.stats,
            "/config": self.source.config,
        }
        if path == "/metrics":
            return self.source.metrics(), "text/plain; version=0.0.4"
        if path not in handlers:
            raise _BadRequest(404, f"no such endpoint: {path}")
        return json.dumps(handlers[path](), indent=2, sort_keys=True) + "\n", \
            "application/json"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = False
        try:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), IO_TIMEOUT)
            except asyncio.LimitOverrunError:
                raise _BadRequest(413, f"request line longer than {MAX_REQUEST} octets") \
                    from None
            except asyncio.IncompleteReadError as exc:
                line = exc.partial
                if not line:
                    return
            except TimeoutError:
                raise _BadRequest(408, f"no request within {IO_TIMEOUT:.0f} s") from None
            try:
                text = line.decode("ascii").strip()
            except UnicodeDecodeError:
                raise _BadRequest(400, "request is not ASCII") from None
            parts = text.split()
            http = len(parts) == 3 and parts[2] in ("HTTP/1.0", "HTTP/1.1")
            if http:
                await self._skip_headers(reader)
            if len(parts) not in (2, 3) or (len(parts) == 3 and not http):
                raise _BadRequest(400, "expected 'GET <path>'")
            if parts[0] != "GET":
                raise _BadRequest(405, f"method {parts[0]} not supported, only GET")
            path = parts[1].split("?", 1)[0]
            body, ctype = self._answer(path)
            status = 200
        except _BadRequest as bad:
            status, ctype = bad.status, "application/json"
            body = json.dumps({"error": bad.message, "endpoints": sorted(ENDPOINTS)}) + "\n"
        except Exception:  # a bug must not take the daemon down: answer and log it
            log.exception("status request failed")
            status, ctype = 500, "application/json"
            body = json.dumps({"error": "internal error, see the daemon's log"}) + "\n"
        data = body.encode()
        if http:
            head = (f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
            data = head.encode() + data
        with contextlib.suppress(OSError, TimeoutError):
            writer.write(data)
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
        writer.close()

    @staticmethod
    async def _skip_headers(reader: asyncio.StreamReader) -> None:
        seen = 0
        while True:
            try:
                header = await asyncio.wait_for(reader.readuntil(b"\n"), IO_TIMEOUT)
            except (asyncio.IncompleteReadError, TimeoutError):
                return
            except asyncio.LimitOverrunError:
                raise _BadRequest(413, "header line too long") from None
            seen += len(header)
            if seen > MAX_HEADERS:
                raise _BadRequest(413, "headers too long")
            if header in (b"\r\n", b"\n"):
                return


def _escape(value: object) -> str:
    # Label values escape backslash, double quote and newline (exposition format).
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def prometheus(families: Iterable[tuple[str, str, str, list[tuple[dict[str, object], float]]]]
               ) -> str:
    """Text exposition format 0.0.4: (name, type, help, [(labels, value)]) per family."""
    out = []
    for name, kind, help_text, samples in families:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = int(value) if float(value).is_integer() else value
            out.append(f"{name}{_labels(labels)} {number}")
    return "\n".join(out) + "\n"
