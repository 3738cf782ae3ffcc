"""Route tables: from configs, backends and servers to the blob the loop reads.

A backend is a machine (identified by its address); a server is a server ID in one
QUIC-LB config that routes to a backend (during a key rotation one backend has a
server ID in two configs). The fallback pool is every backend that is up, has a
known MAC and is not draining; Maglev spreads unroutable packets over it.

Everything here is deterministic: the same inputs give the same blob on every host,
so several load balancers behind ECMP make the same choice for the same packet.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from pesigitg._fastpath import (
    BACKEND_NONE,
    BACKEND_SLOTS,
    STATE_DRAINING,
    STATE_MAC_KNOWN,
    STATE_UP,
    RouteTable,
    pack_route_table,
)
from pesigitg.routing.maglev import DEFAULT_MAGLEV_SIZE, maglev_table
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.retry import RetrySpec

__all__ = ["BACKEND_NONE", "Backend", "CompiledRoutes", "Server", "TableSpec", "backend_keys",
           "compile_routes"]


@dataclass(frozen=True)
class Backend:
    """A machine behind the load balancer; ``name`` (its address) is its identity."""
    name: str
    mac: bytes | None = None
    up: bool = True
    draining: bool = False

    @property
    def state(self) -> int:
        return ((STATE_UP if self.up else 0) | (STATE_DRAINING if self.draining else 0)
                | (STATE_MAC_KNOWN if self.mac is not None else 0))

    @property
    def in_fallback_pool(self) -> bool:
        return self.up and self.mac is not None and not self.draining

    @property
    def routable(self) -> bool:
        """May take frames for its own connections (draining or not)."""
        return self.up and self.mac is not None


def backend_keys(names: Sequence[str]) -> dict[str, int]:
    """Each backend's key: 32 bits of BLAKE2b of its name, the same in every table
    (the workers' flow tables remember keys). Nonzero; should two names collide, the
    later one in name order is salted until unique."""
    keys: dict[str, int] = {}
    taken: set[int] = set()
    for name in sorted(names):
        salt = 0
        while True:
            digest = hashlib.blake2b(name.encode(), digest_size=4,
                                     salt=salt.to_bytes(16, "big") if salt else b"").digest()
            key = int.from_bytes(digest, "big")
            if key and key not in taken:
                break
            salt += 1
        keys[name] = key
        taken.add(key)
    return keys


@dataclass(frozen=True)
class Server:
    """Server ID ``server_id`` of config ``config_id`` lives on backend ``backend``."""
    config_id: int
    server_id: bytes
    backend: str


@dataclass(frozen=True)
class TableSpec:
    """Everything one route table holds, as pack_route_table writes it."""
    if_mac: bytes
    configs: Sequence[CidConfig]
    backends: Sequence[tuple[bytes | None, int, int, int]]   # mac, state, key, slot
    servers: Mapping[int, list[tuple[bytes, int]]]           # config id -> (sid, backend)
    maglev: bytes                                            # uint16 backend per slot
    flow_entries: int = 0
    icmp_fanout_rate: int = 0
    retry: RetrySpec | None = None
    hash_key: bytes | None = field(default=None, repr=False)
    vips: Sequence[str] = ()


@dataclass
class CompiledRoutes:
    """A compiled table: the blob for the packet path and the model it came from."""
    if_mac: bytes
    configs: list[CidConfig]
    backends: list[Backend]
    servers: dict[tuple[int, bytes], int]     # (config id, server ID) -> backend index
    maglev: list[int]                         # slot -> backend index or BACKEND_NONE
    table: RouteTable
    pool: list[int] = field(default_factory=list)
    flow_entries: int = 0
    icmp_fanout_rate: int = 0
    hash_key: bytes | None = field(default=None, repr=False)   # keys the fallback's hash
    vips: tuple[str, ...] = ()

    @property
    def blob(self) -> bytes:
        return self.table.blob

    @cached_property
    def digest(self) -> str:
        """RouteTable.digest(): equal on balancers that decide alike (computed once, the
        table never changes)."""
        return self.table.digest()


def compile_routes(if_mac: bytes, configs: Sequence[CidConfig], backends: Sequence[Backend],
                   servers: Sequence[Server], maglev_size: int = DEFAULT_MAGLEV_SIZE,
                   flow_entries: int = 0, icmp_fanout_rate: int = 0,
                   retry: RetrySpec | None = None, slots: Mapping[str, int] | None = None,
                   hash_key: bytes | None = None, vips: Sequence[str] = ()) -> CompiledRoutes:
    """The table for these backends and servers. ``slots``: each backend's frame
    counters (default: its index, for the first BACKEND_SLOTS backends)."""
    index = {}
    for i, backend in enumerate(backends):
        if backend.name in index:
            raise ValueError(f"backend {backend.name} is listed twice")
        index[backend.name] = i
    routes: dict[tuple[int, bytes], int] = {}
    by_config: dict[int, list[tuple[bytes, int]]] = {}
    for server in servers:
        if server.backend not in index:
            raise ValueError(f"server {server.server_id.hex()} of config {server.config_id} "
                             f"names backend {server.backend}, which is not listed")
        key = (server.config_id, bytes(server.server_id))
        if key in routes:
            raise ValueError(f"server ID {server.server_id.hex()} appears twice in config "
                             f"{server.config_id}")
        routes[key] = index[server.backend]
        by_config.setdefault(server.config_id, []).append((key[1], routes[key]))
    # Sorted by name so the table does not depend on the order of the config file.
    pool = sorted((i for i, b in enumerate(backends) if b.in_fallback_pool),
                  key=lambda i: backends[i].name)
    pool_table = maglev_table([backends[i].name for i in pool], maglev_size)
    maglev = [pool[slot] if slot != BACKEND_NONE else BACKEND_NONE for slot in pool_table]
    keys = backend_keys([b.name for b in backends])
    slot_of = slots if slots is not None else {
        b.name: i for i, b in enumerate(backends) if i < BACKEND_SLOTS}
    blob = pack_route_table(TableSpec(
        if_mac, list(configs), [(b.mac, b.state, keys[b.name], slot_of.get(b.name, BACKEND_NONE))
                                for b in backends], by_config,
        array("H", maglev).tobytes(), flow_entries, icmp_fanout_rate, retry, hash_key, vips))
    return CompiledRoutes(bytes(if_mac), list(configs), list(backends), routes, maglev,
                          RouteTable(blob), pool, flow_entries, icmp_fanout_rate, hash_key,
                          tuple(vips))
