# The engine: one owns one AF_XDP socket (one NIC queue) and runs the forwarding loop
# on it (loop.pxi), with its tables, flow table, counters and Retry offload state.
#
# Per batch: completions and dropped frames back to the fill ring (or to the stash
# when it is short of spares), RX, decide, the flow table for fallback frames, rewrite,
# TX (plus copies from the stash for a Packet Too Big that goes to every backend), then
# one journaled publication of the four ring indices and the stash, and the counters.
# The loop runs without the GIL from Engine.run until Engine.stop. A new route table
# handed to Engine.swap_table is picked up at the next batch boundary; the old one is
# released only once the loop has moved past it. The flow table carries over unless
# the new route table asks for another size.

from pesigitg._fastpath.includes.routetable cimport (
    PES_BACKEND_ROUTABLE,
    PES_KNOB_FLOW_ENTRIES,
    PES_KNOB_ICMP_FANOUT_RATE,
)
from pesigitg._fastpath.includes.system cimport (
    EFD_CLOEXEC,
    EFD_NONBLOCK,
    POLLIN,
    eventfd,
    poll,
    pollfd,
)

# One batch's state, passed by pointer to every step of the loop (as Katran passes its
# packet description): the TX and fill slots it reserved and used, its counters, and
# what the Retry offload works with.
cdef struct pes_batch:
    uint32_t tx_idx         # TX slots reserved: tx_idx .. tx_idx + tx_room - 1
    uint32_t tx_room
    uint32_t n_tx           # of which used
    uint32_t fill_idx       # fill slots reserved: fill_idx .. fill_idx + n_fill - 1
    uint32_t n_fill         # (as many as frames in hand)
    uint32_t n_back         # of which used
    bint floor              # the benchmark's floor: swap MACs, decide nothing
    uint64_t *local         # counts of this batch, added to the shared block after it
    pes_offload offload

# Handed over as pend_flows: "no flow table from now on".
cdef pes_flow_table _NO_FLOWS
COUNTERS_SIZE = sizeof(pes_counters)
# One worker's per-backend counts: frames forwarded, then frames CID-routed, per slot.
BACKEND_COUNTS_SIZE = 2 * PES_BACKEND_SLOTS * sizeof(uint64_t)

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
    """Forward frames of one queue: ``Engine(xsk, table, counters=None, worker=0)``
    (everything after the table by keyword).

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
    cdef pes_decided decided        # the batch being decided (loop.pxi, batch.pxi)
    cdef pes_batch *b_now           # its pes_batch, on _forward's stack while it runs
    cdef FlowTable _admitted        # 4-tuples a valid Retry token came from (offload)
    cdef uint64_t fanout_tat        # GCRA: when the next fan-out is due, ns
    # The Retry offload: random numbers, and the load mode's window and state.
    cdef pes_rng rng
    cdef pes_retry_load retry
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

    def __init__(self, XskSocket xsk not None, RouteTable table not None, *, counters=None,
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
        self.retry.on = table.table.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_ALWAYS
        self.retry.gauge = -1
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
        self._cnt = <uint64_t *>(&view[<Py_ssize_t>(worker * COUNTERS_SIZE)])
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
