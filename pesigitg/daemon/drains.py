"""Draining at run time (``pesigitg-ctl drain``/``undrain``) and knowing when a draining
backend is done.

An override, kept in the runtime state file, wins over ``draining`` in lb.toml, so it
survives a reload and a restart; ``/config`` says which of the two a backend's state
comes from. A draining backend whose CID-routed frame count has not moved for
``drain_quiet_s`` is "fully drained, safe to remove": logged once, shown in ``/config``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pesigitg.daemon.state import RuntimeState

__all__ = ["DrainWatch", "Drains"]

log = logging.getLogger("pesigitg.drains")


class Drains:
    """The overrides, on top of the file's ``draining`` flags."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    def draining(self, address: str, in_file: bool) -> bool:
        return self.state.drains.get(address, in_file)

    def source(self, address: str, in_file: bool) -> str | None:
        """"override" or "file" for a draining (or undrained-by-override) backend."""
        if address in self.state.drains:
            return "override"
        return "file" if in_file else None

    def change(self, address: str, draining: bool, in_file: bool) -> bool:
        """Drain (or undrain) ``address``; True when that changed anything. An override
        that agrees with the file is dropped: the file speaks for itself again. The
        caller saves the state."""
        before = self.draining(address, in_file)
        if draining == in_file:
            self.state.drains.pop(address, None)
        else:
            self.state.drains[address] = draining
        return before != draining

    def forget_but(self, addresses: set[str]) -> list[str]:
        """Drop overrides of backends no longer configured; those dropped (the caller
        saves the state)."""
        gone = sorted(a for a in self.state.drains if a not in addresses)
        for address in gone:
            del self.state.drains[address]
        return gone


@dataclass
class _Watched:
    cid_frames: int
    since: float                        # monotonic: when the count last moved
    drained_at: float | None = None     # wall clock: when it was found drained


@dataclass
class DrainWatch:
    """Per draining backend, whether CID-routed frames still reach it."""
    quiet_s: float
    watched: dict[str, _Watched] = field(default_factory=dict)

    def update(self, draining: dict[str, int], now: float | None = None) -> list[str]:
        """``draining``: each draining backend's CID-routed frame count so far. Returns
        the backends found fully drained by this call (each once)."""
        now = time.monotonic() if now is None else now
        self.watched = {a: w for a, w in self.watched.items() if a in draining}
        found = []
        for address, count in draining.items():
            w = self.watched.get(address)
            if w is None or count != w.cid_frames:
                self.watched[address] = _Watched(count, now)
                continue
            if w.drained_at is None and now - w.since >= self.quiet_s:
                w.drained_at = time.time()
                found.append(address)
        for address in found:
            log.warning("backend %s is fully drained, safe to remove: no CID-routed frame "
                        "for %.0f s", address, self.quiet_s)
        return found

    def drained_since(self, address: str) -> float | None:
        w = self.watched.get(address)
        return None if w is None else w.drained_at
