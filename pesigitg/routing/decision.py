"""Reference routing decision in pure Python: the truth the Cython decider is tested against.

Same rules as DESIGN.md "Packet path", written plainly over the logical route model
(:class:`pesigitg.routing.routes.CompiledRoutes`) and the reference QUIC-LB codec, and
independently of the C parser it checks (only the limits are shared). Slow; for tests
and for explaining a decision.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pesigitg._fastpath import CID_MAX_LEN, IPV6_EXT_MAX, SHORT_HEADER_MIN
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.routes import BACKEND_NONE, CompiledRoutes

__all__ = ["Decision", "decide", "flow_hash"]

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PROTO_ICMP, PROTO_UDP, PROTO_ICMPV6 = 1, 17, 58
ICMP4_ERRORS = {3, 4, 11, 12}
ICMP6_ERRORS = {1, 2, 3, 4}
IPV6_OPTIONS = {0, 43, 60}      # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
MASK64 = (1 << 64) - 1


def _siphash24(secret: bytes, data: bytes) -> int:
    """SipHash-2-4 (includes/flowhash.h), written out plainly."""
    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & MASK64

    def rounds(v: list[int], n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & MASK64
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & MASK64
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & MASK64
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & MASK64
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    k0, k1 = struct.unpack("<QQ", secret)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261,
         k1 ^ 0x7465646279746573]
    padded = data + bytes(7 - len(data) % 8) + bytes([len(data) & 0xFF])
    for i in range(0, len(padded), 8):
        m = struct.unpack_from("<Q", padded, i)[0]
        v[3] ^= m
        rounds(v, 2)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def flow_hash(key: bytes, secret: bytes | None = None) -> int:
    """FNV-1a 64 then the splitmix64 finalizer (includes/flowhash.h); SipHash-2-4 under
    ``secret`` when the configuration keys the fallback."""
    if secret is not None:
        return _siphash24(secret, key)
    h = 0xCBF29CE484222325
    for octet in key:
        h = ((h ^ octet) * 0x100000001B3) & MASK64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & MASK64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & MASK64
    return h ^ (h >> 31)


@dataclass(frozen=True)
class Decision:
    route: str      # "cid", "fallback", "icmp", "icmp_cid", "icmp_fanout", "icmp_not_vip",
    #                 "none" (dropped)
    backend: int | None = None
    config_id: int | None = None
    unroutable: str = "none"
    drop: str = "none"

    def as_tuple(self) -> tuple[str, int | None, int | None, str, str]:
        return self.route, self.backend, self.config_id, self.unroutable, self.drop


class _Drop(Exception):
    def __init__(self, reason: str, unroutable: str = "none") -> None:
        self.reason = reason
        self.unroutable = unroutable


def _need(data: bytes, end: int) -> None:
    if end > len(data):
        raise _Drop("malformed")


def decide(routes: CompiledRoutes, frame: bytes) -> Decision:
    try:
        return _decide(routes, frame)
    except _Drop as drop:
        return Decision("none", unroutable=drop.unroutable, drop=drop.reason)


def _maglev(routes: CompiledRoutes, key: bytes, route: str, unroutable: str) -> Decision:
    backend = routes.maglev[flow_hash(key, routes.options.hash_key) % len(routes.maglev)]
    if backend == BACKEND_NONE:
        raise _Drop("no_backend", unroutable)
    return Decision(route, backend, None, unroutable)


def _route_cid(routes: CompiledRoutes, cid: bytes) -> Decision | str:
    """A CID decision, or the reason the CID is unroutable."""
    by_id: dict[int, CidConfig] = {c.config_id: c for c in routes.configs}
    config = by_id.get(cid[0] >> 5)
    if config is None:
        return "no_config"
    if len(cid) < config.cid_len:
        return "short_cid"
    server_id, _ = config.decode(cid[:min(len(cid), CID_MAX_LEN)])
    backend = routes.servers.get((config.config_id, server_id))
    if backend is None:
        return "unknown_server"
    b = routes.backends[backend]
    if not b.up or b.mac is None:
        return "server_down"
    return Decision("cid", backend, config.config_id)


def _quic(routes: CompiledRoutes, payload: bytes, tuple4: bytes) -> Decision:
    if not payload:
        raise _Drop("not_quic")
    if payload[0] & 0x80:
        if len(payload) < 6:
            raise _Drop("not_quic")
        version = struct.unpack_from("!I", payload, 1)[0]
        dcid_len = payload[5]
        if 6 + dcid_len > len(payload) or (version == 1 and dcid_len > CID_MAX_LEN):
            raise _Drop("not_quic")
        dcid = payload[6:6 + dcid_len]
        routed = _route_cid(routes, dcid) if dcid else "short_cid"
        if isinstance(routed, Decision):
            return routed
        return _maglev(routes, dcid, "fallback", routed)
    if len(payload) < SHORT_HEADER_MIN:
        raise _Drop("not_quic")
    routed = _route_cid(routes, payload[1:])
    if isinstance(routed, Decision):
        return routed
    return _maglev(routes, tuple4, "fallback", routed)


class _Ip:
    """One IP header (and IPv6 extension chain) read from ``frame`` at ``pos``."""

    def __init__(self, frame: bytes, pos: int, v6: bool) -> None:
        self.fragment = self.too_deep = False
        if not v6:
            _need(frame, pos + 20)
            if frame[pos] >> 4 != 4 or frame[pos] & 0xF < 5:
                raise _Drop("malformed")
            hlen = (frame[pos] & 0xF) * 4
            _need(frame, pos + hlen)
            self.src, self.dst = frame[pos + 12:pos + 16], frame[pos + 16:pos + 20]
            self.proto = frame[pos + 9]
            # RFC 791: MF or an offset makes it part of a fragmented datagram.
            self.fragment = bool(struct.unpack_from("!H", frame, pos + 6)[0] & 0x3FFF)
            self.end = pos + hlen
            return
        _need(frame, pos + 40)
        if frame[pos] >> 4 != 6:
            raise _Drop("malformed")
        self.src, self.dst = frame[pos + 8:pos + 24], frame[pos + 24:pos + 40]
        proto, pos = frame[pos + 6], pos + 40
        walked = 0
        while proto in IPV6_OPTIONS or proto == IPV6_FRAGMENT:
            if walked == IPV6_EXT_MAX:
                self.too_deep = True
                break
            walked += 1
            _need(frame, pos + 8)
            if proto == IPV6_FRAGMENT:
                # RFC 8200 §4.5; RFC 6946: offset 0 with M clear is a whole datagram.
                proto = frame[pos]
                if struct.unpack_from("!H", frame, pos + 2)[0] & 0xFFF9:
                    self.fragment = True
                    break
                pos += 8
            else:
                hlen = (frame[pos + 1] + 1) * 8
                _need(frame, pos + hlen)
                proto, pos = frame[pos], pos + hlen
        self.proto, self.end = proto, pos


def _udp(frame: bytes, pos: int) -> tuple[bytes, bytes, bytes]:
    """(source port, destination port, payload) of the UDP header at ``pos``."""
    _need(frame, pos + 8)
    udp_len = struct.unpack_from("!H", frame, pos + 4)[0]
    if udp_len < 8:
        raise _Drop("malformed")
    return frame[pos:pos + 2], frame[pos + 2:pos + 4], frame[pos + 8:pos + udp_len]


def _icmp_quote(routes: CompiledRoutes, frame: bytes, pos: int, v6: bool,
                too_big: bool) -> Decision:
    quoted = _Ip(frame, pos, v6)
    if quoted.fragment or quoted.too_deep or quoted.proto != PROTO_UDP:
        raise _Drop("not_udp")
    sport, dport, payload = _udp(frame, quoted.end)
    # A backend sent the quoted packet: a long header carries its own CID as source.
    if len(payload) >= 7 and payload[0] & 0x80:
        at = 6 + payload[5]
        if at < len(payload):
            scid = payload[at + 1:at + 1 + payload[at]]
            if scid and len(scid) == payload[at]:
                routed = _route_cid(routes, scid)
                if isinstance(routed, Decision):
                    return Decision("icmp_cid", routed.backend, routed.config_id)
    # The quoted datagram went from VIP:port to the client: the flow is the reverse. A
    # Packet Too Big is copied to every backend only if that packet left from a VIP.
    route = "icmp"
    if too_big:
        vips = {ipaddress.ip_address(v).packed for v in routes.options.vips}
        route = "icmp_fanout" if quoted.src in vips else "icmp_not_vip"
    return _maglev(routes, quoted.dst + quoted.src + dport + sport, route, "none")


def _decide(routes: CompiledRoutes, frame: bytes) -> Decision:
    _need(frame, 14)
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype not in (ETH_P_IP, ETH_P_IPV6):
        raise _Drop("not_ip")
    v6 = ethertype == ETH_P_IPV6
    ip = _Ip(frame, 14, v6)
    if ip.fragment:
        raise _Drop("fragment")
    if ip.too_deep:
        raise _Drop("ext_depth")
    if ip.proto == (PROTO_ICMPV6 if v6 else PROTO_ICMP):
        _need(frame, ip.end + 8)
        kind, code = frame[ip.end], frame[ip.end + 1]
        if kind not in (ICMP6_ERRORS if v6 else ICMP4_ERRORS):
            raise _Drop("not_udp")
        # Packet Too Big: RFC 4443 §3.2; RFC 1191 (fragmentation needed).
        too_big = kind == 2 if v6 else (kind, code) == (3, 4)
        return _icmp_quote(routes, frame, ip.end + 8, v6, too_big)
    if ip.proto != PROTO_UDP:
        raise _Drop("not_udp")
    sport, dport, payload = _udp(frame, ip.end)
    return _quic(routes, payload, ip.src + ip.dst + sport + dport)
