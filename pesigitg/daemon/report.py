"""What the daemon tells: /health, /stats, /config, /metrics, and the USR1/USR2 logs.

Every view is built from one :class:`Snapshot` of the daemon's state, taken by the
supervisor when asked, so the status socket, the Prometheus exposition and the signal
dumps always agree. Counter names and their meanings come from the contract
(``COUNTER_FAMILIES``). Keys are never shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pesigitg._fastpath import CNT_CID_ROUTED, CNT_FORWARDED, COUNTER_NAMES
from pesigitg.daemon.keyages import KeyAge
from pesigitg.routing.routes import CompiledRoutes

__all__ = ["BackendView", "KernelView", "ReloadView", "Report", "Snapshot", "WorkerView",
           "tier_totals"]

log = logging.getLogger("pesigitg")


@dataclass(frozen=True)
class WorkerView:
    index: int
    queue: int
    cpu: int | None
    alive: bool
    pid: int | None
    mode: str
    restarts: int
    counters: dict[str, int]
    frames: dict[str, Any] = field(default_factory=dict)    # where its UMEM frames are
    messages_refused: int = 0           # pipe messages refused (the worker was replaced)
    state_repairs: int = 0              # starts that refused a predecessor's UMEM state


@dataclass(frozen=True)
class BackendView:
    address: str
    mac: bytes | None
    mac_source: str         # "static", "neighbour" or "unresolved"
    up: bool                # traffic may go there (see HealthState.usable)
    health: str             # "up (probed)", "down (probed)", or what is assumed
    last_check: str | None
    draining: bool
    in_pool: bool
    draining_source: str | None = None  # "file", "override" (pesigitg-ctl drain), or None
    drained_since: float | None = None  # wall clock: fully drained since
    forwarded: int = 0                  # frames sent to it
    cid_routed: int = 0                 # of which routed by their CID
    transitions: int = 0                # health changes (up <-> down)
    xdp_forwarded: int = 0              # of forwarded, by the kernel tier (XDP_TX)


@dataclass(frozen=True)
class ReloadView:
    """Reloads since the daemon started (a restart carries them on)."""
    succeeded: int = 0
    failed: int = 0
    last_at: float | None = None        # wall clock of the last one
    last_ok: bool | None = None
    last_error: str | None = None       # why the last one failed


@dataclass(frozen=True)
class KernelView:
    """What the kernel objects say of themselves (daemon/kernel.py), for a snapshot."""
    workers: list[WorkerView] = field(default_factory=list)
    xdp_attached: bool = False
    xdp_mode: str | None = None
    xdp_attach: str | None = None       # "link" or "netlink"
    xdp_counters: dict[str, int] = field(default_factory=dict)
    steering: dict[str, list[Any]] = field(default_factory=dict)  # the XDP maps' ports, VIPs
    backend_counts: dict[int, tuple[int, int]] = field(default_factory=dict)  # per slot
    handing_over: bool = False          # workers stopped for a successor's
    tier: dict[str, Any] = field(default_factory=dict)      # TierChoice.describe()
    tier_slots: dict[int, int] = field(default_factory=dict)    # kernel tier, per slot
    tier_configs: list[int] = field(default_factory=list)       # and per config id


@dataclass(frozen=True)
class Snapshot:
    """The daemon's state at one moment, everything a report shows."""
    version: str
    interface: str
    uptime: float
    ports: tuple[int, ...]
    workers: list[WorkerView]
    xdp_attached: bool
    xdp_mode: str | None
    xdp_attach: str | None              # "link" or "netlink"
    xdp_counters: dict[str, int]
    daemon: dict[str, object]           # DaemonConfig.describe()
    routes: dict[str, Any]              # RouteConfig.describe()
    servers: list[dict[str, Any]]       # (config id, server id, address) per server
    backends: list[BackendView] = field(default_factory=list)
    if_mac: bytes = bytes(6)
    steering: dict[str, list[Any]] = field(default_factory=dict)  # what the XDP maps hold
    sources: dict[str, Any] = field(default_factory=dict)   # Sources.describe()
    keys: tuple[KeyAge, ...] = ()       # every key's age (never the key)
    table_digest: str = ""              # CompiledRoutes.digest: equal where decisions are
    fingerprint: str = ""               # routing_fingerprint: equal where configs agree
    reloads: ReloadView = field(default_factory=ReloadView)
    tier: dict[str, Any] = field(default_factory=dict)      # TierChoice.describe()
    tier_configs: list[int] = field(default_factory=list)   # kernel tier: per config id
    handing_over: bool = False          # a restart: the successor takes the queues over
    retry_keys: list[dict[str, Any]] = field(default_factory=list)  # KeyUse.describe()
    key_warnings: list[str] = field(default_factory=list)   # keys near their token limit
    table: CompiledRoutes | None = None     # the route table the workers have

    @property
    def pool(self) -> list[str]:
        return sorted(b.address for b in self.backends if b.in_pool)

    def backend(self, address: str) -> BackendView:
        return next(b for b in self.backends if b.address == address)


def _total(s: Snapshot) -> dict[str, int]:
    """The balancer's counters: the workers' summed, with what the kernel tier forwarded
    (forwarded, cid_routed_N; rx stays what reached the workers)."""
    total = {name: sum(w.counters.get(name, 0) for w in s.workers) for name in COUNTER_NAMES}
    for name, n in tier_totals(s).items():
        total[name] += n
    return total


def tier_totals(s: Snapshot) -> dict[str, int]:
    """What the kernel tier forwarded, under the workers' counter names."""
    per_config = {CNT_CID_ROUTED[c]: n for c, n in enumerate(s.tier_configs)}
    return {CNT_FORWARDED: sum(s.tier_configs), **per_config}


def _reload(r: ReloadView) -> dict[str, object] | None:
    if r.last_at is None:
        return None
    return {"ok": r.last_ok, "at": r.last_at, "error": r.last_error,
            "succeeded": r.succeeded, "failed": r.failed}


def _fmt(counters: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counters.items() if v) or "all zero"


class Report:
    """The status socket's source: every answer from a fresh snapshot."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def status_line(self) -> str:
        s = self.snapshot()
        alive = sum(w.alive for w in s.workers)
        up = sum(b.up for b in s.backends)
        return (f"{s.interface}: {alive}/{len(s.workers)} workers, "
                f"ports {','.join(map(str, s.ports))}, "
                f"{len(s.routes['configs'])} QUIC-LB config(s), "
                f"{up}/{len(s.backends)} backends up, fallback pool {len(s.pool)}")

    # -- the status endpoints ---------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``down``: nothing can be forwarded (no XDP, no worker, or no backend that is up
        with a known MAC). ``degraded``: something is missing (a worker, a backend, the
        fallback pool), or a restart is handing the queues over (frames wait in the rings
        for the successor's workers, none is lost: not down). ``ok``: every worker alive,
        every backend up. ``reasons`` say why."""
        s = self.snapshot()
        alive = sum(w.alive for w in s.workers)
        usable = [b for b in s.backends if b.up and b.mac is not None]
        handing_over = s.handing_over and alive < len(s.workers)
        down = [why for why, bad in (
            ("XDP is not attached", not s.xdp_attached),
            ("no worker is running", alive == 0 and not handing_over),
            ("no backend is up with a known MAC", not usable)) if bad]
        missing = [why for why, bad in (
            ("a restart is handing the queues to the new daemon; frames wait in the rings",
             handing_over),
            (f"{len(s.workers) - alive} of {len(s.workers)} workers are not running",
             alive < len(s.workers) and not handing_over),
            (f"{len(s.backends) - len(usable)} of {len(s.backends)} backends are down or "
             "unresolved", len(usable) < len(s.backends)),
            ("the fallback pool is empty: new connections have nowhere to go",
             not s.pool)) if bad] + s.key_warnings
        status = "down" if down else "degraded" if missing else "ok"
        return {"status": status, "reasons": down + missing, "version": s.version,
                "interface": s.interface, "uptime_s": round(s.uptime, 3),
                "workers": {"alive": alive, "expected": len(s.workers)},
                "xdp": {"attached": s.xdp_attached, "mode": s.xdp_mode,
                        "attach": s.xdp_attach, "kernel_tier": s.tier},
                "backends": {"up": sum(b.up for b in s.backends), "total": len(s.backends),
                             "fallback_pool": len(s.pool)},
                "retry_keys": s.retry_keys, "fingerprint": s.fingerprint,
                "last_reload": _reload(s.reloads)}

    def stats(self) -> dict[str, Any]:
        s = self.snapshot()
        workers = [{"worker": w.index, "queue": w.queue, "cpu": w.cpu, "alive": w.alive,
                    "pid": w.pid, "mode": w.mode, "restarts": w.restarts,
                    "messages_refused": w.messages_refused,
                    "state_repairs": w.state_repairs, "counters": w.counters,
                    "frames": w.frames} for w in s.workers]
        backends = {b.address: {"forwarded": b.forwarded, "cid_routed": b.cid_routed,
                                "kernel_tier": b.xdp_forwarded} for b in s.backends}
        return {"total": _total(s), "workers": workers, "xdp": s.xdp_counters,
                "kernel_tier": tier_totals(s), "backends": backends}

    def totals(self) -> dict[str, int]:
        return _total(self.snapshot())

    def config(self) -> dict[str, Any]:
        s = self.snapshot()
        servers = []
        for server in s.servers:
            b = s.backend(server["address"])
            servers.append({**server, "mac": b.mac.hex(":") if b.mac else None,
                            "mac_source": b.mac_source, "health": b.health,
                            "last_check": b.last_check, "draining": b.draining,
                            "draining_source": b.draining_source,
                            "fully_drained_since": b.drained_since})
        return {"daemon": s.daemon, "routes": s.routes, "servers": servers,
                "fallback_pool": s.pool, "interface_mac": s.if_mac.hex(":"),
                "xdp_mode": s.xdp_mode, "steering": s.steering, "sources": s.sources,
                "kernel_tier": s.tier,
                "key_ages_days": {k.what: round(k.age_days, 2) for k in s.keys},
                "route_table": {"digest": s.table_digest, "fingerprint": s.fingerprint}}

    # -- signal dumps -------------------------------------------------------------------

    def stats_lines(self) -> list[str]:
        s = self.snapshot()
        lines = [f"stats total: {_fmt(_total(s))}"]
        for w in s.workers:
            lines.append(f"stats worker q{w.queue} ({'alive' if w.alive else 'DOWN'}, "
                         f"restarts {w.restarts}): {_fmt(w.counters)}")
        lines.append(f"stats xdp: {_fmt(s.xdp_counters)}")
        lines.append(f"stats kernel tier: {_fmt(tier_totals(s))}")
        return lines

    def log_stats(self) -> None:
        """SIGUSR1, ``POST /dump-stats``."""
        for line in self.stats_lines():
            log.info("%s", line)

    def log_config(self) -> None:
        """SIGUSR2, ``POST /dump-config``."""
        for line in self.config_lines():
            log.info("%s", line)

    def config_lines(self) -> list[str]:
        config = self.config()
        lines = [f"config daemon: {json.dumps(config['daemon'], sort_keys=True)}"]
        for c in config["routes"]["configs"]:
            lines.append(f"config quic-lb: {json.dumps(c, sort_keys=True)}")
        lines.append(f"config health: {json.dumps(config['routes']['health'], sort_keys=True)}")
        lines.append(f"config probe sources: {json.dumps(config['sources'], sort_keys=True)}")
        for server in config["servers"]:
            lines.append(f"config server: {json.dumps(server, sort_keys=True)}")
        lines.append(f"config fallback pool: {', '.join(config['fallback_pool']) or 'EMPTY'}"
                     f" (table size {config['routes']['fallback']['table_size']})")
        return lines
