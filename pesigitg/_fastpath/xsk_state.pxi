# The UMEM's state page and rings, as a new owner and the supervisor must read them:
# whatever a worker (or a predecessor) wrote there is checked against the sizes the
# socket was created with before anything walks a ring (includes/xskring.h repairs);
# the census of where every frame is. Python entries for the tests and the fuzzer.

RING_SIZE_MAX = 1 << 20        # entries; beyond anything a driver offers
FRAME_COUNT_MAX = 1 << 20
REPAIRS = {PES_XSK_REPAIR_JOURNAL: "journal", PES_XSK_REPAIR_STASH: "stash",
           PES_XSK_REPAIR_RINGS: "rings"}
GEOMETRY = ("frame_size", "frame_count", "rx_size", "tx_size", "fill_size", "comp_size",
            "ifindex", "queue", "zero_copy")


cdef uint32_t _stash_target(uint32_t frame_count) noexcept nogil:
    # One frame in sixteen, at most PES_XSK_STASH_MAX: copies for a Packet Too Big
    # sent to every backend come from there.
    return min(frame_count // 16, PES_XSK_STASH_MAX)


cdef int _is_pow2(uint32_t n) noexcept nogil:
    return n != 0 and (n & (n - 1)) == 0


def check_geometry(dict g, uint64_t umem_len):
    """Why ``g`` (the sizes of GEOMETRY) cannot describe a UMEM of ``umem_len`` octets of
    frames with its rings, or None: the checks a socket is created with."""
    if set(g) != set(GEOMETRY) or not all(isinstance(v, int) for v in g.values()):
        return f"the geometry names {sorted(g)}, not {sorted(GEOMETRY)}"
    for name in ("rx_size", "tx_size", "fill_size", "comp_size"):
        if not 1 <= g[name] <= RING_SIZE_MAX or not _is_pow2(g[name]):
            return f"{name} {g[name]} is not a power of two up to {RING_SIZE_MAX}"
    if g["frame_size"] not in (2048, 4096):
        return f"frame_size {g['frame_size']} is neither 2048 nor 4096"
    if not 1 <= g["frame_count"] <= min(g["fill_size"], FRAME_COUNT_MAX):
        return f"frame_count {g['frame_count']} does not fit the fill ring ({g['fill_size']})"
    if g["frame_count"] * g["frame_size"] != umem_len:
        return (f"{g['frame_count']} frames of {g['frame_size']} octets are not the UMEM's "
                f"{umem_len}")
    if not 0 <= g["queue"] < PES_XSK_SLOTS or not 0 < g["ifindex"] < 1 << 31 \
            or g["zero_copy"] not in (0, 1):
        return f"queue {g['queue']}, ifindex {g['ifindex']} or zero_copy {g['zero_copy']}"
    return None


def state_page_geometry(bytes page):
    """The GEOMETRY a state page claims (for tests and the fuzzer)."""
    cdef const pes_xsk_state *st
    if len(page) < <Py_ssize_t>sizeof(pes_xsk_state):
        raise ValueError(f"a state page is {sizeof(pes_xsk_state)} octets or more")
    st = <const pes_xsk_state *>PyBytes_AS_STRING(page)
    return {"frame_size": st.frame_size, "frame_count": st.frame_count,
            "rx_size": st.rx_size, "tx_size": st.tx_size, "fill_size": st.fill_size,
            "comp_size": st.comp_size, "ifindex": st.ifindex, "queue": st.queue,
            "zero_copy": st.zero_copy}


def sanitize_state_page(bytes page not None, uint32_t frame_count, dict rings not None):
    """What a new owner makes of a state page and ring indices (for tests and the
    fuzzer; no socket): ``rings`` maps fill, tx, rx and comp to (producer, consumer,
    size). Returns (PES_XSK_REPAIR_* bits, the page after, the rings after)."""
    cdef bytearray buf = bytearray(page)
    cdef pes_ring r[4]
    cdef uint32_t prod[4]
    cdef uint32_t cons[4]
    cdef int i, bits
    if len(buf) < <Py_ssize_t>sizeof(pes_xsk_state):
        raise ValueError(f"a state page is {sizeof(pes_xsk_state)} octets or more")
    names = ("fill", "tx", "rx", "comp")
    for i, name in enumerate(names):
        memset(&r[i], 0, sizeof(pes_ring))
        prod[i], cons[i], r[i].size = rings[name]
        if not _is_pow2(r[i].size):
            raise ValueError(f"the {name} ring's size is not a power of two")
        r[i].mask = r[i].size - 1
        r[i].producer = &prod[i]
        r[i].consumer = &cons[i]
    bits = pes_xsk_sanitize(<pes_xsk_state *><char *>buf, &r[0], &r[1], &r[2], &r[3],
                            frame_count, _stash_target(frame_count))
    return bits, bytes(buf), {name: (prod[i], cons[i], r[i].size)
                              for i, name in enumerate(names)}


cdef dict _census(XskSocket self, bint distinct):
    # XskSocket.census: a worker writes these indices, so every count is bounded.
    cdef uint32_t i
    counts = {"fill": pes_ring_count(&self.fill), "rx": pes_ring_count(&self.rx),
              "tx": pes_ring_count(&self.tx), "comp": pes_ring_count(&self.comp),
              "stash": self.state.stash_count}
    # A worker writes these indices: never walk or trust more than a ring holds.
    for name, size in (("fill", self.fill.size), ("rx", self.rx.size),
                       ("tx", self.tx.size), ("comp", self.comp.size),
                       ("stash", _stash_target(self.frame_count))):
        if counts[name] > size:
            raise ValueError(f"the {name} ring claims {counts[name]} frames, more than "
                             f"its {size} slots")
    counts["kernel"] = self.frame_count - sum(counts.values())
    if distinct:
        seen = {}
        _collect(self, &self.fill, False, "fill", seen)
        _collect(self, &self.rx, True, "rx", seen)
        _collect(self, &self.tx, True, "tx", seen)
        _collect(self, &self.comp, False, "comp", seen)
        for i in range(min(self.state.stash_count, PES_XSK_STASH_MAX)):
            frame = self.state.stash[self.state.stash_which & 1][i]
            if frame >= self.frame_count:
                raise ValueError(f"the stash names frame {frame}, beyond the UMEM's "
                                 f"{self.frame_count}")
            addr = <uint64_t>frame * self.frame_size
            if addr in seen:
                raise ValueError(f"frame {addr // self.frame_size} is in the "
                                 f"{seen[addr]} ring and in the stash")
            seen[addr] = "stash"
    return counts

cdef _collect(XskSocket self, pes_ring *r, bint descs, str name, dict seen):
    cdef uint32_t idx = r.consumer[0]
    cdef uint32_t n = r.producer[0] - idx, k
    if n > r.size:
        raise ValueError(f"the {name} ring claims {n} frames, more than its {r.size} "
                         "slots")
    for k in range(n):
        addr = self.chunk(pes_ring_desc(r, idx).addr if descs else pes_ring_addr(r, idx)[0])
        if addr >= self.umem_len:
            raise ValueError(f"the {name} ring holds address {addr:#x}, beyond the "
                             f"UMEM's {self.umem_len:#x} octets")
        if addr in seen:
            raise ValueError(f"frame {addr // self.frame_size} is in the {seen[addr]} "
                             f"ring and in the {name} ring")
        seen[addr] = name
        idx += 1
