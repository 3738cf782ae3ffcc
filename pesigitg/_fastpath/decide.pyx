# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The routing decision: a pure function of (frame, route table), no clock, no I/O.

Steps as DESIGN.md "Packet path": parse Ethernet / IPv4 (options) / IPv6 (extension
headers) / UDP; read the QUIC DCID by the RFC 8999 invariants; a routable CID goes to
its server; anything else falls back to Maglev, on the client-chosen DCID for long
headers and on the 4-tuple for short headers. ICMP errors about our flows go by the
quoted 4-tuple. pesigitg.decision is the Python reference this is tested against.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from pesigitg._fastpath.cid cimport cid_decode
from pesigitg._fastpath.includes.cidtable cimport (
    PES_CID_MAX_LEN,
    PES_CID_NO_CONFIG,
    PES_CID_TOO_SHORT,
    PES_SERVER_ID_MAX,
)
from pesigitg._fastpath.includes.decision cimport *
from pesigitg._fastpath.includes.flowhash cimport pes_flow_hash
from pesigitg._fastpath.includes.routetable cimport (
    PES_BACKEND_NONE,
    PES_BACKEND_ROUTABLE,
    PES_TABLE_MAC_SWAP_ONLY,
    pes_backend,
    pes_route_table,
    pes_sid_entry,
)
from pesigitg._fastpath.table cimport RouteTable

# Names of enum pes_counter slots, in order (includes/decision.h).
COUNTER_NAMES = (
    ("rx", "forwarded")
    + tuple(f"cid_routed_{i}" for i in range(7))
    + ("fallback_routed", "icmp_routed",
       "unroutable_no_config", "unroutable_short_cid", "unroutable_unknown_server",
       "unroutable_server_down",
       "dropped_not_ip", "dropped_not_udp", "dropped_malformed", "dropped_fragment",
       "dropped_not_quic", "dropped_no_backend",
       "tx_full", "fill_empty", "table_swaps")
)
COUNTER_COUNT = PES_CNT_COUNT
COUNTERS_SIZE = sizeof(pes_counters)
ROUTES = ("none", "cid", "fallback", "icmp", "swap")
UNROUTABLE = ("none", "no_config", "short_cid", "unknown_server", "server_down")
DROPS = ("none", "not_ip", "not_udp", "malformed", "fragment", "not_quic", "no_backend")

if len(COUNTER_NAMES) != PES_CNT_COUNT:
    raise ImportError("COUNTER_NAMES does not match enum pes_counter in decision.h")

DEF ETH_HLEN = 14
DEF ETH_P_IP = 0x0800
DEF ETH_P_IPV6 = 0x86DD
DEF PROTO_ICMP = 1
DEF PROTO_UDP = 17
DEF PROTO_ICMPV6 = 58
DEF IPV6_EXT_MAX = 8
# RFC 9001 §5.4.2: header protection samples 16 octets starting 4 after the packet
# number, so a short-header packet has at least 1 + DCID + 20 octets; with no CID
# length known we require the 21 octets of a zero-length DCID.
DEF SHORT_HEADER_MIN = 21


cdef inline uint16_t _be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline int _drop(pes_decision *d, uint8_t reason) noexcept nogil:
    d.route = PES_ROUTE_NONE
    d.drop = reason
    return 0


cdef inline int _maglev(const pes_route_table *t, const uint8_t *key, size_t len,
                        uint8_t route, pes_decision *d) noexcept nogil:
    cdef const uint16_t *maglev = <const uint16_t *>(<const uint8_t *>t + t.maglev_off)
    cdef uint16_t backend = maglev[pes_flow_hash(key, len) % t.maglev_size]
    if backend == PES_BACKEND_NONE:
        return _drop(d, PES_DROP_NO_BACKEND)
    d.route = route
    d.backend = backend
    return 1


cdef inline int _find_server(const pes_route_table *t, int config_id, const uint8_t *sid
                             ) noexcept nogil:
    # Binary search of the config's sorted server IDs; -1 when absent.
    cdef const pes_sid_entry *entries = <const pes_sid_entry *>(<const uint8_t *>t
                                                                 + t.sids_off[config_id])
    cdef int lo = 0
    cdef int hi = <int>t.sids_count[config_id] - 1
    cdef int mid, c
    cdef size_t len = t.cid.conf[config_id].server_id_len
    while lo <= hi:
        mid = (lo + hi) >> 1
        c = memcmp(entries[mid].server_id, sid, len)
        if c == 0:
            return entries[mid].backend
        if c < 0:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


cdef inline int _route_cid(const pes_route_table *t, const uint8_t *cid, size_t avail,
                           pes_decision *d) noexcept nogil:
    # 1 with d filled when the CID names a server that can take it, else 0 with
    # d.unroutable set (DESIGN step 3: draining servers still get their CIDs).
    cdef uint8_t sid[PES_SERVER_ID_MAX]
    cdef int rc = cid_decode(&t.cid, cid, avail, sid)
    cdef int backend
    cdef const pes_backend *be
    if rc == PES_CID_NO_CONFIG:
        d.unroutable = PES_UNR_NO_CONFIG
        return 0
    if rc == PES_CID_TOO_SHORT:
        d.unroutable = PES_UNR_SHORT_CID
        return 0
    backend = _find_server(t, rc, sid)
    if backend < 0:
        d.unroutable = PES_UNR_UNKNOWN_SERVER
        return 0
    be = <const pes_backend *>(<const uint8_t *>t + t.backends_off) + backend
    if (be.state & PES_BACKEND_ROUTABLE) != PES_BACKEND_ROUTABLE:
        d.unroutable = PES_UNR_SERVER_DOWN
        return 0
    d.route = PES_ROUTE_CID
    d.backend = <uint16_t>backend
    d.config_id = <int8_t>rc
    return 1


cdef inline int _quic(const pes_route_table *t, const uint8_t *p, size_t len,
                      const uint8_t *tuple4, size_t tuple_len, pes_decision *d) noexcept nogil:
    cdef size_t dcid_len
    cdef uint32_t version
    if len == 0:
        return _drop(d, PES_DROP_NOT_QUIC)
    if p[0] & 0x80:
        # RFC 8999 §5.1 long header: form, version (4), DCID length, DCID.
        if len < 6:
            return _drop(d, PES_DROP_NOT_QUIC)
        version = (<uint32_t>p[1] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 8) | p[4]
        dcid_len = p[5]
        if 6 + dcid_len > len:
            return _drop(d, PES_DROP_NOT_QUIC)
        # RFC 9000 §17.2: version 1 CIDs are at most 20 octets.
        if version == 1 and dcid_len > PES_CID_MAX_LEN:
            return _drop(d, PES_DROP_NOT_QUIC)
        if dcid_len and _route_cid(t, p + 6, dcid_len, d):
            return 1
        if dcid_len == 0:
            d.unroutable = PES_UNR_SHORT_CID
        # The client picked this DCID at random and repeats it on every
        # retransmission of its first flight: hashing it needs no state.
        return _maglev(t, p + 6, dcid_len, PES_ROUTE_FALLBACK, d)
    # RFC 8999 §5.2 short header: the DCID starts at octet 1, its length is the
    # config's (named by the top bits).
    if len < SHORT_HEADER_MIN:
        return _drop(d, PES_DROP_NOT_QUIC)
    if _route_cid(t, p + 1, len - 1, d):
        return 1
    return _maglev(t, tuple4, tuple_len, PES_ROUTE_FALLBACK, d)


cdef inline int _icmp_quote(const pes_route_table *t, const uint8_t *p, const uint8_t *end,
                            bint v6, pes_decision *d) noexcept nogil:
    # The quoted datagram went from VIP:port to the client; route by the flow it
    # belongs to, i.e. the reversed tuple (client -> VIP) as short headers hash it.
    cdef uint8_t key[36]
    cdef size_t alen, hlen
    cdef const uint8_t *src
    cdef const uint8_t *dst
    cdef const uint8_t *udp
    cdef uint8_t nexthdr
    if v6:
        if p + 40 > end or (p[0] >> 4) != 6:
            return _drop(d, PES_DROP_MALFORMED)
        nexthdr = p[6]
        src, dst, alen, hlen = p + 8, p + 24, 16, 40
    else:
        if p + 20 > end or (p[0] >> 4) != 4 or (p[0] & 0xF) < 5:
            return _drop(d, PES_DROP_MALFORMED)
        nexthdr = p[9]
        src, dst, alen, hlen = p + 12, p + 16, 4, (p[0] & 0xF) * 4
    udp = p + hlen
    if nexthdr != PROTO_UDP:
        return _drop(d, PES_DROP_NOT_UDP)
    if udp + 8 > end:
        return _drop(d, PES_DROP_MALFORMED)
    memcpy(key, dst, alen)
    memcpy(key + alen, src, alen)
    memcpy(key + 2 * alen, udp + 2, 2)
    memcpy(key + 2 * alen + 2, udp, 2)
    return _maglev(t, key, 2 * alen + 4, PES_ROUTE_ICMP, d)


cdef int decide(const pes_route_table *t, const uint8_t *frame, size_t len,
                pes_decision *d) noexcept nogil:
    cdef const uint8_t *end = frame + len
    cdef const uint8_t *p
    cdef uint16_t ethertype
    cdef uint8_t nexthdr
    cdef size_t hlen, udp_len
    cdef int i
    cdef uint8_t tuple4[36]
    cdef size_t tuple_len
    d.route = PES_ROUTE_NONE
    d.unroutable = PES_UNR_NONE
    d.drop = PES_DROP_NONE
    d.config_id = -1
    d.backend = 0
    if t.flags & PES_TABLE_MAC_SWAP_ONLY:
        if len < ETH_HLEN:
            return _drop(d, PES_DROP_MALFORMED)
        d.route = PES_ROUTE_SWAP
        return 1
    if len < ETH_HLEN:
        return _drop(d, PES_DROP_MALFORMED)
    ethertype = _be16(frame + 12)
    p = frame + ETH_HLEN
    if ethertype == ETH_P_IP:
        if p + 20 > end or (p[0] >> 4) != 4 or (p[0] & 0xF) < 5:
            return _drop(d, PES_DROP_MALFORMED)
        hlen = (p[0] & 0xF) * 4
        if p + hlen > end:
            return _drop(d, PES_DROP_MALFORMED)
        # MF set or a fragment offset: the rest of the datagram went elsewhere.
        if _be16(p + 6) & 0x3FFF:
            return _drop(d, PES_DROP_FRAGMENT)
        nexthdr = p[9]
        memcpy(tuple4, p + 12, 8)           # source, destination addresses
        tuple_len = 12
        p += hlen
        if nexthdr == PROTO_ICMP:
            if p + 8 > end:
                return _drop(d, PES_DROP_MALFORMED)
            if p[0] != 3 and p[0] != 4 and p[0] != 11 and p[0] != 12:
                return _drop(d, PES_DROP_NOT_UDP)
            return _icmp_quote(t, p + 8, end, False, d)
    elif ethertype == ETH_P_IPV6:
        if p + 40 > end or (p[0] >> 4) != 6:
            return _drop(d, PES_DROP_MALFORMED)
        nexthdr = p[6]
        memcpy(tuple4, p + 8, 32)
        tuple_len = 36
        p += 40
        # RFC 8200 §4: hop-by-hop, routing, destination options, fragment.
        for i in range(IPV6_EXT_MAX):
            if nexthdr == 0 or nexthdr == 43 or nexthdr == 60:
                if p + 8 > end:
                    return _drop(d, PES_DROP_MALFORMED)
                hlen = (<size_t>p[1] + 1) * 8
                if p + hlen > end:
                    return _drop(d, PES_DROP_MALFORMED)
                nexthdr = p[0]
                p += hlen
            elif nexthdr == 44:
                if p + 8 > end:
                    return _drop(d, PES_DROP_MALFORMED)
                return _drop(d, PES_DROP_FRAGMENT)
            else:
                break
        if nexthdr == PROTO_ICMPV6:
            if p + 8 > end:
                return _drop(d, PES_DROP_MALFORMED)
            if p[0] < 1 or p[0] > 4:
                return _drop(d, PES_DROP_NOT_UDP)
            return _icmp_quote(t, p + 8, end, True, d)
    else:
        return _drop(d, PES_DROP_NOT_IP)
    if nexthdr != PROTO_UDP:
        return _drop(d, PES_DROP_NOT_UDP)
    if p + 8 > end:
        return _drop(d, PES_DROP_MALFORMED)
    udp_len = _be16(p + 4)
    if udp_len < 8:
        return _drop(d, PES_DROP_MALFORMED)
    memcpy(tuple4 + tuple_len - 4, p, 4)     # source, destination ports
    # The UDP length bounds the datagram (Ethernet may pad short frames).
    if p + udp_len < end:
        end = p + udp_len
    return _quic(t, p + 8, end - (p + 8), tuple4, tuple_len, d)


cdef void rewrite(const pes_route_table *t, uint8_t *frame, const pes_decision *d
                  ) noexcept nogil:
    # Only the Ethernet addresses change (DSR): destination = backend, source = us.
    cdef uint8_t tmp[6]
    cdef const pes_backend *be
    if d.route == PES_ROUTE_SWAP:
        memcpy(tmp, frame, 6)
        memcpy(frame, frame + 6, 6)
        memcpy(frame + 6, tmp, 6)
        return
    be = <const pes_backend *>(<const uint8_t *>t + t.backends_off) + d.backend
    memcpy(frame, be.mac, 6)
    memcpy(frame + 6, t.if_mac, 6)


def decide_frame(RouteTable table not None, frame):
    """Python entry for tests: ``(route, backend, config_id, unroutable, drop, frame_out)``.

    ``route`` is one of ROUTES ("none" when dropped), ``unroutable`` of UNROUTABLE,
    ``drop`` of DROPS; ``frame_out`` is the rewritten frame (or None when dropped).
    """
    cdef bytearray buf = bytearray(frame)
    cdef uint8_t[::1] view
    cdef pes_decision d
    cdef uint8_t *data = NULL
    if len(buf):
        view = buf
        data = &view[0]
    else:
        data = <uint8_t *>PyBytes_AS_STRING(b"\0")
    decide(table.table, data, len(buf), &d)
    out = None
    if d.route != PES_ROUTE_NONE:
        rewrite(table.table, data, &d)
        out = bytes(buf)
    return (ROUTES[d.route], d.backend if d.route != PES_ROUTE_NONE else None,
            d.config_id if d.config_id >= 0 else None, UNROUTABLE[d.unroutable],
            DROPS[d.drop], out)
