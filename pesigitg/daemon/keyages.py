"""How old the keys are: QUIC-LB keys and Retry token keys, counted from when this host's
daemon first saw each (kept in the runtime state file by fingerprint, so a reload or a
restart with the same key keeps its age). A key older than ``max_key_age_days`` is
warned about once. Ages are shown; keys never are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pesigitg.daemon.state import RuntimeState, key_fingerprint
from pesigitg.routing.route_config import RouteConfig

__all__ = ["KeyAge", "check_key_ages", "key_ages"]

log = logging.getLogger("pesigitg.keys")
DAY = 86400.0


@dataclass(frozen=True)
class KeyAge:
    what: str                   # "QUIC-LB config 1", "Retry key 5"
    kind: str                   # "quic-lb" or "retry"
    number: int                 # config id or key sequence
    fingerprint: str
    age_days: float
    max_days: int | None

    @property
    def too_old(self) -> bool:
        return self.max_days is not None and self.age_days > self.max_days


def key_ages(routes: RouteConfig, state: RuntimeState, now: float | None = None
             ) -> list[KeyAge]:
    """Every configured key's age (keys first seen now start at 0)."""
    now = time.time() if now is None else now
    out = []
    for c in routes.configs:
        if c.key is not None:
            out.append(KeyAge(f"QUIC-LB config {c.config_id}", "quic-lb", c.config_id,
                              key_fingerprint(c.key),
                              (now - state.first_seen(c.key, now)) / DAY,
                              routes.max_key_age_days.get(c.config_id)))
    for k in routes.retry.keys:
        out.append(KeyAge(f"Retry key {k.sequence}", "retry", k.sequence,
                          key_fingerprint(k.key), (now - state.first_seen(k.key, now)) / DAY,
                          routes.retry.max_key_age_days))
    return out


def check_key_ages(routes: RouteConfig, state: RuntimeState, now: float | None = None
                   ) -> list[KeyAge]:
    """Ages of every key, warning once about each that outlived its maximum; keys no
    longer configured are forgotten. Saves the state when it changed."""
    keys = [c.key for c in routes.configs if c.key is not None] + \
        [k.key for k in routes.retry.keys]
    before = (dict(state.keys_seen), set(state.keys_warned))
    state.forget_keys_but(keys)
    ages = key_ages(routes, state, now)
    for age in ages:
        if age.too_old and age.fingerprint not in state.keys_warned:
            log.warning("%s's key is %.0f days old, more than its max_key_age_days of %d: "
                        "rotate it", age.what, age.age_days, age.max_days)
            state.keys_warned.add(age.fingerprint)
    if (state.keys_seen, state.keys_warned) != before:
        state.save()
    return ages
