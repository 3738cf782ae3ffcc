# One batch through the routing decision, for the forwarding loop and for the benchmark
# alike (the sink, a fused type, is what differs). Each frame is decided as it comes,
# offered to the sink (the loop's Retry offload), and finished at once while it is in
# the cache, unless its CID is keyed, or it goes by its IPv4 4-tuple's hash on the VAES
# path, or the flow table decides it. The 4-tuples are hashed eight at a time
# (tuplebatch.h), and those frames go to Maglev and are finished; then the AES of
# every keyed CID runs together (cidbatch.h) and those frames are finished; then the
# flow table's frames, whose buckets were on their way into the cache meanwhile.


cdef class DecideBench:
    # decide_batch's sink: forwarded frames rewritten and counted.
    cdef uint64_t forwarded
    cdef uint32_t distinct          # flows to make up (0: the frames as they are)
    cdef uint64_t seq
    cdef pes_decision *decisions    # when set, each frame's decision, by frame
    cdef uint64_t local[PES_CNT_COUNT]   # the flow table's counts, not reported


DEF LATER = 2           # _settle: finished after the batch's others


ctypedef fused frame_sink:
    Engine
    DecideBench


cdef inline void decide_frames(frame_sink sink, pes_decided *b) noexcept nogil:
    # Decide and finish b's frames: sink receives each one decided (_offer, _finish).
    # What the parser found stays local (in registers where the compiler can): a
    # frame whose CID waits for the AES is parsed again after it, if anything still
    # needs the parse (its CID named no server, or the Retry offload is on), which
    # costs less than storing every parse and loading it back.
    cdef uint32_t i, j, n = b.n, n_jobs = 0, n_later = 0, forwarded = 0
    # Locals, as stores to frames may alias b and the sink:
    cdef const pes_route_table *t = b.t
    cdef bint arrive = _arrives(sink)
    cdef bint tuples_together = _tuples_together(sink, t)
    # The tuples' hashes: in groups as they fill when the flow table decides their
    # frames (its buckets' fetches then spread over the batch), else all at the end.
    cdef uint32_t n_tuples = 0, hashed = 0
    cdef uint32_t group = PES_TUPLE_LANES if b.ft != NULL else MAX_BATCH
    cdef int settled, outcome
    cdef pes_decision d
    cdef pes_pkt pkt
    for i in range(n):
        if arrive:
            _arrive(sink, b, i)
        outcome = _decide_begin(t, b.frame[i], b.len[i], &d, &pkt, &b.jobs[n_jobs])
        if outcome == AES_PENDING:
            b.jobs[n_jobs].frame = i
            n_jobs += 1
            continue
        if outcome == TUPLE_PENDING:
            if tuples_together and pkt.family == 4:
                pes_tuple4_set(&b.tuples[n_tuples], pkt.flow.saddr, pkt.flow.daddr,
                               pkt.flow.sport, pkt.flow.dport)
                b.tupled[n_tuples] = i
                b.d[i] = d
                n_tuples += 1
                if n_tuples - hashed == group:
                    forwarded += _decide_tuples(sink, t, b, hashed, group, &n_later)
                    hashed = n_tuples
                continue
            _by_tuple(t, &pkt, &d)
        settled = _settle(sink, t, b, i, &d, &pkt)
        if settled == LATER:
            b.later[n_later] = i
            n_later += 1
        else:
            forwarded += settled
    if n_tuples > hashed:
        forwarded += _decide_tuples(sink, t, b, hashed, n_tuples - hashed, &n_later)
    if n_jobs:
        forwarded += _decide_keyed(sink, t, b, n_jobs, &n_later)
    for j in range(n_later):
        i = b.later[j]
        forwarded += _finish(sink, t, b, i, &b.d[i], b.fp[i])
    if frame_sink is DecideBench:
        sink.forwarded += forwarded


cdef inline bint _tuples_together(frame_sink sink, const pes_route_table *t) noexcept nogil:
    # Whether the batch's IPv4 4-tuples are hashed together (tuplebatch.h): on the VAES
    # path, when nothing offered a frame reads its parse.
    return _aes_path == PES_AES_VAES and not _offers(sink)


cdef inline uint32_t _decide_tuples(frame_sink sink, const pes_route_table *t, pes_decided *b,
                                    uint32_t first, uint32_t count, uint32_t *n_later) noexcept nogil:
    # The frames whose 4-tuples wait in b.tuples (their decisions so far in b.d): the
    # hashes together, then each one to Maglev and settled; returns how many _settle
    # forwarded. Their parse is not needed any more (_tuples_together).
    cdef uint32_t i, j, forwarded = 0
    cdef int settled
    cdef pes_decision d
    cdef bint keyed = t.hash_keyed
    cdef const uint8_t *hash_key = NULL
    if keyed:
        hash_key = &t.hash_key[0]
    pes_tuple4_hash_batch(&b.tuples[first], &b.hashes[first], count, hash_key)
    if keyed and b.ft != NULL:
        pes_tuple4_hash_batch(&b.tuples[first], &b.unkeyed[first], count, NULL)
    for j in range(first, first + count):
        i = b.tupled[j]
        d = b.d[i]
        d.tuple_hashed = not keyed or b.ft != NULL
        d.tuple_hash = b.unkeyed[j] if keyed else b.hashes[j]
        _maglev(t, b.hashes[j], PES_ROUTE_FALLBACK, &d)
        settled = _settle(sink, t, b, i, &d, NULL)
        if settled == LATER:
            b.later[n_later[0]] = i
            n_later[0] += 1
        else:
            forwarded += settled
    return forwarded


cdef inline uint32_t _decide_keyed(frame_sink sink, const pes_route_table *t, pes_decided *b,
                                   uint32_t n_jobs, uint32_t *n_later) noexcept nogil:
    # The frames whose keyed CIDs wait in b.jobs: their AES together, then each one
    # decided and settled; returns how many _settle forwarded (the benchmark's count).
    cdef uint32_t i, j, forwarded = 0
    cdef int settled
    cdef pes_decision d
    cdef pes_pkt pkt
    pes_cid_decrypt_batch(b.jobs, <int>n_jobs, _aes_path)
    for j in range(n_jobs):
        i = b.jobs[j].frame
        _undecided(&d)
        if _decide_end(t, &b.jobs[j], &d):
            if _offers(sink):
                _parse(b.frame[i], b.len[i], &pkt)
        else:
            _parse(b.frame[i], b.len[i], &pkt)
            _decide_fallback(t, &b.jobs[j], &d, &pkt)
        settled = _settle(sink, t, b, i, &d, &pkt)
        if settled == LATER:
            b.later[n_later[0]] = i
            n_later[0] += 1
        else:
            forwarded += settled
    return forwarded


cdef inline int _settle(frame_sink sink, const pes_route_table *t, pes_decided *b,
                        uint32_t i, pes_decision *d, const pes_pkt *pkt) noexcept nogil:
    # Frame i decided (d, pkt): offered to the sink, then finished now (_finish's
    # return), or LATER (b.d[i] and b.fp[i] kept) when the flow table decides it (its
    # bucket on its way into the cache). pkt is NULL for a frame Maglev chose by its
    # 4-tuple's hash in _decide_tuples, where neither the sink nor the flow table
    # reads it.
    cdef uint64_t fp = 0
    if not _offer(sink, b, i, d, pkt):
        return 0
    if b.ft != NULL and d.route != PES_ROUTE_NONE and d.drop == PES_DROP_NONE:
        fp = _flow_fp(b.ft, d, pkt)
    if fp:
        b.d[i] = d[0]
        b.fp[i] = fp
        return LATER
    return _finish(sink, t, b, i, d, 0)


cdef inline bint _arrives(frame_sink sink) noexcept nogil:
    # Whether _arrive writes frames: the benchmark's, when it makes up flows.
    if frame_sink is DecideBench:
        return sink.distinct != 0
    else:
        return 0


cdef inline void _arrive(frame_sink sink, pes_decided *b, uint32_t i) noexcept nogil:
    # The benchmark's traffic: frame i from the next of its distinct flows (its IPv4
    # source address), written as the frame arrives, as a NIC's would be. (sink.seq,
    # the batch's first flow, is only read here: decide_batch moves it on.)
    cdef uint32_t flow
    if frame_sink is DecideBench:
        flow = <uint32_t>((sink.seq + i) % sink.distinct)
        memcpy(b.frame[i] + 26, &flow, 4)


cdef inline bint _offers(frame_sink sink) noexcept nogil:
    # Whether _offer reads what the parser found.
    if frame_sink is Engine:
        return sink.b_now.offload.phase != PHASE_OFF
    else:
        return 0


cdef inline bint _offer(frame_sink sink, pes_decided *b, uint32_t i, pes_decision *d,
                        const pes_pkt *pkt) noexcept nogil:
    # 0 when the frame is done with: the loop's Retry offload sent it back as a Retry.
    # (pkt is NULL only when the offload is off: _tuples_together.)
    if frame_sink is Engine:
        if d.route != PES_ROUTE_NONE and pkt != NULL \
                and sink.b_now.offload.phase != PHASE_OFF:
            return _offload(sink.xsk, sink.b_now, pes_ring_desc(&sink.xsk.rx, b.slot[i]),
                            d, pkt) != RETRY_SEND
        return 1
    else:
        return 1


cdef inline bint _finish(frame_sink sink, const pes_route_table *t, pes_decided *b,
                         uint32_t i, pes_decision *d, uint64_t fp) noexcept nogil:
    # The loop emits the frame (TX or the fill ring); the benchmark rewrites it and
    # returns whether it forwarded it (counted in a register, not in the sink: a store
    # to a frame could alias the sink, and the count would go through memory).
    if frame_sink is Engine:
        _emit(sink, sink.xsk, sink.b_now, pes_ring_desc(&sink.xsk.rx, b.slot[i]), d, fp)
        return 0
    else:
        if fp and d.route == PES_ROUTE_FALLBACK:
            _remember(b.ft, t, fp, d, sink.local)
        if sink.decisions != NULL:
            sink.decisions[i] = d[0]
        if d.route == PES_ROUTE_NONE:
            return 0
        rewrite(t, b.frame[i], d)
        return 1
