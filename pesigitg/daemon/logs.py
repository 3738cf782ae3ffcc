"""Logging: stderr in the foreground and under systemd, syslog as a daemon.

Without a syslog socket the daemon logs to a file instead and says so before it
detaches: nothing is lost silently.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys
from pathlib import Path

__all__ = ["setup_logging"]

FORMAT = "%(levelname)s %(name)s: %(message)s"
# On stderr two daemons may write at once (a restart hands over): say which.
STDERR_FORMAT = "%(asctime)s [%(process)d] " + FORMAT


def setup_logging(*, foreground: bool, interface: str, syslog_socket: Path | str,
                  level: int = logging.INFO) -> str:
    """Install one handler on the root logger; returns where logs go, for the user."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(level)
    handler: logging.Handler
    plain = logging.Formatter(STDERR_FORMAT)
    if foreground:
        handler, where = logging.StreamHandler(sys.stderr), "stderr"
        handler.setFormatter(plain)
    else:
        try:
            syslog = logging.handlers.SysLogHandler(
                address=str(syslog_socket), facility=logging.handlers.SysLogHandler.LOG_DAEMON,
                socktype=socket.SOCK_DGRAM)
            syslog.ident = f"pesigitgd[{interface}]: "
            syslog.setFormatter(logging.Formatter(FORMAT))
            handler, where = syslog, f"syslog ({syslog_socket})"
        except OSError:
            path = Path(f"/var/log/pesigitgd-{interface}.log")
            handler = logging.FileHandler(path)
            handler.setFormatter(plain)
            where = f"{path} (no syslog socket at {syslog_socket})"
    root.addHandler(handler)
    return where
