# Python entries to the routing decision (decide.pxi), for tests and benchmarks: one
# frame, the parser alone, and batches through the forwarding loop's own functions.

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
    if d.route != PES_ROUTE_NONE:
        rewrite(table.table, data, &d)
    return _decision_tuple(&d, bytes(buf))


def decide_frames_together(RouteTable table not None, frames, FlowTable flows=None):
    """``decide_frame``'s tuple for each of ``frames`` (at most MAX_BATCH), decided as
    one batch by the loop's own batch function: the keyed CIDs' AES and the 4-tuples'
    hashes together, on the path set_aes_path chose; fallback frames through ``flows``
    when given, as in the loop. For the differential tests of the batch."""
    cdef Py_ssize_t n = len(frames)
    cdef DecideBench sink = DecideBench()
    cdef pes_decided *b
    cdef pes_decision decisions[MAX_BATCH]
    cdef uint32_t i
    if n > MAX_BATCH:
        raise ValueError(f"{n} frames, a batch holds {MAX_BATCH}")
    bufs = [bytearray(frame) for frame in frames]
    b = <pes_decided *>malloc(sizeof(pes_decided))
    if b == NULL:
        raise MemoryError()
    try:
        b.n, b.t = <uint32_t>n, table.table
        b.ft = &flows.ft if flows is not None else NULL
        for i in range(b.n):
            b.frame[i] = <uint8_t *>_frame_pointer(bufs[i])
            b.len[i] = len(bufs[i])
        sink.decisions = decisions
        decide_frames(sink, b)
    finally:
        free(b)
    return [_decision_tuple(&decisions[i], bytes(bufs[i])) for i in range(n)]


cdef tuple _decision_tuple(const pes_decision *d, bytes frame_out):
    return (ROUTES[d.route], d.backend if d.route != PES_ROUTE_NONE else None,
            d.config_id if d.config_id >= 0 else None, UNROUTABLE[d.unroutable],
            DROPS[d.drop], frame_out if d.route != PES_ROUTE_NONE else None)


def parse_frame(frame):
    """What the shared parser makes of ``frame``: ``(outcome, fields)``, the outcome one
    of PARSE_OUTCOMES and fields the flow, quoted flow and payload span it found."""
    cdef bytearray buf = bytearray(frame)
    cdef pes_pkt pkt
    memset(&pkt, 0, sizeof(pkt))
    outcome = _parse(_frame_pointer(buf), len(buf), &pkt)
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
                 uint32_t distinct=0, uint32_t batch=DEFAULT_BATCH):
    """Decide and rewrite every frame of ``frames`` (one per ``stride`` octets, ``lengths``
    each) ``repeat`` times without the GIL, in batches of ``batch`` through the loop's
    own batch function (batch.pxi); returns frames forwarded. With ``flows``, fallback
    frames go through that flow table as in the loop; with ``distinct``, each frame's
    IPv4 source address is first overwritten with a counter modulo ``distinct`` (that
    many flows). For benchmarks/decide_cost.py."""
    cdef uint64_t r
    cdef Py_ssize_t j, n = lengths.shape[0]
    cdef pes_decided *b
    cdef DecideBench sink = DecideBench()
    if n * <Py_ssize_t>stride > frames.shape[0]:
        raise ValueError("frames buffer is shorter than lengths x stride")
    if distinct and stride < 30:
        raise ValueError("distinct flows need room for an IPv4 source address")
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch {batch} is outside 1..{MAX_BATCH}")
    b = <pes_decided *>malloc(sizeof(pes_decided))
    if b == NULL:
        raise MemoryError()
    sink.distinct = distinct
    b.t = table.table
    b.ft = &flows.ft if flows is not None else NULL
    try:
        with nogil:
            for r in range(repeat):
                j = 0
                while j < n:
                    b.n = <uint32_t>min(<Py_ssize_t>batch, n - j)
                    _gather(b, &frames[j * stride], &lengths[j], stride)
                    decide_frames(sink, b)
                    sink.seq += b.n
                    j += b.n
    finally:
        free(b)
    return sink.forwarded


cdef inline void _gather(pes_decided *b, uint8_t *frames, const uint32_t *lengths,
                         uint32_t stride) noexcept nogil:
    # b.n frames, one per stride octets, into b.
    cdef uint32_t i
    for i in range(b.n):
        b.frame[i] = frames + i * stride
        b.len[i] = lengths[i]
