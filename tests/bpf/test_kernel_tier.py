"""The kernel tier and the workers never disagree: every frame the XDP program forwards
itself (XDP_TX), over the fuzz corpus, frames made for the tier, the draft's vectors
and the reference encoder's CIDs at every length the draft allows, IPv4 and IPv6, is
the frame the worker's decision writes, octet for octet; and the tier forwards exactly
what it should (plaintext configs, servers up with a MAC, draining or not; no Initial,
no keyed config, no unknown server). The table is switched by generation."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from pesigitg._fastpath import decide_frame
from pesigitg.daemon.steering import Steering
from pesigitg.daemon.tier import EMPTY, Written, choose, install, place, tier_counts
from pesigitg.ebpf.xdp import Verdict
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, CompiledRoutes, Server, compile_routes
from tests import frames as f
from tests.corpus import (
    BACKENDS,
    CONFIGS,
    FOUR_LONG_SID,
    FOUR_ODD,
    PLAIN,
    ROUTES,
    SERVERS,
    SINGLE,
    VIP4,
    VIP6,
    cid_for,
    corpus,
    mutations,
)
from tests.unit.quiclb_vectors import ALL as DRAFT_VECTORS

MODES = {c.config_id: c.mode for c in CONFIGS}
V2 = 0x6B3343CF
# Long-header first octets: (version, type bits) -> octet. v1: 0-RTT 1, Handshake 2,
# Initial 0; v2 (RFC 9369): Initial 1, 0-RTT 2, Handshake 3.
LONG_TYPES = {(1, "initial"): 0xC0, (1, "0rtt"): 0xD0, (1, "handshake"): 0xE0,
              (V2, "initial"): 0xD0, (V2, "0rtt"): 0xE0, (V2, "handshake"): 0xF0}


def long_header(version: int, kind: str, dcid: bytes) -> bytes:
    first = LONG_TYPES.get((version, kind), 0xD0)   # another version: its own types
    return bytes([first]) + f.quic_long(dcid, version=version)[1:]


def made_for_the_tier(keyed: bool = False) -> Iterator[tuple[bytes, bool]]:
    """(frame, whether the kernel tier forwards it), over both families: every backend
    of the plaintext config (1, 2 up; 3 draining; 4 down; 5 without a MAC), the
    single-pass and both four-pass configs (3 rounds, 4 rounds; forwarded in XDP with
    ``keyed``), an unknown server, short and long headers of QUIC v1 and v2."""
    for family in (4, 6):
        frame = f.udp4_frame if family == 4 else f.udp6_frame
        dst = VIP4 if family == 4 else VIP6
        for backend in range(1, 7):
            cid = cid_for(PLAIN, backend)
            routable = backend in (1, 2, 3)
            yield frame(f.quic_short(cid), dst=dst), routable
            yield frame(f.quic_short(cid, payload=bytes(3)), dst=dst), False   # < 21 octets
            for version in (1, V2):
                for kind in ("0rtt", "handshake"):
                    yield frame(long_header(version, kind, cid), dst=dst), routable
                yield frame(long_header(version, "initial", cid), dst=dst), False
            yield frame(long_header(0x1A2A3A4A, "0rtt", cid), dst=dst), False  # unknown
            for config in (SINGLE, FOUR_ODD, FOUR_LONG_SID):
                yield frame(f.quic_short(cid_for(config, backend)), dst=dst), \
                    keyed and routable
        yield frame(f.quic_short(b"\xe0" + bytes(7)), dst=dst), False           # config 7


def run(xdp: Steering, frame: bytes) -> tuple[Verdict, bytes]:
    return xdp.test_run(frame)


def check_agrees(xdp: Steering, frame: bytes) -> bool:
    """Whether the program forwarded ``frame``; when it did, it wrote what the worker's
    decision writes."""
    verdict, out = run(xdp, frame)
    if verdict != Verdict.TX:
        return False
    route, _, _, _, _, written = decide_frame(ROUTES.table, frame)
    assert route == "cid", frame.hex()
    assert out == written, frame.hex()
    return True


@pytest.fixture
def tier(xdp: Steering) -> Iterator[Steering]:
    xdp.set_vips([VIP4, VIP6])
    install(xdp, ROUTES, choose("plaintext", MODES))
    try:
        yield xdp
    finally:
        install(xdp, ROUTES, choose("off", MODES))
        xdp.set_vips([])


def test_the_tier_forwards_exactly_what_it_should_as_the_worker_would(tier):
    made = list(made_for_the_tier())
    forwarded = [check_agrees(tier, frame) for frame, _ in made]
    assert forwarded == [expected for _, expected in made]
    assert sum(forwarded) == 2 * 3 * 5      # families x routable backends x kinds


@pytest.fixture
def tier_all(tier: Steering) -> Steering:
    """The tier with xdp_decode = all: keyed configs decrypted in XDP (the crypto
    variant of the program, on a kernel with the bpf_crypto kfuncs)."""
    if not tier.crypto:
        pytest.fail("the crypto variant did not load: this kernel has bpf_crypto (6.10+)")
    install(tier, ROUTES, choose("all", MODES, crypto=True))
    return tier


def test_keyed_cids_are_decrypted_in_xdp_as_the_worker_decodes_them(tier_all):
    made = list(made_for_the_tier(keyed=True))
    forwarded = [check_agrees(tier_all, frame) for frame, _ in made]
    assert forwarded == [expected for _, expected in made]
    assert sum(forwarded) == 2 * 3 * 8      # families x routable backends x kinds


def test_over_the_fuzz_corpus_with_keyed_configs_in_xdp_every_frame_is_the_workers(tier_all):
    rng = random.Random(20261208)
    frames = [frame for frame in corpus(per_seed=100) if len(frame) >= 14]
    frames += [m for frame, _ in made_for_the_tier(keyed=True)
               for m in mutations(frame, rng, 40) if len(m) >= 14]
    forwarded = sum(check_agrees(tier_all, frame) for frame in frames)
    assert forwarded > 400, forwarded


def test_a_new_key_replaces_the_old_one_by_generation(tier_all):
    """A reload with another key for the single-pass config: frames under the old key
    no longer decode to a server, under the new one they do; no key is in a map."""
    new = CidConfig(SINGLE.config_id, SINGLE.server_id_len, SINGLE.nonce_len, os.urandom(16))
    configs = [new if c.config_id == SINGLE.config_id else c for c in CONFIGS]
    table = compile_routes(ROUTES.if_mac, configs, BACKENDS, SERVERS,
                           TableOptions(5003, vips=(VIP4, VIP6)))
    install(tier_all, table, choose("all", MODES, crypto=True))
    old_frame = f.udp4_frame(f.quic_short(cid_for(SINGLE, 2)))
    new_frame = f.udp4_frame(f.quic_short(cid_for(new, 2)))
    assert run(tier_all, old_frame)[0] != Verdict.TX
    verdict, out = run(tier_all, new_frame)
    assert verdict == Verdict.TX and out[:6] == bytes([2, 0, 0, 0, 0xBE, 2])
    assert SINGLE.key is not None and new.key is not None
    for name, table_map in tier_all.maps.items():
        if name == "xsks":                  # sockets: nothing to read back
            continue
        for key in table_map.keys():
            value = table_map.lookup_raw(key) or b""
            assert SINGLE.key not in value and new.key not in value, name


def test_over_the_fuzz_corpus_every_forwarded_frame_is_the_workers(tier):
    rng = random.Random(20261207)
    frames = [frame for frame in corpus(per_seed=200) if len(frame) >= 14]
    frames += [m for frame, _ in made_for_the_tier()
               for m in mutations(frame, rng, 40) if len(m) >= 14]
    forwarded = sum(check_agrees(tier, frame) for frame in frames)
    # Mutations keep many frames routable: the comparison above was made many times.
    assert forwarded > 500, forwarded


def test_off_forwards_nothing_and_counts_what_it_forwards(tier):
    slot = ROUTES.table.backend(1)[3]           # backend 10.0.0.2 (server 2)
    configs, slots = [c.config_id for c in CONFIGS], [ROUTES.table.backend(i)[3]
                                                       for i in range(len(BACKENDS))]

    def counted() -> tuple[int, int, int]:
        per_slot, per_config = tier_counts(tier, configs, slots)
        return per_slot[slot], per_config[PLAIN.config_id], tier.counters()["tx_cid"]
    before = counted()
    assert check_agrees(tier, f.udp4_frame(f.quic_short(cid_for(PLAIN, 2))))
    assert [b - a for a, b in zip(before, counted(), strict=True)] == [1, 1, 1]
    install(tier, ROUTES, choose("off", MODES))
    assert not any(check_agrees(tier, frame) for frame, _ in made_for_the_tier())


def test_a_new_table_is_switched_to_whole_by_generation(tier):
    first = tier.tier_generation()
    # Backend 1 goes down, backend 4 comes up: a new table, the other generation.
    backends = [Backend(b.name, b.mac, up=(b.up or b.name == "10.0.0.4")
                        and b.name != "10.0.0.1", draining=b.draining) for b in BACKENDS]
    table = compile_routes(ROUTES.if_mac, CONFIGS, backends, SERVERS,
                           TableOptions(5003, vips=(VIP4, VIP6)))
    written = Written()
    assert install(tier, table, choose("plaintext", MODES), written) == 1 - first
    assert tier.tier_generation() == 1 - first
    used = [e for e in written.slots[1 - first].values() if e[0] != EMPTY]
    assert sorted(e[1] for e in used) == [2, 3, 4]   # servers 2, 3 (draining), 4
    sent = {b: run(tier, f.udp6_frame(f.quic_short(cid_for(PLAIN, b)), dst=VIP6))
            for b in (1, 2, 4)}
    assert sent[1][0] != Verdict.TX
    assert sent[2][0] == Verdict.TX and sent[4][0] == Verdict.TX
    assert sent[4][1][:6] == bytes([2, 0, 0, 0, 0xBE, 4])
    # And back: the first generation is rewritten whole (what it held before is gone).
    install(tier, ROUTES, choose("plaintext", MODES), written)
    assert tier.tier_generation() == first
    assert sorted(e[1] for e in written.slots[first].values() if e[0] != EMPTY) == [1, 2, 3]
    assert run(tier, f.udp4_frame(f.quic_short(cid_for(PLAIN, 4))))[0] != Verdict.TX
    # Written again, the same table changes nothing in the map.
    before = dict(written.slots[1 - first])
    install(tier, table, choose("plaintext", MODES), written)
    assert written.slots[1 - first] == before


def test_servers_are_placed_in_buckets_the_program_finds(tier):
    """600 servers: every one is found (no bucket overflowed, the seed and the hash
    agree with the program's); 2049 do not fit and are said not to."""
    plain = next(c for c in CONFIGS if c.key is None)
    backends = [Backend(f"10.1.{n // 250}.{n % 250 + 1}", bytes([2, 0, 0, n >> 16 & 255,
                                                                 n >> 8 & 255, n & 255]))
                for n in range(600)]
    servers = [Server(plain.config_id, n.to_bytes(3, "big"), b.name)
               for n, b in enumerate(backends)]
    table = compile_routes(ROUTES.if_mac, [plain], backends, servers,
                           TableOptions(5003, vips=(VIP4, VIP6)))
    install(tier, table, choose("plaintext", {plain.config_id: "plaintext"}))
    for n in range(0, 600, 7):
        cid = plain.encode(n.to_bytes(3, "big"), bytes(4))
        verdict, out = run(tier, f.udp4_frame(f.quic_short(cid)))
        assert verdict == Verdict.TX and out[:6] == backends[n].mac, n
    assert place({(0, bytes([n])): bytes(24) for n in range(256)}) is not None
    assert place({(0, n.to_bytes(2, "big")): bytes(24) for n in range(2049)}) is None


def alone(tier: Steering, config: CidConfig, sid: bytes) -> CompiledRoutes:
    """A table of ``config`` alone, decoded in XDP: server ``sid`` on 10.0.0.1 and its
    neighbour (``sid`` + 1) on 10.0.0.2."""
    other = ((int.from_bytes(sid, "big") + 1) % (1 << 8 * len(sid))).to_bytes(len(sid), "big")
    backends = [Backend("10.0.0.1", bytes([2, 0, 0, 0, 0xBE, 1])),
                Backend("10.0.0.2", bytes([2, 0, 0, 0, 0xBE, 2]))]
    servers = [Server(config.config_id, sid, "10.0.0.1"),
               Server(config.config_id, other, "10.0.0.2")]
    table = compile_routes(ROUTES.if_mac, [config], backends, servers,
                           TableOptions(5003, vips=(VIP4, VIP6)))
    install(tier, table, choose("all", {config.config_id: config.mode}, crypto=True))
    return table


def forwarded_to_1(tier: Steering, table: CompiledRoutes, cid: bytes) -> None:
    """A short header and a 0-RTT packet with ``cid``, over both families: each sent by
    XDP to 10.0.0.1's MAC, octet for octet as the worker writes it for ``table``."""
    for frame in (f.udp4_frame(f.quic_short(cid), dst=VIP4),
                  f.udp6_frame(f.quic_short(cid), dst=VIP6),
                  f.udp6_frame(long_header(1, "0rtt", cid), dst=VIP6)):
        verdict, out = run(tier, frame)
        assert verdict == Verdict.TX, (cid.hex(), frame.hex())
        route, _, _, _, _, written = decide_frame(table.table, frame)
        assert route == "cid" and out == written, (cid.hex(), frame.hex())
        assert out[:6] == bytes([2, 0, 0, 0, 0xBE, 1])


@pytest.mark.parametrize("vector", DRAFT_VECTORS, ids=lambda v: f"{v[1]}+{v[2]}-{v[6]}")
def test_the_drafts_vectors_are_forwarded_in_xdp_to_their_server(tier_all, vector):
    config_id, sid_len, nonce_len, key, sid, _, cid = vector
    config = CidConfig(config_id, sid_len, nonce_len, bytes.fromhex(key) if key else None)
    try:
        forwarded_to_1(tier_all, alone(tier_all, config, bytes.fromhex(sid)),
                       bytes.fromhex(cid))
    finally:
        install(tier_all, ROUTES, choose("off", MODES))


@pytest.mark.parametrize("keyed", [False, True], ids=["plaintext", "keyed"])
def test_every_length_the_draft_allows_is_decoded_in_xdp(tier_all, keyed):
    """Every (server_id_len, nonce_len) of the draft's §3 (CIDs up to 20 octets): the
    reference encoder's CID reaches its server in XDP (keyed: single-pass at 16 octets,
    four-pass with 3 or 4 rounds otherwise, as the lengths say)."""
    rng = random.Random(f"xdp{keyed}")
    key = rng.randbytes(16) if keyed else None
    pairs = [(s, n) for s in range(1, 16) for n in range(4, 20 - s)]
    try:
        for sid_len, nonce_len in pairs:
            config = CidConfig(rng.randrange(7), sid_len, nonce_len, key)
            sid = rng.randbytes(sid_len)
            table = alone(tier_all, config, sid)
            forwarded_to_1(tier_all, table, config.encode(sid, rng.randbytes(nonce_len)))
    finally:
        install(tier_all, ROUTES, choose("off", MODES))
