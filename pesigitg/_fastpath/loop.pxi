# The forwarding loop, without the GIL from Engine.run until Engine.stop (engine.pxi).
#
# Per batch: completions and dropped frames back to the fill ring (or to the stash
# when it is short of spares), RX, decide (the whole batch together), the Retry
# offload, the flow table for fallback frames, rewrite, TX (plus copies from the stash for a Packet Too Big that
# goes to every backend: stateful.pxi), then one journaled publication of the four
# ring indices and the stash, and the counters. A table handed over is adopted at a
# batch boundary.

cdef inline void _forward(Engine self, XskSocket x, bint floor) noexcept nogil:
    # The loop, inlined twice: floor is a constant at each call site, so the
    # production copy has no benchmark branch per frame.
    cdef uint64_t local[PES_CNT_COUNT]
    cdef pes_batch b
    cdef uint32_t rx_idx, comp_idx, n_rx, n_comp
    cdef pollfd fds[2]
    cdef uint64_t drained
    fds[0].fd = x.fd
    fds[0].events = POLLIN
    fds[1].fd = self.wake_fd
    fds[1].events = POLLIN
    memset(local, 0, sizeof(local))
    b.floor = floor
    b.local = local
    self.b_now = &b
    b.offload.now_s = 0
    b.offload.rng = &self.rng
    b.offload.admitted = &self._admitted.ft
    b.offload.local = local
    b.offload.initials = &self.retry.window_initials
    if pes_ring_pending(&x.tx):
        x.kick_tx()             # the previous owner may have published without a kick
    while not pes_atomic_load_int(&self.stopping):
        _adopt_pending(self, local)
        b.offload.t = self.cur
        b.offload.phase = _retry_phase(&self.retry, self.cur, self._cnt, &b.offload.now_s)
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
        _reserve_fill(x, &b, &n_comp, &n_rx)
        b.n_back = 0
        _completions(x, &b, comp_idx, n_comp)
        # All the room there is: a frame may leave as several (copies).
        b.tx_room = pes_ring_reserve(&x.tx, x.tx.size, &b.tx_idx)
        b.n_tx = 0
        _frames(self, x, &b, rx_idx, n_rx)
        # Give back the slots reserved for frames that went the other way.
        x.fill.cached_prod -= b.n_fill - b.n_back
        x.tx.cached_prod -= b.tx_room - b.n_tx
        pes_xsk_publish(x.state, &x.fill, &x.tx, &x.rx, &x.comp, &x.stash)
        if b.n_tx:
            x.kick_tx()
        if pes_ring_pending(&x.fill) == 0:
            # Nothing for the kernel to receive into: arriving frames are lost.
            local[PES_CNT_FILL_EMPTY] += 1
        _flush(self, local)
    _flush(self, local)


cdef inline void _reserve_fill(XskSocket x, pes_batch *b, uint32_t *n_comp, uint32_t *n_rx
                               ) noexcept nogil:
    # Every frame in hand goes back to the fill ring unless it is transmitted; the fill
    # ring holds every frame, so the room is there. Should it not be (a bug), the frames
    # that do not fit stay unconsumed in their rings for the next batch.
    b.n_fill = pes_ring_reserve(&x.fill, n_comp[0] + n_rx[0], &b.fill_idx)
    if b.n_fill < n_comp[0] + n_rx[0]:
        if b.n_fill < n_comp[0]:
            x.comp.cached_cons -= n_comp[0] - b.n_fill
            n_comp[0] = b.n_fill
        x.rx.cached_cons -= n_rx[0] - (b.n_fill - n_comp[0])
        n_rx[0] = b.n_fill - n_comp[0]


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
    # The received frames, decided and emitted (batch.pxi; this engine is the sink).
    cdef pes_decided *f = &self.decided
    cdef pes_decision floor
    cdef uint32_t i
    cdef xdp_desc *rx_desc
    f.n = 0
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
            floor.route, floor.unroutable, floor.drop = PES_ROUTE_NONE, PES_UNR_NONE, \
                PES_DROP_NONE
            _emit(self, x, b, rx_desc, &floor, 0)
            continue
        f.frame[f.n], f.len[f.n], f.slot[f.n] = x.umem + rx_desc.addr, rx_desc.len, rx_idx + i
        f.n += 1
    if f.n:
        f.t, f.ft = self.cur, self.flows
        decide_frames(self, f)


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


cdef inline int _offload(XskSocket x, pes_batch *b, const xdp_desc *rx_desc, pes_decision *d,
                         const pes_pkt *pkt) noexcept nogil:
    # The Retry offload on a frame the decision forwards: RETRY_FORWARD (go on, after a
    # Retry from a spare in transition mode), RETRY_SEND (the frame went back to its
    # sender as a Retry, or was recycled when TX was full), RETRY_DROP (d.drop set).
    cdef pes_retry_io io
    cdef uint32_t spare
    cdef xdp_desc *desc
    cdef int act
    io.frame, io.len, io.spare, io.spare_len = x.umem + rx_desc.addr, rx_desc.len, NULL, 0
    if b.offload.phase == PHASE_TRANSITION and x.stash.count and b.tx_room - b.n_tx >= 2:
        io.spare = x.umem + <uint64_t>x.stash.frames[x.stash.count - 1] * x.frame_size
    act = _retry_screen(&b.offload, &io, pkt, d)
    if act == RETRY_SEND_AND_FORWARD:
        x.stash.count -= 1
        x.stash.dirty = 1
        spare = x.stash.frames[x.stash.count]
        desc = _tx_slot(x, b)
        desc.addr = <uint64_t>spare * x.frame_size
        desc.len = io.spare_len
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
    desc.len = io.len
    b.local[PES_CNT_RETRY_SENT] += 1
    return RETRY_SEND


cdef inline void _flush(Engine self, uint64_t *local) noexcept nogil:
    # One add per counter per batch into the shared block.
    cdef int i
    for i in range(PES_CNT_COUNT):
        if local[i]:
            pes_atomic_add_u64(&self._cnt[i], local[i])
            local[i] = 0
