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

from pesigitg._fastpath import COUNTER_FAMILIES, COUNTER_NAMES, GAUGES
from pesigitg.daemon.status import prometheus
from pesigitg.routing.routes import CompiledRoutes

__all__ = ["BackendView", "KernelView", "Report", "Snapshot", "WorkerView"]

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
    key_ages: dict[str, float] = field(default_factory=dict)  # "QUIC-LB config 1": days
    table_digest: str = ""              # CompiledRoutes.digest: equal where decisions are
    handing_over: bool = False          # a restart: the successor takes the queues over
    retry_keys: list[dict[str, Any]] = field(default_factory=list)  # KeyUse.describe()
    key_warnings: list[str] = field(default_factory=list)   # keys near their token limit
    table: CompiledRoutes | None = None     # the route table the workers have

    @property
    def pool(self) -> list[str]:
        return sorted(b.address for b in self.backends if b.in_pool)

    def backend(self, address: str) -> BackendView:
        return next(b for b in self.backends if b.address == address)


def _total(workers: list[WorkerView]) -> dict[str, int]:
    return {name: sum(w.counters.get(name, 0) for w in workers) for name in COUNTER_NAMES}


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
                        "attach": s.xdp_attach},
                "backends": {"up": sum(b.up for b in s.backends), "total": len(s.backends),
                             "fallback_pool": len(s.pool)},
                "retry_keys": s.retry_keys}

    def stats(self) -> dict[str, Any]:
        s = self.snapshot()
        workers = [{"worker": w.index, "queue": w.queue, "cpu": w.cpu, "alive": w.alive,
                    "pid": w.pid, "mode": w.mode, "restarts": w.restarts,
                    "messages_refused": w.messages_refused,
                    "state_repairs": w.state_repairs, "counters": w.counters,
                    "frames": w.frames} for w in s.workers]
        backends = {b.address: {"forwarded": b.forwarded, "cid_routed": b.cid_routed}
                    for b in s.backends}
        return {"total": _total(s.workers), "workers": workers, "xdp": s.xdp_counters,
                "backends": backends}

    def totals(self) -> dict[str, int]:
        return _total(self.snapshot().workers)

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
                "key_ages_days": {k: round(v, 2) for k, v in s.key_ages.items()},
                "route_table": {"digest": s.table_digest}}

    def metrics(self) -> str:
        s = self.snapshot()
        families: list[tuple[str, str, str, list[tuple[dict[str, object], float]]]] = [
            ("pesigitg_up", "gauge", "1 while the daemon runs", [({}, 1)]),
            ("pesigitg_uptime_seconds", "gauge", "seconds since start", [({}, s.uptime)]),
            ("pesigitg_workers_alive", "gauge", "worker processes running",
             [({}, sum(w.alive for w in s.workers))]),
            ("pesigitg_workers_expected", "gauge", "worker processes configured",
             [({}, len(s.workers))]),
            ("pesigitg_worker_restarts_total", "counter", "worker restarts",
             [({"worker": w.index}, w.restarts) for w in s.workers]),
            ("pesigitg_worker_messages_refused_total", "counter",
             "messages from a worker refused as malformed or out of turn (the worker was "
             "replaced)", [({"worker": w.index}, w.messages_refused) for w in s.workers]),
            ("pesigitg_worker_state_repairs_total", "counter",
             "worker starts that refused what a predecessor left in the UMEM's state page",
             [({"worker": w.index}, w.state_repairs) for w in s.workers]),
        ]
        for family, label, members, unit, meaning in COUNTER_FAMILIES:
            samples: list[tuple[dict[str, object], float]] = []
            for w in s.workers:
                for member in members:
                    name = f"{family}_{member}" if member else family
                    labels: dict[str, object] = {"worker": w.index}
                    if label:
                        labels[label] = member
                    samples.append((labels, w.counters.get(name, 0)))
            if family in GAUGES:
                families.append((f"pesigitg_{family}", "gauge", meaning, samples))
                continue
            metric = f"pesigitg_{family}_{unit}_total" if unit else f"pesigitg_{family}_total"
            families.append((metric, "counter", meaning, samples))
        families.append(("pesigitg_xdp_verdicts_total", "counter",
                         "verdicts of the XDP steering program, by reason",
                         [({"reason": k}, v) for k, v in s.xdp_counters.items()]))
        gauges: dict[str, tuple[str, Callable[[BackendView], bool]]] = {
            "pesigitg_backend_up": ("1 if the backend passes health checks", lambda b: b.up),
            "pesigitg_backend_draining": ("1 if the backend is draining", lambda b: b.draining),
            "pesigitg_backend_mac_known": ("1 if the backend's MAC is known",
                                           lambda b: b.mac is not None),
            "pesigitg_backend_in_fallback_pool": ("1 if Maglev may choose the backend",
                                                  lambda b: b.in_pool),
            "pesigitg_backend_fully_drained": ("1 once a draining backend gets no CID-routed "
                                               "frame", lambda b: b.drained_since is not None),
        }
        for metric, (help_text, fn) in gauges.items():
            families.append((metric, "gauge", help_text,
                             [({"backend": b.address}, int(fn(b))) for b in s.backends]))
        families.append(("pesigitg_backend_forwarded_frames_total", "counter",
                         "frames sent to the backend",
                         [({"backend": b.address}, b.forwarded) for b in s.backends]))
        families.append(("pesigitg_backend_cid_routed_frames_total", "counter",
                         "frames sent to the backend because their CID names it",
                         [({"backend": b.address}, b.cid_routed) for b in s.backends]))
        return prometheus(families)

    # -- signal dumps -------------------------------------------------------------------

    def stats_lines(self) -> list[str]:
        s = self.snapshot()
        lines = [f"stats total: {_fmt(_total(s.workers))}"]
        for w in s.workers:
            lines.append(f"stats worker q{w.queue} ({'alive' if w.alive else 'DOWN'}, "
                         f"restarts {w.restarts}): {_fmt(w.counters)}")
        lines.append(f"stats xdp: {_fmt(s.xdp_counters)}")
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
