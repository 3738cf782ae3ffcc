"""Where pesigitgd keeps its runtime files, importable without the daemon's modules:
``pesigitg-ctl health`` runs several times a second under a BGP speaker, and each run's
start-up is most of its cost."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["RUNTIME_DIR", "read_status_socket", "state_path"]

# pesigitgd creates it, owned by the user it runs as (systemd's
# RuntimeDirectory=pesigitg does the same).
RUNTIME_DIR = Path("/run/pesigitg")


def state_path(pidfile: Path) -> Path:
    """The state file that goes with ``pidfile`` (daemon/state.py)."""
    return pidfile.with_name(pidfile.name.removesuffix(".pid") + ".state")


def read_status_socket(pidfile: Path) -> Path | None:
    """Where the daemon of ``pidfile`` answers, from its state file (None: unknown)."""
    try:
        fd = os.open(state_path(pidfile), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as f:
            socket = json.load(f).get("status_socket")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(socket) if isinstance(socket, str) and socket.startswith("/") else None
