"""Logging: stderr in the foreground and under systemd, syslog as a daemon; as text or,
with ``log_format = json``, one JSON object a line for log shippers.

Daemon mode logs to syslog when its socket answers, else to a file (``log_file``),
and says so before it detaches; a file it cannot open stops the start. Nothing is
lost silently: Python's SysLogHandler does not fail when the socket is missing, so
the socket is tried first.

The log file is opened like the pidfile: never through a symbolic link, only a regular
file with one link, in a directory only root may write, and by the user the daemon
runs as (root creates it for that user first, by descriptor, when it is missing), so
a planted link or a hard link to another file cannot make the daemon write there.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.handlers
import os
import socket
import stat
import sys
import time
from pathlib import Path

__all__ = ["JsonFormatter", "create_log_file", "default_log_file", "log_destination",
           "open_log_file", "set_log_format", "setup_logging"]

FORMAT = "%(levelname)s %(name)s: %(message)s"
# On stderr two daemons may write at once (a restart hands over): say which.
STDERR_FORMAT = "%(asctime)s [%(process)d] " + FORMAT


def default_log_file(interface: str) -> Path:
    return Path(f"/var/log/pesigitgd-{interface}.log")


def _syslog_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class JsonFormatter(logging.Formatter):
    """One JSON object a record: time (RFC 3339, UTC), level, pid, logger, message, and
    the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z", "level": record.levelname,
                 "pid": record.process, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _formatter(kind: str, log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(FORMAT if kind == "syslog" else STDERR_FORMAT)


def set_log_format(log_format: str) -> None:
    """Switch the installed handler's format (a reload may change it)."""
    for handler in logging.getLogger().handlers:
        kind = "syslog" if isinstance(handler, logging.handlers.SysLogHandler) else "stream"
        handler.setFormatter(_formatter(kind, log_format))


def log_destination(*, foreground: bool, interface: str, syslog_socket: Path | str,
                    log_file: Path | str | None = None, log_format: str = "text"
                    ) -> tuple[str, Path | None]:
    """Where logs will go: ("stderr", None), ("syslog", socket) or ("file", path)."""
    if foreground:
        return "stderr", None
    if _syslog_answers(Path(syslog_socket)):
        return "syslog", Path(syslog_socket)
    return "file", Path(log_file) if log_file else default_log_file(interface)


def _check_directory(path: Path) -> None:
    directory = path.parent
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise OSError(exc.errno, f"the directory of the log file {path}: "
                      f"{exc.strerror}") from None
    if info.st_uid != 0 or info.st_mode & stat.S_IWOTH or (
            info.st_mode & stat.S_IWGRP and info.st_gid != 0):
        raise OSError(errno.EPERM, f"the log file {path} would be in {directory}, which "
                      f"users other than root can write (mode "
                      f"{stat.S_IMODE(info.st_mode):04o}, owner {info.st_uid}:{info.st_gid}):"
                      " choose a log_file in a directory only root can write")


def create_log_file(path: Path, uid: int, gid: int) -> None:
    """As root, before switching to ``uid``: make a missing log file that user's (by
    descriptor: no name is followed); an existing one is left as it is."""
    _check_directory(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o640)
    except FileExistsError:
        return
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def open_log_file(path: Path) -> int:
    """The log file opened for appending, as whoever this process is now; OSError
    naming what is wrong (a link, not a regular file, another file's hard link, a
    directory others can write, another owner)."""
    _check_directory(path)
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the start (checked below).
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"the log file {path} is a symbolic link: refusing "
                          "to follow it") from None
        if exc.errno == errno.ENXIO:
            raise OSError(exc.errno, f"the log file {path} is not a regular file: refusing "
                          "to write it") from None
        raise OSError(exc.errno, f"cannot open the log file {path} as uid {os.geteuid()}: "
                      f"{exc.strerror}") from None
    os.set_blocking(fd, True)
    info = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode)
               else f"has {info.st_nlink} links (another file's hard link?)"
               if info.st_nlink != 1
               else f"belongs to uid {info.st_uid}" if info.st_uid not in (0, os.geteuid())
               else None)
    if problem:
        os.close(fd)
        raise OSError(errno.EPERM, f"the log file {path} {problem}: refusing to write it")
    return fd


def setup_logging(*, foreground: bool, interface: str, syslog_socket: Path | str,
                  log_file: Path | str | None = None, log_format: str = "text",
                  level: int = logging.INFO, log_fd: int | None = None) -> str:
    """Install one handler on the root logger; returns where logs go, for the user.
    ``log_fd``: the log file, already opened (:func:`open_log_file`)."""
    kind, target = log_destination(foreground=foreground, interface=interface,
                                   syslog_socket=syslog_socket, log_file=log_file)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(level)
    handler: logging.Handler
    if kind == "syslog":
        syslog = logging.handlers.SysLogHandler(
            address=str(target), facility=logging.handlers.SysLogHandler.LOG_DAEMON,
            socktype=socket.SOCK_DGRAM)
        syslog.ident = f"pesigitgd[{interface}]: "
        syslog.setFormatter(_formatter("syslog", log_format))
        handler, where = syslog, f"syslog ({target})"
    elif target is None:
        handler, where = logging.StreamHandler(sys.stderr), "stderr"
        handler.setFormatter(_formatter("stream", log_format))
    else:
        fd = open_log_file(target) if log_fd is None else log_fd
        handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
        handler.setFormatter(_formatter("stream", log_format))
        where = f"{target} (no syslog at {syslog_socket})"
    root.addHandler(handler)
    return where
