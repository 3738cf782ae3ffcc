# What the stateless decision leaves to the worker: the flow table for fallback frames
# and ICMP errors routed by hash, the copies of a Packet Too Big for every backend
# (rate-limited, from the stash), and the per-backend counts.

cdef inline uint64_t _flow_fp(pes_flow_table *ft, const pes_decision *d,
                              const pes_pkt *pkt) noexcept nogil:
    # The flow-table fingerprint a decision will look up (0: none), its bucket on its
    # way into the cache: a fallback frame's 4-tuple, or the flow an ICMP error routed
    # by hash quotes (reversed: client -> VIP). From the hash Maglev took when that was
    # the tuple's unkeyed hash (d.tuple_hashed), else hashed here from pkt; pkt is NULL
    # only for a frame whose tuple hash is in d (batch.pxi, _decide_tuples).
    cdef uint64_t h
    cdef bint quoted = d.route == PES_ROUTE_ICMP or d.route == PES_ROUTE_ICMP_FANOUT \
        or d.route == PES_ROUTE_ICMP_NOT_VIP
    if ft == NULL or not (quoted or d.route == PES_ROUTE_FALLBACK):
        return 0
    if d.tuple_hashed:
        h = d.tuple_hash
    elif pkt == NULL:
        return 0
    elif quoted:
        h = pes_tuple_hash(pkt.quoted.daddr, pkt.quoted.saddr, 4 if pkt.family == 4 else 16,
                           pkt.quoted.dport, pkt.quoted.sport)
    else:
        h = pes_tuple_hash(pkt.flow.saddr, pkt.flow.daddr, 4 if pkt.family == 4 else 16,
                           pkt.flow.sport, pkt.flow.dport)
    h = pes_flow_fp_of(ft, h)
    pes_flow_prefetch(ft, h)
    return h


cdef inline void _beyond_the_decision(Engine self, XskSocket x, pes_batch *b,
                                      const xdp_desc *rx_desc, pes_decision *d, uint64_t fp
                                      ) noexcept nogil:
    # What the stateless decision leaves to the worker: the flow table for fallback
    # frames and hash-routed ICMP errors (fp: their fingerprint, from _flow_fp), the
    # copies of a Packet Too Big for every backend (placed in TX slots of the batch,
    # which must keep one for the frame itself); d.backend may change.
    cdef const pes_route_table *t = self.cur
    cdef int copies
    if d.route == PES_ROUTE_FALLBACK:
        if fp:
            _remember(self.flows, t, fp, d, b.local)
        return
    if d.route == PES_ROUTE_ICMP_CID:
        b.local[PES_CNT_ICMP_CID_ROUTED] += 1
        return
    if d.route == PES_ROUTE_ICMP_FANOUT:
        copies = _fan_out(self, x, b, x.umem + rx_desc.addr, rx_desc.len, d)
        if copies >= 0:
            b.local[PES_CNT_ICMP_FANOUT] += 1
            b.local[PES_CNT_FORWARDED] += <uint32_t>copies
            return
        b.local[PES_CNT_ICMP_FANOUT_LIMITED] += 1
    else:
        if d.route == PES_ROUTE_ICMP_NOT_VIP:
            b.local[PES_CNT_ICMP_FANOUT_REFUSED] += 1
        b.local[PES_CNT_ICMP_HASH_ROUTED] += 1
    if fp:
        _recall_icmp(self.flows, t, fp, d, b.local)


cdef inline const pes_backend *_backends(const pes_route_table *t) noexcept nogil:
    return <const pes_backend *>(<const uint8_t *>t + t.backends_off)


cdef inline int _routable(const pes_backend *be) noexcept nogil:
    return (be.state & PES_BACKEND_ROUTABLE) == PES_BACKEND_ROUTABLE


cdef inline void _remember(pes_flow_table *ft, const pes_route_table *t, uint64_t fp,
                           pes_decision *d, uint64_t *local) noexcept nogil:
    # A fallback frame: a 4-tuple the table knows stays on its backend while that one
    # can take it; an unknown one is learnt with the backend Maglev chose.
    cdef const pes_backend *backends = _backends(t)
    cdef pes_flow_entry *e = pes_flow_lookup(ft, fp)
    cdef int b
    if e != NULL:
        b = pes_backend_by_key(t, e.key)
        if b >= 0 and _routable(&backends[b]):
            d.backend = <uint16_t>b
            local[PES_CNT_FLOW_HITS] += 1
            return
        e.key = backends[d.backend].key       # its backend is gone: the new choice
        local[PES_CNT_FLOW_INSERTS] += 1
        return
    if pes_flow_insert(ft, fp, backends[d.backend].key):
        local[PES_CNT_FLOW_EVICTIONS] += 1
    local[PES_CNT_FLOW_INSERTS] += 1


cdef inline void _recall_icmp(pes_flow_table *ft, const pes_route_table *t, uint64_t fp,
                              pes_decision *d, uint64_t *local) noexcept nogil:
    # An ICMP error about a flow the table knows goes where the flow goes.
    cdef pes_flow_entry *e = pes_flow_lookup(ft, fp)
    cdef int b
    if e != NULL:
        b = pes_backend_by_key(t, e.key)
        if b >= 0 and _routable(&_backends(t)[b]):
            d.backend = <uint16_t>b
            local[PES_CNT_FLOW_HITS] += 1


cdef inline int _fan_out_allowed(Engine self, uint32_t rate) noexcept nogil:
    # GCRA: one fan-out every 1/rate s, bursts of up to rate (one second's worth).
    cdef timespec ts
    cdef uint64_t now, interval
    if rate == 0:
        return 0
    clock_gettime(CLOCK_MONOTONIC, &ts)
    now = <uint64_t>ts.tv_sec * NS + <uint64_t>ts.tv_nsec
    interval = NS // rate
    if self.fanout_tat < now:
        self.fanout_tat = now
    if self.fanout_tat + interval > now + NS:
        return 0
    self.fanout_tat += interval
    return 1


cdef inline int _fan_out(Engine self, XskSocket x, pes_batch *b, const uint8_t *frame,
                         uint32_t len, pes_decision *d) noexcept nogil:
    # The frame to the first backend that can take it, a copy (a spare frame of the
    # stash, cut to PES_PTB_COPY_MAX IP octets) to each other one; returns the copies.
    # -1, with nothing changed, when the rate, the spares or the TX room do not allow
    # it: the frame then goes by hash. The rate is checked before anything else.
    cdef const pes_route_table *t = self.cur
    cdef const pes_backend *backends = _backends(t)
    cdef uint32_t i, n = 0, first = 0, copies = 0, spare, copy_len
    cdef uint8_t *copy
    cdef xdp_desc *desc
    if not _fan_out_allowed(self, t.knobs[PES_KNOB_ICMP_FANOUT_RATE]):
        return -1
    for i in range(t.n_backends):
        if _routable(&backends[i]):
            if n == 0:
                first = i
            n += 1
    if n == 0 or n - 1 > x.stash.count or n > b.tx_room - b.n_tx:
        return -1
    d.backend = <uint16_t>first
    copy_len = min(len, PES_ETH_HLEN + PES_PTB_COPY_MAX)
    for i in range(first + 1, t.n_backends):
        if not _routable(&backends[i]):
            continue
        x.stash.count -= 1
        spare = x.stash.frames[x.stash.count]
        x.stash.dirty = 1
        copy = x.umem + <uint64_t>spare * x.frame_size
        memcpy(copy, frame, copy_len)
        if copy_len < len:
            _cut_icmp(copy, copy_len)
        memcpy(copy, backends[i].mac, 6)
        memcpy(copy + 6, t.if_mac, 6)
        desc = _tx_slot(x, b)
        desc.addr = <uint64_t>spare * x.frame_size
        desc.len = copy_len
        copies += 1
        if self.bcnt != NULL:
            _count_backend(self, <uint16_t>i, 0)
    return <int>copies


cdef inline void _cut_icmp(uint8_t *frame, uint32_t len) noexcept nogil:
    # A copy of an ICMP error cut to ``len`` octets: its IP length and checksums again
    # (IPv4: total length, header checksum, ICMP checksum; IPv6: payload length, the
    # ICMPv6 checksum over its pseudo-header). The parser found the headers whole.
    cdef pes_cursor c
    cdef pes_pkt pkt
    cdef uint8_t *ip = frame + PES_ETH_HLEN
    cdef uint8_t *icmp
    cdef uint32_t sum, icmp_len
    pes_cursor_init(&c, frame, frame + len)
    if pes_parse_frame(&c, &pkt) != PES_PARSE_ICMP_ERROR or pkt.l4 + PES_ICMP_HLEN > len:
        return
    icmp = frame + pkt.l4
    icmp_len = len - pkt.l4
    icmp[2] = icmp[3] = 0
    if pkt.family == 4:
        _put16(ip + 2, len - PES_ETH_HLEN)
        ip[10] = ip[11] = 0
        _put16(ip + 10, pes_csum_fold(pes_csum_add(0, ip, (ip[0] & 0xF) * 4)))
        _put16(icmp + 2, pes_csum_fold(pes_csum_add(0, icmp, icmp_len)))
        return
    _put16(ip + 4, len - PES_ETH_HLEN - PES_IPV6_HLEN)
    sum = pes_csum_add(0, ip + 8, 32)               # source and destination
    sum += icmp_len + PES_PROTO_ICMPV6
    _put16(icmp + 2, pes_csum_fold(pes_csum_add(sum, icmp, icmp_len)))


cdef inline void _count_backend(Engine self, uint16_t backend, bint cid) noexcept nogil:
    # One writer per block (this worker): plain 64-bit stores the supervisor reads.
    cdef uint16_t slot = _backends(self.cur)[backend].slot
    if slot < PES_BACKEND_SLOTS:
        self.bcnt[slot] += 1
        if cid:
            self.bcnt[PES_BACKEND_SLOTS + slot] += 1
