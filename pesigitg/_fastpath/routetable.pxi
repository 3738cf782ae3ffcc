# RouteTable: the only way a blob reaches the packet path. It validates every offset
# and index once (a worker takes tables from the supervisor, and the fuzzer from
# anywhere), so the loop can trust the blob.

cdef class RouteTable:
    """A validated route-table blob; ``table`` points into the bytes it keeps alive."""

    cdef readonly bytes blob
    cdef const pes_route_table *table

    def __cinit__(self, bytes blob not None):
        cdef Py_ssize_t size = len(blob)
        cdef const pes_route_table *t
        if size < <Py_ssize_t>sizeof(pes_route_table):
            raise ValueError(f"route table is {size} octets, shorter than its header")
        t = <const pes_route_table *>PyBytes_AS_STRING(blob)
        _check_header(t, size)
        _check_backends(t, size)
        _check_retry(t, size)
        _check_vips(t, size)
        _check_configs(t, size)
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


cdef _check_header(const pes_route_table *t, Py_ssize_t size):
    cdef const uint16_t *maglev
    cdef uint32_t i
    if t.magic != PES_ROUTE_MAGIC or t.version != PES_ROUTE_VERSION:
        raise ValueError("route table has a bad magic or version")
    if t.size != size:
        raise ValueError(f"route table says it is {t.size} octets, blob is {size}")
    if t.n_backends > PES_MAX_BACKENDS or t.maglev_size == 0:
        raise ValueError("route table has a bad backend count or Maglev size")
    _check_span(t.maglev_off, t.maglev_size * 2, size, "Maglev table")
    if t.knobs[PES_KNOB_FLOW_ENTRIES] > PES_FLOW_ENTRIES_MAX:
        raise ValueError("route table has a bad flow table size")
    maglev = <const uint16_t *>(<const uint8_t *>t + t.maglev_off)
    for i in range(t.maglev_size):
        if maglev[i] != PES_BACKEND_NONE and maglev[i] >= t.n_backends:
            raise ValueError(f"Maglev slot {i} names backend {maglev[i]}, which does not exist")


cdef _check_backends(const pes_route_table *t, Py_ssize_t size):
    # Every backend, and the index that finds each by its key.
    cdef const pes_backend *be
    cdef uint32_t i
    cdef uint16_t b
    _check_span(t.backends_off, t.n_backends * sizeof(pes_backend), size, "backends")
    if (t.keys_mask & (t.keys_mask + 1)) or t.keys_mask + 1 < 2 * t.n_backends:
        raise ValueError("route table has a bad key index size")
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


cdef _check_retry(const pes_route_table *t, Py_ssize_t size):
    if t.knobs[PES_KNOB_RETRY_MODE] >= PES_RETRY_MODE_COUNT or \
            (t.knobs[PES_KNOB_RETRY_MODE] != PES_RETRY_OFF) != (t.retry_keys_off != 0):
        raise ValueError("route table has a bad Retry offload mode")
    if t.retry_keys_off:
        _check_span(t.retry_keys_off, PES_RETRY_KEYS * sizeof(pes_retry_key), size,
                    "Retry token keys")
        if t.retry_newest >= PES_RETRY_KEYS or not (<const pes_retry_key *>(
                <const uint8_t *>t + t.retry_keys_off))[t.retry_newest].present:
            raise ValueError("route table's newest Retry token key is missing")


cdef _check_vips(const pes_route_table *t, Py_ssize_t size):
    # Each family's VIPs, sorted and unique (the packet path searches them).
    cdef const uint8_t *vips
    cdef uint32_t i, alen
    cdef int c
    for c in range(2):
        alen = 4 if c == 0 else 16
        if t.vips_count[c] > PES_MAX_VIPS:
            raise ValueError("route table has too many VIPs")
        _check_span(t.vips_off[c], t.vips_count[c] * alen, size, "VIPs")
        vips = <const uint8_t *>t + t.vips_off[c]
        for i in range(1, t.vips_count[c]):
            if memcmp(vips + (i - 1) * alen, vips + i * alen, alen) >= 0:
                raise ValueError("route table's VIPs are not sorted and unique")


cdef _check_configs(const pes_route_table *t, Py_ssize_t size):
    # Each QUIC-LB config's lengths, and its server IDs sorted and unique.
    cdef const pes_sid_entry *entries
    cdef const pes_cid_config *conf
    cdef uint32_t i
    cdef int c
    for c in range(PES_CID_CONFIGS):
        conf = &t.cid.conf[c]
        if conf.mode == PES_CID_UNSET:
            if t.sids_count[c]:
                raise ValueError(f"servers listed for unconfigured config id {c}")
            continue
        if (conf.mode > PES_CID_FOUR_PASS or conf.server_id_len < 1
                or conf.server_id_len > PES_SERVER_ID_MAX or conf.nonce_len < PES_NONCE_MIN
                or conf.server_id_len + conf.nonce_len > PES_PLAINTEXT_MAX
                or conf.cid_len != 1 + conf.server_id_len + conf.nonce_len
                # §5.4, §5.5: one AES block exactly for single-pass, four-pass otherwise
                or (conf.mode != PES_CID_PLAINTEXT and (conf.mode == PES_CID_SINGLE_PASS)
                    != (conf.server_id_len + conf.nonce_len == 16))):
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
