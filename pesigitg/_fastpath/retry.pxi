# The Retry offload (draft-ietf-quic-retry-offload, shared-state mode): what the worker
# does with a client's Initial, and when. The tokens are in retry_token.pxi, the Retry
# packet in retry_packet.pxi, AES-128-GCM in gcm.pxi; the loop calls _retry_phase once
# per batch and _retry_screen per frame (loop.pxi). Python entries for the tests.

from pesigitg._fastpath.includes.retrywire cimport pes_csum_add, pes_csum_fold, pes_rng, \
    pes_rng_bytes, pes_rng_seed
from pesigitg._fastpath.includes.routetable cimport (
    PES_KNOB_RETRY_LIFETIME_S,
    PES_KNOB_RETRY_MODE,
    PES_KNOB_RETRY_TRANSITION_MS,
    PES_KNOB_RETRY_TRIGGER,
    PES_RETRY_ALWAYS,
    PES_RETRY_OFF,
    pes_retry_key,
)

DEF LOAD_WINDOW_NS = 100000000  # mode load: Initials are counted per 100 ms
DEF CALM_WINDOWS = 10           # windows below half the trigger before going inactive

# What the offload does with an Initial.
cdef enum:
    RETRY_FORWARD = 0
    RETRY_SEND = 1              # the frame becomes a Retry to its sender
    RETRY_SEND_AND_FORWARD = 2  # transition mode: a Retry from a spare frame, and forward
    RETRY_DROP = 3              # d.drop says why

# Where a worker's offload stands.
cdef enum:
    PHASE_OFF = 0               # no [retry], or mode off: nothing inspected
    PHASE_INACTIVE = 1          # mode load, below the trigger: Initials counted only
    PHASE_TRANSITION = 2        # becoming active: tokenless Initials answered and forwarded
    PHASE_ACTIVE = 3

# What the offload works with for one frame: the table, the worker's random numbers and
# its admitted 4-tuples, the batch's phase and time, and its counters.
cdef struct pes_offload:
    const pes_route_table *t
    pes_rng *rng
    pes_flow_table *admitted
    uint64_t now_s
    uint64_t *local
    uint32_t *initials
    int phase

# One frame's way through the offload: the frame (and its length, the Retry's when it
# became one), and a spare frame for a Retry that goes besides it (or NULL).
cdef struct pes_retry_io:
    uint8_t *frame
    uint32_t len
    uint8_t *spare
    uint32_t spare_len

# Mode load: a worker's window of Initials and where it stands.
cdef struct pes_retry_load:
    int on
    int gauge                   # what the shared counters say (-1: not yet)
    uint32_t window_initials
    uint32_t calm_windows
    uint64_t window_start_ns
    uint64_t transition_until_ns

cdef struct pes_initial:
    uint32_t version
    uint32_t dcid_len
    uint32_t scid_len
    uint32_t token_len
    const uint8_t *dcid
    const uint8_t *scid
    const uint8_t *token


cdef inline int _retry_phase(pes_retry_load *s, const pes_route_table *t,
                             uint64_t *counters, uint64_t *now_s) noexcept nogil:
    # Once per batch: where the offload stands (PHASE_*), and the wall clock in seconds
    # (token expiry). Mode load: the Initials of the last window set it active above
    # the trigger (through transition_ms of Retry-and-forward), and inactive after
    # CALM_WINDOWS below half the trigger. ``counters``: the worker's shared block
    # (the retry_active gauge).
    cdef timespec ts
    cdef uint64_t now_ns = 0, elapsed, rate
    cdef uint32_t mode = t.knobs[PES_KNOB_RETRY_MODE]
    cdef int on = 0
    if mode != PES_RETRY_OFF:
        clock_gettime(CLOCK_MONOTONIC, &ts)
        now_ns = <uint64_t>ts.tv_sec * NS + <uint64_t>ts.tv_nsec
        clock_gettime(CLOCK_REALTIME, &ts)
        now_s[0] = <uint64_t>ts.tv_sec
        on = 1 if mode == PES_RETRY_ALWAYS else s.on
        elapsed = now_ns - s.window_start_ns
        if mode != PES_RETRY_ALWAYS and elapsed >= LOAD_WINDOW_NS:
            rate = <uint64_t>s.window_initials * NS // elapsed
            if not on and rate > t.knobs[PES_KNOB_RETRY_TRIGGER]:
                on = 1
            elif on and rate * 2 < t.knobs[PES_KNOB_RETRY_TRIGGER]:
                s.calm_windows += 1
                on = s.calm_windows < CALM_WINDOWS
            elif on:
                s.calm_windows = 0
            s.window_start_ns = now_ns
            s.window_initials = 0
        if on and not s.on:
            s.calm_windows = 0
            s.transition_until_ns = now_ns + \
                <uint64_t>t.knobs[PES_KNOB_RETRY_TRANSITION_MS] * 1000000
    s.on = on
    if on != s.gauge:
        s.gauge = on
        pes_atomic_store_u64(&counters[PES_CNT_RETRY_ACTIVE], <uint64_t>on)
    if mode == PES_RETRY_OFF:
        return PHASE_OFF
    if not on:
        return PHASE_INACTIVE
    return PHASE_TRANSITION if now_ns < s.transition_until_ns else PHASE_ACTIVE


cdef inline int _varint(const uint8_t *p, size_t len, uint64_t *value) noexcept nogil:
    # RFC 9000 §16: the octets it takes, 0 when it does not fit.
    cdef size_t n, i
    cdef uint64_t v
    if len == 0:
        return 0
    n = <size_t>1 << (p[0] >> 6)
    if n > len:
        return 0
    v = p[0] & 0x3F
    for i in range(1, n):
        v = (v << 8) | p[i]
    value[0] = v
    return <int>n


cdef inline int _parse_initial(const uint8_t *p, size_t len, pes_initial *ini) noexcept nogil:
    # 1: p (a UDP payload) starts with a v1/v2 Initial whose header and token fit; 0: not
    # an Initial of those versions; -1: one, but cut short or malformed.
    cdef pes_long_header lh
    cdef uint64_t token_len
    cdef int n, kind, extent = _long_header(p, len, &lh)
    if extent == PES_LONG_NONE:
        return 0
    kind = _initial_type(lh.version)
    if kind < 0 or (lh.first >> 4) & 3 != kind:
        return 0
    if extent != PES_LONG_WHOLE or lh.dcid_len > PES_CID_MAX_LEN \
            or lh.scid_len > PES_CID_MAX_LEN:
        return -1
    n = _varint(p + lh.rest, len - lh.rest, &token_len)
    if n == 0 or token_len > len - lh.rest - n:
        return -1
    ini.version = lh.version
    ini.dcid, ini.dcid_len = p + lh.dcid, lh.dcid_len
    ini.scid, ini.scid_len = p + lh.scid, lh.scid_len
    ini.token, ini.token_len = p + lh.rest + n, <uint32_t>token_len
    return 1


cdef inline uint64_t _tuple_fp(pes_flow_table *ft, const pes_pkt *pkt) noexcept nogil:
    return pes_flow_fp(ft, pkt.flow.saddr, pkt.flow.daddr, 4 if pkt.family == 4 else 16,
                       pkt.flow.sport, pkt.flow.dport)


cdef inline void _admit(pes_flow_table *ft, const pes_pkt *pkt, uint64_t until) noexcept nogil:
    # A valid token came from this 4-tuple: its later Initials, to the CID the server
    # chose (which the token, bound to the Retry's CID, no longer matches), are let in
    # until the token expires.
    cdef uint64_t fp = _tuple_fp(ft, pkt)
    cdef pes_flow_entry *e = pes_flow_lookup(ft, fp)
    if e != NULL:
        e.key = <uint32_t>until
    else:
        pes_flow_insert(ft, fp, <uint32_t>until)


cdef inline int _admitted(pes_flow_table *ft, const pes_pkt *pkt, uint64_t now_s
                          ) noexcept nogil:
    cdef pes_flow_entry *e = pes_flow_lookup(ft, _tuple_fp(ft, pkt))
    return e != NULL and e.key >= <uint32_t>now_s


cdef inline int _retry_or_drop(const pes_offload *o, pes_retry_io *io, const pes_pkt *pkt,
                               const pes_initial *ini, pes_decision *d, bint into_spare
                               ) noexcept nogil:
    # Answer with a Retry (into the frame, or into the spare: RETRY_SEND_AND_FORWARD),
    # unless the client's DCID is too short to be an original one (RFC 9000 7.2): its
    # token could never validate, so it is dropped.
    if ini.dcid_len < PES_ODCID_MIN:
        d.drop = PES_DROP_SHORT_DCID
        return RETRY_DROP
    if into_spare:
        io.spare_len = _build_retry(o, io.frame, pkt, ini, io.spare)
        return RETRY_SEND_AND_FORWARD
    io.len = _build_retry(o, io.frame, pkt, ini, io.frame)
    return RETRY_SEND


cdef inline int _retry_screen(pes_offload *o, pes_retry_io *io, const pes_pkt *pkt,
                              pes_decision *d) noexcept nogil:
    # What the offload does with a frame the decision forwards (a UDP datagram): one of
    # RETRY_*. For RETRY_SEND the frame has become the Retry (io.len); for
    # RETRY_SEND_AND_FORWARD the Retry is in io.spare (io.spare_len), a free frame the
    # caller offers (NULL: none, and the Initial is only forwarded); RETRY_DROP sets
    # d.drop. Every token is opened (the draft: the offload MUST try to decrypt every
    # token).
    cdef pes_initial ini
    cdef int parsed, state, kind
    cdef uint64_t expires = 0
    if d.route != PES_ROUTE_CID and d.route != PES_ROUTE_FALLBACK:
        return RETRY_FORWARD
    parsed = _parse_initial(io.frame + pkt.payload, pkt.payload_len, &ini)
    if parsed == 0:
        return RETRY_FORWARD
    o.local[PES_CNT_INITIALS] += 1
    o.initials[0] += 1
    if o.phase <= PHASE_INACTIVE:
        return RETRY_FORWARD
    if parsed < 0:
        d.drop = PES_DROP_NOT_QUIC
        return RETRY_DROP
    if pkt.payload_len < PES_INITIAL_MIN:
        d.drop = PES_DROP_SHORT_INITIAL
        return RETRY_DROP
    if ini.token_len == 0:
        if o.phase == PHASE_TRANSITION:
            if io.spare == NULL:
                return RETRY_FORWARD
            return _retry_or_drop(o, io, pkt, &ini, d, 1)
        return _retry_or_drop(o, io, pkt, &ini, d, 0)
    state = _open_token(o, &ini, pkt, &kind, &expires)
    if state == TOKEN_VALID:
        o.local[PES_CNT_RETRY_TOKEN_VALID] += 1
        _admit(o.admitted, pkt, expires)
        return RETRY_FORWARD
    if d.route == PES_ROUTE_CID and _admitted(o.admitted, pkt, o.now_s):
        # The client's later Initials, to the CID the server chose after the Retry: the
        # token is bound to the Retry's CID, but this 4-tuple showed a valid one.
        o.local[PES_CNT_RETRY_TUPLE_ADMITTED] += 1
        return RETRY_FORWARD
    o.local[PES_CNT_RETRY_TOKEN_EXPIRED if state == TOKEN_EXPIRED
            else PES_CNT_RETRY_TOKEN_INVALID] += 1
    if kind == 1:
        # A NEW_TOKEN token that fails: the client may retry through a Retry.
        return _retry_or_drop(o, io, pkt, &ini, d, 0)
    d.drop = PES_DROP_TOKEN
    return RETRY_DROP


# -- Python entries for the tests -----------------------------------------------------------

RETRY_ACTIONS = ("forward", "send", "send_and_forward", "drop")
RETRY_PHASES = {"off": PHASE_OFF, "inactive": PHASE_INACTIVE, "transition": PHASE_TRANSITION,
                "active": PHASE_ACTIVE}


def retry_screen(RouteTable table not None, frame, str phase="active", now=None,
                 FlowTable admitted=None):
    """What the worker's offload does with ``frame`` in ``phase`` (a key of
    RETRY_PHASES), at wall-clock time ``now`` (POSIX seconds; default: now), with the
    worker's table of admitted 4-tuples ``admitted`` (default: an empty one):
    ``(action, frame_out, drop, counters)``, the action one of RETRY_ACTIONS,
    frame_out the Retry sent (for "send" and "send_and_forward"), drop the drop
    reason, counters those the offload bumped."""
    cdef bytearray buf = bytearray(frame)
    cdef bytearray spare = bytearray(2048)
    cdef uint8_t[::1] spare_view = spare
    cdef pes_decision d
    cdef pes_pkt pkt
    cdef pes_rng rng
    cdef pes_offload o
    cdef pes_retry_io io
    cdef uint64_t local[PES_CNT_COUNT]
    cdef uint32_t initials = 0
    cdef int act
    if table.table.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_OFF:
        raise ValueError("the route table's Retry offload is off")
    if admitted is None:
        admitted = FlowTable(PES_RETRY_ADMITTED)
    seed = os.urandom(16)
    pes_rng_seed(&rng, <const uint8_t *>PyBytes_AS_STRING(seed))
    memset(local, 0, sizeof(local))
    io.frame, io.len, io.spare_len = <uint8_t *>_frame_pointer(buf), len(buf), 0
    if not decide(table.table, io.frame, io.len, &d, &pkt):
        return "drop", None, DROPS[d.drop], {}
    o.t, o.rng, o.admitted, o.local, o.initials = table.table, &rng, &admitted.ft, local, \
        &initials
    o.now_s, o.phase = int(time.time() if now is None else now), RETRY_PHASES[phase]
    io.spare = &spare_view[0] if o.phase == PHASE_TRANSITION else NULL
    act = _retry_screen(&o, &io, &pkt, &d)
    counters = {COUNTER_NAMES[i]: local[i] for i in range(PES_CNT_COUNT) if local[i]}
    if act == RETRY_SEND:
        return "send", bytes(buf[:io.len]), "none", counters
    if act == RETRY_SEND_AND_FORWARD:
        return "send_and_forward", bytes(spare[:io.spare_len]), "none", counters
    return RETRY_ACTIONS[act], None, DROPS[d.drop], counters
