"""The routing fingerprint: a short digest of everything in a balancer's configuration
that decides where a packet goes, so that balancers behind one ECMP VIP can show
whether they would decide alike.

What goes in: each QUIC-LB config's id, mode, lengths, length encoding and whether it
has a key; every server (config id, server ID, address); the fallback pool as
configured (backends not draining, by lb.toml or ``pesigitg-ctl drain``); the Maglev
table size; whether the fallback's hash key is set; the VIPs and the steered ports.
What stays out: key material of any kind (not even a digest of a key, so nothing in it
can confirm a guessed key), health, MACs, counter slots and anything else that is
each balancer's own. Two balancers with the same fingerprint and the same keys make
the same decision for the same packet while their backends' health agrees.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from pesigitg.routing.route_config import RouteConfig

__all__ = ["FINGERPRINT_VERSION", "routing_facts", "routing_fingerprint"]

FINGERPRINT_VERSION = 1         # bumped whenever what goes in changes


def routing_facts(routes: RouteConfig, ports: Sequence[int], draining: Iterable[str]
                  ) -> dict[str, object]:
    """What the fingerprint covers, as plain data (sorted where order does not decide)."""
    out = set(draining)
    return {
        "version": FINGERPRINT_VERSION,
        "configs": [{"config_id": c.config_id, "mode": c.mode,
                     "server_id_length": c.server_id_len, "nonce_length": c.nonce_len,
                     "encodes_length": c.encode_length, "keyed": c.key is not None}
                    for c in sorted(routes.configs, key=lambda c: c.config_id)],
        "servers": sorted([s.config_id, s.server_id.hex(), s.address] for s in routes.servers),
        "fallback_pool": sorted(a for a in routes.addresses if a not in out),
        "maglev_size": routes.table_size,
        "hash_key": routes.hash_key is not None,
        "vips": sorted(routes.vips),
        "ports": sorted(set(ports)),
    }


def routing_fingerprint(routes: RouteConfig, ports: Sequence[int], draining: Iterable[str]
                        ) -> str:
    """16 hex digits of SHA-256 over :func:`routing_facts` (canonical JSON)."""
    text = json.dumps(routing_facts(routes, ports, draining), sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(b"pesigitg routing fingerprint\0" + text.encode()).hexdigest()[:16]
