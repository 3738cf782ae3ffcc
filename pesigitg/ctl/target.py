"""Which daemon a command talks to: ``-s SOCKET``, ``-i IFACE`` (its socket in the runtime
directory, or where its state file says), or the only one on this host."""

from __future__ import annotations

import argparse
from pathlib import Path

from pesigitg.paths import RUNTIME_DIR, read_status_socket

__all__ = ["Usage", "interface_socket", "only_instance", "socket_path"]


class Usage(Exception):
    """A usage error: the message, exit status 2."""


def socket_path(args: argparse.Namespace) -> Path:
    if args.status_socket:
        return Path(args.status_socket)
    if args.interface:
        return interface_socket(args.runtime_dir, args.interface)
    found = only_instance(args.runtime_dir)
    if found is None:
        raise Usage("give the daemon's interface (-i IFACE) or status socket (-s PATH): "
                    f"there is not exactly one pesigitgd with its files in "
                    f"{args.runtime_dir}")
    return found


def interface_socket(runtime_dir: Path, interface: str) -> Path:
    """The status socket of the daemon on ``interface``: in the runtime directory, or
    where its state file says (a status_socket configured elsewhere)."""
    default = runtime_dir / f"pesigitgd-{interface}.sock"
    if default.exists():
        return default
    return read_status_socket(runtime_dir / f"pesigitgd-{interface}.pid") or default


def only_instance(runtime_dir: Path = RUNTIME_DIR) -> Path | None:
    """The status socket of the one pesigitgd on this host, if there is exactly one."""
    sockets = set(runtime_dir.glob("pesigitgd-*.sock"))
    for pidfile in runtime_dir.glob("pesigitgd-*.pid"):
        if not pidfile.with_suffix(".sock").exists():
            recorded = read_status_socket(pidfile)
            if recorded is not None:
                sockets.add(recorded)
    return sockets.pop() if len(sockets) == 1 else None
