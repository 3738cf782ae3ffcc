"""Routing decisions, each test body run against the Cython decider and the reference."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pesigitg._fastpath import decide_frame, decide_frames_together
from pesigitg.routing.decision import decide, flow_hash
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, CompiledRoutes, Server, compile_routes
from tests import frames as f
from tests.conftest import aes_paths, forced_aes_path
from tests.corpus import (
    BACKENDS,
    CONFIGS,
    FOUR_LONG_SID,
    FOUR_ODD,
    LB_MAC,
    PLAIN,
    ROUTES,
    SERVERS,
    SINGLE,
    cid_for,
    mac,
    unroutable,
)

Decide = Callable[[CompiledRoutes, bytes], tuple]


def fast(routes: CompiledRoutes, frame: bytes) -> tuple:
    return decide_frame(routes.table, frame)[:5]


def reference(routes: CompiledRoutes, frame: bytes) -> tuple:
    return decide(routes, frame).as_tuple()


def _companions() -> list[bytes]:
    """Frames of every kind around the one under test in a batch: CIDs of every config
    (so of every mode and both keys) to several servers, over both families, long and
    short headers, and frames that fall back by their 4-tuples (IPv4 ones to fill a
    group of the tuples' hash and part of the next, IPv6 ones in between)."""
    out = []
    for n, config in enumerate(CONFIGS * 3):
        cid = cid_for(config, 1 + n % 3, nonce=n)
        out.append(f.udp4_frame(f.quic_short(cid)) if n % 2 else
                   f.udp6_frame(f.quic_short(cid)))
        if n % 4 == 0:
            out.append(f.udp4_frame(f.quic_long(cid)))
        if n % 2 == 0:
            out.append(unroutable(n, v6=n % 8 == 4))
    return out


COMPANIONS = _companions()


def batched(path: str) -> Decide:
    """The frame decided in the middle of a batch on AES path ``path``, the loop's own
    batch function; every other frame of the batch must decide as it does alone."""
    def decide_in_batch(routes: CompiledRoutes, frame: bytes) -> tuple:
        frames = [*COMPANIONS[:9], frame, *COMPANIONS[9:]]
        with forced_aes_path(path):
            got = decide_frames_together(routes.table, frames)
        assert got == [decide_frame(routes.table, other) for other in frames]
        return got[9][:5]
    return decide_in_batch


@pytest.fixture(params=["fastpath", "reference", *(f"batch-{p}" for p in aes_paths())])
def decider(request: pytest.FixtureRequest) -> Decide:
    if request.param == "fastpath":
        return fast
    if request.param == "reference":
        return reference
    return batched(request.param.removeprefix("batch-"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.mode}-{c.config_id}")
@pytest.mark.parametrize("backend", [1, 2])
def test_short_header_cid_goes_to_its_server(decider, config, backend):
    frame = f.udp4_frame(f.quic_short(cid_for(config, backend)))
    assert decider(ROUTES, frame) == ("cid", backend - 1, config.config_id, "none", "none")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.mode}-{c.config_id}")
def test_long_header_with_a_server_cid_goes_to_its_server(decider, config):
    frame = f.udp6_frame(f.quic_long(cid_for(config, 2)))
    assert decider(ROUTES, frame) == ("cid", 1, config.config_id, "none", "none")


def test_draining_server_keeps_its_connections(decider):
    frame = f.udp4_frame(f.quic_short(cid_for(FOUR_ODD, 3)))
    assert decider(ROUTES, frame) == ("cid", 2, 2, "none", "none")


@pytest.mark.parametrize(("backend", "reason"), [(4, "server_down"), (5, "server_down")])
def test_cid_of_a_down_or_unresolved_server_falls_back(decider, backend, reason):
    route, chosen, _, unroutable, _ = decider(ROUTES, f.udp4_frame(f.quic_short(
        cid_for(SINGLE, backend))))
    assert (route, unroutable) == ("fallback", reason)
    assert chosen in ROUTES.pool


def test_unknown_server_and_unknown_config_fall_back(decider):
    unknown = FOUR_LONG_SID.encode(bytes([9]) * 10, bytes(5))
    assert decider(ROUTES, f.udp4_frame(f.quic_short(unknown)))[3] == "unknown_server"
    other = CidConfig(5, 3, 4).encode(b"abc", b"1234")
    assert decider(ROUTES, f.udp4_frame(f.quic_short(other)))[3] == "no_config"
    assert decider(ROUTES, f.udp4_frame(f.quic_short(b"\xe7" + bytes(7))))[3] == "no_config"


def test_fallback_pool_is_up_known_and_not_draining():
    assert ROUTES.pool == [0, 1]


def test_initials_with_the_same_dcid_always_reach_the_same_backend(decider):
    dcid = bytes.fromhex("c0ffee0123456789")
    chosen = {decider(ROUTES, f.udp4_frame(f.quic_long(dcid, scid=bytes([n]) * 8),
                                           sport=40000 + n, src=f"192.0.2.{n + 1}"))
              for n in range(20)}
    assert len(chosen) == 1
    route, backend, _, unroutable, _ = chosen.pop()
    assert route == "fallback" and unroutable == "no_config"
    assert backend == ROUTES.maglev[flow_hash(dcid) % 5003]


def test_short_header_fallback_hashes_the_four_tuple(decider):
    frame = f.udp4_frame(f.quic_short(b"\xe0" + bytes(7)), sport=51234, dport=443,
                         src="192.0.2.77", dst="198.51.100.1")
    key = bytes([192, 0, 2, 77, 198, 51, 100, 1]) + struct.pack("!HH", 51234, 443)
    assert decider(ROUTES, frame)[:2] == ("fallback", ROUTES.maglev[flow_hash(key) % 5003])


def icmp_about(quic: bytes, kind: int, code: int, v6: bool = False) -> bytes:
    """An ICMP error from a router about a packet a backend sent (VIP:443 -> client)."""
    if v6:
        quoted = f.ipv6(f.udp(quic, sport=443, dport=51234), f.PROTO_UDP,
                        src="2001:db8:1::1", dst="2001:db8::77")
        return f.ether(f.ipv6(f.icmp6(kind, code, quoted), f.PROTO_ICMPV6,
                              src="2001:db8:ff::9", dst="2001:db8:1::1"), f.ETH_P_IPV6)
    quoted = f.ipv4(f.udp(quic, sport=443, dport=51234), f.PROTO_UDP, src="198.51.100.1",
                    dst="192.0.2.77")
    return f.ether(f.ipv4(f.icmp4(kind, code, quoted), f.PROTO_ICMP, src="203.0.113.9",
                          dst="198.51.100.1"), f.ETH_P_IP)


def flow_backend(v6: bool = False) -> int:
    """Maglev's choice for the quoted flow, reversed: client -> VIP."""
    if v6:
        key = (bytes.fromhex("20010db8000000000000000000000077")
               + bytes.fromhex("20010db8000100000000000000000001"))
    else:
        key = bytes([192, 0, 2, 77, 198, 51, 100, 1])
    return ROUTES.maglev[flow_hash(key + struct.pack("!HH", 51234, 443)) % 5003]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_an_icmp_error_about_a_short_header_follows_the_quoted_flow(decider, v6):
    unreachable = icmp_about(f.quic_short(bytes(8)), 1 if v6 else 3, 4 if v6 else 3, v6)
    assert decider(ROUTES, unreachable) == ("icmp", flow_backend(v6), None, "none", "none")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_packet_too_big_about_a_short_header_goes_to_every_backend(decider, v6):
    # Only the client's CID is in a short header: no telling which backend sent it.
    too_big = icmp_about(f.quic_short(bytes(8)), 2 if v6 else 3, 0 if v6 else 4, v6)
    assert decider(ROUTES, too_big) == ("icmp_fanout", flow_backend(v6), None, "none", "none")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_packet_too_big_quoting_no_vip_is_never_copied_to_every_backend(decider, v6):
    # Anyone can quote any packet: one that did not leave from a VIP goes by hash alone.
    too_big = icmp_about(f.quic_short(bytes(8)), 2 if v6 else 3, 0 if v6 else 4, v6)
    unlisted = compile_routes(ROUTES.if_mac, ROUTES.configs, ROUTES.backends, SERVERS,
                              TableOptions(5003))
    assert decider(unlisted, too_big) == ("icmp_not_vip", flow_backend(v6), None, "none",
                                          "none")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.mode}-{c.config_id}")
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_an_icmp_error_about_a_long_header_goes_to_the_server_of_its_source_cid(
        decider, config, v6):
    # The backend sent it: its own CID is the source CID, the client's the destination.
    long_header = f.quic_long(dcid=bytes(8), scid=cid_for(config, 2))
    for kind, code in ((3, 4), (3, 3), (11, 0)) if not v6 else ((2, 0), (1, 4), (3, 0)):
        assert decider(ROUTES, icmp_about(long_header, kind, code, v6)) == \
            ("icmp_cid", 1, config.config_id, "none", "none")


def test_an_icmp_error_about_a_long_header_without_a_whole_routable_cid_falls_back(decider):
    down = f.quic_long(dcid=bytes(8), scid=cid_for(PLAIN, 4))           # server down
    cut = f.quic_long(dcid=bytes(8), scid=cid_for(PLAIN, 2))[:-34]      # SCID cut short
    for quic in (down, cut, f.quic_long(dcid=bytes(8), scid=b"")):
        assert decider(ROUTES, icmp_about(quic, 3, 4))[:4] == \
            ("icmp_fanout", flow_backend(), None, "none")
        assert decider(ROUTES, icmp_about(quic, 3, 1))[:4] == \
            ("icmp", flow_backend(), None, "none")


@pytest.mark.parametrize(("frame", "reason"), [
    (f.udp4_frame(b""), "not_quic"),
    (f.udp4_frame(b"\xc0\x00\x00"), "not_quic"),
    (f.udp4_frame(b"\xc0\x00\x00\x00\x01\x30" + bytes(20)), "not_quic"),     # DCID past end
    (f.udp4_frame(b"\xc0\x00\x00\x00\x01\x15" + bytes(40)), "not_quic"),     # v1, 21 octets
    (f.udp4_frame(b"\x40" + bytes(10)), "not_quic"),                         # short too small
    (f.arp_request(), "not_ip"),
    (f.ether(f.ipv4(f.tcp(), f.PROTO_TCP), f.ETH_P_IP), "not_udp"),
    (f.ether(f.ipv4(f.udp(b"x" * 30), f.PROTO_UDP, frag=0x2000), f.ETH_P_IP), "fragment"),
    (f.udp6_frame(ext=[(f.FRAGMENT, f.frag_header(0, more=True))]), "fragment"),
    (f.udp6_frame(ext=[(f.DSTOPTS, f.ext_header())] * 9), "ext_depth"),
    (f.udp4_frame()[:14 + 20 + 4], "malformed"),
    (f.udp4_frame()[:12], "malformed"),
    (f.ether(f.ipv4(struct.pack("!HHHH", 1, 443, 4, 0), f.PROTO_UDP), f.ETH_P_IP),
     "malformed"),                                                          # UDP length 4
    # An error quoting a fragment, or quoting no UDP, is not routable.
    (f.ether(f.ipv4(f.icmp4(3, 4, f.ipv4(f.udp(b"x" * 8, sport=443), f.PROTO_UDP,
                                         frag=0x2000)), f.PROTO_ICMP), f.ETH_P_IP), "not_udp"),
    (f.ether(f.ipv4(f.icmp4(3, 3, f.ipv4(f.tcp(sport=443), f.PROTO_TCP)), f.PROTO_ICMP),
             f.ETH_P_IP), "not_udp"),
])
def test_frames_that_are_not_quic_are_dropped_with_a_reason(decider, frame, reason):
    assert decider(ROUTES, frame) == ("none", None, None, "none", reason)


def test_eight_extension_headers_are_walked_and_an_atomic_fragment_is_whole(decider):
    # RFC 6946: a fragment header with offset 0 and M clear is a complete datagram.
    ext = [(f.DSTOPTS, f.ext_header())] * 7 + [(f.FRAGMENT, f.frag_header(0))]
    frame = f.udp6_frame(f.quic_short(cid_for(PLAIN, 2)), ext=ext)
    assert decider(ROUTES, frame) == ("cid", 1, 0, "none", "none")


def test_no_backend_when_the_pool_is_empty(decider):
    empty = compile_routes(LB_MAC, CONFIGS, [Backend("10.0.0.1", mac(1), up=False)],
                           [Server(0, b"\x01" * 3, "10.0.0.1")], TableOptions(5003))
    frame = f.udp4_frame(f.quic_short(cid_for(PLAIN, 1)))
    assert decider(empty, frame) == ("none", None, None, "server_down", "no_backend")


def test_long_dcid_of_other_versions_is_hashed_not_dropped(decider):
    frame = f.udp4_frame(b"\xc0\x0a\x0a\x0a\x0a\x28" + bytes(range(40)) + b"\x00" * 20)
    assert decider(ROUTES, frame)[0] == "fallback"


def test_udp_length_bounds_the_datagram(decider):
    # A 10-octet short header padded by Ethernet to 60 octets must not look longer.
    frame = f.udp4_frame(b"\x40" + bytes(9))
    assert decider(ROUTES, frame + bytes(40))[4] == "not_quic"


def test_rewrite_changes_only_the_ethernet_addresses():
    frame = f.udp6_frame(f.quic_short(cid_for(SINGLE, 2)))
    out = decide_frame(ROUTES.table, frame)[5]
    assert out == mac(2) + LB_MAC + frame[12:]


# -- differential: arbitrary and mutated frames decide the same in both ----------------

SAMPLES = [
    f.udp4_frame(f.quic_short(cid_for(FOUR_LONG_SID, 1))),
    f.udp6_frame(f.quic_long(cid_for(SINGLE, 2)),
                 ext=[(f.HOPOPTS, f.ext_header()), (f.DSTOPTS, f.ext_header(1))]),
    f.udp4_frame(f.quic_long(b"\x12" * 8), options=b"\x01" * 8),
    f.ether(f.ipv6(f.icmp6(2, 0, f.ipv6(f.udp(b"", sport=443), f.PROTO_UDP)), f.PROTO_ICMPV6),
            f.ETH_P_IPV6),
]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                          max_size=4), st.integers(0, 200))
def test_mutated_frames_decide_alike(frame, mutations, cut):
    data = bytearray(frame)
    for position, value in mutations:
        data[position % len(data)] = value
    data = data[:max(cut, 14)] if cut < len(data) else data
    assert fast(ROUTES, bytes(data)) == reference(ROUTES, bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_arbitrary_bytes_decide_alike(data):
    assert fast(ROUTES, data) == reference(ROUTES, data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONFIGS), st.integers(1, 5), st.binary(min_size=19, max_size=19),
       st.booleans())
def test_any_cid_of_any_backend_decides_alike(config, backend, nonce, long_header):
    cid = config.encode(bytes([backend]) * config.server_id_len, nonce[:config.nonce_len])
    payload = f.quic_long(cid) if long_header else f.quic_short(cid)
    frame = f.udp4_frame(payload)
    assert fast(ROUTES, frame) == reference(ROUTES, frame)


KEYED = compile_routes(LB_MAC, CONFIGS, [Backend(f"10.0.0.{n}", mac(n)) for n in range(1, 6)],
                       [], TableOptions(5003, hash_key=bytes(range(16))))


def test_a_keyed_fallback_decides_alike_and_differently_from_the_unkeyed_one():
    """[fallback] hash_key: SipHash-2-4 (reference vectors of the paper in the Python
    reference), the fast path agreeing over the corpus, and other choices than FNV's."""
    from pesigitg.routing.decision import _siphash24
    from tests.corpus import corpus

    assert _siphash24(bytes(range(16)), b"") == 0x726FDB47DD0E0E31
    assert _siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5
    differ = 0
    unkeyed = compile_routes(LB_MAC, CONFIGS, KEYED.backends, [], TableOptions(5003))
    for frame in corpus(per_seed=40):
        assert fast(KEYED, frame) == reference(KEYED, frame), frame.hex()
        if fast(KEYED, frame)[1] != fast(unkeyed, frame)[1]:
            differ += 1
    assert differ > 100


@pytest.mark.parametrize("path", aes_paths())
def test_a_keyed_fallback_decides_alike_in_batches(path):
    """With a hash_key the tuples of a batch are hashed together too (SipHash-2-4, eight
    lanes on the VAES path): every frame of the corpus, in batches, as it does alone."""
    from tests.corpus import corpus

    frames = [*corpus(per_seed=10), *(unroutable(n) for n in range(200))]
    with forced_aes_path(path):
        for start in range(0, len(frames), 64):
            batch = frames[start:start + 64]
            assert decide_frames_together(KEYED.table, batch) == \
                [decide_frame(KEYED.table, frame) for frame in batch]


def test_two_balancers_with_the_same_configuration_decide_alike():
    """Behind ECMP any balancer may see any packet of a connection: given the same
    lb.toml (hash key included) and backend states, their tables differ only in their
    own MAC, and every frame gets the same backend."""
    from tests.corpus import corpus

    keyed = TableOptions(5003, hash_key=bytes(range(16)))
    one = compile_routes(bytes.fromhex("02000000aa01"), CONFIGS, BACKENDS, SERVERS, keyed)
    two = compile_routes(bytes.fromhex("02000000aa02"), CONFIGS, BACKENDS, SERVERS, keyed)
    assert one.blob != two.blob and one.table.digest() == two.table.digest()
    # Counter slots depend on each daemon's history of reloads: bookkeeping, left out.
    slots = {b.name: len(BACKENDS) - n for n, b in enumerate(BACKENDS)}
    three = compile_routes(bytes.fromhex("02000000aa03"), CONFIGS, BACKENDS, SERVERS, keyed,
                           slots=slots)
    assert three.table.digest() == one.table.digest()
    other_key = compile_routes(bytes.fromhex("02000000aa01"), CONFIGS, BACKENDS, SERVERS,
                               TableOptions(5003, hash_key=bytes(16)))
    assert other_key.table.digest() != one.table.digest()
    for frame in corpus(per_seed=40):
        assert fast(one, frame) == fast(two, frame), frame.hex()
