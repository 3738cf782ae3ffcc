# The route-table blob: packing (from pesigitg.routing.routes), validation, Maglev fill.
#
# The C layout is in includes/routetable.h; this is the only code that writes it, and
# RouteTable is the only way a blob reaches the packet path: it validates every offset
# and index once, so the loop can trust the blob.

from pesigitg._fastpath.includes.gcm cimport pes_gcm_init, pes_gcm_supported
import ipaddress

from pesigitg._fastpath.includes.routetable cimport (
    PES_BACKEND_DRAINING,
    PES_BACKEND_MAC_KNOWN,
    PES_BACKEND_NONE,
    PES_BACKEND_UP,
    PES_KNOB_COUNT,
    PES_KNOB_FLOW_ENTRIES,
    PES_KNOB_RETRY_MODE,
    PES_RETRY_MODE_COUNT,
    PES_RETRY_OFF,
    PES_ROUTE_MAGIC,
    PES_ROUTE_VERSION,
    pes_backend,
    pes_backend_by_key,
    pes_retry_key,
    pes_route_table,
    pes_sid_entry,
    pes_vip_listed,
)

ROUTE_HEADER_SIZE = sizeof(pes_route_table)
BACKEND_SIZE = sizeof(pes_backend)
SID_ENTRY_SIZE = sizeof(pes_sid_entry)
BACKEND_NONE = PES_BACKEND_NONE
STATE_UP = PES_BACKEND_UP
STATE_DRAINING = PES_BACKEND_DRAINING
STATE_MAC_KNOWN = PES_BACKEND_MAC_KNOWN


cdef inline uint32_t _align8(uint32_t n) noexcept nogil:
    return (n + 7) & ~7


def maglev_fill(offsets, skips, uint32_t size):
    """Maglev population (Eisenbud et al., NSDI 2016, §3.4 Pseudocode 1).

    Backend ``i`` prefers slots ``(offsets[i] + j * skips[i]) % size`` for j = 0, 1, ...;
    the backends take turns claiming their next preferred free slot until the table
    is full. Returns ``size`` uint16 backend indices as bytes (native order).
    """
    cdef Py_ssize_t n = len(offsets)
    cdef Py_ssize_t i
    cdef uint32_t filled = 0
    cdef uint64_t c
    cdef uint16_t *table
    cdef uint32_t *off
    cdef uint32_t *skp
    cdef uint32_t *nxt
    if len(skips) != n:
        raise ValueError("offsets and skips differ in length")
    if n > PES_MAX_BACKENDS:
        raise ValueError(f"{n} backends exceed the maximum of {PES_MAX_BACKENDS}")
    out = PyBytes_FromStringAndSize(NULL, size * 2)
    table = <uint16_t *>PyBytes_AS_STRING(out)
    for c in range(size):
        table[c] = PES_BACKEND_NONE
    if n == 0:
        return out
    off = <uint32_t *>malloc(n * sizeof(uint32_t) * 3)
    if off == NULL:
        raise MemoryError()
    skp = off + n
    nxt = off + 2 * n
    try:
        for i in range(n):
            off[i] = offsets[i] % size
            skp[i] = skips[i] % size
            if skp[i] == 0:
                raise ValueError(f"skip of backend {i} is a multiple of the table size")
            nxt[i] = 0
        with nogil:
            while True:
                for i in range(n):
                    # With size prime and 0 < skip < size the walk visits every slot.
                    c = (off[i] + <uint64_t>nxt[i] * skp[i]) % size
                    while table[c] != PES_BACKEND_NONE:
                        nxt[i] += 1
                        c = (off[i] + <uint64_t>nxt[i] * skp[i]) % size
                    table[c] = <uint16_t>i
                    nxt[i] += 1
                    filled += 1
                    if filled == size:
                        break
                if filled == size:
                    break
    finally:
        free(off)
    return out


def pack_route_table(spec):
    """Write the blob of ``spec`` (a pesigitg.routing.routes.TableSpec): ``if_mac``;
    ``configs``: CidConfig objects; ``backends``: (mac or None, state bits, key, slot)
    per backend, keys nonzero and unique, slots below BACKEND_SLOTS (or BACKEND_NONE:
    not counted); ``servers``: {config_id: [(server_id, backend_index), ...]};
    ``maglev``: bytes from :func:`maglev_fill`; ``knobs``: {name: value} for
    TABLE_KNOBS; ``retry_keys``: the Retry offload's token keys (RetryKey objects);
    ``hash_key``: 16 octets to key the fallback's hash (SipHash-2-4), or None
    (FNV-1a, unkeyed); ``vips``: the VIPs (addresses). The inputs were checked where
    the configuration entered (routing/route_config.py); this checks only what the
    blob's layout needs.
    """
    if_mac, configs, backends, servers = spec.if_mac, spec.configs, spec.backends, \
        spec.servers
    maglev, hash_key = spec.maglev, spec.hash_key
    cdef uint32_t n_backends = len(backends)
    cdef uint32_t maglev_size = len(maglev) // 2
    cdef uint32_t pos, backends_off, maglev_off, sid_off, keys_off, keys_mask, slot, retry_off
    cdef uint32_t i
    cdef uint16_t *slots
    cdef pes_retry_key *rk
    cdef bytes raw
    cdef pes_route_table *hdr
    cdef pes_backend *be
    cdef pes_sid_entry *entry
    cdef uint8_t *base
    knobs = [int(spec.knobs.get(name, 0)) for name in TABLE_KNOBS]
    if len(if_mac) != 6:
        raise ValueError(f"interface MAC is {len(if_mac)} octets, expected 6")
    if n_backends > PES_MAX_BACKENDS:
        raise ValueError(f"{n_backends} backends exceed the maximum of {PES_MAX_BACKENDS}")
    if maglev_size == 0:
        raise ValueError("the Maglev table is empty")
    cid = pack_cid_table(configs)
    sorted_servers = {config_id: sorted((bytes(sid), idx) for sid, idx in entries)
                      for config_id, entries in servers.items()}
    keys_mask = 1
    while keys_mask + 1 < 2 * max(n_backends, 1):
        keys_mask = keys_mask * 2 + 1
    pos = _align8(sizeof(pes_route_table))
    backends_off = pos
    pos = _align8(pos + n_backends * sizeof(pes_backend))
    maglev_off = pos
    pos = _align8(pos + maglev_size * 2)
    sids_off = {}
    for config_id, ordered in sorted_servers.items():
        sids_off[config_id] = pos
        pos = _align8(pos + len(ordered) * sizeof(pes_sid_entry))
    keys_off = pos
    pos = _align8(pos + (keys_mask + 1) * 2)
    vips = [sorted({a.packed for a in map(ipaddress.ip_address, spec.vips)
                    if a.version == v}) for v in (4, 6)]
    if any(len(family) > PES_MAX_VIPS for family in vips):
        raise ValueError(f"more than {PES_MAX_VIPS} VIPs of one family")
    vips_off = []
    for family in vips:
        vips_off.append(pos if family else 0)
        pos = _align8(pos + sum(len(v) for v in family))
    retry_off = 0
    if knobs[PES_KNOB_RETRY_MODE] != PES_RETRY_OFF:
        if not pes_gcm_supported():
            raise ValueError("the Retry offload needs AES-NI and PCLMULQDQ, which this CPU "
                             "lacks")
        retry_off = pos
        pos = _align8(pos + PES_RETRY_KEYS * sizeof(pes_retry_key))

    blob = bytearray(pos)
    cdef uint8_t[::1] view = blob
    base = &view[0]
    hdr = <pes_route_table *>base
    hdr.magic = PES_ROUTE_MAGIC
    hdr.version = PES_ROUTE_VERSION
    hdr.size = pos
    hdr.n_backends = n_backends
    hdr.maglev_size = maglev_size
    hdr.backends_off = backends_off
    hdr.maglev_off = maglev_off
    hdr.keys_off = keys_off
    hdr.keys_mask = keys_mask
    for i in range(PES_KNOB_COUNT):
        hdr.knobs[i] = knobs[i]
    if hash_key is not None:
        raw = bytes(hash_key)
        if len(raw) != 16:
            raise ValueError("the fallback's hash key is 16 octets")
        hdr.hash_keyed = 1
        memcpy(hdr.hash_key, PyBytes_AS_STRING(raw), 16)
    slots = <uint16_t *>(base + keys_off)
    for i in range(keys_mask + 1):
        slots[i] = PES_BACKEND_NONE
    if retry_off:
        hdr.retry_keys_off = retry_off
        hdr.retry_newest = max(k.sequence for k in spec.retry_keys)
        for k in spec.retry_keys:
            i = k.sequence
            rk = <pes_retry_key *>(base + retry_off) + i
            raw = bytes(k.key)
            pes_gcm_init(&rk.gcm, <const uint8_t *>PyBytes_AS_STRING(raw))
            raw = bytes(k.iv)
            memcpy(rk.iv, PyBytes_AS_STRING(raw), 12)
            rk.present = 1
    for i in range(2):
        hdr.vips_off[i], hdr.vips_count[i] = vips_off[i], len(vips[i])
        raw = b"".join(vips[i])
        if raw:
            memcpy(base + <uint32_t>vips_off[i], PyBytes_AS_STRING(raw), len(raw))
    for i in range(6):
        hdr.if_mac[i] = if_mac[i]
    memcpy(&hdr.cid, PyBytes_AS_STRING(cid), sizeof(pes_cid_table))
    for i in range(n_backends):
        mac, state, key, slot = backends[i]
        be = <pes_backend *>(base + backends_off) + i
        be.state = state
        be.key = key
        be.slot = slot
        slot = be.key & keys_mask
        while slots[slot] != PES_BACKEND_NONE:
            slot = (slot + 1) & keys_mask
        slots[slot] = i
        if mac is not None:
            raw = bytes(mac)
            if len(raw) != 6:
                raise ValueError(f"backend {i}: MAC is {len(raw)} octets, expected 6")
            memcpy(be.mac, PyBytes_AS_STRING(raw), 6)
    raw = bytes(maglev)
    memcpy(base + maglev_off, PyBytes_AS_STRING(raw), maglev_size * 2)
    for config_id, ordered in sorted_servers.items():
        sid_off = sids_off[config_id]
        hdr.sids_off[config_id] = sid_off
        hdr.sids_count[config_id] = len(ordered)
        for i in range(len(ordered)):
            raw, idx = ordered[i]
            entry = <pes_sid_entry *>(base + sid_off) + i
            memcpy(entry.server_id, PyBytes_AS_STRING(raw), len(raw))
            entry.backend = idx
    RouteTable(bytes(blob))  # the packer must only ever produce blobs that validate
    return bytes(blob)


cdef class RouteTable:
    """A validated route-table blob; ``table`` points into the bytes it keeps alive."""

    cdef readonly bytes blob
    cdef const pes_route_table *table

    def __cinit__(self, bytes blob not None):
        cdef const pes_route_table *t
        cdef uint32_t i
        cdef const uint16_t *maglev
        cdef const pes_sid_entry *entries
        cdef const pes_cid_config *conf
        cdef const pes_backend *be
        cdef uint16_t b
        cdef int c
        cdef Py_ssize_t size = len(blob)
        if size < <Py_ssize_t>sizeof(pes_route_table):
            raise ValueError(f"route table is {size} octets, shorter than its header")
        t = <const pes_route_table *>PyBytes_AS_STRING(blob)
        if t.magic != PES_ROUTE_MAGIC or t.version != PES_ROUTE_VERSION:
            raise ValueError("route table has a bad magic or version")
        if t.size != size:
            raise ValueError(f"route table says it is {t.size} octets, blob is {size}")
        if t.n_backends > PES_MAX_BACKENDS or t.maglev_size == 0:
            raise ValueError("route table has a bad backend count or Maglev size")
        _check_span(t.backends_off, t.n_backends * sizeof(pes_backend), size, "backends")
        _check_span(t.maglev_off, t.maglev_size * 2, size, "Maglev table")
        if (t.keys_mask & (t.keys_mask + 1)) or t.keys_mask + 1 < 2 * t.n_backends \
                or t.knobs[PES_KNOB_FLOW_ENTRIES] > PES_FLOW_ENTRIES_MAX:
            raise ValueError("route table has a bad key index size or flow table size")
        _check_span(t.keys_off, (t.keys_mask + 1) * 2, size, "backend keys")
        for i in range(t.keys_mask + 1):
            b = (<const uint16_t *>(<const uint8_t *>t + t.keys_off))[i]
            if b != PES_BACKEND_NONE and b >= t.n_backends:
                raise ValueError(f"key slot {i} names backend {b}, which does not exist")
        for i in range(t.n_backends):
            be = <const pes_backend *>(<const uint8_t *>t + t.backends_off) + i
            if be.key == 0 or pes_backend_by_key(t, be.key) != <int>i:
                raise ValueError(f"backend {i} cannot be found by its key")
            if be.slot >= PES_BACKEND_SLOTS and be.slot != PES_BACKEND_NONE:
                raise ValueError(f"backend {i} has a bad counter slot")
        if t.knobs[PES_KNOB_RETRY_MODE] >= PES_RETRY_MODE_COUNT or \
                (t.knobs[PES_KNOB_RETRY_MODE] != PES_RETRY_OFF) != (t.retry_keys_off != 0):
            raise ValueError("route table has a bad Retry offload mode")
        if t.retry_keys_off:
            _check_span(t.retry_keys_off, PES_RETRY_KEYS * sizeof(pes_retry_key), size,
                        "Retry token keys")
            if t.retry_newest >= PES_RETRY_KEYS or not (<const pes_retry_key *>(
                    <const uint8_t *>t + t.retry_keys_off))[t.retry_newest].present:
                raise ValueError("route table's newest Retry token key is missing")
        for c in range(2):
            if t.vips_count[c] > PES_MAX_VIPS:
                raise ValueError("route table has too many VIPs")
            _check_span(t.vips_off[c], t.vips_count[c] * (4 if c == 0 else 16), size, "VIPs")
            for i in range(1, t.vips_count[c]):
                if memcmp(<const uint8_t *>t + t.vips_off[c] + (i - 1) * (4 if c == 0 else 16),
                          <const uint8_t *>t + t.vips_off[c] + i * (4 if c == 0 else 16),
                          4 if c == 0 else 16) >= 0:
                    raise ValueError("route table's VIPs are not sorted and unique")
        maglev = <const uint16_t *>(<const uint8_t *>t + t.maglev_off)
        for i in range(t.maglev_size):
            if maglev[i] != PES_BACKEND_NONE and maglev[i] >= t.n_backends:
                raise ValueError(f"Maglev slot {i} names backend {maglev[i]}, which does not exist")
        for c in range(PES_CID_CONFIGS):
            conf = &t.cid.conf[c]
            if conf.mode == PES_CID_UNSET:
                if t.sids_count[c]:
                    raise ValueError(f"servers listed for unconfigured config id {c}")
                continue
            if (conf.mode > PES_CID_FOUR_PASS or conf.server_id_len < 1
                    or conf.server_id_len > PES_SERVER_ID_MAX or conf.nonce_len < PES_NONCE_MIN
                    or conf.server_id_len + conf.nonce_len > PES_PLAINTEXT_MAX
                    or conf.cid_len != 1 + conf.server_id_len + conf.nonce_len):
                raise ValueError(f"config id {c} has inconsistent lengths or mode")
            _check_span(t.sids_off[c], t.sids_count[c] * sizeof(pes_sid_entry), size,
                        f"servers of config {c}")
            entries = <const pes_sid_entry *>(<const uint8_t *>t + t.sids_off[c])
            for i in range(t.sids_count[c]):
                if entries[i].backend >= t.n_backends:
                    raise ValueError(f"config {c} server {i} names a backend that does not exist")
                if i and memcmp(entries[i - 1].server_id, entries[i].server_id,
                                conf.server_id_len) >= 0:
                    raise ValueError(f"servers of config {c} are not sorted and unique")
        self.blob = blob
        self.table = t

    def __len__(self):
        return len(self.blob)

    @property
    def n_backends(self):
        return self.table.n_backends

    @property
    def maglev_size(self):
        return self.table.maglev_size

    @property
    def if_mac(self):
        return bytes(self.table.if_mac[:6])

    def backend(self, uint32_t index):
        """``(mac, state, key, slot)`` of backend ``index``."""
        cdef const pes_backend *be
        if index >= self.table.n_backends:
            raise IndexError(f"backend {index} does not exist")
        be = <const pes_backend *>(<const uint8_t *>self.table + self.table.backends_off) + index
        return bytes(be.mac[:6]), be.state, be.key, be.slot

    def vip(self, address):
        """Whether ``address`` is one of the table's VIPs."""
        packed = ipaddress.ip_address(address).packed
        return bool(pes_vip_listed(self.table, 4 if len(packed) == 4 else 6,
                                   <const uint8_t *>PyBytes_AS_STRING(packed)))

    def backend_by_key(self, uint32_t key):
        """The index of the backend with ``key``, or None."""
        cdef int i = pes_backend_by_key(self.table, key)
        return None if i < 0 else i

    def knob(self, str name):
        """The value of knob ``name`` (one of TABLE_KNOBS)."""
        return self.table.knobs[TABLE_KNOBS.index(name)]

    def digest(self):
        """SHA-256 of the blob without what is each balancer's own: its interface MAC
        and the per-backend counter slots (bookkeeping, not decisions). Equal on every
        balancer given the same configuration and the same backend states."""
        import hashlib

        cdef const pes_backend *be
        cdef uint32_t i
        blob = bytearray(self.blob)
        base = <size_t>self.table
        offset = <size_t>&self.table.if_mac[0] - base
        blob[offset:offset + 6] = bytes(6)
        for i in range(self.table.n_backends):
            be = <const pes_backend *>(<const uint8_t *>self.table + self.table.backends_off) + i
            offset = <size_t>&be.slot - base
            blob[offset:offset + 2] = bytes(2)
        return hashlib.sha256(bytes(blob)).hexdigest()


    def maglev(self):
        """The Maglev lookup table as a list of backend indices (BACKEND_NONE if empty)."""
        cdef const uint16_t *m = <const uint16_t *>(<const uint8_t *>self.table
                                                     + self.table.maglev_off)
        return [m[i] for i in range(self.table.maglev_size)]


cdef inline void _check_span(uint64_t offset, uint64_t length, Py_ssize_t size, str what) except *:
    if length == 0:
        return
    if offset % 2 or offset + length > <uint64_t>size or offset < sizeof(pes_route_table):
        raise ValueError(f"route table: {what} lie outside the blob")
