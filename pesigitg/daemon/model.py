"""The balancer's state and its pure transitions: no asyncio, no system calls; time
comes in as an argument, as aioquic's ``QuicConnection`` takes ``now``.

State: the daemon's settings, lb.toml, what is known of each backend (its MAC from the
neighbour table, its health, a run-time drain), each backend's counter slot, and the
compiled route table. Transitions: compile, apply a reload, record a probe, learn MACs,
drain, and take a snapshot for the reports. The supervisor feeds events in and carries
the results out to the kernel objects (daemon/kernel.py); what must be saved or sent
is returned, never done here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pesigitg import __version__
from pesigitg.daemon.counters import assign_slots
from pesigitg.daemon.drains import Drains, DrainWatch
from pesigitg.daemon.health import HealthState
from pesigitg.daemon.keyages import key_ages
from pesigitg.daemon.report import BackendView, KernelView, ReloadView, Snapshot
from pesigitg.daemon.settings import DaemonConfig
from pesigitg.daemon.sources import Sources
from pesigitg.daemon.state import RuntimeState
from pesigitg.daemon.tokens_sealed import SealedTokens
from pesigitg.routing.fingerprint import routing_fingerprint
from pesigitg.routing.route_config import RouteConfig
from pesigitg.routing.routes import Backend, CompiledRoutes, compile_route_config

__all__ = ["Balancer"]

log = logging.getLogger("pesigitg")


@dataclass
class Balancer:
    config: DaemonConfig
    routes: RouteConfig
    state: RuntimeState                 # drains, key times, tokens sealed (saved outside)
    started: float                      # monotonic time of the start (kept by a restart)
    if_mac: bytes = bytes(6)
    sources: Sources = field(default_factory=lambda: Sources({}, {}))
    macs: dict[str, bytes | None] = field(default_factory=dict)    # the neighbour table's
    health: dict[str, HealthState] = field(default_factory=dict)   # the probes' results
    slots: dict[str, int] = field(default_factory=dict)            # backend -> counter slot
    compiled: CompiledRoutes | None = None
    reloads: ReloadView = field(default_factory=ReloadView)

    def __post_init__(self) -> None:
        self.drains = Drains(self.state)
        self.drain_watch = DrainWatch(self.config.drain_quiet_s)
        self.sealed = SealedTokens(self.state)

    # -- what is known of a backend ---------------------------------------------------------

    def mac(self, address: str, routes: RouteConfig | None = None) -> bytes | None:
        """A backend's MAC: the static one from lb.toml, else the neighbour table's."""
        return (routes or self.routes).backend_mac(address) or self.macs.get(address)

    def is_up(self, address: str) -> bool:
        """Whether traffic may go to ``address`` (one never checked: yes)."""
        state = self.health.get(address)
        return True if state is None else state.usable(self.routes.health)

    def draining(self, address: str, routes: RouteConfig | None = None) -> bool:
        routes = routes or self.routes
        return self.drains.draining(address, routes.backend_draining(address))

    def backend_fn(self, routes: RouteConfig | None = None) -> Callable[[str], Backend]:
        """A backend's state under ``routes`` (its static MAC and draining flag) and what
        is known of it (neighbour table, health)."""
        return lambda a: Backend(a, self.mac(a, routes), self.is_up(a), self.draining(a, routes))

    def unresolved(self) -> list[str]:
        return [a for a in self.routes.addresses if self.mac(a) is None]

    def dynamic(self) -> list[str]:
        """The backends whose MAC comes from the neighbour table (none in lb.toml)."""
        return [a for a in self.routes.addresses if self.routes.backend_mac(a) is None]

    # -- transitions ----------------------------------------------------------------------

    def compile(self) -> tuple[CompiledRoutes, list[int]]:
        """The table for the state now, and the counter slots another backend held
        before (to be cleared before this table is used)."""
        slots = assign_slots(self.slots, self.routes.addresses)
        taken = set(self.slots.values())
        reused = [s for a, s in slots.items() if self.slots.get(a) != s and s in taken]
        self.slots = slots
        return compile_route_config(self.routes, self.if_mac, self.backend_fn(), slots), reused

    def adopt_table(self, compiled: CompiledRoutes, why: str) -> bool:
        """Make ``compiled`` the table; False when it is the one in use already."""
        if self.compiled is not None and compiled.blob == self.compiled.blob:
            return False
        self.compiled = compiled
        pool = [compiled.backends[i].name for i in compiled.pool]
        log.info("route table rebuilt (%s): fallback pool %s", why, ", ".join(pool) or "EMPTY")
        return True

    def apply(self, config: DaemonConfig, routes: RouteConfig, sources: Sources) -> None:
        """A reload's files (checked already); run-time drains of backends no longer
        configured are forgotten."""
        self.config, self.routes, self.sources = config, routes, sources
        self.drain_watch.quiet_s = config.drain_quiet_s
        for address in self.drains.forget_but(set(routes.addresses)):
            log.info("forgot the run-time drain of %s: it is no longer configured", address)

    def learn_macs(self, found: dict[str, bytes | None]) -> bool:
        """What the neighbour table says now; True if a MAC changed."""
        changed = False
        for address, mac in found.items():
            if self.macs.get(address) != mac:
                if mac is not None:
                    log.info("backend %s is at %s", address, mac.hex(":"))
                elif address in self.macs:
                    log.warning("backend %s lost its neighbour entry", address)
                changed = True
            self.macs[address] = mac
        return changed

    def expect_probes(self) -> tuple[list[str], list[str]]:
        """The health states for the backends configured now (those of known backends
        carry over, their back-off reset: a reload is a reason to look again soon).
        Returns the backends to probe (none while checks are off) and of those the ones
        never probed, which are probed once before a table may use them."""
        spec = self.routes.health
        self.health = {a: self.health.get(a, HealthState()) for a in self.routes.addresses}
        for state in self.health.values():
            state.backoff = 1
            if not spec.enabled:
                state.up, state.last_result = True, "health checks disabled"
        if not spec.enabled:
            return [], []
        return list(self.health), [a for a, s in self.health.items() if not s.probed]

    def record_probe(self, address: str, up: bool, detail: str, now: float) -> bool:
        """One probe's result; True when it decided something (a first result, or an
        up/down change): the table is to be compiled again."""
        state = self.health.get(address)
        if state is None:                       # no longer configured
            return False
        first = not state.probed
        changed = state.record(up, self.routes.health, detail, now)
        if first:
            log.log(logging.INFO if up else logging.WARNING, "backend %s is %s (first "
                    "probe): %s", address, "up" if up else "DOWN", detail)
        elif changed:
            log.warning("backend %s is %s: %s", address, "up" if state.up else "DOWN", detail)
        return changed or first

    def probe_target(self) -> tuple[int, float, Callable[[str], str | None]]:
        """The probes' UDP port, their timeout in seconds, and each one's source."""
        health = self.routes.health
        return (health.port or self.config.effective_ports[0], health.timeout_ms / 1000,
                self.sources.for_backend)

    def probe_delay(self, address: str) -> float:
        """Seconds until ``address`` is probed again."""
        return self.health.get(address, HealthState()).delay(self.routes.health)

    def count_tokens(self, retries_sent: int, wall: float, force: bool = False) -> bool:
        """The workers' running total of Retries sent, added to the newest Retry key's
        count; True when the state is due to be saved (always with ``force``)."""
        if not self.sealed.update(self.routes.retry, retries_sent, wall) and not force:
            return False
        self.sealed.prune(self.routes.retry, wall)
        return True

    def drain(self, address: str, draining: bool) -> bool:
        """Drain (or undrain) ``address`` at run time; True when that changed anything
        (KeyError: not configured)."""
        if address not in self.routes.addresses:
            raise KeyError(address)
        return self.drains.change(address, draining, self.routes.backend_draining(address))

    def drain_source(self, address: str) -> str | None:
        return self.drains.source(address, self.routes.backend_draining(address))

    def watch_drains(self, backend_counts: dict[int, tuple[int, int]], now: float) -> None:
        """The counters' (forwarded, CID-routed) frames per slot: is a draining backend
        still sent any of its connections' frames?"""
        self.drain_watch.update({a: backend_counts.get(self.slots.get(a, -1), (0, 0))[1]
                                 for a in self.routes.addresses if self.draining(a)}, now)

    def record_reload(self, error: str | None, wall: float) -> None:
        """A reload's outcome: None when applied, else why not."""
        r = self.reloads
        self.reloads = ReloadView(r.succeeded + (error is None), r.failed + (error is not None),
                                  wall, error is None, error)

    def fingerprint(self) -> str:
        """The routing fingerprint of what runs (pesigitg.routing.fingerprint)."""
        return routing_fingerprint(self.routes, self.config.effective_ports,
                                   [a for a in self.routes.addresses if self.draining(a)])

    # -- a restart ----------------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """What a successor carries on from (JSON): MACs, health, counter slots, start."""
        return {"macs": {a: m.hex() if m else None for a, m in self.macs.items()},
                "health": {a: dataclasses.asdict(s) for a, s in self.health.items()},
                "slots": self.slots, "started": self.started,
                "reloads": dataclasses.asdict(self.reloads)}

    def carry_on(self, facts: dict[str, Any]) -> None:
        """A predecessor's :meth:`facts`: traffic and probing go on from them."""
        self.started = facts["started"]
        self.macs = {a: bytes.fromhex(m) if m else None for a, m in facts["macs"].items()}
        self.slots = dict(facts.get("slots", {}))
        self.reloads = ReloadView(**facts.get("reloads", {}))
        self.health.update({a: HealthState(**{"probed": s.get("checks", 0) > 0, **s})
                            for a, s in facts["health"].items()})

    # -- the reports' view --------------------------------------------------------------------

    def snapshot(self, kernel: KernelView, now: float, wall: float) -> Snapshot:
        """The state every report is built from (see pesigitg.daemon.report)."""
        c = self.compiled
        pool = {c.backends[i].name for i in c.pool} if c is not None else set()
        backends = []
        for address in self.routes.addresses:
            mac, state = self.mac(address), self.health.get(address)
            forwarded, cid = kernel.backend_counts.get(self.slots.get(address, -1), (0, 0))
            backends.append(BackendView(
                address, mac, "static" if self.routes.backend_mac(address)
                else "neighbour" if mac else "unresolved", self.is_up(address),
                (state or HealthState()).describe(self.routes.health),
                state.last_result if state else None, self.draining(address),
                address in pool, self.drain_source(address),
                self.drain_watch.drained_since(address), forwarded, cid,
                state.transitions if state else 0,
                kernel.tier_slots.get(self.slots.get(address, -1), 0)))
        servers = [{"config_id": s.config_id, "server_id": s.server_id.hex(),
                    "address": s.address} for s in self.routes.servers]
        uses = self.sealed.uses(self.routes.retry)
        assert self.config.interface is not None
        return Snapshot(
            __version__, self.config.interface, now - self.started, self.config.effective_ports,
            kernel.workers, kernel.xdp_attached, kernel.xdp_mode, kernel.xdp_attach,
            kernel.xdp_counters, self.config.describe(), self.routes.describe(), servers,
            backends, self.if_mac, kernel.steering, self.sources.describe(),
            tuple(key_ages(self.routes, self.state, wall)),
            c.digest if c is not None else "", self.fingerprint(), self.reloads,
            handing_over=kernel.handing_over, tier=kernel.tier,
            tier_configs=kernel.tier_configs,
            retry_keys=[u.describe() for u in uses],
            key_warnings=[w for u in uses if (w := u.warning())], table=c)
