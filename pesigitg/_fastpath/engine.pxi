# The forwarding loop: one engine owns one AF_XDP socket (one NIC queue).
#
# Per batch: completions and dropped frames back to the fill ring (or to the stash
# when it is short of spares), RX, decide, the flow table for fallback frames, rewrite,
# TX (plus copies from the stash for a Packet Too Big that goes to every backend), then
# one journaled publication of the four ring indices and the stash, and the counters.
# The loop runs without the GIL from Engine.run until Engine.stop. A new route table
# handed to Engine.swap_table is picked up at the next batch boundary; the old one is
# released only once the loop has moved past it. The flow table carries over unless
# the new route table asks for another size.

from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

from pesigitg._fastpath.includes.routetable cimport (
    PES_BACKEND_ROUTABLE,
    PES_KNOB_FLOW_ENTRIES,
    PES_KNOB_ICMP_FANOUT_RATE,
    PES_KNOB_RETRY_MODE,
    PES_KNOB_RETRY_TRANSITION_MS,
    PES_KNOB_RETRY_TRIGGER,
    PES_RETRY_ALWAYS,
    PES_RETRY_OFF,
)
from pesigitg._fastpath.includes.system cimport (
    EFD_CLOEXEC,
    EFD_NONBLOCK,
    POLLIN,
    eventfd,
    poll,
    pollfd,
)

DEF MAX_BATCH = 256
DEF NS = 1000000000

# One batch's state, passed by pointer to every step of the loop (as Katran passes its
# packet description): the TX and fill slots it reserved and used, its counters, and
# what the Retry offload works with.
cdef struct pes_batch:
    uint32_t tx_idx         # TX slots reserved: tx_idx .. tx_idx + tx_room - 1
    uint32_t tx_room
    uint32_t n_tx           # of which used
    uint32_t fill_idx       # fill slots reserved (as many as frames in hand)
    uint32_t n_back         # of which used
    bint floor              # the benchmark's floor: swap MACs, decide nothing
    uint64_t *local         # counts of this batch, added to the shared block after it
    pes_offload offload

# Handed over as pend_flows: "no flow table from now on".
cdef pes_flow_table _NO_FLOWS
COUNTERS_SIZE = sizeof(pes_counters)
# One worker's per-backend counts: frames forwarded, then frames CID-routed, per slot.
BACKEND_COUNTS_SIZE = 2 * PES_BACKEND_SLOTS * sizeof(uint64_t)

DEFAULT_BATCH = 64
DEFAULT_POLL_TIMEOUT_MS = 100


def new_counters(int workers=1):
    """Shared, cache-line aligned counter memory for ``workers`` engines (anonymous
    MAP_SHARED, so it is shared with processes forked after this call)."""
    return _mmap.mmap(-1, COUNTERS_SIZE * workers)


def counters_size(int workers):
    """Octets of the counter blocks of ``workers`` engines."""
    return COUNTERS_SIZE * workers


def read_counters(buffer, int worker=0):
    """The counters of ``worker`` in ``buffer`` (see :func:`new_counters`) as a dict."""
    view = memoryview(buffer).cast("B")[worker * COUNTERS_SIZE:(worker + 1) * COUNTERS_SIZE]
    values = view.cast("Q")
    return {name: values[i] for i, name in enumerate(COUNTER_NAMES)}


@cython.final
cdef class Engine:
    """Forward frames of one queue: ``Engine(xsk, table, counters=None, worker=0)``.

    ``counters`` is a buffer from :func:`new_counters` (one block per worker), whose
    values carry on from whatever a previous engine of the worker left there;
    ``busy_poll`` spins instead of sleeping in poll() when idle, and ``floor`` sends
    every frame back with its MACs swapped and no decision (both for benchmarks).
    Creating an engine takes the socket's rings over (:meth:`XskSocket.recover`);
    ``recovered`` tells whether a publication interrupted by a crash was finished.
    """

    cdef readonly XskSocket xsk
    # Tables the loop may reach (at cur or pend), kept alive by address.
    cdef dict _tables
    cdef const pes_route_table *cur
    cdef const pes_route_table *pend
    # The flow table the loop uses and one handed over with pend (NULL: keep cur's).
    cdef dict _flow_tables
    cdef pes_flow_table *flows
    cdef pes_flow_table *pend_flows
    cdef FlowTable _admitted        # 4-tuples a valid Retry token came from (offload)
    cdef uint64_t fanout_tat        # GCRA: when the next fan-out is due, ns
    # The Retry offload: random numbers, and the load mode's window and state.
    cdef pes_rng rng
    cdef int retry_on
    cdef int retry_gauge            # what the shared counters say (-1: not yet)
    cdef uint32_t window_initials
    cdef uint32_t calm_windows
    cdef uint64_t window_start_ns
    cdef uint64_t transition_until_ns
    cdef int swap_lock
    cdef object _counters_buf
    cdef int _worker
    cdef uint64_t *_cnt
    # Frames forwarded per backend slot, then CID-routed per slot (or NULL).
    cdef object _backend_buf
    cdef uint64_t *bcnt
    cdef int stopping
    cdef int running
    cdef int wake_fd
    cdef readonly uint32_t batch
    cdef readonly int poll_timeout_ms
    cdef readonly bint busy_poll
    cdef readonly bint floor
    cdef readonly bint recovered

    def __cinit__(self):
        self.wake_fd = -1

    def __init__(self, XskSocket xsk not None, RouteTable table not None, counters=None,
                 int worker=0, uint32_t batch=DEFAULT_BATCH,
                 int poll_timeout_ms=DEFAULT_POLL_TIMEOUT_MS, bint busy_poll=False,
                 bint floor=False, backend_counts=None):
        cdef uint8_t[::1] view
        cdef uint8_t[::1] bview
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch {batch} is outside 1..{MAX_BATCH}")
        self.xsk = xsk
        self.batch = batch
        self.poll_timeout_ms = poll_timeout_ms
        self.busy_poll = busy_poll
        self.floor = floor
        self._tables = {<size_t>table.table: table}
        self.cur = table.table
        self.pend = NULL
        self._flow_tables = {}
        self.flows = self._new_flow_table(table)
        self.pend_flows = NULL
        self._admitted = FlowTable(PES_RETRY_ADMITTED)
        if pes_gcm_supported():
            seed = os.urandom(16)
            pes_rng_seed(&self.rng, <const uint8_t *>PyBytes_AS_STRING(seed))
        # Started in mode always: active from the first packet (a transition is for
        # a switch while traffic flows).
        self.retry_on = table.table.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_ALWAYS
        self.retry_gauge = -1
        if counters is None:
            counters = new_counters(1)
            worker = 0
        view = memoryview(counters).cast("B")
        if len(view) < (worker + 1) * COUNTERS_SIZE:
            raise ValueError(f"counter buffer too small for worker {worker}")
        if (<size_t>&view[0]) % 64:
            raise ValueError("counter buffer is not cache-line aligned")
        self._counters_buf = counters
        self._worker = worker
        self._cnt = <uint64_t *>(&view[worker * COUNTERS_SIZE])
        self.bcnt = NULL
        if backend_counts is not None:
            bview = memoryview(backend_counts).cast("B")
            if len(bview) < BACKEND_COUNTS_SIZE or (<size_t>&bview[0]) % 8:
                raise ValueError("backend counter block too small or misaligned")
            self._backend_buf = backend_counts
            self.bcnt = <uint64_t *>&bview[0]
        self.recovered = xsk.recover()
        self.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self.wake_fd < 0:
            raise os_error(0, "creating the engine's wake-up eventfd")

    def __dealloc__(self):
        if self.wake_fd >= 0:
            close(self.wake_fd)

    @property
    def table(self):
        """The table the loop is using now."""
        pes_spin_lock(&self.swap_lock)
        try:
            self._prune()
            return self._tables[<size_t>self.cur]
        finally:
            pes_spin_unlock(&self.swap_lock)

    def counters(self):
        return read_counters(self._counters_buf, self._worker)

    @property
    def flow_entries(self):
        """Entries of the flow table the loop uses now (0: none)."""
        pes_spin_lock(&self.swap_lock)
        try:
            if self.flows == NULL:
                return 0
            return self._flow_tables[<size_t>self.flows].entries
        finally:
            pes_spin_unlock(&self.swap_lock)

    cdef pes_flow_table *_new_flow_table(self, RouteTable table) except? NULL:
        # A flow table of the size ``table`` asks for (allocated here, under the GIL,
        # never in the loop), kept alive in _flow_tables; NULL for none.
        cdef FlowTable made
        if table.table.knobs[PES_KNOB_FLOW_ENTRIES] == 0:
            return NULL
        made = FlowTable(table.table.knobs[PES_KNOB_FLOW_ENTRIES])
        self._flow_tables[<size_t>&made.ft] = made
        return &made.ft

    def swap_table(self, RouteTable table not None):
        """Hand a new table to the loop; it switches at its next batch boundary, with a
        new flow table if this one asks for another size (the flows it knows carry over
        otherwise)."""
        cdef FlowTable made = None
        cdef size_t current
        pes_spin_lock(&self.swap_lock)
        current = <size_t>(self.pend_flows if self.pend_flows != NULL else self.flows)
        pes_spin_unlock(&self.swap_lock)
        have = self._flow_tables[current].entries if current in self._flow_tables else 0
        wanted = FlowTable.rounded(table.table.knobs[PES_KNOB_FLOW_ENTRIES])
        if wanted and wanted != have:
            made = FlowTable(wanted)      # allocated here, under the GIL, not in the loop
        pes_spin_lock(&self.swap_lock)
        try:
            self._tables[<size_t>table.table] = table
            self.pend = table.table
            if made is not None:
                self._flow_tables[<size_t>&made.ft] = made
                self.pend_flows = &made.ft
            elif wanted != have:
                self.pend_flows = &_NO_FLOWS
            self._prune()
        finally:
            pes_spin_unlock(&self.swap_lock)
        self._wake()

    cdef _prune(self):
        # Under swap_lock: the loop reaches tables only through cur and pend (and flow
        # tables through flows and pend_flows), and moves pend to cur under the same
        # lock, so every other one can go.
        reachable = (<size_t>self.cur, <size_t>self.pend)
        self._tables = {k: v for k, v in self._tables.items() if k in reachable}
        flows = (<size_t>self.flows, <size_t>self.pend_flows)
        self._flow_tables = {k: v for k, v in self._flow_tables.items() if k in flows}

    def stop(self):
        """Ask the loop to return; safe from any thread."""
        pes_atomic_store_int(&self.stopping, 1)
        self._wake()

    cdef _wake(self):
        cdef uint64_t one = 1
        write(self.wake_fd, &one, sizeof(one))

    def run(self):
        """Forward until :meth:`stop`; releases the GIL for the whole loop."""
        cdef XskSocket x = self.xsk
        if pes_atomic_load_int(&self.running):
            raise RuntimeError("the engine is already running")
        pes_atomic_store_int(&self.running, 1)
        pes_atomic_store_int(&self.stopping, 0)
        try:
            with nogil:
                if self.floor:
                    _forward(self, x, 1)
                else:
                    _forward(self, x, 0)
        finally:
            pes_atomic_store_int(&self.running, 0)

cdef inline void _forward(Engine self, XskSocket x, bint floor) noexcept nogil:
    # The loop, inlined twice: floor is a constant at each call site, so the
    # production copy has no benchmark branch per frame.
    cdef uint64_t local[PES_CNT_COUNT]
    cdef pes_batch b
    cdef uint32_t rx_idx, comp_idx, n_rx, n_comp, n_fill
    cdef pollfd fds[2]
    cdef uint64_t drained
    fds[0].fd = x.fd
    fds[0].events = POLLIN
    fds[1].fd = self.wake_fd
    fds[1].events = POLLIN
    memset(local, 0, sizeof(local))
    b.floor = floor
    b.local = local
    b.offload.now_s = 0
    b.offload.rng = &self.rng
    b.offload.admitted = &self._admitted.ft
    b.offload.local = local
    b.offload.initials = &self.window_initials
    if pes_ring_pending(&x.tx):
        x.kick_tx()             # the previous owner may have published without a kick
    while not pes_atomic_load_int(&self.stopping):
        _adopt_pending(self, local)
        b.offload.t = self.cur
        b.offload.phase = _retry_phase(self, &b.offload.now_s)
        n_comp = pes_ring_peek(&x.comp, MAX_BATCH, &comp_idx)
        n_rx = pes_ring_peek(&x.rx, self.batch, &rx_idx)
        if n_comp == 0 and n_rx == 0:
            _flush(self, local)
            if pes_ring_pending(&x.tx):
                x.kick_tx()
            if not self.busy_poll:
                poll(fds, 2, self.poll_timeout_ms)
                if fds[1].revents & POLLIN:
                    read(self.wake_fd, &drained, sizeof(drained))
            continue
        # Every frame in hand goes back to the fill ring unless it is transmitted; the
        # fill ring holds every frame, so the room is there. Should it not be (a bug),
        # the frames that do not fit stay unconsumed in their rings for the next batch.
        n_fill = pes_ring_reserve(&x.fill, n_comp + n_rx, &b.fill_idx)
        if n_fill < n_comp + n_rx:
            if n_fill < n_comp:
                x.comp.cached_cons -= n_comp - n_fill
                n_comp = n_fill
            x.rx.cached_cons -= n_rx - (n_fill - n_comp)
            n_rx = n_fill - n_comp
        b.n_back = 0
        _completions(x, &b, comp_idx, n_comp)
        # All the room there is: a frame may leave as several (copies).
        b.tx_room = pes_ring_reserve(&x.tx, x.tx.size, &b.tx_idx)
        b.n_tx = 0
        _frames(self, x, &b, rx_idx, n_rx)
        # Give back the slots reserved for frames that went the other way.
        x.fill.cached_prod -= n_fill - b.n_back
        x.tx.cached_prod -= b.tx_room - b.n_tx
        pes_xsk_publish(x.state, &x.fill, &x.tx, &x.rx, &x.comp, &x.stash)
        if b.n_tx:
            x.kick_tx()
        if pes_ring_pending(&x.fill) == 0:
            # Nothing for the kernel to receive into: arriving frames are lost.
            local[PES_CNT_FILL_EMPTY] += 1
        _flush(self, local)
    _flush(self, local)


cdef inline void _adopt_pending(Engine self, uint64_t *local) noexcept nogil:
    # Batch boundary: adopt a new table (and flow table) if one was handed over.
    if pes_atomic_load_ptr(<void **>&self.pend) == NULL:
        return
    pes_spin_lock(&self.swap_lock)
    if self.pend != NULL:
        self.cur = self.pend
        self.pend = NULL
        if self.pend_flows != NULL:
            self.flows = NULL if self.pend_flows == &_NO_FLOWS else self.pend_flows
            self.pend_flows = NULL
        local[PES_CNT_TABLE_SWAPS] += 1
    pes_spin_unlock(&self.swap_lock)


cdef inline void _completions(XskSocket x, pes_batch *b, uint32_t comp_idx, uint32_t n
                              ) noexcept nogil:
    # Transmitted frames: spares for the stash while it is short, the rest to fill.
    cdef uint32_t i
    cdef uint64_t addr
    for i in range(n):
        addr = x.chunk(pes_ring_addr(&x.comp, comp_idx + i)[0])
        if addr >= x.umem_len:
            b.local[PES_CNT_BAD_DESCRIPTORS] += 1     # not a frame of ours: never reuse
            continue
        if x.stash.count < x.state.stash_target:
            x.stash.frames[x.stash.count] = <uint32_t>(addr // x.frame_size)
            x.stash.count += 1
            x.stash.dirty = 1
            continue
        pes_ring_addr(&x.fill, b.fill_idx + b.n_back)[0] = addr
        b.n_back += 1


cdef inline void _frames(Engine self, XskSocket x, pes_batch *b, uint32_t rx_idx, uint32_t n
                         ) noexcept nogil:
    # The received frames: decided, offered to the Retry offload, and emitted; those the
    # flow table decides are finished after the batch's others.
    cdef uint32_t later[MAX_BATCH]
    cdef pes_decision later_d[MAX_BATCH]
    cdef uint64_t later_fp[MAX_BATCH]
    cdef uint32_t i, n_def = 0
    cdef uint64_t fp
    cdef xdp_desc *rx_desc
    cdef pes_decision d
    cdef pes_pkt pkt
    cdef int act
    for i in range(n):
        rx_desc = pes_ring_desc(&x.rx, rx_idx + i)
        if rx_desc.addr >= x.umem_len or \
                (rx_desc.addr & (x.frame_size - 1)) + rx_desc.len > x.frame_size:
            # Only the kernel writes RX entries, unless a subverted predecessor did.
            b.local[PES_CNT_BAD_DESCRIPTORS] += 1
            continue
        b.local[PES_CNT_RX] += 1
        if b.floor:
            swap_macs(x.umem + rx_desc.addr)
            d.route, d.unroutable, d.drop = PES_ROUTE_NONE, PES_UNR_NONE, PES_DROP_NONE
        elif decide(self.cur, x.umem + rx_desc.addr, rx_desc.len, &d, &pkt):
            if b.offload.phase != PHASE_OFF:
                act = _offload(x, b, rx_desc, &d, &pkt)
                if act == RETRY_SEND:
                    continue            # the frame went back as a Retry
            if d.drop == PES_DROP_NONE and self.flows != NULL:
                fp = _flow_fp(self.flows, &d, &pkt)
                if fp:
                    # The flow table's bucket is on its way into the cache; finish
                    # this frame after the batch's others (its miss overlaps theirs).
                    later[n_def], later_d[n_def], later_fp[n_def] = i, d, fp
                    n_def += 1
                    continue
        _emit(self, x, b, rx_desc, &d, 0)
    for i in range(n_def):
        _emit(self, x, b, pes_ring_desc(&x.rx, rx_idx + later[i]), &later_d[i], later_fp[i])


cdef inline void _recycle(XskSocket x, pes_batch *b, const xdp_desc *desc) noexcept nogil:
    # A frame that leaves no more: back to the fill ring.
    pes_ring_addr(&x.fill, b.fill_idx + b.n_back)[0] = x.chunk(desc.addr)
    b.n_back += 1


cdef inline xdp_desc *_tx_slot(XskSocket x, pes_batch *b) noexcept nogil:
    # The next reserved TX slot (the caller checked there is room).
    cdef xdp_desc *desc = pes_ring_desc(&x.tx, b.tx_idx + b.n_tx)
    b.n_tx += 1
    desc.options = 0
    return desc


cdef inline void _emit(Engine self, XskSocket x, pes_batch *b, const xdp_desc *rx_desc,
                       pes_decision *d, uint64_t fp) noexcept nogil:
    # One decided frame (forwarded unless d.drop): to TX (with copies, for a fan-out)
    # or back to the fill ring, and counted.
    cdef xdp_desc *tx_desc
    cdef uint64_t *local = b.local
    if d.unroutable:
        local[PES_CNT_UNROUTABLE + d.unroutable - 1] += 1
    if d.drop != PES_DROP_NONE:
        local[PES_CNT_DROPPED + d.drop - 1] += 1
        _recycle(x, b, rx_desc)
        return
    if not b.floor and d.route >= PES_ROUTE_FALLBACK:
        _beyond_the_decision(self, x, b, rx_desc, d, fp)
    if b.n_tx == b.tx_room:
        local[PES_CNT_TX_FULL] += 1
        _recycle(x, b, rx_desc)
        return
    if not b.floor:
        rewrite(self.cur, x.umem + rx_desc.addr, d)
    tx_desc = _tx_slot(x, b)
    tx_desc.addr = rx_desc.addr
    tx_desc.len = rx_desc.len
    local[PES_CNT_FORWARDED] += 1
    if self.bcnt != NULL and d.route != PES_ROUTE_NONE:
        _count_backend(self, d.backend, d.route == PES_ROUTE_CID)
    if d.route == PES_ROUTE_CID:
        local[PES_CNT_CID_ROUTED + d.config_id] += 1
    elif d.route == PES_ROUTE_FALLBACK:
        local[PES_CNT_FALLBACK_ROUTED] += 1
    elif d.route != PES_ROUTE_NONE:
        local[PES_CNT_ICMP_ROUTED] += 1


cdef inline int _retry_phase(Engine self, uint64_t *now_s) noexcept nogil:
    # Once per batch: where the Retry offload stands (PHASE_*), and the wall clock in
    # seconds (token expiry). Mode load: the Initials of the last window of 100 ms set
    # it active above the trigger (through transition_ms of Retry-and-forward), and
    # inactive after a second below half the trigger.
    cdef const pes_route_table *t = self.cur
    cdef timespec ts
    cdef uint64_t now_ns, elapsed, rate
    cdef int on = self.retry_on
    if t.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_OFF:
        on = 0
    else:
        clock_gettime(CLOCK_MONOTONIC, &ts)
        now_ns = <uint64_t>ts.tv_sec * NS + <uint64_t>ts.tv_nsec
        clock_gettime(CLOCK_REALTIME, &ts)
        now_s[0] = <uint64_t>ts.tv_sec
        if t.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_ALWAYS:
            on = 1
        else:
            elapsed = now_ns - self.window_start_ns
            if elapsed >= NS // 10:
                rate = <uint64_t>self.window_initials * NS // elapsed
                if not on and rate > t.knobs[PES_KNOB_RETRY_TRIGGER]:
                    on = 1
                elif on and rate * 2 < t.knobs[PES_KNOB_RETRY_TRIGGER]:
                    self.calm_windows += 1
                    if self.calm_windows >= 10:
                        on = 0
                elif on:
                    self.calm_windows = 0
                self.window_start_ns = now_ns
                self.window_initials = 0
        if on and not self.retry_on:
            self.calm_windows = 0
            self.transition_until_ns = now_ns + <uint64_t>t.knobs[PES_KNOB_RETRY_TRANSITION_MS] * 1000000
    self.retry_on = on
    if on != self.retry_gauge:
        self.retry_gauge = on
        pes_atomic_store_u64(&self._cnt[PES_CNT_RETRY_ACTIVE], <uint64_t>on)
    if t.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_OFF:
        return PHASE_OFF
    if not on:
        return PHASE_INACTIVE
    return PHASE_TRANSITION if now_ns < self.transition_until_ns else PHASE_ACTIVE


cdef inline int _offload(XskSocket x, pes_batch *b, const xdp_desc *rx_desc, pes_decision *d,
                         const pes_pkt *pkt) noexcept nogil:
    # The Retry offload on a frame the decision forwards: RETRY_FORWARD (go on, after a
    # Retry from a spare in transition mode), RETRY_SEND (the frame went back to its
    # sender as a Retry, or was recycled when TX was full), RETRY_DROP (d.drop set).
    cdef uint32_t len = rx_desc.len, spare_len = 0, spare
    cdef uint8_t *spare_frame = NULL
    cdef xdp_desc *desc
    cdef int act
    if b.offload.phase == PHASE_TRANSITION and x.stash.count and b.tx_room - b.n_tx >= 2:
        spare_frame = x.umem + <uint64_t>x.stash.frames[x.stash.count - 1] * x.frame_size
    act = _retry_screen(&b.offload, x.umem + rx_desc.addr, &len, pkt, d, spare_frame,
                        &spare_len)
    if act == RETRY_SEND_AND_FORWARD:
        x.stash.count -= 1
        x.stash.dirty = 1
        spare = x.stash.frames[x.stash.count]
        desc = _tx_slot(x, b)
        desc.addr = <uint64_t>spare * x.frame_size
        desc.len = spare_len
        b.local[PES_CNT_RETRY_SENT] += 1
        return RETRY_FORWARD
    if act != RETRY_SEND:
        return act
    if b.n_tx == b.tx_room:
        b.local[PES_CNT_TX_FULL] += 1
        _recycle(x, b, rx_desc)
        return RETRY_SEND
    desc = _tx_slot(x, b)
    desc.addr = rx_desc.addr
    desc.len = len
    b.local[PES_CNT_RETRY_SENT] += 1
    return RETRY_SEND


cdef inline uint64_t _flow_fp(pes_flow_table *ft, const pes_decision *d,
                              const pes_pkt *pkt) noexcept nogil:
    # The flow-table fingerprint a decision will look up (0: none), its bucket on its
    # way into the cache: a fallback frame's 4-tuple, or the flow an ICMP error routed
    # by hash quotes (reversed: client -> VIP).
    cdef uint64_t fp
    cdef size_t alen = 4 if pkt.family == 4 else 16
    if ft == NULL:
        return 0
    if d.route == PES_ROUTE_FALLBACK:
        fp = pes_flow_fp(ft, pkt.flow.saddr, pkt.flow.daddr, alen, pkt.flow.sport,
                         pkt.flow.dport)
    elif d.route == PES_ROUTE_ICMP or d.route == PES_ROUTE_ICMP_FANOUT \
            or d.route == PES_ROUTE_ICMP_NOT_VIP:
        fp = pes_flow_fp(ft, pkt.quoted.daddr, pkt.quoted.saddr, alen, pkt.quoted.dport,
                         pkt.quoted.sport)
    else:
        return 0
    pes_flow_prefetch(ft, fp)
    return fp


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
    if pes_parse_frame(&c, &pkt) != PES_PARSE_ICMP_ERROR or pkt.l4 + 8 > len:
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
    _put16(ip + 4, len - PES_ETH_HLEN - 40)
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


cdef inline void _flush(Engine self, uint64_t *local) noexcept nogil:
    # One add per counter per batch into the shared block.
    cdef int i
    for i in range(PES_CNT_COUNT):
        if local[i]:
            pes_atomic_add_u64(&self._cnt[i], local[i])
            local[i] = 0
