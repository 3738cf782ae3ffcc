"""The XDP program's verdict for frames built byte by byte, run with BPF_PROG_TEST_RUN.

No AF_XDP socket is bound here, so frames the program steers come back as XDP_DROP
counted as drop_no_socket; tests/netns binds a socket and sees XDP_REDIRECT.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pesigitg.daemon.steering import Steering
from pesigitg.ebpf import Verdict
from tests import frames as f

STEERED = (Verdict.DROP, "drop_no_socket")


def passed(reason: str) -> tuple[Verdict, str]:
    return Verdict.PASS, reason


VIP4, VIP6 = "198.51.100.1", "2001:db8:1::1"

quoted_udp4 = f.ipv4(f.udp(b"\x40" + bytes(8), sport=443, dport=50000), f.PROTO_UDP,
                     src=VIP4, dst="192.0.2.10")
quoted_udp6 = f.ipv6(f.udp(b"\x40" + bytes(8), sport=443, dport=50000), f.PROTO_UDP,
                     src=VIP6, dst="2001:db8::10")


def icmp4_frame(icmp_type: int, quoted: bytes, code: int = 0) -> bytes:
    return f.ether(f.ipv4(f.icmp4(icmp_type, code, quoted), f.PROTO_ICMP,
                          src="203.0.113.1", dst=VIP4), f.ETH_P_IP)


def icmp6_frame(icmp_type: int, quoted: bytes, code: int = 0) -> bytes:
    return f.ether(f.ipv6(f.icmp6(icmp_type, code, quoted), f.PROTO_ICMPV6,
                          src="2001:db8:ffff::1", dst=VIP6), f.ETH_P_IPV6)


def dstopts(n: int) -> list[tuple[int, bytes]]:
    return [(f.DSTOPTS, f.ext_header())] * n


# (id, frame, VIPs for the filter (empty = off), expected verdict and counter)
CASES = [
    ("udp4-443", f.udp4_frame(dport=443), [], STEERED),
    ("udp4-4433", f.udp4_frame(dport=4433), [], STEERED),
    ("udp4-other-port", f.udp4_frame(dport=53), [], passed("pass_port")),
    ("udp4-source-port-only", f.udp4_frame(sport=443, dport=5353), [], passed("pass_port")),
    ("udp4-options-8", f.udp4_frame(options=b"\x94\x04\x00\x00" * 2), [], STEERED),
    ("udp4-options-40", f.udp4_frame(options=b"\x01" * 40), [], STEERED),
    ("tcp4-443", f.ether(f.ipv4(f.tcp(), f.PROTO_TCP), f.ETH_P_IP), [], passed("pass_not_udp")),
    ("arp", f.arp_request(), [], passed("pass_not_ip")),
    ("vlan-tagged", f.ether(b"\x00\x05\x08\x00" + f.ipv4(f.udp(b"x"), f.PROTO_UDP),
                            f.ETH_P_8021Q), [], passed("pass_not_ip")),
    ("ipv4-nonfirst-fragment", f.ether(f.ipv4(f.udp(b"x" * 16), f.PROTO_UDP, frag=185),
                                       f.ETH_P_IP), [], passed("pass_fragment")),
    # Fragments: never one steered and another passed. VIP filter off: all pass.
    ("ipv4-first-fragment", f.ether(f.ipv4(f.udp(b"x" * 16), f.PROTO_UDP, frag=0x2000),
                                    f.ETH_P_IP), [], passed("pass_fragment")),
    # Filter on: every UDP fragment to a VIP is dropped (QUIC sets DF), counted.
    ("ipv4-first-fragment-to-vip",
     f.ether(f.ipv4(f.udp(b"x" * 16), f.PROTO_UDP, dst=VIP4, frag=0x2000), f.ETH_P_IP),
     [VIP4], (Verdict.DROP, "drop_fragment")),
    ("ipv4-nonfirst-fragment-to-vip",
     f.ether(f.ipv4(b"x" * 24, f.PROTO_UDP, dst=VIP4, frag=185), f.ETH_P_IP), [VIP4],
     (Verdict.DROP, "drop_fragment")),
    ("ipv4-fragment-to-another-address",
     f.ether(f.ipv4(b"x" * 24, f.PROTO_UDP, dst="198.51.100.7", frag=185), f.ETH_P_IP),
     [VIP4], passed("pass_fragment")),
    ("ipv4-icmp-fragment-to-vip",
     f.ether(f.ipv4(b"x" * 24, f.PROTO_ICMP, dst=VIP4, frag=0x2000), f.ETH_P_IP), [VIP4],
     passed("pass_fragment")),
    ("ipv4-ihl-4", f.ether(bytes([0x44]) + f.ipv4(f.udp(b"x"), f.PROTO_UDP)[1:], f.ETH_P_IP),
     [], passed("pass_malformed")),
    ("ipv4-version-6-in-ip-ethertype",
     f.ether(bytes([0x65]) + f.ipv4(f.udp(b"x"), f.PROTO_UDP)[1:], f.ETH_P_IP), [],
     passed("pass_malformed")),
    ("icmp4-unreachable-quoting-443", icmp4_frame(3, quoted_udp4, 4), [], STEERED),
    ("icmp4-time-exceeded-quoting-443", icmp4_frame(11, quoted_udp4), [], STEERED),
    ("icmp4-unreachable-quoting-53",
     icmp4_frame(3, f.ipv4(f.udp(b"", sport=53), f.PROTO_UDP)), [], passed("pass_icmp")),
    ("icmp4-echo", icmp4_frame(8, b"ping" * 4), [], passed("pass_icmp")),
    ("icmp4-quoting-tcp", icmp4_frame(3, f.ipv4(f.tcp(sport=443), f.PROTO_TCP)), [],
     passed("pass_icmp")),
    ("icmp4-quote-cut-inside-udp", icmp4_frame(3, quoted_udp4[:24]), [],
     passed("pass_malformed")),
    ("vip4-listed", f.udp4_frame(dst=VIP4), [VIP4], STEERED),
    ("vip4-not-listed", f.udp4_frame(dst="198.51.100.2"), [VIP4], passed("pass_vip")),
    ("vip4-only-v6-listed", f.udp4_frame(dst=VIP4), [VIP6], passed("pass_vip")),
    ("vip4-filter-port-first", f.udp4_frame(dst="198.51.100.2", dport=53), [VIP4],
     passed("pass_port")),
    ("icmp4-quoting-non-vip-source", icmp4_frame(3, quoted_udp4), ["198.51.100.9"],
     passed("pass_icmp")),
    ("icmp4-quoting-vip-source", icmp4_frame(3, quoted_udp4), [VIP4], STEERED),
    ("udp6-443", f.udp6_frame(), [], STEERED),
    ("udp6-other-port", f.udp6_frame(dport=8443), [], passed("pass_port")),
    ("udp6-hop-by-hop", f.udp6_frame(ext=[(f.HOPOPTS, f.ext_header())]), [], STEERED),
    ("udp6-hbh-routing-dstopts-first-fragment",
     f.udp6_frame(ext=[(f.HOPOPTS, f.ext_header(1)), (f.ROUTING, f.ext_header(2)),
                       (f.DSTOPTS, f.ext_header()), (f.FRAGMENT, f.frag_header(0, more=True))]),
     [], passed("pass_fragment")),
    # RFC 6946: offset 0 and M clear is an atomic fragment, a whole datagram.
    ("udp6-hbh-routing-dstopts-atomic-fragment",
     f.udp6_frame(ext=[(f.HOPOPTS, f.ext_header(1)), (f.ROUTING, f.ext_header(2)),
                       (f.DSTOPTS, f.ext_header()), (f.FRAGMENT, f.frag_header(0))]),
     [], STEERED),
    ("udp6-atomic-fragment-to-vip", f.udp6_frame(ext=[(f.FRAGMENT, f.frag_header(0))]),
     [VIP6], STEERED),
    ("udp6-6-extension-headers", f.udp6_frame(ext=dstopts(6)), [], STEERED),
    ("udp6-8-extension-headers", f.udp6_frame(ext=dstopts(8)), [], STEERED),
    ("udp6-9-extension-headers", f.udp6_frame(ext=dstopts(9)), [], passed("pass_ext_depth")),
    ("udp6-nonfirst-fragment", f.udp6_frame(ext=[(f.FRAGMENT, f.frag_header(100))]), [],
     passed("pass_fragment")),
    ("udp6-nonfirst-fragment-to-vip", f.udp6_frame(ext=[(f.FRAGMENT, f.frag_header(100))]),
     [VIP6], (Verdict.DROP, "drop_fragment")),
    ("udp6-ext-length-past-end",
     f.ether(f.ipv6(bytes([f.PROTO_UDP, 200]) + bytes(14), f.DSTOPTS), f.ETH_P_IPV6), [],
     passed("pass_malformed")),
    ("tcp6", f.ether(f.ipv6(f.tcp(), f.PROTO_TCP), f.ETH_P_IPV6), [], passed("pass_not_udp")),
    ("icmp6-packet-too-big-quoting-443", icmp6_frame(2, quoted_udp6), [], STEERED),
    ("icmp6-unreachable-quoting-53",
     icmp6_frame(1, f.ipv6(f.udp(b"", sport=53), f.PROTO_UDP)), [], passed("pass_icmp")),
    ("icmp6-echo-request", icmp6_frame(128, b"ping" * 4), [], passed("pass_icmp")),
    ("icmp6-neighbour-solicitation", icmp6_frame(135, bytes(20)), [], passed("pass_icmp")),
    ("vip6-listed", f.udp6_frame(), [VIP6], STEERED),
    ("vip6-not-listed", f.udp6_frame(dst="2001:db8:1::2"), [VIP6, VIP4], passed("pass_vip")),
    ("ipv6-version-4-in-ipv6-ethertype",
     f.ether(bytes([0x40]) + f.ipv6(f.udp(b"x"), f.PROTO_UDP)[1:], f.ETH_P_IPV6), [],
     passed("pass_malformed")),
]


def run(xdp: Steering, frame: bytes) -> tuple[Verdict, str]:
    before = xdp.counters()
    verdict, _ = xdp.test_run(frame)
    after = xdp.counters()
    changed = [name for name in after if after[name] != before[name]]
    assert len(changed) == 1, f"one verdict must bump exactly one counter, got {changed}"
    assert after[changed[0]] == before[changed[0]] + 1
    return verdict, changed[0]


@pytest.mark.parametrize(("frame", "vips", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_verdict(xdp, frame, vips, expected):
    xdp.set_vips(vips)
    try:
        assert run(xdp, frame) == expected
    finally:
        xdp.set_vips([])


def test_frames_pass_through_unchanged(xdp):
    frame = f.udp4_frame(dport=53)
    verdict, out = xdp.test_run(frame)
    assert verdict == Verdict.PASS and out == frame


# Steered frames cut at every octet inside their headers: always PASS, counted malformed.
TRUNCATED = {
    "udp4-options": (f.udp4_frame(options=b"\x01" * 12), 14 + 32 + 8),
    "udp6-ext": (f.udp6_frame(ext=[(f.HOPOPTS, f.ext_header(1)),
                                   (f.FRAGMENT, f.frag_header())]), 14 + 40 + 16 + 8 + 8),
    "icmp4-error": (icmp4_frame(3, quoted_udp4), 14 + 20 + 8 + 20 + 8),
    "icmp6-error": (icmp6_frame(2, quoted_udp6), 14 + 40 + 8 + 40 + 8),
}


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_frames_truncated_inside_any_header_pass_as_malformed(xdp, name):
    frame, headers_end = TRUNCATED[name]
    assert run(xdp, frame[:headers_end]) == STEERED  # complete headers are steered
    for length in range(14, headers_end):
        assert run(xdp, frame[:length]) == passed("pass_malformed"), f"cut at {length}"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=14, max_size=200))
def test_arbitrary_frames_never_abort(xdp, frame):
    verdict, _ = xdp.test_run(frame)
    assert verdict in (Verdict.PASS, Verdict.DROP)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([c[1] for c in CASES]), st.integers(0, 199), st.integers(0, 255))
def test_mutated_frames_never_abort(xdp, frame, position, value):
    mutated = bytearray(frame)
    mutated[position % len(mutated)] = value
    verdict, _ = xdp.test_run(bytes(mutated))
    assert verdict in (Verdict.PASS, Verdict.DROP)
