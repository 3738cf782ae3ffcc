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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from pesigitg._fastpath import (
    BACKEND_NONE,
    BACKEND_SLOTS,
    STATE_DRAINING,
    STATE_MAC_KNOWN,
    STATE_UP,
    RouteTable,
    aesni_supported,
    pack_route_table,
)
from pesigitg.errors import ConfigError
from pesigitg.routing.maglev import maglev_table
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import RetryKey, RouteConfig, TableOptions

__all__ = ["BACKEND_NONE", "Backend", "CompiledRoutes", "Server", "TableOptions", "TableSpec",
           "backend_keys", "check_runnable", "compile_route_config", "compile_routes"]


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
    knobs: Mapping[str, int]
    retry_keys: tuple[RetryKey, ...]
    hash_key: bytes | None
    vips: Sequence[str]


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
    options: TableOptions = field(default_factory=TableOptions)

    @property
    def blob(self) -> bytes:
        return self.table.blob

    @cached_property
    def digest(self) -> str:
        """RouteTable.digest(): equal on balancers that decide alike (computed once, the
        table never changes)."""
        return self.table.digest()


def compile_routes(if_mac: bytes, configs: Sequence[CidConfig], backends: Sequence[Backend],
                   servers: Sequence[Server], options: TableOptions | None = None,
                   slots: Mapping[str, int] | None = None) -> CompiledRoutes:
    """The table for these backends and servers (checked where they entered: lb.toml).
    ``slots``: each backend's frame counters (default: its index, for the first
    BACKEND_SLOTS backends)."""
    options = options or TableOptions()
    index = {backend.name: i for i, backend in enumerate(backends)}
    routes: dict[tuple[int, bytes], int] = {}
    by_config: dict[int, list[tuple[bytes, int]]] = {}
    for server in servers:
        key = (server.config_id, bytes(server.server_id))
        routes[key] = index[server.backend]
        by_config.setdefault(server.config_id, []).append((key[1], routes[key]))
    # Sorted by name so the table does not depend on the order of the config file.
    pool = sorted((i for i, b in enumerate(backends) if b.in_fallback_pool),
                  key=lambda i: backends[i].name)
    pool_table = maglev_table([backends[i].name for i in pool], options.maglev_size)
    maglev = [pool[slot] if slot != BACKEND_NONE else BACKEND_NONE for slot in pool_table]
    keys = backend_keys([b.name for b in backends])
    slot_of = slots if slots is not None else {
        b.name: i for i, b in enumerate(backends) if i < BACKEND_SLOTS}
    blob = pack_route_table(TableSpec(
        if_mac, list(configs), [(b.mac, b.state, keys[b.name], slot_of.get(b.name, BACKEND_NONE))
                                for b in backends], by_config,
        array("H", maglev).tobytes(), options.knobs, options.retry_keys, options.hash_key,
        options.vips))
    return CompiledRoutes(bytes(if_mac), list(configs), list(backends), routes, maglev,
                          RouteTable(blob), pool, options)


def compile_route_config(routes: RouteConfig, if_mac: bytes,
                         backend: Callable[[str], Backend],
                         slots: Mapping[str, int] | None = None) -> CompiledRoutes:
    """The table of lb.toml ``routes``; ``backend(address)`` says what is known of each
    backend (its MAC, health, drain)."""
    servers = [Server(s.config_id, s.server_id, s.address) for s in routes.servers]
    return compile_routes(if_mac, routes.configs, [backend(a) for a in routes.addresses],
                          servers, routes.table_options(), slots)


def check_runnable(routes: RouteConfig, if_mac: bytes = bytes(6),
                   backend: Callable[[str], Backend] = lambda a: Backend(a, None)
                   ) -> CompiledRoutes:
    """What can be verified beyond syntax (``--check``, start, SIGHUP, pesigitg-ctl's
    offline checks): the CPU has AES-NI when a config has a key, and the route table
    compiles; returns the table (compiled with placeholders when no MACs are given)."""
    if any(c.key is not None for c in routes.configs) and not aesni_supported():
        raise ConfigError("this CPU has no AES-NI instructions, which pesigitg needs to "
                          "decode encrypted QUIC-LB connection IDs", file=str(routes.path))
    return compile_route_config(routes, if_mac, backend)
