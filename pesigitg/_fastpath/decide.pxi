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
# A frame whose CID is keyed is decided in two steps, _decide_begin and _decide_end,
# so that the AES of a whole batch's CIDs runs together in between (batch.pxi); so is
# a short header that goes by its 4-tuple (_decide_begin, then _by_tuple or the
# batch's hashes of many tuples together).
# pesigitg.routing.decision is the Python reference this is tested against.

from pesigitg._fastpath.includes.flowhash cimport (
    pes_flow_hash,
    pes_siphash24,
    pes_tuple_hash,
    pes_tuple_key,
)
from pesigitg._fastpath.includes.tuplebatch cimport (
    PES_TUPLE_LANES,
    pes_tuple4,
    pes_tuple4_hash_batch,
    pes_tuple4_set,
)
from pesigitg._fastpath.includes.routetable cimport (
    PES_BACKEND_ROUTABLE,
    pes_find_server,
    pes_vip_listed,
)


cdef inline int _parse(const uint8_t *frame, size_t len, pes_pkt *pkt) noexcept nogil:
    # The shared parser over a frame: a pes_parse_outcome, pkt what it found.
    cdef pes_cursor c
    pes_cursor_init(&c, frame, frame + len)
    return pes_parse_frame(&c, pkt)


cdef inline void _undecided(pes_decision *d) noexcept nogil:
    d.route = PES_ROUTE_NONE
    d.unroutable = PES_UNR_NONE
    d.drop = PES_DROP_NONE
    d.config_id = -1
    d.backend = 0


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
    return pes_siphash24(t.hash_key, key, pes_tuple_key(key, src, dst, alen, sport, dport))


cdef inline int _maglev(const pes_route_table *t, uint64_t hash, uint8_t route,
                        pes_decision *d) noexcept nogil:
    cdef const uint16_t *maglev = <const uint16_t *>(<const uint8_t *>t + t.maglev_off)
    cdef uint16_t backend = maglev[hash % t.maglev_size]
    if backend == PES_BACKEND_NONE:
        return _drop(d, PES_DROP_NO_BACKEND)
    d.route = route
    d.backend = backend
    return 1


DEF AES_PENDING = 2     # a keyed CID: decided after its batch's AES (_decide_end)
DEF TUPLE_PENDING = 3   # a short header no CID routes: by its 4-tuple (_by_tuple)


# Where a CID was found, for the fallback when it names no server that can take it.
cdef enum:
    CID_IN_LONG = 0     # a long header's DCID: Maglev on that DCID
    CID_IN_SHORT = 1    # a short header's DCID: Maglev on the 4-tuple
    CID_IN_ICMP = 2     # the SCID an ICMP error quotes: by the quoted flow


cdef inline int _serve(const pes_route_table *t, int config_id, const uint8_t *sid,
                       pes_decision *d) noexcept nogil:
    # 1 with d filled when the server ID names a server that can take it, else 0 with
    # d.unroutable set (DESIGN step 3: draining servers still get their CIDs).
    cdef int backend = pes_find_server(t, config_id, sid)
    cdef const pes_backend *be
    if backend < 0:
        d.unroutable = PES_UNR_UNKNOWN_SERVER
        return 0
    be = <const pes_backend *>(<const uint8_t *>t + t.backends_off) + backend
    if (be.state & PES_BACKEND_ROUTABLE) != PES_BACKEND_ROUTABLE:
        d.unroutable = PES_UNR_SERVER_DOWN
        return 0
    d.route = PES_ROUTE_CID
    d.backend = <uint16_t>backend
    d.config_id = <int8_t>config_id
    return 1


cdef inline int _route_cid(const pes_route_table *t, const uint8_t *cid, size_t avail,
                           pes_decision *d, pes_cid_job *job, uint8_t kind) noexcept nogil:
    # As _serve for the CID's server ID, or AES_PENDING with job filled when its config is
    # keyed; 0 with d.unroutable set when no config takes the CID.
    cdef uint8_t sid[16]      # pes_find_server reads 16
    cdef int rc = cid_locate(&t.cid, cid, avail, sid, job)
    if rc == PES_CID_NO_CONFIG:
        d.unroutable = PES_UNR_NO_CONFIG
        return 0
    if rc == PES_CID_TOO_SHORT:
        d.unroutable = PES_UNR_SHORT_CID
        return 0
    if rc >= CID_KEYED:
        job.config_id = <int8_t>(rc - CID_KEYED)
        job.kind = kind
        job.avail = <uint16_t>avail
        return AES_PENDING
    return _serve(t, rc, sid, d)


cdef inline int _long_header(const uint8_t *p, size_t len, pes_long_header *lh) noexcept nogil:
    # The shared reader of the long header's invariant fields over a payload.
    cdef pes_cursor c
    pes_cursor_init(&c, p, p + len)
    return pes_pull_long_header(&c, lh)


cdef inline int _by_dcid(const pes_route_table *t, const uint8_t *dcid, size_t len,
                         pes_decision *d) noexcept nogil:
    # The client picked this DCID at random and repeats it on every retransmission of
    # its first flight: hashing it needs no state. (The flow table still goes by the
    # 4-tuple, which is not hashed here.)
    d.tuple_hashed = 0
    return _maglev(t, _key_hash(t, dcid, len), PES_ROUTE_FALLBACK, d)


cdef inline void _tuple_hashed(const pes_route_table *t, uint64_t hash, pes_decision *d
                               ) noexcept nogil:
    # Maglev takes the 4-tuple's hash: the flow table's fingerprint starts from it
    # (stateful.pxi) when it is the unkeyed one; a keyed one it computes again.
    d.tuple_hashed = not t.hash_keyed
    d.tuple_hash = hash


cdef inline int _by_tuple(const pes_route_table *t, const pes_pkt *pkt, pes_decision *d
                          ) noexcept nogil:
    # The 4-tuple, hashed as the reference hashes src + dst + sport + dport.
    cdef uint64_t h = _tuple_hash(t, pkt.flow.saddr, pkt.flow.daddr,
                                  4 if pkt.family == 4 else 16, pkt.flow.sport,
                                  pkt.flow.dport)
    _tuple_hashed(t, h, d)
    return _maglev(t, h, PES_ROUTE_FALLBACK, d)


cdef inline int _by_quoted_flow(const pes_route_table *t, const pes_pkt *pkt,
                                pes_decision *d) noexcept nogil:
    # The flow an ICMP error belongs to is the reversed quoted tuple (client -> VIP),
    # as short headers hash it. Anyone can send a Packet Too Big: one quoting a packet
    # that did not leave from a VIP is none of our backends' business, and is never
    # copied.
    cdef uint8_t route = PES_ROUTE_ICMP
    cdef uint64_t h = _tuple_hash(t, pkt.quoted.daddr, pkt.quoted.saddr,
                                  4 if pkt.family == 4 else 16, pkt.quoted.dport,
                                  pkt.quoted.sport)
    d.unroutable = PES_UNR_NONE
    if pes_packet_too_big(pkt):
        route = PES_ROUTE_ICMP_FANOUT if pes_vip_listed(t, pkt.family, pkt.quoted.saddr) \
            else PES_ROUTE_ICMP_NOT_VIP
    _tuple_hashed(t, h, d)
    return _maglev(t, h, route, d)


cdef inline int _quic(const pes_route_table *t, const uint8_t *p, size_t len,
                      const pes_pkt *pkt, pes_decision *d, pes_cid_job *job) noexcept nogil:
    cdef pes_long_header lh
    cdef int extent, routed
    if len == 0:
        return _drop(d, PES_DROP_NOT_QUIC)
    extent = _long_header(p, len, &lh)
    if extent != PES_LONG_NONE:
        if extent == PES_LONG_CUT:
            return _drop(d, PES_DROP_NOT_QUIC)
        # RFC 9000 §17.2: version 1 CIDs are at most 20 octets.
        if lh.version == 1 and lh.dcid_len > PES_CID_MAX_LEN:
            return _drop(d, PES_DROP_NOT_QUIC)
        if lh.dcid_len == 0:
            d.unroutable = PES_UNR_SHORT_CID
        else:
            routed = _route_cid(t, p + lh.dcid, lh.dcid_len, d, job, CID_IN_LONG)
            if routed:
                return routed
        return _by_dcid(t, p + lh.dcid, lh.dcid_len, d)
    # RFC 8999 §5.2 short header: the DCID starts at octet 1, its length is the
    # config's (named by the top bits).
    if len < PES_SHORT_HEADER_MIN:
        return _drop(d, PES_DROP_NOT_QUIC)
    routed = _route_cid(t, p + 1, len - 1, d, job, CID_IN_SHORT)
    if routed:
        return routed
    return TUPLE_PENDING


cdef inline int _icmp(const pes_route_table *t, const uint8_t *p, size_t len,
                      const pes_pkt *pkt, pes_decision *d, pes_cid_job *job) noexcept nogil:
    # p: the quoted datagram's payload, a packet a backend sent (DSR: VIP -> client).
    cdef pes_long_header lh
    cdef int routed
    if _long_header(p, len, &lh) == PES_LONG_WHOLE and lh.scid_len:
        # Its source CID is the backend's own.
        routed = _route_cid(t, p + lh.scid, lh.scid_len, d, job, CID_IN_ICMP)
        if routed == 1:
            d.route = PES_ROUTE_ICMP_CID
        if routed:
            return routed
    return _by_quoted_flow(t, pkt, d)


cdef inline int _decide_begin(const pes_route_table *t, const uint8_t *frame, size_t len,
                              pes_decision *d, pes_pkt *pkt, pes_cid_job *job) noexcept nogil:
    # The decision up to the AES: 1 to forward (d.backend), 0 to drop (d.drop),
    # AES_PENDING when a keyed CID waits in job for _decide_end (d as _undecided left
    # it), TUPLE_PENDING when the frame goes by its 4-tuple's hash (_by_tuple, which a
    # batch may run for many frames together); pkt is what the parser found.
    cdef int outcome
    _undecided(d)
    outcome = _parse(frame, len, pkt)
    if outcome == PES_PARSE_UDP:
        return _quic(t, frame + pkt.payload, pkt.payload_len, pkt, d, job)
    if outcome == PES_PARSE_ICMP_ERROR:
        return _icmp(t, frame + pkt.payload, pkt.payload_len, pkt, d, job)
    return _drop(d, pes_parse_drop(outcome))


cdef inline int _decide_end(const pes_route_table *t, const pes_cid_job *job,
                            pes_decision *d) noexcept nogil:
    # An AES_PENDING decision once job.sid holds the server ID: 1 when the server takes the
    # frame, else 0 with d.unroutable set, for _decide_fallback.
    if not _serve(t, job.config_id, job.sid, d):
        return 0
    if job.kind == CID_IN_ICMP:
        d.route = PES_ROUTE_ICMP_CID
    return 1


cdef inline int _decide_fallback(const pes_route_table *t, const pes_cid_job *job,
                                 pes_decision *d, const pes_pkt *pkt) noexcept nogil:
    # Where a frame goes whose keyed CID named no server that can take it.
    if job.kind == CID_IN_LONG:
        return _by_dcid(t, job.cid, job.avail, d)
    if job.kind == CID_IN_SHORT:
        return _by_tuple(t, pkt, d)
    return _by_quoted_flow(t, pkt, d)


# A batch of frames and what became of them (batch.pxi).
cdef struct pes_decided:
    uint32_t n
    const pes_route_table *t        # the table deciding
    pes_flow_table *ft              # the flow table for fallback frames, or NULL
    uint8_t *frame[MAX_BATCH]
    uint32_t len[MAX_BATCH]
    uint32_t slot[MAX_BATCH]        # the caller's (the loop: the RX ring index)
    pes_cid_job jobs[MAX_BATCH]     # the keyed CIDs waiting for their AES
    uint32_t later[MAX_BATCH]       # frames the flow table decides, finished last:
    pes_decision d[MAX_BATCH]       # their decisions, by frame (also the tuples')
    uint64_t fp[MAX_BATCH]          # and fingerprints
    uint32_t tupled[MAX_BATCH]      # frames whose IPv4 4-tuples are hashed together:
    pes_tuple4 tuples[MAX_BATCH]    # the tuples
    uint64_t hashes[MAX_BATCH]      # and their hashes (with a hash_key, keyed:
    uint64_t unkeyed[MAX_BATCH]     # and these for the flow table)


cdef inline int decide(const pes_route_table *t, const uint8_t *frame, size_t len,
                       pes_decision *d, pes_pkt *pkt) noexcept nogil:
    # One frame (a batch of one): 1 to forward (d.backend), 0 to drop (d.drop).
    cdef pes_cid_job job
    cdef int outcome = _decide_begin(t, frame, len, d, pkt, &job)
    if outcome == TUPLE_PENDING:
        return _by_tuple(t, pkt, d)
    if outcome != AES_PENDING:
        return outcome
    pes_cid_decrypt_batch(&job, 1, _aes_path)
    return _decide_end(t, &job, d) or _decide_fallback(t, &job, d, pkt)


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
