# The routing decision: a pure function of (frame, route table), no clock, no I/O.
#
# Steps as DESIGN.md "Packet path": the shared parser (pesigitg_parse.h, the same code
# as the XDP program) reads Ethernet / IPv4 / IPv6 / UDP or an ICMP error; the QUIC
# invariants give the DCID; a routable CID goes to its server; anything else falls back
# to Maglev, on the client-chosen DCID for long headers and on the 4-tuple for short
# headers. An ICMP error about one of our flows goes to the server the quoted long
# header's source CID names (the backend sent that packet, with its own CID); else a
# Packet Too Big, which no backend can be found for, goes to every backend if the packet
# it quotes left from a VIP (the engine makes the copies, rate-limited; the decision
# names the hash choice as the fallback); anything else by the quoted 4-tuple.
# pesigitg.routing.decision is the Python reference this is tested against.

from pesigitg._fastpath.includes.flowhash cimport pes_flow_hash, pes_siphash24, pes_tuple_hash
from pesigitg._fastpath.includes.routetable cimport PES_BACKEND_ROUTABLE, pes_vip_listed


cdef inline int _drop(pes_decision *d, uint8_t reason) noexcept nogil:
    d.route = PES_ROUTE_NONE
    d.drop = reason
    return 0


cdef inline uint64_t _key_hash(const pes_route_table *t, const uint8_t *p, size_t len
                              ) noexcept nogil:
    # The fallback's hash of a client-chosen DCID: keyed when lb.toml sets a hash_key.
    if t.hash_keyed:
        return pes_siphash24(t.hash_key, p, len)
    return pes_flow_hash(p, len)


cdef inline uint64_t _tuple_hash(const pes_route_table *t, const uint8_t *src,
                                 const uint8_t *dst, size_t alen, uint16_t sport,
                                 uint16_t dport) noexcept nogil:
    # The same for a 4-tuple (source, destination, both ports in network order).
    cdef uint8_t key[36]
    if not t.hash_keyed:
        return pes_tuple_hash(src, dst, alen, sport, dport)
    memcpy(key, src, alen)
    memcpy(key + alen, dst, alen)
    key[2 * alen] = <uint8_t>(sport >> 8)
    key[2 * alen + 1] = <uint8_t>sport
    key[2 * alen + 2] = <uint8_t>(dport >> 8)
    key[2 * alen + 3] = <uint8_t>dport
    return pes_siphash24(t.hash_key, key, 2 * alen + 4)


cdef inline int _maglev(const pes_route_table *t, uint64_t hash, uint8_t route,
                        pes_decision *d) noexcept nogil:
    cdef const uint16_t *maglev = <const uint16_t *>(<const uint8_t *>t + t.maglev_off)
    cdef uint16_t backend = maglev[hash % t.maglev_size]
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


cdef inline int _long_header(const uint8_t *p, size_t len, pes_long_header *lh) noexcept nogil:
    # The shared reader of the long header's invariant fields over a payload.
    cdef pes_cursor c
    pes_cursor_init(&c, p, p + len)
    return pes_pull_long_header(&c, lh)


cdef inline int _quic(const pes_route_table *t, const uint8_t *p, size_t len,
                      const pes_pkt *pkt, pes_decision *d) noexcept nogil:
    cdef pes_long_header lh
    cdef int extent
    if len == 0:
        return _drop(d, PES_DROP_NOT_QUIC)
    extent = _long_header(p, len, &lh)
    if extent != PES_LONG_NONE:
        if extent == PES_LONG_CUT:
            return _drop(d, PES_DROP_NOT_QUIC)
        # RFC 9000 §17.2: version 1 CIDs are at most 20 octets.
        if lh.version == 1 and lh.dcid_len > PES_CID_MAX_LEN:
            return _drop(d, PES_DROP_NOT_QUIC)
        if lh.dcid_len and _route_cid(t, p + lh.dcid, lh.dcid_len, d):
            return 1
        if lh.dcid_len == 0:
            d.unroutable = PES_UNR_SHORT_CID
        # The client picked this DCID at random and repeats it on every
        # retransmission of its first flight: hashing it needs no state.
        return _maglev(t, _key_hash(t, p + lh.dcid, lh.dcid_len), PES_ROUTE_FALLBACK, d)
    # RFC 8999 §5.2 short header: the DCID starts at octet 1, its length is the
    # config's (named by the top bits).
    if len < PES_SHORT_HEADER_MIN:
        return _drop(d, PES_DROP_NOT_QUIC)
    if _route_cid(t, p + 1, len - 1, d):
        return 1
    # The 4-tuple, hashed as the reference hashes src + dst + sport + dport.
    return _maglev(t, _tuple_hash(t, pkt.flow.saddr, pkt.flow.daddr, 4 if pkt.family == 4
                                  else 16, pkt.flow.sport, pkt.flow.dport),
                   PES_ROUTE_FALLBACK, d)


cdef inline int _icmp(const pes_route_table *t, const uint8_t *p, size_t len,
                      const pes_pkt *pkt, pes_decision *d) noexcept nogil:
    # p: the quoted datagram's payload, a packet a backend sent (DSR: VIP -> client).
    cdef pes_long_header lh
    cdef uint8_t route
    if _long_header(p, len, &lh) == PES_LONG_WHOLE and lh.scid_len:
        # Its source CID is the backend's own.
        if _route_cid(t, p + lh.scid, lh.scid_len, d):
            d.route = PES_ROUTE_ICMP_CID
            return 1
        d.unroutable = PES_UNR_NONE
    # The flow it belongs to is the reversed tuple (client -> VIP), as short headers
    # hash it. Anyone can send a Packet Too Big: one quoting a packet that did not
    # leave from a VIP is none of our backends' business, and is never copied.
    route = PES_ROUTE_ICMP
    if pes_packet_too_big(pkt):
        route = PES_ROUTE_ICMP_FANOUT if pes_vip_listed(t, pkt.family, pkt.quoted.saddr) \
            else PES_ROUTE_ICMP_NOT_VIP
    return _maglev(t, _tuple_hash(t, pkt.quoted.daddr, pkt.quoted.saddr,
                                  4 if pkt.family == 4 else 16, pkt.quoted.dport,
                                  pkt.quoted.sport), route, d)


cdef inline int decide(const pes_route_table *t, const uint8_t *frame, size_t len,
                       pes_decision *d, pes_pkt *pkt) noexcept nogil:
    # Where frame goes: 1 to forward (d.backend), 0 to drop (d.drop); pkt is what the
    # parser found (the engine's flow table and copies read it).
    cdef pes_cursor c
    cdef int outcome
    d.route = PES_ROUTE_NONE
    d.unroutable = PES_UNR_NONE
    d.drop = PES_DROP_NONE
    d.config_id = -1
    d.backend = 0
    pes_cursor_init(&c, frame, frame + len)
    outcome = pes_parse_frame(&c, pkt)
    if outcome == PES_PARSE_UDP:
        return _quic(t, frame + pkt.payload, pkt.payload_len, pkt, d)
    if outcome == PES_PARSE_ICMP_ERROR:
        return _icmp(t, frame + pkt.payload, pkt.payload_len, pkt, d)
    return _drop(d, pes_parse_drop(outcome))


cdef inline void rewrite(const pes_route_table *t, uint8_t *frame, const pes_decision *d
                         ) noexcept nogil:
    # Only the Ethernet addresses change (DSR): destination = backend, source = us.
    cdef const pes_backend *be = (<const pes_backend *>(<const uint8_t *>t + t.backends_off)
                                  + d.backend)
    memcpy(frame, be.mac, 6)
    memcpy(frame + 6, t.if_mac, 6)


cdef inline void swap_macs(uint8_t *frame) noexcept nogil:
    # The benchmark's floor: send the frame back where it came from.
    cdef uint8_t tmp[6]
    memcpy(tmp, frame, 6)
    memcpy(frame, frame + 6, 6)
    memcpy(frame + 6, tmp, 6)


# -- Python entries for tests and benchmarks ----------------------------------------------

cdef const uint8_t *_frame_pointer(bytearray buf):
    cdef uint8_t[::1] view
    if len(buf):
        view = buf
        return &view[0]
    return <const uint8_t *>PyBytes_AS_STRING(b"\0")


def decide_frame(RouteTable table not None, frame):
    """``(route, backend, config_id, unroutable, drop, frame_out)`` for one frame.

    ``route`` is one of ROUTES ("none" when dropped), ``unroutable`` of UNROUTABLE,
    ``drop`` of DROPS; ``frame_out`` is the rewritten frame (or None when dropped).
    """
    cdef bytearray buf = bytearray(frame)
    cdef uint8_t *data = <uint8_t *>_frame_pointer(buf)
    cdef pes_decision d
    cdef pes_pkt pkt
    decide(table.table, data, len(buf), &d, &pkt)
    out = None
    if d.route != PES_ROUTE_NONE:
        rewrite(table.table, data, &d)
        out = bytes(buf)
    return (ROUTES[d.route], d.backend if d.route != PES_ROUTE_NONE else None,
            d.config_id if d.config_id >= 0 else None, UNROUTABLE[d.unroutable],
            DROPS[d.drop], out)


def parse_frame(frame):
    """What the shared parser makes of ``frame``: ``(outcome, fields)``, the outcome one
    of PARSE_OUTCOMES and fields the flow, quoted flow and payload span it found."""
    cdef bytearray buf = bytearray(frame)
    cdef const uint8_t *data = _frame_pointer(buf)
    cdef pes_cursor c
    cdef pes_pkt pkt
    memset(&pkt, 0, sizeof(pkt))
    pes_cursor_init(&c, data, data + len(buf))
    outcome = pes_parse_frame(&c, &pkt)
    return PARSE_OUTCOMES[outcome][0], {
        "family": pkt.family, "proto": pkt.proto, "flow": _flow_tuple(&pkt.flow, pkt.family),
        "icmp_type_code": (pkt.icmp_type, pkt.icmp_code),
        "quoted": _flow_tuple(&pkt.quoted, pkt.family),
        "payload": (pkt.payload, pkt.payload_len)}


cdef tuple _flow_tuple(const pes_flow *f, int family):
    cdef Py_ssize_t alen = 4 if family == 4 else 16
    return ((<const char *>f.saddr)[:alen], (<const char *>f.daddr)[:alen], f.sport, f.dport)


def decide_batch(RouteTable table not None, uint8_t[::1] frames, uint32_t[::1] lengths,
                 uint32_t stride, uint64_t repeat, *, FlowTable flows=None,
                 uint32_t distinct=0):
    """Decide and rewrite every frame of ``frames`` (one per ``stride`` octets, ``lengths``
    each) ``repeat`` times without the GIL, as the loop does; returns frames forwarded.
    With ``flows``, fallback frames go through that flow table as in the loop; with
    ``distinct``, each frame's IPv4 source address is first overwritten with a counter
    modulo ``distinct`` (that many flows). For benchmarks/decide_cost.py."""
    cdef uint64_t r, fwd = 0, seq = 0
    cdef uint32_t flow, n_def
    cdef Py_ssize_t i, j, k, n = lengths.shape[0]
    cdef pes_decision d
    cdef pes_pkt pkt
    cdef Py_ssize_t later[64]
    cdef pes_decision later_d[64]
    cdef uint64_t later_fp[64]
    cdef uint64_t fp
    cdef uint64_t local[PES_CNT_COUNT]
    cdef pes_flow_table *ft = &flows.ft if flows is not None else NULL
    if n * <Py_ssize_t>stride > frames.shape[0]:
        raise ValueError("frames buffer is shorter than lengths x stride")
    if distinct and stride < 30:
        raise ValueError("distinct flows need room for an IPv4 source address")
    memset(local, 0, sizeof(local))
    with nogil:
        for r in range(repeat):
            # In batches of 64 like the loop: the flow table's frames after the others.
            for j in range(0, n, 64):
                k = min(64, n - j)
                n_def = 0
                for i in range(j, j + k):
                    if distinct:
                        flow = <uint32_t>(seq % distinct)
                        seq += 1
                        memcpy(&frames[i * stride + 26], &flow, 4)
                    if not decide(table.table, &frames[i * stride], lengths[i], &d, &pkt):
                        continue
                    fp = _flow_fp(ft, &d, &pkt)
                    if fp:
                        later[n_def] = i
                        later_d[n_def] = d
                        later_fp[n_def] = fp
                        n_def += 1
                        continue
                    rewrite(table.table, &frames[i * stride], &d)
                    fwd += 1
                for i in range(n_def):
                    if later_d[i].route == PES_ROUTE_FALLBACK:
                        _remember(ft, table.table, later_fp[i], &later_d[i], local)
                    rewrite(table.table, &frames[later[i] * stride], &later_d[i])
                    fwd += 1
    return fwd
