"""Becoming a daemon: double fork with a readiness pipe, and the pidfile.

The original process waits until the daemon says it is up (or why it is not), so
``pesigitgd`` exits 0 only once the service runs and prints start-up errors itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import sys
from pathlib import Path

from pesigitg.errors import os_error

__all__ = ["PidFile", "PidFileBusy", "check_runtime_dir", "daemonize"]


def check_runtime_dir(path: Path, what: str) -> None:
    """Refuse to keep ``what`` (the pidfile, the status socket) in a directory another
    user could write: they could plant a link there, or swap the file."""
    directory = path.parent
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise os_error(exc.errno or errno.ENOENT, f"checking the directory of the {what} "
                       f"{path}") from None
    ours = (0, os.geteuid())
    writable_by_others = bool(info.st_mode & stat.S_IWOTH) or (
        bool(info.st_mode & stat.S_IWGRP) and info.st_gid not in (0, os.getegid()))
    if writable_by_others or info.st_uid not in ours:
        raise OSError(errno.EPERM, f"the {what} {path} would be in {directory}, which other "
                      f"users can write (mode {stat.S_IMODE(info.st_mode):04o}, owner "
                      f"{info.st_uid}:{info.st_gid}): use a directory only root or the "
                      "daemon's user can write, such as /run")


class PidFileBusy(RuntimeError):
    """Another live instance holds the pidfile."""


class PidFile:
    """``/run/pesigitg/pesigitgd-IFACE.pid``, held with flock for the daemon's lifetime.

    A file nobody holds a lock on is stale (its daemon died) and is taken over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.stale_pid: int | None = None

    def acquire(self) -> None:
        check_runtime_dir(self.path, "pidfile")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
        except OSError as exc:
            hint = " (a symbolic link: refusing to follow it)" if exc.errno == errno.ELOOP \
                else ""
            raise os_error(exc.errno or errno.EIO, f"opening pidfile {self.path}",
                           hint) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"pidfile {self.path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise PidFileBusy(f"pesigitgd is already running as pid {holder} "
                              f"(pidfile {self.path})") from None
        previous = os.pread(fd, 32, 0).decode(errors="replace").strip()
        self.stale_pid = int(previous) if previous.isdigit() else None
        self.fd = fd
        self.write()

    @classmethod
    def adopt(cls, fd: int, path: Path) -> PidFile:
        """The pidfile a previous daemon handed over: the same open file description, so
        its lock carries over and stays held when that daemon exits."""
        pidfile = cls(path)
        pidfile.fd = os.dup(fd)
        return pidfile

    def write(self) -> None:
        """Record our pid (again after forking)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def forget(self) -> None:
        """Close our fd without removing the file: a successor holds it now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            if os.pread(self.fd, 32, 0).decode().strip() == str(os.getpid()):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = -1


def daemonize() -> int:
    """Double fork and setsid. Returns, in the daemon, the fd to report readiness on:
    write one line, b"ok\\n" or an error message, then close it. The original process exits with
    0 after "ok", 1 after anything else."""
    read_end, write_end = os.pipe()
    if os.fork():
        # This process only waits: let Ctrl-C through (pesigitgd blocks it at start).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        os.close(write_end)
        # One line, not end-of-file: the daemon's workers inherit the write end.
        data = b""
        while b"\n" not in data and (chunk := os.read(read_end, 4096)):
            data += chunk
        message = data.split(b"\n", 1)[0].decode(errors="replace")
        if message == "ok":
            os._exit(0)
        print(message or "pesigitgd: the daemon exited during start-up", file=sys.stderr)
        os._exit(1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return write_end
