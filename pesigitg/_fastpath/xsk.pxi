# AF_XDP socket: memfd-backed UMEM with a state page, the four rings mmapped, bound to
# one queue.
#
# Raw syscalls, no libxdp (Documentation/networking/af_xdp.rst). Frames cycle
# fill -> RX -> (forward) TX -> completion -> fill; frames the loop drops go straight
# back to the fill ring, which holds every frame but a few spares (the stash, listed
# in the state page, for copies of a frame that goes to several backends). No frame
# is kept anywhere else, so the socket can change hands: the supervisor creates it and
# keeps it, its workers run the loop on it one after another, and a restarted daemon
# adopts it (fds by SCM_RIGHTS). The state page after the frames tells the new owner
# the sizes and carries the stash and the publication journal (includes/xskring.h).
#
# A worker can write the state page and its rings' indices, so nothing there is taken on
# trust by whoever comes next: an adopting daemon takes the sizes from its predecessor
# (the hand-over's facts) and checks the page against them, the census bounds every
# walk by the ring's size, and a new owner refuses an impossible journal, stash or ring
# before it uses them (``repaired``).

from pesigitg._fastpath.includes.if_xdp cimport *
from pesigitg._fastpath.includes.system cimport (
    AF_XDP,
    MAP_POPULATE,
    MFD_CLOEXEC,
    MSG_DONTWAIT,
    SOCK_CLOEXEC,
    SOCK_RAW,
    SOL_XDP,
    bind,
    getsockopt,
    if_nametoindex,
    memfd_create,
    sendto,
    setsockopt,
    sockaddr,
    socket,
    socklen_t,
)

DEFAULT_FRAME_SIZE = 2048      # one 1500-octet MTU frame per chunk, power of two
DEFAULT_FRAME_COUNT = 4096
DEFAULT_RING_SIZE = 4096       # fill and completion hold every frame, RX buffers them
DEFAULT_TX_SIZE = 2048
PAGE = 4096
BIND_BUSY_RETRIES = 30
BIND_BUSY_WAIT = 0.1           # seconds
# Each ring: its entries' size, its mmap offset, whether we produce into it, its name.
_FILL = (sizeof(uint64_t), <unsigned long long>XDP_UMEM_PGOFF_FILL_RING, True, "fill")
_COMP = (sizeof(uint64_t), <unsigned long long>XDP_UMEM_PGOFF_COMPLETION_RING, False, "completion")
_RX = (sizeof(xdp_desc), <unsigned long long>XDP_PGOFF_RX_RING, False, "RX")
_TX = (sizeof(xdp_desc), <unsigned long long>XDP_PGOFF_TX_RING, True, "TX")


cdef _raise(str doing, int err=0):
    raise os_error(err or errno, doing)


@cython.final
cdef class XskSocket:
    """One AF_XDP socket bound to ``(ifname, queue)``, or adopted: :meth:`adopt`.

    ``zero_copy`` is "auto" (zero-copy when the driver offers it, copy otherwise),
    True or False. ``mode`` tells which was used. The fill ring is created holding
    every frame.
    """

    cdef readonly int fd
    cdef readonly int umem_fd
    cdef readonly unsigned int ifindex
    cdef readonly unsigned int queue
    cdef readonly uint32_t frame_size
    cdef readonly uint32_t frame_count
    cdef readonly str mode
    cdef uint8_t *umem             # the memfd's mapping: frames, then the state page
    cdef uint64_t umem_len         # octets of frames
    cdef uint64_t map_len
    cdef pes_xsk_state *state
    cdef pes_ring rx
    cdef pes_ring tx
    cdef pes_ring fill
    cdef pes_ring comp
    cdef pes_stash stash            # this owner's copy; the state page's is published
    cdef readonly int repaired      # PES_XSK_REPAIR_* bits of the last recover()

    def __cinit__(self):
        self.fd = -1
        self.umem_fd = -1
        self.umem = NULL
        self.state = NULL
        memset(&self.rx, 0, sizeof(pes_ring))
        memset(&self.tx, 0, sizeof(pes_ring))
        memset(&self.fill, 0, sizeof(pes_ring))
        memset(&self.comp, 0, sizeof(pes_ring))

    def __init__(self, str ifname, unsigned int queue, *, uint32_t frame_size=DEFAULT_FRAME_SIZE,
                 uint32_t frame_count=DEFAULT_FRAME_COUNT, uint32_t rx_size=DEFAULT_RING_SIZE,
                 uint32_t tx_size=DEFAULT_TX_SIZE, uint32_t fill_size=DEFAULT_RING_SIZE,
                 uint32_t comp_size=DEFAULT_RING_SIZE, zero_copy="auto"):
        for name, value in (("frame_size", frame_size), ("rx_size", rx_size),
                            ("tx_size", tx_size), ("fill_size", fill_size),
                            ("comp_size", comp_size)):
            if not _is_pow2(value):
                raise ValueError(f"{name} {value} is not a power of two")
        if frame_size < 2048 or frame_size > 4096:
            raise ValueError(f"frame_size {frame_size} must be 2048 or 4096")
        if frame_count > fill_size:
            raise ValueError(f"the fill ring ({fill_size}) must hold every frame "
                             f"({frame_count})")
        if (<uint64_t>frame_count * frame_size) % PAGE:
            raise ValueError(f"{frame_count} frames of {frame_size} octets are not whole pages")
        if zero_copy not in ("auto", True, False):
            raise ValueError(f"zero_copy must be 'auto', True or False, not {zero_copy!r}")
        self.ifindex = if_nametoindex(ifname.encode())
        if self.ifindex == 0:
            _raise(f"looking up interface {ifname}")
        self.queue = queue
        self.frame_size = frame_size
        self.frame_count = frame_count
        try:
            self._create(ifname, rx_size, tx_size, fill_size, comp_size, zero_copy)
        except BaseException:
            self.close()
            raise

    @classmethod
    def adopt(cls, int fd, int umem_fd, dict geometry=None):
        """The socket another process created (fds duplicated here, the caller keeps
        its own). ``geometry`` (GEOMETRY: the sizes, interface and queue) comes from
        that process, which created the socket; without it (a predecessor too old to
        send it) the state page's, checked as a new socket's would be. Call
        :meth:`recover` (the engine does) before using the rings."""
        cdef XskSocket self = cls.__new__(cls)
        try:
            self.fd = os.dup(fd)
            self.umem_fd = os.dup(umem_fd)
            self._adopt(geometry)
        except BaseException:
            self.close()
            raise
        return self

    cdef _map_umem(self, str doing):
        self.umem = <uint8_t *>mmap(NULL, self.map_len, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_POPULATE, self.umem_fd, 0)
        if self.umem == <uint8_t *>MAP_FAILED:
            self.umem = NULL
            _raise(doing)
        self.state = <pes_xsk_state *>(self.umem + self.umem_len)

    cdef _create(self, str ifname, uint32_t rx_size, uint32_t tx_size, uint32_t fill_size,
                 uint32_t comp_size, zero_copy):
        cdef xdp_umem_reg reg
        cdef uint32_t i, idx, size
        where = f"{ifname} queue {self.queue}"
        self.umem_fd = memfd_create(b"pesigitg-umem", MFD_CLOEXEC)
        if self.umem_fd < 0:
            _raise("creating the UMEM memfd")
        self.umem_len = <uint64_t>self.frame_size * self.frame_count
        self.map_len = self.umem_len + PES_XSK_STATE_SIZE
        if ftruncate(self.umem_fd, self.map_len) != 0:
            _raise(f"sizing the UMEM to {self.map_len} octets")
        self._map_umem("mapping the UMEM")
        self.fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)
        if self.fd < 0:
            _raise("creating an AF_XDP socket")
        memset(&reg, 0, sizeof(reg))
        reg.addr = <uint64_t>self.umem
        reg.len = self.umem_len          # the state page is ours, never the kernel's
        reg.chunk_size = self.frame_size
        if setsockopt(self.fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) != 0:
            _raise(f"registering the UMEM for {where}")
        for opt, size, name in ((XDP_UMEM_FILL_RING, fill_size, "fill"),
                                (XDP_UMEM_COMPLETION_RING, comp_size, "completion"),
                                (XDP_RX_RING, rx_size, "RX"), (XDP_TX_RING, tx_size, "TX")):
            idx = size
            if setsockopt(self.fd, SOL_XDP, opt, &idx, sizeof(idx)) != 0:
                _raise(f"sizing the {name} ring of {where} to {size}")
        self._map_rings(fill_size, comp_size, rx_size, tx_size, where)
        self._bind(zero_copy, where)
        st = self.state
        st.magic, st.version = PES_XSK_STATE_MAGIC, PES_XSK_STATE_VERSION
        st.frame_size, st.frame_count = self.frame_size, self.frame_count
        st.rx_size, st.tx_size, st.fill_size, st.comp_size = rx_size, tx_size, fill_size, comp_size
        st.ifindex, st.queue = self.ifindex, self.queue
        st.zero_copy = self.mode == "zero-copy"
        st.stash_target = _stash_target(self.frame_count)
        # Every frame starts in the fill ring, but the last few: the stash.
        pes_ring_reserve(&self.fill, self.frame_count - st.stash_target, &idx)
        for i in range(self.frame_count - st.stash_target):
            pes_ring_addr(&self.fill, idx + i)[0] = <uint64_t>i * self.frame_size
        self.stash.count = st.stash_target
        for i in range(st.stash_target):
            self.stash.frames[i] = self.frame_count - st.stash_target + i
        self.stash.dirty = 1
        pes_xsk_publish(self.state, &self.fill, &self.tx, &self.rx, &self.comp, &self.stash)

    cdef _adopt(self, dict geometry):
        cdef pes_xsk_state st
        size = os.fstat(self.umem_fd).st_size
        if size < PES_XSK_STATE_SIZE or (size - PES_XSK_STATE_SIZE) % PAGE:
            raise ValueError(f"UMEM memfd of {size} octets is not pesigitg's")
        self.umem_len = size - PES_XSK_STATE_SIZE
        self.map_len = size
        self._map_umem("mapping an adopted UMEM")
        st = self.state[0]
        if st.magic != PES_XSK_STATE_MAGIC or st.version not in (1, PES_XSK_STATE_VERSION):
            raise ValueError("the UMEM's state page has another magic or version "
                             f"({st.magic:#x} v{st.version})")
        g = geometry if geometry is not None else state_page_geometry(
            PyBytes_FromStringAndSize(<char *>self.state, sizeof(pes_xsk_state)))
        problem = check_geometry(g, self.umem_len)
        if problem is not None:
            raise ValueError(f"the UMEM's {'geometry' if geometry else 'state page'} "
                             f"is impossible: {problem}")
        if st.version == 1:
            # From a daemon before the stash: its page is zero beyond version 1's
            # fields, an empty stash; it fills up from frames coming back.
            self.state.stash_count = 0
            self.state.version = PES_XSK_STATE_VERSION
        self.frame_size, self.frame_count = g["frame_size"], g["frame_count"]
        self.ifindex, self.queue = g["ifindex"], g["queue"]
        self.mode = "zero-copy" if g["zero_copy"] else "copy"
        # The page speaks for the owner's sizes again, whatever a worker wrote there.
        self.state.frame_size, self.state.frame_count = self.frame_size, self.frame_count
        self.state.rx_size, self.state.tx_size = g["rx_size"], g["tx_size"]
        self.state.fill_size, self.state.comp_size = g["fill_size"], g["comp_size"]
        self.state.ifindex, self.state.queue = self.ifindex, self.queue
        self.state.zero_copy = g["zero_copy"]
        self.state.stash_target = _stash_target(self.frame_count)
        self._map_rings(g["fill_size"], g["comp_size"], g["rx_size"], g["tx_size"],
                        f"interface {self.ifindex} queue {self.queue}")

    @property
    def geometry(self):
        """Sizes, interface and queue (GEOMETRY), from this object, never the page: what a
        successor adopts the socket with."""
        return {"frame_size": self.frame_size, "frame_count": self.frame_count,
                "rx_size": self.rx.size, "tx_size": self.tx.size, "fill_size": self.fill.size,
                "comp_size": self.comp.size, "ifindex": self.ifindex, "queue": self.queue,
                "zero_copy": int(self.mode == "zero-copy")}

    cdef _map_rings(self, uint32_t fill_size, uint32_t comp_size, uint32_t rx_size,
                    uint32_t tx_size, str where):
        cdef xdp_mmap_offsets off
        cdef socklen_t optlen = sizeof(off)
        if getsockopt(self.fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) != 0:
            _raise(f"reading the ring offsets of {where}")
        self._map_ring(&self.fill, &off.fr, fill_size, _FILL)
        self._map_ring(&self.comp, &off.cr, comp_size, _COMP)
        self._map_ring(&self.rx, &off.rx, rx_size, _RX)
        self._map_ring(&self.tx, &off.tx, tx_size, _TX)

    cdef _map_ring(self, pes_ring *r, xdp_ring_offset *off, uint32_t size, tuple kind):
        # kind: one of _FILL, _COMP, _RX, _TX.
        cdef uint64_t length
        cdef uint8_t *base
        elem, pgoff, producer, name = kind
        length = off.desc + size * <size_t>elem
        base = <uint8_t *>mmap(NULL, length, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_POPULATE, self.fd, <unsigned long long>pgoff)
        if base == <uint8_t *>MAP_FAILED:
            _raise(f"mapping the {name} ring")
        r.map = base
        r.map_len = length
        r.producer = <uint32_t *>(base + off.producer)
        r.consumer = <uint32_t *>(base + off.consumer)
        r.flags = <uint32_t *>(base + off.flags)
        r.ring = base + off.desc
        r.size = size
        r.mask = size - 1
        r.cached_prod = r.producer[0]
        r.cached_cons = r.consumer[0]
        if producer:
            r.cached_cons += size

    cdef _bind(self, zero_copy, str where):
        cdef sockaddr_xdp sxdp
        cdef int err = 0
        memset(&sxdp, 0, sizeof(sxdp))
        sxdp.sxdp_family = AF_XDP
        sxdp.sxdp_ifindex = self.ifindex
        sxdp.sxdp_queue_id = self.queue
        attempts = {"auto": ((XDP_ZEROCOPY, "zero-copy"), (XDP_COPY, "copy")),
                    True: ((XDP_ZEROCOPY, "zero-copy"),), False: ((XDP_COPY, "copy"),)}
        for flag, mode in attempts[zero_copy]:
            sxdp.sxdp_flags = XDP_USE_NEED_WAKEUP | flag
            # A socket closed on this queue a moment ago is torn down asynchronously
            # by the kernel and keeps the queue busy meanwhile: retry for a while.
            for _ in range(BIND_BUSY_RETRIES):
                if bind(self.fd, <sockaddr *>&sxdp, sizeof(sxdp)) == 0:
                    self.mode = mode
                    return
                err = errno
                if err != EBUSY:
                    break
                time.sleep(BIND_BUSY_WAIT)
            if zero_copy == "auto" and flag == XDP_ZEROCOPY and err in (EOPNOTSUPP, EINVAL,
                                                                         ENOPROTOOPT):
                continue
            hint = " (another AF_XDP socket holds this queue)" if err == EBUSY else ""
            raise os_error(err, f"binding the AF_XDP socket to {where} in {mode} mode", hint)

    cdef inline uint64_t chunk(self, uint64_t addr) noexcept nogil:
        # Descriptors may point past the chunk start (headroom): the chunk's base.
        return addr & ~(<uint64_t>self.frame_size - 1)

    cdef void kick_tx(self) noexcept nogil:
        # Copy mode (and zero-copy with need_wakeup) transmits only when asked, and
        # copy mode sends at most 32 descriptors per call (TX_BATCH_SIZE in
        # net/xdp/xsk.c): repeat until the ring is drained or the kernel pushes back.
        # EAGAIN after each batch of 32 is the normal case, not an error.
        cdef uint32_t rounds = self.tx.size // 32 + 1
        cdef uint32_t pending = pes_ring_pending(&self.tx)
        cdef uint32_t before
        while rounds and pending and pes_ring_needs_wakeup(&self.tx):
            before = pending
            if sendto(self.fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 \
                    and errno != EAGAIN and errno != EINTR:
                return
            pending = pes_ring_pending(&self.tx)
            if pending == before:
                return      # no progress: the device pushes back, retry next batch
            rounds -= 1

    def recover(self):
        """Take the rings over in this process: refuse what the previous owner cannot
        have left (``repaired``: PES_XSK_REPAIR_* bits), finish a publication it left
        half done (True then), and start from the rings as they are."""
        self.repaired = pes_xsk_sanitize(self.state, &self.fill, &self.tx, &self.rx,
                                         &self.comp, self.frame_count,
                                         _stash_target(self.frame_count))
        return bool(pes_xsk_recover(self.state, &self.fill, &self.tx, &self.rx, &self.comp,
                                    &self.stash))

    def census(self, bint distinct=False):
        """Frames in each ring now; the rest are held by the kernel (received into,
        or in transmission). With ``distinct``, also check no frame sits in two places
        (ValueError naming it)."""
        return _census(self, distinct)

    @property
    def journal_seq(self):
        """The state page's publication counter (odd while a batch is being published)."""
        return self.state.seq if self.state != NULL else 0

    def statistics(self):
        """The kernel's XDP_STATISTICS for this socket, as a dict."""
        cdef xdp_statistics st
        cdef socklen_t optlen = sizeof(st)
        if getsockopt(self.fd, SOL_XDP, XDP_STATISTICS, &st, &optlen) != 0:
            _raise("reading AF_XDP statistics")
        return {"rx_dropped": st.rx_dropped, "rx_invalid_descs": st.rx_invalid_descs,
                "tx_invalid_descs": st.tx_invalid_descs, "rx_ring_full": st.rx_ring_full,
                "rx_fill_ring_empty_descs": st.rx_fill_ring_empty_descs,
                "tx_ring_empty_descs": st.tx_ring_empty_descs}

    def close(self):
        _unmap(&self.rx)
        _unmap(&self.tx)
        _unmap(&self.fill)
        _unmap(&self.comp)
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
        if self.umem != NULL:
            munmap(self.umem, self.map_len)
            self.umem = NULL
            self.state = NULL
        if self.umem_fd >= 0:
            close(self.umem_fd)
            self.umem_fd = -1

    def __dealloc__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


cdef void _unmap(pes_ring *r) noexcept:
    if r.map != NULL:
        munmap(r.map, r.map_len)
        r.map = NULL
