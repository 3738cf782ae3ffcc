"""Reference routing decision in pure Python: the truth the Cython decider is tested against.

Same rules as DESIGN.md "Packet path", written plainly over the logical route model
(:class:`pesigitg.routes.CompiledRoutes`) and the reference QUIC-LB codec. Slow;
for tests and for explaining a decision (``pesigitg-ctl`` may use it later).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pesigitg.quiclb import CID_MAX_LEN, CidConfig
from pesigitg.routes import BACKEND_NONE, CompiledRoutes

__all__ = ["Decision", "decide", "flow_hash"]

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
ICMP4_ERRORS = {3, 4, 11, 12}
ICMP6_ERRORS = {1, 2, 3, 4}
IPV6_EXT = {0, 43, 60}
IPV6_FRAGMENT = 44
IPV6_EXT_MAX = 8
SHORT_HEADER_MIN = 21   # RFC 9001 §5.4.2: 1 + DCID + 4 + 16 with an empty DCID
MASK64 = (1 << 64) - 1


def flow_hash(key: bytes) -> int:
    """FNV-1a 64 then the splitmix64 finalizer (includes/flowhash.h)."""
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
    route: str                  # "cid", "fallback", "icmp", "swap" or "none" (dropped)
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
    backend = routes.maglev[flow_hash(key) % len(routes.maglev)]
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


def _icmp_quote(routes: CompiledRoutes, quote: bytes, v6: bool) -> Decision:
    if v6:
        _need(quote, 40)
        if quote[0] >> 4 != 6:
            raise _Drop("malformed")
        nexthdr, src, dst, hlen = quote[6], quote[8:24], quote[24:40], 40
    else:
        _need(quote, 20)
        if quote[0] >> 4 != 4 or quote[0] & 0xF < 5:
            raise _Drop("malformed")
        nexthdr, src, dst, hlen = quote[9], quote[12:16], quote[16:20], (quote[0] & 0xF) * 4
    if nexthdr != 17:
        raise _Drop("not_udp")
    _need(quote, hlen + 8)
    sport, dport = quote[hlen:hlen + 2], quote[hlen + 2:hlen + 4]
    return _maglev(routes, dst + src + dport + sport, "icmp", "none")


def _decide(routes: CompiledRoutes, frame: bytes) -> Decision:
    _need(frame, 14)
    if routes.mac_swap_only:
        return Decision("swap")
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    pos = 14
    if ethertype == ETH_P_IP:
        _need(frame, pos + 20)
        if frame[pos] >> 4 != 4 or frame[pos] & 0xF < 5:
            raise _Drop("malformed")
        hlen = (frame[pos] & 0xF) * 4
        _need(frame, pos + hlen)
        if struct.unpack_from("!H", frame, pos + 6)[0] & 0x3FFF:
            raise _Drop("fragment")
        proto = frame[pos + 9]
        addrs = frame[pos + 12:pos + 20]
        pos += hlen
        if proto == 1:
            _need(frame, pos + 8)
            if frame[pos] not in ICMP4_ERRORS:
                raise _Drop("not_udp")
            return _icmp_quote(routes, frame[pos + 8:], False)
    elif ethertype == ETH_P_IPV6:
        _need(frame, pos + 40)
        if frame[pos] >> 4 != 6:
            raise _Drop("malformed")
        proto = frame[pos + 6]
        addrs = frame[pos + 8:pos + 40]
        pos += 40
        for _ in range(IPV6_EXT_MAX):
            if proto in IPV6_EXT:
                _need(frame, pos + 8)
                hlen = (frame[pos + 1] + 1) * 8
                _need(frame, pos + hlen)
                proto = frame[pos]
                pos += hlen
            elif proto == IPV6_FRAGMENT:
                _need(frame, pos + 8)
                raise _Drop("fragment")
            else:
                break
        if proto == 58:
            _need(frame, pos + 8)
            if frame[pos] not in ICMP6_ERRORS:
                raise _Drop("not_udp")
            return _icmp_quote(routes, frame[pos + 8:], True)
    else:
        raise _Drop("not_ip")
    if proto != 17:
        raise _Drop("not_udp")
    _need(frame, pos + 8)
    udp_len = struct.unpack_from("!H", frame, pos + 4)[0]
    if udp_len < 8:
        raise _Drop("malformed")
    payload = frame[pos + 8:pos + udp_len]
    return _quic(routes, payload, addrs + frame[pos:pos + 4])
