# The route-table blob: packing (from pesigitg.routing.routes) and the Maglev fill.
#
# The C layout is in includes/routetable.h; this is the only code that writes it
# (routetable.pxi checks it).

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


class _Layout:
    """Where each part of a table's blob goes (offsets, 8-octet aligned), and what the
    parts hold, sorted as the packet path searches them."""

    def __init__(self, spec):
        n_backends = len(spec.backends)
        self.maglev_size = len(spec.maglev) // 2
        self.knobs = [int(spec.knobs.get(name, 0)) for name in TABLE_KNOBS]
        self.servers = {config_id: sorted((bytes(sid), idx) for sid, idx in entries)
                        for config_id, entries in spec.servers.items()}
        self.vips = [sorted({a.packed for a in map(ipaddress.ip_address, spec.vips)
                             if a.version == v}) for v in (4, 6)]
        self.keys_mask = 1
        while self.keys_mask + 1 < 2 * max(n_backends, 1):
            self.keys_mask = self.keys_mask * 2 + 1
        pos = self.backends = _align8(sizeof(pes_route_table))
        pos = self.maglev = _align8(pos + n_backends * sizeof(pes_backend))
        pos = _align8(pos + self.maglev_size * 2)
        self.sids = {}
        for config_id, ordered in self.servers.items():
            self.sids[config_id] = pos
            pos = _align8(pos + len(ordered) * sizeof(pes_sid_entry))
        self.keys = pos
        pos = _align8(pos + (self.keys_mask + 1) * 2)
        self.vips_off = []
        for family in self.vips:
            self.vips_off.append(pos if family else 0)
            pos = _align8(pos + sum(len(v) for v in family))
        self.retry = 0
        if self.knobs[PES_KNOB_RETRY_MODE] != PES_RETRY_OFF:
            self.retry = pos
            pos = _align8(pos + PES_RETRY_KEYS * sizeof(pes_retry_key))
        self.size = pos


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
    if len(spec.if_mac) != 6:
        raise ValueError(f"interface MAC is {len(spec.if_mac)} octets, expected 6")
    if len(spec.backends) > PES_MAX_BACKENDS:
        raise ValueError(f"{len(spec.backends)} backends exceed the maximum of "
                         f"{PES_MAX_BACKENDS}")
    if len(spec.maglev) < 2:
        raise ValueError("the Maglev table is empty")
    layout = _Layout(spec)
    if any(len(family) > PES_MAX_VIPS for family in layout.vips):
        raise ValueError(f"more than {PES_MAX_VIPS} VIPs of one family")
    if layout.retry and not pes_gcm_supported():
        raise ValueError("the Retry offload needs AES-NI and PCLMULQDQ, which this CPU lacks")
    blob = bytearray(layout.size)
    cdef uint8_t[::1] view = blob
    _pack_header(&view[0], spec, layout)
    _pack_backends(&view[0], spec.backends, layout)
    _pack_servers(&view[0], layout)
    _pack_vips(&view[0], layout)
    if layout.retry:
        _pack_retry_keys(&view[0], spec.retry_keys, layout)
    RouteTable(bytes(blob))  # the packer must only ever produce blobs that validate
    return bytes(blob)


cdef _pack_header(uint8_t *base, spec, layout):
    cdef pes_route_table *hdr = <pes_route_table *>base
    cdef bytes raw
    cdef uint32_t i
    hdr.magic = PES_ROUTE_MAGIC
    hdr.version = PES_ROUTE_VERSION
    hdr.size = layout.size
    hdr.n_backends = len(spec.backends)
    hdr.maglev_size = layout.maglev_size
    hdr.backends_off = layout.backends
    hdr.maglev_off = layout.maglev
    hdr.keys_off = layout.keys
    hdr.keys_mask = layout.keys_mask
    for i in range(PES_KNOB_COUNT):
        hdr.knobs[i] = layout.knobs[i]
    if spec.hash_key is not None:
        raw = bytes(spec.hash_key)
        if len(raw) != 16:
            raise ValueError("the fallback's hash key is 16 octets")
        hdr.hash_keyed = 1
        memcpy(hdr.hash_key, PyBytes_AS_STRING(raw), 16)
    for i in range(6):
        hdr.if_mac[i] = spec.if_mac[i]
    raw = pack_cid_table(spec.configs)
    memcpy(&hdr.cid, PyBytes_AS_STRING(raw), sizeof(pes_cid_table))
    raw = bytes(spec.maglev)
    memcpy(base + <uint32_t>layout.maglev, PyBytes_AS_STRING(raw), len(raw))


cdef _pack_backends(uint8_t *base, list backends, layout):
    # Each backend, and the open-addressing index that finds it by its key.
    cdef uint16_t *keys = <uint16_t *>(base + <uint32_t>layout.keys)
    cdef uint32_t mask = layout.keys_mask, i, slot
    cdef pes_backend *be
    cdef bytes raw
    for i in range(mask + 1):
        keys[i] = PES_BACKEND_NONE
    for i in range(len(backends)):
        mac, state, key, slot = backends[i]
        be = <pes_backend *>(base + <uint32_t>layout.backends) + i
        be.state, be.key, be.slot = state, key, slot
        slot = be.key & mask
        while keys[slot] != PES_BACKEND_NONE:
            slot = (slot + 1) & mask
        keys[slot] = i
        if mac is not None:
            raw = bytes(mac)
            if len(raw) != 6:
                raise ValueError(f"backend {i}: MAC is {len(raw)} octets, expected 6")
            memcpy(be.mac, PyBytes_AS_STRING(raw), 6)


cdef _pack_servers(uint8_t *base, layout):
    # Each config's server IDs, sorted for the binary search.
    cdef pes_route_table *hdr = <pes_route_table *>base
    cdef pes_sid_entry *entry
    cdef uint32_t i
    cdef bytes raw
    for config_id, ordered in layout.servers.items():
        hdr.sids_off[config_id] = layout.sids[config_id]
        hdr.sids_count[config_id] = len(ordered)
        for i in range(len(ordered)):
            raw, idx = ordered[i]
            entry = <pes_sid_entry *>(base + <uint32_t>layout.sids[config_id]) + i
            memcpy(entry.server_id, PyBytes_AS_STRING(raw), len(raw))
            entry.backend = idx


cdef _pack_vips(uint8_t *base, layout):
    cdef pes_route_table *hdr = <pes_route_table *>base
    cdef bytes raw
    cdef int i
    for i in range(2):
        hdr.vips_off[i], hdr.vips_count[i] = layout.vips_off[i], len(layout.vips[i])
        raw = b"".join(layout.vips[i])
        if raw:
            memcpy(base + <uint32_t>layout.vips_off[i], PyBytes_AS_STRING(raw), len(raw))


cdef _pack_retry_keys(uint8_t *base, retry_keys, layout):
    # The token keys by sequence, expanded for AES-NI.
    cdef pes_route_table *hdr = <pes_route_table *>base
    cdef pes_retry_key *rk
    cdef bytes raw
    hdr.retry_keys_off = layout.retry
    hdr.retry_newest = max(k.sequence for k in retry_keys)
    for k in retry_keys:
        rk = <pes_retry_key *>(base + <uint32_t>layout.retry) + <uint32_t>k.sequence
        raw = bytes(k.key)
        pes_gcm_init(&rk.gcm, <const uint8_t *>PyBytes_AS_STRING(raw))
        raw = bytes(k.iv)
        memcpy(rk.iv, PyBytes_AS_STRING(raw), 12)
        rk.present = 1
