"""What the daemon remembers beyond its configuration files: drains set at run time
(``pesigitg-ctl drain``), when each key was first seen (for ``max_key_age_days``) and
which keys it has warned about, and where its status socket is (``pesigitg-ctl list``
and ``-i`` find a socket configured elsewhere). A small JSON file next to the pidfile
(``/run/pesigitg/pesigitgd-IFACE.state``), so it survives a reload and a restart (not a
reboot: /run is a tmpfs). Written whole to a temporary file and renamed, mode 0640 in
the status socket's group (who may ask the daemon may read where to); keys appear only
as fingerprints (16 hex digits of SHA-256), never themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RuntimeState", "key_fingerprint"]

log = logging.getLogger("pesigitg.state")


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"pesigitg key age\0" + key).hexdigest()[:16]


@dataclass
class RuntimeState:
    path: Path
    drains: dict[str, bool] = field(default_factory=dict)      # address -> draining
    keys_seen: dict[str, float] = field(default_factory=dict)  # fingerprint -> first seen
    keys_warned: set[str] = field(default_factory=set)
    status_socket: str | None = None
    tokens_sealed: dict[str, int] = field(default_factory=dict)    # Retry key fingerprint
    group: int | None = None        # the file's group (the status socket's), not saved

    @classmethod
    def load(cls, path: Path) -> RuntimeState:
        """The file's state; an empty one when there is none, or it is unreadable (said
        in the log: the daemon runs on without it)."""
        state = cls(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return state
        except OSError as exc:
            log.warning("cannot read the state file %s (%s): starting without it", path,
                        exc.strerror)
            return state
        try:
            with os.fdopen(fd, encoding="utf-8") as f:
                data = json.load(f)
            state.drains = {str(a): bool(v) for a, v in data.get("drains", {}).items()}
            state.keys_seen = {str(k): float(v) for k, v in data.get("keys_seen", {}).items()}
            state.keys_warned = {str(k) for k in data.get("keys_warned", [])}
            state.tokens_sealed = {str(k): int(v)
                                   for k, v in data.get("tokens_sealed", {}).items()}
            socket = data.get("status_socket")
            state.status_socket = socket if isinstance(socket, str) else None
        except (ValueError, TypeError, AttributeError, OSError) as exc:
            log.warning("the state file %s is damaged (%s): starting without it", path, exc)
            return cls(path)
        return state

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        data = json.dumps({"drains": self.drains, "keys_seen": self.keys_seen,
                           "keys_warned": sorted(self.keys_warned),
                           "status_socket": self.status_socket,
                           "tokens_sealed": self.tokens_sealed}, sort_keys=True)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o640)
            if self.group is not None:
                os.fchown(fd, -1, self.group)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot write the state file %s: %s", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def first_seen(self, key: bytes, now: float) -> float:
        """When ``key`` was first seen (now, if never)."""
        return self.keys_seen.setdefault(key_fingerprint(key), now)

    def forget_keys_but(self, keys: list[bytes]) -> None:
        """Keys no longer configured are forgotten: one that comes back is new again."""
        keep = {key_fingerprint(k) for k in keys}
        self.keys_seen = {f: t for f, t in self.keys_seen.items() if f in keep}
        self.keys_warned &= keep
