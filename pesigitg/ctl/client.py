"""The status socket's client side: one request per connection (``pesigitg-ctl``, tests,
the demo)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

__all__ = ["DaemonError", "DaemonReplaced", "ask", "query"]


class DaemonError(Exception):
    """The daemon answered with an error (its reason), or was not reachable."""


class DaemonReplaced(DaemonError):
    """A restart replaced the daemon while the request waited: ask again."""


def query(path: Path, request: str, timeout: float = 5.0, method: str = "GET") -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"{method} {request}\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def ask(path: Path, endpoint: str, params: dict[str, str] | None = None,
        method: str = "GET", timeout: float = 5.0) -> Any:
    """The JSON answer of ``endpoint``; DaemonError with the daemon's reason, or with
    why it could not be asked."""
    request = endpoint + (f"?{urlencode(params)}" if params else "")
    try:
        text = query(path, request, timeout, method)
    except OSError as exc:
        raise DaemonError(f"cannot reach pesigitgd at {path}: {exc.strerror or exc}") \
            from None
    try:
        answer = json.loads(text)
    except ValueError:
        raise DaemonError(f"the daemon's answer to {endpoint} is not JSON") from None
    if isinstance(answer, dict) and "error" in answer and \
            set(answer) <= {"error", "endpoints", "retry"}:
        raise (DaemonReplaced if answer.get("retry") else DaemonError)(str(answer["error"]))
    return answer
