"""Finding the pesigitgd instances on this host (``pesigitg-ctl list``): from their
pidfiles and status sockets in /run/pesigitg, and from the process table, each fact
with where it came from; a pidfile no live daemon holds and a socket nobody answers
on are flagged stale."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pesigitg.ctl.client import query
from pesigitg.paths import RUNTIME_DIR, read_status_socket

__all__ = ["Instance", "find_instances"]

_NAME = re.compile(r"^pesigitgd-(.+)\.(pid|sock)$")


@dataclass
class Instance:
    interface: str
    pid: int | None = None
    socket: Path | None = None
    pidfile: Path | None = None
    health: dict[str, Any] | None = None
    sources: dict[str, list[str]] = field(default_factory=dict)    # fact -> where from
    problems: list[str] = field(default_factory=list)

    def note(self, fact: str, source: str) -> None:
        self.sources.setdefault(fact, [])
        if source not in self.sources[fact]:
            self.sources[fact].append(source)

    @property
    def status(self) -> str:
        return str(self.health.get("status")) if self.health else "unreachable"

    def as_dict(self) -> dict[str, object]:
        return {"interface": self.interface, "pid": self.pid,
                "socket": str(self.socket) if self.socket else None,
                "pidfile": str(self.pidfile) if self.pidfile else None,
                "status": self.status,
                "uptime_s": self.health.get("uptime_s") if self.health else None,
                "sources": self.sources, "problems": self.problems}


def _daemon_processes() -> dict[int, psutil.Process]:
    """Supervisors of pesigitgd (workers, forked from them, share the command line)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
        args = proc.info["cmdline"] or []
        name = proc.info["name"] or ""
        script = any(Path(a).name == "pesigitgd" for a in args[:2])
        module = "pesigitg.daemon" in args[1:3]
        if (name == "pesigitgd" or name.startswith("python")) and (script or module):
            found[proc.info["pid"]] = proc
    return {pid: p for pid, p in found.items() if p.info["ppid"] not in found}


def _held(pidfile: Path) -> bool:
    """Whether a running daemon holds the pidfile's lock."""
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _listening_socket(proc: psutil.Process) -> Path | None:
    with contextlib.suppress(psutil.Error):
        for conn in proc.net_connections(kind="unix"):
            address = str(conn.laddr)
            if address and conn.status == psutil.CONN_LISTEN and address.endswith(".sock"):
                return Path(address)
    return None


def find_instances(runtime_dir: Path = RUNTIME_DIR) -> list[Instance]:
    by_name: dict[str, Instance] = {}
    _from_runtime_dir(runtime_dir, by_name)
    processes = _daemon_processes()
    _from_processes(processes, by_name)
    for inst in by_name.values():
        _ask(inst)
        _check(inst, processes, runtime_dir)
    return sorted(by_name.values(), key=lambda i: i.interface)


def _from_runtime_dir(runtime_dir: Path, by_name: dict[str, Instance]) -> None:
    """Pidfiles and sockets in the runtime directory, and where state files say."""
    with contextlib.suppress(OSError):
        for path in sorted(runtime_dir.iterdir()):
            match = _NAME.match(path.name)
            if match is None:
                continue
            inst = by_name.setdefault(match.group(1), Instance(match.group(1)))
            if match.group(2) == "pid":
                inst.pidfile = path
                try:
                    inst.pid = int(path.read_text().strip() or 0) or None
                    inst.note("pid", "pidfile")
                except (OSError, ValueError):
                    inst.problems.append(f"pidfile {path} unreadable")
                recorded = read_status_socket(path)
                if recorded is not None and inst.socket is None:
                    inst.socket = recorded
                    inst.note("socket", "state file")
            else:
                inst.socket = path
                inst.note("socket", "runtime directory")


def _from_processes(processes: dict[int, psutil.Process], by_name: dict[str, Instance]
                    ) -> None:
    """Running supervisors, named by the socket they listen on (or their pidfile)."""
    for pid, proc in processes.items():
        sock = _listening_socket(proc)
        match = _NAME.match(sock.name) if sock else None
        name = match.group(1) if match else next(
            (i.interface for i in by_name.values() if i.pid == pid), f"pid {pid}")
        inst = by_name.setdefault(name, Instance(name))
        if inst.pid not in (None, pid):
            inst.problems.append(f"pidfile names pid {inst.pid}, the process is pid {pid}")
        inst.pid = pid
        inst.note("pid", "process")
        if sock is not None and inst.socket is None:
            inst.socket = sock


def _ask(inst: Instance) -> None:
    """Its health and pid, from the daemon answering on its socket."""
    if inst.socket is None:
        return
    try:
        inst.health = json.loads(query(inst.socket, "/health", timeout=2.0))
        inst.note("health", "socket")
        if inst.interface.startswith("pid "):      # named by its process so far
            inst.interface = str(inst.health.get("interface", inst.interface))
        version = json.loads(query(inst.socket, "/version", timeout=2.0))
        if isinstance(version.get("pid"), int):
            if inst.pid not in (None, version["pid"]):
                inst.problems.append(f"the socket's daemon is pid {version['pid']}")
            inst.pid = version["pid"]
            inst.note("pid", "socket")
    except (OSError, ValueError):
        inst.problems.append(f"stale socket {inst.socket}: nobody answers")


def _check(inst: Instance, processes: dict[int, psutil.Process], runtime_dir: Path) -> None:
    if inst.pidfile is not None and not _held(inst.pidfile):
        inst.problems.append(f"stale pidfile {inst.pidfile}: no running daemon holds it")
    if inst.pid is not None and inst.pid not in processes:
        if not psutil.pid_exists(inst.pid):
            inst.problems.append(f"pid {inst.pid} is not running")
    elif inst.pid is not None and inst.pidfile is None:
        inst.problems.append("running without a pidfile in " + str(runtime_dir))
