"""What the daemon tells: /health, /stats, /config, /metrics, and the USR1/USR2 logs.

One place builds every view of the supervisor's state, so the status socket, the
Prometheus exposition and the signal dumps always agree. Keys are never shown.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pesigitg._fastpath.decide import COUNTER_NAMES
from pesigitg.status import prometheus

if TYPE_CHECKING:
    from pesigitg.supervisor import Supervisor

__all__ = ["Report"]

# Counter families for Prometheus: counter name prefix -> (metric, label, help)
_LABELLED = [
    ("cid_routed_", "pesigitg_cid_routed_frames_total", "config_id",
     "frames routed by their connection ID, by QUIC-LB config id"),
    ("unroutable_", "pesigitg_unroutable_frames_total", "reason",
     "frames whose CID could not be routed (they fell back), by reason"),
    ("dropped_", "pesigitg_dropped_frames_total", "reason", "frames dropped, by reason"),
]
_PLAIN = {
    "rx": ("pesigitg_rx_frames_total", "frames taken from the AF_XDP socket"),
    "forwarded": ("pesigitg_forwarded_frames_total", "frames sent to a backend"),
    "fallback_routed": ("pesigitg_fallback_routed_frames_total",
                        "frames routed by Maglev over the fallback pool"),
    "icmp_routed": ("pesigitg_icmp_routed_frames_total",
                    "ICMP errors routed by the flow they quote"),
    "tx_full": ("pesigitg_tx_full_total", "frames dropped because the TX ring was full"),
    "fill_empty": ("pesigitg_fill_empty_total", "batches that found the fill ring empty"),
    "table_swaps": ("pesigitg_table_swaps_total", "route tables adopted by the worker"),
}


class Report:
    def __init__(self, supervisor: Supervisor) -> None:
        self.s = supervisor

    # -- building blocks --------------------------------------------------------------

    def _workers(self) -> list[dict[str, Any]]:
        out = []
        for h in self.s.workers:
            out.append({"worker": h.spec.index, "queue": h.spec.queue, "cpu": h.spec.cpu,
                        "alive": h.alive, "pid": h.process.pid if h.process else None,
                        "mode": h.mode, "restarts": h.restarts,
                        "counters": self.s.worker_counters(h.spec.index)})
        return out

    def _total(self, workers: list[dict[str, Any]]) -> dict[str, int]:
        return {name: sum(w["counters"].get(name, 0) for w in workers) for name in COUNTER_NAMES}

    def _servers(self) -> list[dict[str, Any]]:
        s = self.s
        out = []
        for spec in s.routes.servers:
            state = s.health.states.get(spec.address)
            mac = s.mac(spec.address)
            source = ("static" if s.routes.backend_mac(spec.address)
                      else "neighbour" if mac else "unresolved")
            out.append({
                "config_id": spec.config_id, "server_id": spec.server_id.hex(),
                "address": spec.address, "mac": mac.hex(":") if mac else None,
                "mac_source": source,
                "health": "up" if s.health.is_up(spec.address) else "down",
                "last_check": state.last_result if state else None,
                "draining": s.routes.backend_draining(spec.address),
            })
        return out

    def _pool(self) -> list[str]:
        c = self.s.compiled
        return [c.backends[i].name for i in c.pool] if c is not None else []

    def status_line(self) -> str:
        alive = sum(h.alive for h in self.s.workers)
        up = sum(self.s.health.is_up(a) for a in self.s.routes.addresses)
        return (f"{self.s.config.interface}: {alive}/{len(self.s.workers)} workers, "
                f"ports {','.join(map(str, self.s.config.effective_ports))}, "
                f"{len(self.s.routes.configs)} QUIC-LB config(s), "
                f"{up}/{len(self.s.routes.addresses)} backends up, "
                f"fallback pool {len(self._pool())}")

    # -- the status endpoints ---------------------------------------------------------

    def health(self) -> dict[str, Any]:
        s = self.s
        alive = sum(h.alive for h in s.workers)
        attached = s.xdp is not None and s.xdp.ifindex is not None
        ok = alive == len(s.workers) and attached
        return {"status": "ok" if ok else "degraded", "version": s.version,
                "interface": s.config.interface, "uptime_s": round(s.uptime, 3),
                "workers": {"alive": alive, "expected": len(s.workers)},
                "xdp": {"attached": attached, "mode": s.xdp_mode},
                "backends": {"up": sum(s.health.is_up(a) for a in s.routes.addresses),
                             "total": len(s.routes.addresses),
                             "fallback_pool": len(self._pool())}}

    def stats(self) -> dict[str, Any]:
        workers = self._workers()
        xdp = self.s.xdp.counters() if self.s.xdp is not None else {}
        return {"total": self._total(workers), "workers": workers, "xdp": xdp}

    def config(self) -> dict[str, Any]:
        return {"daemon": self.s.config.describe(), "routes": self.s.routes.describe(),
                "servers": self._servers(), "fallback_pool": self._pool(),
                "interface_mac": self.s.if_mac.hex(":"), "xdp_mode": self.s.xdp_mode}

    def metrics(self) -> str:
        s = self.s
        workers = self._workers()
        families: list[tuple[str, str, str, list[tuple[dict[str, object], float]]]] = [
            ("pesigitg_up", "gauge", "1 while the daemon runs", [({}, 1)]),
            ("pesigitg_uptime_seconds", "gauge", "seconds since start", [({}, s.uptime)]),
            ("pesigitg_workers_alive", "gauge", "worker processes running",
             [({}, sum(h.alive for h in s.workers))]),
            ("pesigitg_workers_expected", "gauge", "worker processes configured",
             [({}, len(s.workers))]),
            ("pesigitg_worker_restarts_total", "counter", "worker restarts",
             [({"worker": w["worker"]}, w["restarts"]) for w in workers]),
        ]
        for name, (metric, help_text) in _PLAIN.items():
            families.append((metric, "counter", help_text,
                             [({"worker": w["worker"]}, w["counters"].get(name, 0))
                              for w in workers]))
        for prefix, metric, label, help_text in _LABELLED:
            samples: list[tuple[dict[str, object], float]] = []
            for w in workers:
                for name, value in w["counters"].items():
                    if name.startswith(prefix):
                        samples.append(({"worker": w["worker"], label: name[len(prefix):]},
                                        value))
            families.append((metric, "counter", help_text, samples))
        if s.xdp is not None:
            families.append(("pesigitg_xdp_verdicts_total", "counter",
                             "verdicts of the XDP steering program, by reason",
                             [({"reason": k}, v) for k, v in s.xdp.counters().items()]))
        pool = set(self._pool())
        backend_gauges = {
            "pesigitg_backend_up": ("1 if the backend passes health checks",
                                    lambda a: s.health.is_up(a)),
            "pesigitg_backend_draining": ("1 if the backend is draining",
                                          lambda a: s.routes.backend_draining(a)),
            "pesigitg_backend_mac_known": ("1 if the backend's MAC is known",
                                           lambda a: s.mac(a) is not None),
            "pesigitg_backend_in_fallback_pool": ("1 if Maglev may choose the backend",
                                                  lambda a: a in pool),
        }
        for metric, (help_text, fn) in backend_gauges.items():
            families.append((metric, "gauge", help_text,
                             [({"backend": a}, int(fn(a))) for a in s.routes.addresses]))
        return prometheus(families)

    # -- signal dumps -------------------------------------------------------------------

    def stats_lines(self) -> list[str]:
        stats = self.stats()
        def fmt(counters: dict[str, int]) -> str:
            return " ".join(f"{k}={v}" for k, v in counters.items() if v) or "all zero"
        lines = [f"stats total: {fmt(stats['total'])}"]
        for w in stats["workers"]:
            lines.append(f"stats worker q{w['queue']} ({'alive' if w['alive'] else 'DOWN'}, "
                         f"restarts {w['restarts']}): {fmt(w['counters'])}")
        lines.append(f"stats xdp: {fmt(stats['xdp'])}")
        return lines

    def config_lines(self) -> list[str]:
        config = self.config()
        lines = [f"config daemon: {json.dumps(config['daemon'], sort_keys=True)}"]
        for c in config["routes"]["configs"]:
            lines.append(f"config quic-lb: {json.dumps(c, sort_keys=True)}")
        lines.append(f"config health: {json.dumps(config['routes']['health'], sort_keys=True)}")
        for server in config["servers"]:
            lines.append(f"config server: {json.dumps(server, sort_keys=True)}")
        lines.append(f"config fallback pool: {', '.join(config['fallback_pool']) or 'EMPTY'}"
                     f" (table size {config['routes']['fallback']['table_size']})")
        return lines
