"""Logging: stderr in the foreground and under systemd, syslog as a daemon; as text or,
with ``log_format = json``, one JSON object a line for log shippers.

Daemon mode logs to syslog when its socket answers, else to a file (``log_file``),
and says so before it detaches; a file it cannot open stops the start. Nothing is
lost silently: Python's SysLogHandler does not fail when the socket is missing, so
the socket is tried first.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
import sys
import time
from pathlib import Path

__all__ = ["JsonFormatter", "default_log_file", "log_destination", "set_log_format",
           "setup_logging"]

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
    """Where logs will go: ("stderr", None), ("syslog", socket) or ("file", path). A
    file is opened once here, so one that cannot be written stops the start (OSError)."""
    if foreground:
        return "stderr", None
    if _syslog_answers(Path(syslog_socket)):
        return "syslog", Path(syslog_socket)
    path = Path(log_file) if log_file else default_log_file(interface)
    with open(path, "a", encoding="utf-8"):
        pass
    return "file", path


def setup_logging(*, foreground: bool, interface: str, syslog_socket: Path | str,
                  log_file: Path | str | None = None, log_format: str = "text",
                  level: int = logging.INFO) -> str:
    """Install one handler on the root logger; returns where logs go, for the user."""
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
    else:
        handler = logging.StreamHandler(sys.stderr) if kind == "stderr" \
            else logging.FileHandler(str(target))
        handler.setFormatter(_formatter("stream", log_format))
        where = "stderr" if kind == "stderr" else f"{target} (no syslog at {syslog_socket})"
    root.addHandler(handler)
    return where
