"""A deterministic fuzz corpus of frames: every kind of frame the packet path meets,
each cut at every octet and mutated at random, for the differential tests (fast path
against the reference, the XDP program against the fast path's parser) and for
``make fuzz``. The same seed gives the same frames on every run.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Iterator

from pesigitg._fastpath import PARSE_OUTCOMES, parse_frame
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, Server, compile_routes
from tests import frames as f

KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")
KEY2 = bytes.fromhex("3c1a9e0f7b52d4e6a8c0f2143658709a")   # one lane's key need not be another's
PLAIN = CidConfig(0, 3, 4)
SINGLE = CidConfig(1, 8, 8, KEY)
FOUR_ODD = CidConfig(2, 3, 4, KEY2)
FOUR_LONG_SID = CidConfig(3, 10, 5, KEY)
CONFIGS = [PLAIN, SINGLE, FOUR_ODD, FOUR_LONG_SID]
VIP4, VIP6 = "198.51.100.1", "2001:db8:1::1"
PORTS = (443, 4433)


def cid_for(config: CidConfig, backend: int, nonce: int = 7) -> bytes:
    return config.encode(bytes([backend]) * config.server_id_len,
                         nonce.to_bytes(config.nonce_len, "big"))


# The routes the differential tests decide against: backends 1 and 2 up, 3 draining,
# 4 down, 5 without a MAC, each with a server in every config.
LB_MAC = bytes.fromhex("02000000b001")


def unroutable(n: int, v6: bool = False) -> bytes:
    """A 1-RTT packet whose CID names config 7 (no config), so it goes by its 4-tuple,
    from client port 40000 + n."""
    quic = f.quic_short(b"\xe0" + bytes([n % 256]) * 7)
    return f.udp6_frame(quic, sport=40000 + n) if v6 else f.udp4_frame(quic, sport=40000 + n)


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0xBE, n])


BACKENDS = [Backend("10.0.0.1", mac(1)), Backend("10.0.0.2", mac(2)),
            Backend("10.0.0.3", mac(3), draining=True), Backend("10.0.0.4", mac(4), up=False),
            Backend("10.0.0.5", None)]
SERVERS = [Server(c.config_id, bytes([b]) * c.server_id_len, f"10.0.0.{b}")
           for c in CONFIGS for b in range(1, 6)]
ROUTES = compile_routes(LB_MAC, CONFIGS, BACKENDS, SERVERS, TableOptions(5003, vips=(VIP4, VIP6)))


def _quoted4(payload: bytes = b"\x40" + bytes(8), proto: int = f.PROTO_UDP, frag: int = 0
             ) -> bytes:
    inner = f.udp(payload, sport=443, dport=50000) if proto == f.PROTO_UDP else f.tcp(443)
    return f.ipv4(inner, proto, src=VIP4, dst="192.0.2.10", frag=frag)


def _quoted6(payload: bytes = b"\x40" + bytes(8)) -> bytes:
    return f.ipv6(f.udp(payload, sport=443, dport=50000), f.PROTO_UDP, src=VIP6,
                  dst="2001:db8::10")


def seeds() -> list[bytes]:
    """Well-formed frames of every kind, the starting points of mutation."""
    dst = [(f.DSTOPTS, f.ext_header())]
    return [
        f.udp4_frame(f.quic_short(cid_for(FOUR_LONG_SID, 1)), dst=VIP4),
        f.udp4_frame(f.quic_short(cid_for(PLAIN, 2)), options=b"\x01" * 12),
        f.udp4_frame(f.quic_long(cid_for(SINGLE, 2)), dport=4433),
        f.udp4_frame(f.quic_long(b"\x12" * 8), options=b"\x94\x04\x00\x00"),
        f.udp4_frame(dport=53),
        f.udp6_frame(f.quic_long(cid_for(SINGLE, 2)),
                     ext=[(f.HOPOPTS, f.ext_header()), (f.DSTOPTS, f.ext_header(1))]),
        f.udp6_frame(f.quic_short(cid_for(FOUR_ODD, 3)), dst=VIP6, ext=dst * 7),
        f.udp6_frame(f.quic_short(cid_for(FOUR_ODD, 3)), dst=VIP6, ext=dst * 9),
        f.udp6_frame(f.quic_short(cid_for(FOUR_ODD, 1)), ext=[(f.FRAGMENT, f.frag_header(0))]),
        f.udp6_frame(ext=[(f.ROUTING, f.ext_header(2)), (f.FRAGMENT, f.frag_header(3, True))]),
        f.ether(f.ipv4(f.udp(b"x" * 16), f.PROTO_UDP, dst=VIP4, frag=0x2000), f.ETH_P_IP),
        f.ether(f.ipv4(b"x" * 16, f.PROTO_UDP, dst=VIP4, frag=185), f.ETH_P_IP),
        f.ether(f.ipv4(f.icmp4(3, 4, _quoted4()), f.PROTO_ICMP, dst=VIP4), f.ETH_P_IP),
        f.ether(f.ipv4(f.icmp4(11, 0, _quoted4(proto=f.PROTO_TCP)), f.PROTO_ICMP), f.ETH_P_IP),
        f.ether(f.ipv4(f.icmp4(3, 4, _quoted4(frag=0x2000)), f.PROTO_ICMP), f.ETH_P_IP),
        f.ether(f.ipv4(f.icmp4(8, 0, b"ping" * 4), f.PROTO_ICMP), f.ETH_P_IP),
        f.ether(f.ipv6(f.icmp6(2, 0, _quoted6()), f.PROTO_ICMPV6, dst=VIP6), f.ETH_P_IPV6),
        # Errors about long headers a backend sent: its CID is the source CID.
        f.ether(f.ipv4(f.icmp4(3, 4, _quoted4(f.quic_long(b"\x33" * 8, cid_for(SINGLE, 1)))),
                       f.PROTO_ICMP, dst=VIP4), f.ETH_P_IP),
        f.ether(f.ipv6(f.icmp6(1, 4, _quoted6(f.quic_long(b"", cid_for(FOUR_LONG_SID, 2)))),
                       f.PROTO_ICMPV6, dst=VIP6), f.ETH_P_IPV6),
        f.ether(f.ipv6(f.icmp6(135, 0, bytes(20)), f.PROTO_ICMPV6), f.ETH_P_IPV6),
        f.ether(f.ipv4(f.tcp(), f.PROTO_TCP), f.ETH_P_IP),
        f.ether(f.ipv4(struct.pack("!HHHH", 1, 443, 4, 0), f.PROTO_UDP), f.ETH_P_IP),
        f.arp_request(),
    ]


def truncations(frame: bytes) -> Iterator[bytes]:
    for length in range(len(frame)):
        yield frame[:length]


def mutations(frame: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """``count`` variants of ``frame``: 1-4 octets changed, sometimes cut short."""
    for _ in range(count):
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            # Bias towards the headers, where the parser's decisions are.
            pos = rng.randrange(min(len(data), 96)) if rng.random() < 0.8 \
                else rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if rng.random() < 0.25:
            del data[rng.randrange(14, len(data) + 1):]
        yield bytes(data)


def corpus(per_seed: int, seed: int = 20261126) -> Iterator[bytes]:
    """Every seed, all its truncations, and ``per_seed`` random mutations of each."""
    rng = random.Random(seed)
    for frame in seeds():
        yield frame
        yield from truncations(frame)
        yield from mutations(frame, rng, per_seed)


XDP_VERDICT = {outcome: verdict for outcome, _, verdict, _ in PARSE_OUTCOMES}
STEERED = "drop_no_socket"      # steered, but no socket bound (BPF_PROG_TEST_RUN)
UDP = 17


def expected_verdict(frame: bytes, vips: set[ipaddress.IPv4Address | ipaddress.IPv6Address]
                     ) -> str:
    """The XDP program's verdict for ``frame``, from the shared parser's outcome (as
    the fast path reports it) and the steering rules of the README, with the ports
    PORTS steered and ``vips`` as the VIP filter (empty: off)."""
    outcome, fields = parse_frame(frame)
    _, daddr, _, dport = fields["flow"]
    if outcome == "udp":
        if dport not in PORTS:
            return "pass_port"
        if vips and ipaddress.ip_address(daddr) not in vips:
            return "pass_vip"
        return STEERED
    if outcome == "icmp_error":
        quoted_src, _, quoted_sport, _ = fields["quoted"]
        if quoted_sport not in PORTS or (vips and ipaddress.ip_address(quoted_src) not in vips):
            return "pass_icmp"
        return STEERED
    if outcome == "fragment":
        if fields["proto"] == UDP and vips and ipaddress.ip_address(daddr) in vips:
            return "drop_fragment"
        return "pass_fragment"
    return XDP_VERDICT[outcome]
