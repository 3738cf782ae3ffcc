# AF_XDP socket: memfd-backed UMEM, the four rings mmapped, bound to one queue.
#
# Raw syscalls, no libxdp (Documentation/networking/af_xdp.rst). Frames cycle
# fill -> RX -> (forward) TX -> completion -> fill; frames the loop drops go straight
# back. Frames not in a ring sit on a free stack so nothing leaks: frames_free plus
# the frames in the rings always equals frame_count.

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
DEFAULT_RING_SIZE = 2048
DEFAULT_FRAME_COUNT = 4096     # fill + TX in flight
BIND_BUSY_RETRIES = 30
BIND_BUSY_WAIT = 0.1           # seconds


cdef _raise(str doing, int err=0):
    raise os_error(err or errno, doing)


cdef int _is_pow2(uint32_t n) noexcept nogil:
    return n != 0 and (n & (n - 1)) == 0


cdef class XskSocket:
    """One AF_XDP socket bound to ``(ifname, queue)``.

    ``zero_copy`` is "auto" (zero-copy when the driver offers it, copy otherwise),
    True or False. ``mode`` tells which was used.
    """

    cdef readonly int fd
    cdef readonly int umem_fd
    cdef readonly unsigned int ifindex
    cdef readonly unsigned int queue
    cdef readonly uint32_t frame_size
    cdef readonly uint32_t frame_count
    cdef readonly str mode
    cdef uint8_t *umem
    cdef uint64_t umem_len
    cdef pes_ring rx
    cdef pes_ring tx
    cdef pes_ring fill
    cdef pes_ring comp
    # Frames owned by user space and not in any ring (a stack of chunk addresses).
    cdef uint64_t *free_frames
    cdef uint32_t n_free

    def __cinit__(self):
        self.fd = -1
        self.umem_fd = -1
        self.umem = NULL
        self.free_frames = NULL
        memset(&self.rx, 0, sizeof(pes_ring))
        memset(&self.tx, 0, sizeof(pes_ring))
        memset(&self.fill, 0, sizeof(pes_ring))
        memset(&self.comp, 0, sizeof(pes_ring))

    def __init__(self, str ifname, unsigned int queue, *, uint32_t frame_size=DEFAULT_FRAME_SIZE,
                 uint32_t frame_count=DEFAULT_FRAME_COUNT, uint32_t rx_size=DEFAULT_RING_SIZE,
                 uint32_t tx_size=DEFAULT_RING_SIZE, uint32_t fill_size=DEFAULT_RING_SIZE,
                 uint32_t comp_size=DEFAULT_RING_SIZE, zero_copy="auto"):
        for name, value in (("frame_size", frame_size), ("rx_size", rx_size),
                            ("tx_size", tx_size), ("fill_size", fill_size),
                            ("comp_size", comp_size)):
            if not _is_pow2(value):
                raise ValueError(f"{name} {value} is not a power of two")
        if frame_size < 2048 or frame_size > 4096:
            raise ValueError(f"frame_size {frame_size} must be 2048 or 4096")
        if frame_count < fill_size:
            raise ValueError(f"frame_count {frame_count} is smaller than the fill ring "
                             f"({fill_size})")
        if zero_copy not in ("auto", True, False):
            raise ValueError(f"zero_copy must be 'auto', True or False, not {zero_copy!r}")
        self.ifindex = if_nametoindex(ifname.encode())
        if self.ifindex == 0:
            _raise(f"looking up interface {ifname}")
        self.queue = queue
        self.frame_size = frame_size
        self.frame_count = frame_count
        try:
            self._open(ifname, rx_size, tx_size, fill_size, comp_size, zero_copy)
        except BaseException:
            self.close()
            raise

    cdef _open(self, str ifname, uint32_t rx_size, uint32_t tx_size, uint32_t fill_size,
               uint32_t comp_size, zero_copy):
        cdef xdp_umem_reg reg
        cdef xdp_mmap_offsets off
        cdef socklen_t optlen = sizeof(off)
        cdef uint32_t i, idx
        where = f"{ifname} queue {self.queue}"
        # UMEM in a memfd so a later restart can hand the frames to a new process.
        self.umem_fd = memfd_create(b"pesigitg-umem", MFD_CLOEXEC)
        if self.umem_fd < 0:
            _raise("creating the UMEM memfd")
        self.umem_len = <uint64_t>self.frame_size * self.frame_count
        if ftruncate(self.umem_fd, self.umem_len) != 0:
            _raise(f"sizing the UMEM to {self.umem_len} octets")
        self.umem = <uint8_t *>mmap(NULL, self.umem_len, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_POPULATE, self.umem_fd, 0)
        if self.umem == <uint8_t *>MAP_FAILED:
            self.umem = NULL
            _raise("mapping the UMEM")
        self.fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)
        if self.fd < 0:
            _raise("creating an AF_XDP socket")
        memset(&reg, 0, sizeof(reg))
        reg.addr = <uint64_t>self.umem
        reg.len = self.umem_len
        reg.chunk_size = self.frame_size
        if setsockopt(self.fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) != 0:
            _raise(f"registering the UMEM for {where}")
        for opt, size, name in ((XDP_UMEM_FILL_RING, fill_size, "fill"),
                                (XDP_UMEM_COMPLETION_RING, comp_size, "completion"),
                                (XDP_RX_RING, rx_size, "RX"), (XDP_TX_RING, tx_size, "TX")):
            idx = size
            if setsockopt(self.fd, SOL_XDP, opt, &idx, sizeof(idx)) != 0:
                _raise(f"sizing the {name} ring of {where} to {size}")
        if getsockopt(self.fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) != 0:
            _raise(f"reading the ring offsets of {where}")
        self._map_ring(&self.fill, &off.fr, fill_size, sizeof(uint64_t),
                       XDP_UMEM_PGOFF_FILL_RING, True, "fill")
        self._map_ring(&self.comp, &off.cr, comp_size, sizeof(uint64_t),
                       XDP_UMEM_PGOFF_COMPLETION_RING, False, "completion")
        self._map_ring(&self.rx, &off.rx, rx_size, sizeof(xdp_desc), XDP_PGOFF_RX_RING,
                       False, "RX")
        self._map_ring(&self.tx, &off.tx, tx_size, sizeof(xdp_desc), XDP_PGOFF_TX_RING,
                       True, "TX")
        self.free_frames = <uint64_t *>malloc(self.frame_count * sizeof(uint64_t))
        if self.free_frames == NULL:
            raise MemoryError()
        for i in range(self.frame_count):
            self.free_frames[i] = <uint64_t>(self.frame_count - 1 - i) * self.frame_size
        self.n_free = self.frame_count
        self._bind(zero_copy, where)
        self.refill()

    cdef _map_ring(self, pes_ring *r, xdp_ring_offset *off, uint32_t size, size_t elem,
                   unsigned long long pgoff, bint producer, str name):
        cdef uint64_t length = off.desc + size * elem
        cdef uint8_t *base = <uint8_t *>mmap(NULL, length, PROT_READ | PROT_WRITE,
                                             MAP_SHARED | MAP_POPULATE, self.fd, pgoff)
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

    cdef uint32_t refill(self) noexcept nogil:
        """Move free frames to the fill ring; returns how many remain free."""
        cdef uint32_t idx, i
        cdef uint32_t n = pes_ring_reserve(&self.fill, self.n_free, &idx)
        for i in range(n):
            self.n_free -= 1
            pes_ring_addr(&self.fill, idx + i)[0] = self.free_frames[self.n_free]
        if n:
            pes_ring_submit(&self.fill, n)
        return self.n_free

    cdef inline void recycle(self, uint64_t addr) noexcept nogil:
        # Descriptors may point past the chunk start (headroom): keep the chunk base.
        self.free_frames[self.n_free] = addr - addr % self.frame_size
        self.n_free += 1

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

    @property
    def frames_free(self):
        """Frames held by user space, not in any ring (the debug resource count)."""
        return self.n_free

    @property
    def fill_pending(self):
        return pes_ring_pending(&self.fill) if self.fill.map != NULL else 0

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
            munmap(self.umem, self.umem_len)
            self.umem = NULL
        if self.umem_fd >= 0:
            close(self.umem_fd)
            self.umem_fd = -1
        if self.free_frames != NULL:
            free(self.free_frames)
            self.free_frames = NULL

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
