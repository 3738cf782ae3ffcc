"""``/metrics``: the Prometheus text exposition (format 0.0.4) of one snapshot.

Served on the status socket and on the metrics listeners (daemon/metrics_listen.py).
Every family is built here from a :class:`Snapshot`, so the metric names the
dashboards and alerts in ``contrib/`` use are all in this file (the suite checks
them against it). Counter families of the packet path come from the contract
(``COUNTER_FAMILIES``). No key material, ever: keys appear as ages only.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable

from pesigitg._fastpath import COUNTER_FAMILIES, GAUGES, aes_path
from pesigitg.daemon.report import BackendView, Report, Snapshot, tier_totals

__all__ = ["HEALTH_STATES", "exposition", "prometheus"]

Sample = tuple[dict[str, object], float]
Family = tuple[str, str, str, list[Sample]]      # name, type, help, samples

HEALTH_STATES = ("ok", "degraded", "down")
DAY = 86400.0
ANY_VIP = "any"         # the VIP label when lb.toml lists none (every destination)


def exposition(s: Snapshot) -> str:
    """The whole ``/metrics`` answer for snapshot ``s``."""
    return prometheus([*_daemon(s), *_workers(s), *_xdp(s), *_backends(s), *_control(s)])


def _daemon(s: Snapshot) -> list[Family]:
    status = Report(lambda: s).health()["status"]
    return [
        ("pesigitg_up", "gauge", "1 while the daemon runs", [({}, 1)]),
        ("pesigitg_build_info", "gauge", "the running build: version, Python, AES path",
         [({"version": s.version, "python": platform.python_version(),
            "aes_path": aes_path()}, 1)]),
        ("pesigitg_uptime_seconds", "gauge", "seconds since start (a restart carries on)",
         [({}, s.uptime)]),
        ("pesigitg_health_status", "gauge", "1 for the daemon's /health status (ok, "
         "degraded, down), 0 for the others",
         [({"status": h}, int(h == status)) for h in HEALTH_STATES]),
    ]


def _workers(s: Snapshot) -> list[Family]:
    families: list[Family] = [
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
    tier = tier_totals(s)
    for family, label, members, unit, meaning in COUNTER_FAMILIES:
        samples: list[Sample] = []
        for w in s.workers:
            for member in members:
                name = f"{family}_{member}" if member else family
                labels: dict[str, object] = {"worker": w.index}
                if label:
                    labels[label] = member
                if name in tier:            # what both tiers count: which one did
                    labels["path"] = "af_xdp"
                samples.append((labels, w.counters.get(name, 0)))
        for member in members:              # the kernel tier's: no worker saw them
            name = f"{family}_{member}" if member else family
            if name in tier:
                samples.append(({**({label: member} if label else {}), "path": "xdp"},
                                tier[name]))
        if family in GAUGES:
            families.append((f"pesigitg_{family}", "gauge", meaning, samples))
            continue
        metric = f"pesigitg_{family}_{unit}_total" if unit else f"pesigitg_{family}_total"
        families.append((metric, "counter", meaning, samples))
    return families


def _xdp(s: Snapshot) -> list[Family]:
    return [
        ("pesigitg_xdp_attached", "gauge", "1 while the XDP program is attached; mode "
         "native or generic, attach link or netlink",
         [({"mode": s.xdp_mode or "none", "attach": s.xdp_attach or "none"},
           int(s.xdp_attached))]),
        ("pesigitg_xdp_verdicts_total", "counter",
         "verdicts of the XDP steering program, by reason",
         [({"reason": k}, v) for k, v in s.xdp_counters.items()]),
    ]


_BACKEND_GAUGES: dict[str, tuple[str, Callable[[BackendView], bool]]] = {
    "pesigitg_backend_up": ("1 if the backend passes health checks", lambda b: b.up),
    "pesigitg_backend_draining": ("1 if the backend is draining", lambda b: b.draining),
    "pesigitg_backend_mac_known": ("1 if the backend's MAC is known",
                                   lambda b: b.mac is not None),
    "pesigitg_backend_in_fallback_pool": ("1 if Maglev may choose the backend",
                                          lambda b: b.in_pool),
    "pesigitg_backend_fully_drained": ("1 once a draining backend gets no CID-routed frame",
                                       lambda b: b.drained_since is not None),
}
_BACKEND_COUNTERS: dict[str, tuple[str, Callable[[BackendView], int]]] = {
    "pesigitg_backend_cid_routed_frames_total": ("frames sent to the backend because their "
                                                 "CID names it", lambda b: b.cid_routed),
    "pesigitg_backend_health_transitions_total": ("health changes of the backend (up to "
                                                  "down and back)", lambda b: b.transitions),
}


def _backends(s: Snapshot) -> list[Family]:
    families: list[Family] = []
    for metric, (help_text, fn) in _BACKEND_GAUGES.items():
        families.append((metric, "gauge", help_text,
                         [({"backend": b.address}, int(fn(b))) for b in s.backends]))
    families.append(("pesigitg_backend_forwarded_frames_total", "counter",
                     "frames sent to the backend, by the path that forwarded them (af_xdp: "
                     "a worker; xdp: the kernel tier)",
                     [({"backend": b.address, "path": path}, n) for b in s.backends
                      for path, n in (("af_xdp", b.forwarded - b.xdp_forwarded),
                                      ("xdp", b.xdp_forwarded))]))
    for metric, (help_text, count) in _BACKEND_COUNTERS.items():
        families.append((metric, "counter", help_text,
                         [({"backend": b.address}, count(b)) for b in s.backends]))
    return families


def _control(s: Snapshot) -> list[Family]:
    """Configuration, reloads, keys and the routing fingerprint."""
    r = s.reloads
    families: list[Family] = [
        ("pesigitg_retry_offload_info", "gauge", "the Retry offload's configured mode "
         "(off, always, load); pesigitg_retry_active says whether it answers now",
         [({"mode": s.routes.get("retry", {}).get("mode", "off")}, 1)]),
        ("pesigitg_reloads_total", "counter", "reloads (SIGHUP, pesigitg-ctl reload), by "
         "result", [({"result": "ok"}, r.succeeded), ({"result": "failed"}, r.failed)]),
        ("pesigitg_key_age_seconds", "gauge", "how long each key has been in use on this "
         "host (QUIC-LB configs and Retry token keys; never the key)",
         [({"kind": k.kind, "id": k.number}, round(k.age_days * DAY)) for k in s.keys]),
        ("pesigitg_key_max_age_seconds", "gauge", "max_key_age_days of the keys that set "
         "one, in seconds",
         [({"kind": k.kind, "id": k.number}, k.max_days * DAY) for k in s.keys
          if k.max_days is not None]),
        ("pesigitg_routing_fingerprint_info", "gauge", "1, labelled with the fingerprint "
         "of everything that decides routing (equal on balancers that decide alike), "
         "per VIP", [({"vip": vip, "fingerprint": s.fingerprint}, 1)
                     for vip in s.routes.get("vips") or [ANY_VIP]]),
    ]
    if r.last_at is not None:
        families += [
            ("pesigitg_last_reload_success", "gauge", "1 if the last reload was applied, "
             "0 if it failed (the previous configuration runs on)",
             [({}, int(bool(r.last_ok)))]),
            ("pesigitg_last_reload_timestamp_seconds", "gauge", "when the last reload "
             "happened (Unix time)", [({}, round(r.last_at, 3))]),
        ]
    return families


def _escape(value: object) -> str:
    # Label values escape backslash, double quote and newline (exposition format).
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def prometheus(families: Iterable[Family]) -> str:
    """Text exposition format 0.0.4: (name, type, help, [(labels, value)]) per family."""
    out = []
    for name, kind, help_text, samples in families:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = int(value) if float(value).is_integer() else value
            out.append(f"{name}{_labels(labels)} {number}")
    return "\n".join(out) + "\n"
