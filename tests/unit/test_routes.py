"""Route-table compilation and Maglev: balance, minimal disruption, determinism."""

from __future__ import annotations

from collections import Counter

import pytest

from pesigitg._fastpath import (
    BACKEND_NONE,
    CID_CONFIG_SIZE,
    CID_CONFIGS,
    ROUTE_HEADER_SIZE,
    RouteTable,
)
from pesigitg.routing.maglev import is_prime, maglev_table
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, Server, backend_keys, compile_routes

MAC = bytes.fromhex("020000000001")
SMALL_PRIME = 5003
SMALL = TableOptions(SMALL_PRIME)
NAMES = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(50)]


@pytest.mark.parametrize("n", range(2, 51))
def test_maglev_shares_are_within_a_few_percent_of_one_nth(n):
    table = maglev_table(NAMES[:n], 65537)
    shares = Counter(table)
    assert set(shares) == set(range(n))
    ideal = 65537 / n
    for count in shares.values():
        assert abs(count - ideal) / ideal < 0.03


@pytest.mark.parametrize("n", range(2, 51))
def test_removing_one_backend_moves_about_one_nth_and_nothing_else(n):
    before = maglev_table(NAMES[:n], 65537)
    removed = n // 2
    survivors = NAMES[:removed] + NAMES[removed + 1:n]
    after = [survivors[i] for i in maglev_table(survivors, 65537)]
    before_names = [NAMES[i] for i in before]
    moved = [i for i in range(65537) if before_names[i] != after[i]]
    orphaned = [i for i in range(65537) if before_names[i] == NAMES[removed]]
    # Every slot of the removed backend moves; of the others only a small extra share.
    assert set(orphaned) <= set(moved)
    extra = len(moved) - len(orphaned)
    assert extra / 65537 < max(0.3 / n, 0.01), f"{extra} slots moved needlessly"
    assert abs(len(orphaned) / 65537 - 1 / n) < 0.03 / n + 0.001


def test_maglev_is_deterministic_and_independent_of_listing_order():
    a = compile_routes(MAC, [], [Backend(name, MAC) for name in NAMES[:7]], [], SMALL)
    b = compile_routes(MAC, [], [Backend(name, MAC) for name in reversed(NAMES[:7])], [],
                       SMALL)
    assert [a.backends[i].name for i in a.maglev] == [b.backends[i].name for i in b.maglev]
    assert maglev_table(NAMES[:7], SMALL_PRIME) == maglev_table(NAMES[:7], SMALL_PRIME)


def test_maglev_table_size_must_be_prime():
    assert is_prime(65537) and is_prime(5003) and not is_prime(65536)
    with pytest.raises(ValueError, match="Maglev table size 65536 is not a prime"):
        maglev_table(NAMES[:3], 65536)


def test_fallback_pool_excludes_down_draining_and_macless_backends():
    backends = [Backend("a", MAC), Backend("b", MAC, up=False), Backend("c", MAC, draining=True),
                Backend("d", None), Backend("e", MAC)]
    routes = compile_routes(MAC, [], backends, [], SMALL)
    assert set(routes.maglev) == {0, 4}
    assert routes.pool == [0, 4]


def test_empty_fallback_pool_gives_an_empty_maglev_table():
    routes = compile_routes(MAC, [], [Backend("a", MAC, up=False)], [], SMALL)
    assert set(routes.maglev) == {BACKEND_NONE}


def test_blob_round_trips_backends_and_maglev():
    config = CidConfig(1, 3, 4)
    backends = [Backend("a", bytes.fromhex("02aa00000001")), Backend("b", None, draining=True)]
    routes = compile_routes(MAC, [config], backends,
                            [Server(1, b"abc", "a"), Server(1, b"abd", "b")], SMALL)
    table = RouteTable(routes.blob)
    assert table.n_backends == 2 and table.maglev_size == SMALL_PRIME and table.if_mac == MAC
    keys = backend_keys(["a", "b"])
    assert table.backend(0) == (bytes.fromhex("02aa00000001"), 1 | 4, keys["a"], 0)
    assert table.backend(1) == (bytes(6), 1 | 2, keys["b"], 1)
    assert table.backend_by_key(keys["b"]) == 1 and table.backend_by_key(12345) is None
    assert table.maglev() == routes.maglev


def test_route_table_refuses_corrupt_blobs():
    blob = compile_routes(MAC, [CidConfig(1, 3, 4)], [Backend("a", MAC)],
                          [Server(1, b"abc", "a")], SMALL).blob
    with pytest.raises(ValueError, match="shorter than its header"):
        RouteTable(blob[:100])
    with pytest.raises(ValueError, match="bad magic"):
        RouteTable(b"XXXX" + blob[4:])
    with pytest.raises(ValueError, match="says it is"):
        RouteTable(blob + b"\0" * 8)
    corrupt = bytearray(blob)
    maglev_off = int.from_bytes(blob[24:28], "little")
    corrupt[maglev_off:maglev_off + 2] = (7).to_bytes(2, "little")
    with pytest.raises(ValueError, match="Maglev slot 0 names backend 7"):
        RouteTable(bytes(corrupt))


@pytest.mark.parametrize(("sid_len", "nonce_len", "wrong_mode"), [(8, 8, 3), (3, 4, 2)])
def test_route_table_refuses_a_keyed_mode_that_does_not_fit_the_lengths(sid_len, nonce_len,
                                                                         wrong_mode):
    """Single-pass is one AES block exactly (§5.4) and four-pass anything else (§5.5):
    the batch decode loads 16 octets for the one and masks halves for the other."""
    config = CidConfig(1, sid_len, nonce_len, bytes(16))
    blob = bytearray(compile_routes(MAC, [config], [Backend("a", MAC)],
                                    [Server(1, b"s" * sid_len, "a")], SMALL).blob)
    mode = ROUTE_HEADER_SIZE - CID_CONFIGS * CID_CONFIG_SIZE + 1 * CID_CONFIG_SIZE
    assert blob[mode] in (2, 3) and blob[mode + 1:mode + 3] == bytes([sid_len, nonce_len])
    RouteTable(bytes(blob))
    blob[mode] = wrong_mode
    with pytest.raises(ValueError, match="config id 1 has inconsistent lengths or mode"):
        RouteTable(bytes(blob))
