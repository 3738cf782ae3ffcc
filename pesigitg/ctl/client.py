"""The status socket's client side: one ``GET`` per connection (``pesigitg-ctl``, tests,
the demo)."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["query"]


def query(path: Path, request: str, timeout: float = 5.0, method: str = "GET") -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"{method} {request}\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()
