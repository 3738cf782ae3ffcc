# The forwarding loop: one engine owns one AF_XDP socket (one NIC queue).
#
# Per batch: completions and dropped frames back to the fill ring, RX, decide,
# rewrite, TX, then one journaled publication of the four ring indices, and the
# counters. The loop runs without the GIL from Engine.run until Engine.stop. A new
# route table handed to Engine.swap_table is picked up at the next batch boundary;
# the old one is released only once the loop has moved past it.

from pesigitg._fastpath.includes.system cimport (
    EFD_CLOEXEC,
    EFD_NONBLOCK,
    POLLIN,
    eventfd,
    poll,
    pollfd,
)

DEF MAX_BATCH = 256
COUNTERS_SIZE = sizeof(pes_counters)

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
    cdef int swap_lock
    cdef object _counters_buf
    cdef int _worker
    cdef uint64_t *_cnt
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
                 bint floor=False):
        cdef uint8_t[::1] view
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

    def swap_table(self, RouteTable table not None):
        """Hand a new table to the loop; it switches at its next batch boundary."""
        pes_spin_lock(&self.swap_lock)
        try:
            self._tables[<size_t>table.table] = table
            self.pend = table.table
            self._prune()
        finally:
            pes_spin_unlock(&self.swap_lock)
        self._wake()

    cdef _prune(self):
        # Under swap_lock: the loop reaches tables only through cur and pend, and
        # moves pend to cur under the same lock, so every other table can go.
        reachable = (<size_t>self.cur, <size_t>self.pend)
        self._tables = {k: v for k, v in self._tables.items() if k in reachable}

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
    cdef uint32_t rx_idx, tx_idx, comp_idx, fill_idx, i, n_rx, n_comp, n_fill, n_back
    cdef uint32_t n_tx_room, n_tx
    cdef xdp_desc *rx_desc
    cdef xdp_desc *tx_desc
    cdef uint8_t *frame
    cdef pes_decision d
    cdef pollfd fds[2]
    cdef uint64_t drained
    fds[0].fd = x.fd
    fds[0].events = POLLIN
    fds[1].fd = self.wake_fd
    fds[1].events = POLLIN
    memset(local, 0, sizeof(local))
    if pes_ring_pending(&x.tx):
        x.kick_tx()             # the previous owner may have published without a kick
    while not pes_atomic_load_int(&self.stopping):
        # Batch boundary: adopt a new table if one was handed over.
        if pes_atomic_load_ptr(<void **>&self.pend) != NULL:
            pes_spin_lock(&self.swap_lock)
            if self.pend != NULL:
                self.cur = self.pend
                self.pend = NULL
                local[PES_CNT_TABLE_SWAPS] += 1
            pes_spin_unlock(&self.swap_lock)

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
        n_fill = pes_ring_reserve(&x.fill, n_comp + n_rx, &fill_idx)
        if n_fill < n_comp + n_rx:
            if n_fill < n_comp:
                x.comp.cached_cons -= n_comp - n_fill
                n_comp = n_fill
            x.rx.cached_cons -= n_rx - (n_fill - n_comp)
            n_rx = n_fill - n_comp
        n_back = 0
        for i in range(n_comp):
            pes_ring_addr(&x.fill, fill_idx + n_back)[0] = x.chunk(
                pes_ring_addr(&x.comp, comp_idx + i)[0])
            n_back += 1

        n_tx_room = pes_ring_reserve(&x.tx, n_rx, &tx_idx)
        n_tx = 0
        for i in range(n_rx):
            rx_desc = pes_ring_desc(&x.rx, rx_idx + i)
            frame = x.umem + rx_desc.addr
            local[PES_CNT_RX] += 1
            if floor:
                swap_macs(frame)
                d.route = PES_ROUTE_NONE
                d.unroutable = PES_UNR_NONE
            if floor or decide(self.cur, frame, rx_desc.len, &d):
                if d.unroutable:
                    local[PES_CNT_UNROUTABLE + d.unroutable - 1] += 1
                if n_tx == n_tx_room:
                    local[PES_CNT_TX_FULL] += 1
                    pes_ring_addr(&x.fill, fill_idx + n_back)[0] = x.chunk(rx_desc.addr)
                    n_back += 1
                    continue
                if not floor:
                    rewrite(self.cur, frame, &d)
                tx_desc = pes_ring_desc(&x.tx, tx_idx + n_tx)
                tx_desc.addr = rx_desc.addr
                tx_desc.len = rx_desc.len
                tx_desc.options = 0
                n_tx += 1
                local[PES_CNT_FORWARDED] += 1
                if d.route == PES_ROUTE_CID:
                    local[PES_CNT_CID_ROUTED + d.config_id] += 1
                elif d.route == PES_ROUTE_FALLBACK:
                    local[PES_CNT_FALLBACK_ROUTED] += 1
                elif d.route == PES_ROUTE_ICMP:
                    local[PES_CNT_ICMP_ROUTED] += 1
            else:
                if d.unroutable:
                    local[PES_CNT_UNROUTABLE + d.unroutable - 1] += 1
                local[PES_CNT_DROPPED + d.drop - 1] += 1
                pes_ring_addr(&x.fill, fill_idx + n_back)[0] = x.chunk(rx_desc.addr)
                n_back += 1
        # Give back the slots reserved for frames that went the other way.
        x.fill.cached_prod -= n_fill - n_back
        x.tx.cached_prod -= n_tx_room - n_tx
        pes_xsk_publish(x.state, &x.fill, &x.tx, &x.rx, &x.comp)
        if n_tx:
            x.kick_tx()
        if pes_ring_pending(&x.fill) == 0:
            # Nothing for the kernel to receive into: arriving frames are lost.
            local[PES_CNT_FILL_EMPTY] += 1
        _flush(self, local)
    _flush(self, local)


cdef inline void _flush(Engine self, uint64_t *local) noexcept nogil:
    # One add per counter per batch into the shared block.
    cdef int i
    for i in range(PES_CNT_COUNT):
        if local[i]:
            pes_atomic_add_u64(&self._cnt[i], local[i])
            local[i] = 0
