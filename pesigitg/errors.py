"""The one error model: syscall failures become ``OSError`` saying what we were doing.

Packet-level problems never raise (they are counted drops); configuration problems
raise ``ConfigError`` (added with the config parser); everything that fails in a
system call goes through :func:`os_error` so the message always names the operation.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

__all__ = ["CAP_BPF", "CAP_IPC_LOCK", "CAP_NAMES", "CAP_NET_ADMIN", "CAP_NET_RAW",
           "CAP_PERFMON", "CAP_SYS_ADMIN", "ConfigError", "failure_reason", "has_capability",
           "missing_capability_hint", "os_error"]

# linux/capability.h
CAP_IPC_LOCK = 14
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW",
             CAP_IPC_LOCK: "CAP_IPC_LOCK", CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF",
             CAP_PERFMON: "CAP_PERFMON"}


def has_capability(cap: int) -> bool:
    """Whether this process has ``cap`` in its effective set (from /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def missing_capability_hint(*needed: int) -> str:
    """`` (needs CAP_X, which this process lacks)`` or an empty string."""
    # CAP_SYS_ADMIN stands in for CAP_BPF on kernels before 5.8 and for everything here.
    if has_capability(CAP_SYS_ADMIN):
        return ""
    missing = [CAP_NAMES[cap] for cap in needed if not has_capability(cap)]
    if not missing:
        return ""
    return f" (needs {' and '.join(missing)}, which this process lacks; run as root)"


def os_error(err: int, doing: str, hint: str = "") -> OSError:
    """``OSError(err)`` whose message starts with what we were doing."""
    return OSError(err, f"{doing}: {os.strerror(err)}{hint}")


MAX_SHOWN = 80      # characters of a bad value an error quotes


class ConfigError(ValueError):
    """A configuration problem, naming the file, the line or key, and the value.

    Key material is never part of the message: callers pass ``secret=True``.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None, value: object = None, secret: bool = False) -> None:
        self.file, self.line, self.key, self.value = file, line, key, value
        self.reason = message
        where = file or "<config>"
        if line is not None:
            where += f":{line}"
        subject = ""
        if key is not None:
            subject = f" {key}"
            if value is not None:
                shown = repr(value)
                if len(shown) > MAX_SHOWN:
                    shown = shown[:MAX_SHOWN] + f"... ({len(shown)} characters)"
                subject += " = (hidden)" if secret else f" = {shown}"
            subject += ":"
        super().__init__(f"{where}:{subject} {message}")


def failure_reason(exc: BaseException) -> str:
    """What a failure says: its own words for the errors raised on purpose; for anything
    else only its kind and place (its text might quote configuration values, or keys)."""
    if isinstance(exc, (ConfigError, OSError, ValueError, RuntimeError)):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"internal error ({type(exc).__name__}{place}), a bug: please report it"
