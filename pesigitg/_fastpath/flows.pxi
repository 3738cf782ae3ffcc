# The fallback flow table (includes/flowtable.h): memory for one worker, and a small
# Python face for tests. The loop reaches it through Engine, never through here.

from pesigitg._fastpath.includes.flowtable cimport (
    PES_FLOW_WAYS,
    pes_flow_entry,
    pes_flow_fp,
    pes_flow_fp_of,
    pes_flow_insert,
    pes_flow_lookup,
    pes_flow_prefetch,
    pes_flow_table,
)
from posix.mman cimport MAP_ANONYMOUS, MAP_PRIVATE


cdef extern from "<sys/mman.h>" nogil:
    int madvise(void *addr, size_t length, int advice)
    enum:
        MADV_HUGEPAGE

FLOW_ENTRY_SIZE = sizeof(pes_flow_entry)


@cython.final
cdef class FlowTable:
    """``FlowTable(entries)``: room for ``entries`` flows (rounded up to whole buckets of
    four), zeroed anonymous memory the kernel hands out as it is touched, a random
    fingerprint seed."""

    cdef pes_flow_table ft
    cdef size_t map_len
    cdef readonly uint32_t entries

    def __cinit__(self, uint32_t entries):
        cdef void *mem
        if entries == 0 or entries > PES_FLOW_ENTRIES_MAX:
            raise ValueError(f"a flow table holds 1..{PES_FLOW_ENTRIES_MAX} entries, "
                             f"not {entries}")
        self.ft.buckets = (entries + PES_FLOW_WAYS - 1) // PES_FLOW_WAYS
        self.entries = self.ft.buckets * PES_FLOW_WAYS
        self.map_len = <size_t>self.entries * sizeof(pes_flow_entry)
        mem = mmap(NULL, self.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0)
        if mem == MAP_FAILED:
            raise os_error(errno, f"allocating a flow table of {self.entries} entries")
        # Each frame looks up a random bucket: with 4 KiB pages nearly every lookup
        # also misses the TLB. Huge pages where the kernel has them (THP "madvise" or
        # "always"); a refusal leaves small pages, which work the same.
        madvise(mem, self.map_len, MADV_HUGEPAGE)
        self.ft.entries = <pes_flow_entry *>mem
        self.ft.seed = int.from_bytes(os.urandom(8), "little")

    @staticmethod
    def rounded(uint32_t entries):
        """The entries a table asked for ``entries`` holds (whole buckets)."""
        return (entries + PES_FLOW_WAYS - 1) // PES_FLOW_WAYS * PES_FLOW_WAYS

    def __dealloc__(self):
        if self.ft.entries != NULL:
            munmap(self.ft.entries, self.map_len)
            self.ft.entries = NULL

    cdef uint64_t _fp(self, bytes src, bytes dst, uint16_t sport, uint16_t dport) except? 0:
        if len(src) != len(dst) or len(src) not in (4, 16):
            raise ValueError("addresses must both be 4 or both 16 octets")
        return pes_flow_fp(&self.ft, <const uint8_t *>PyBytes_AS_STRING(src),
                           <const uint8_t *>PyBytes_AS_STRING(dst), len(src), sport, dport)

    def learn(self, bytes src not None, bytes dst not None, uint16_t sport, uint16_t dport,
              uint32_t key):
        """Remember the flow's backend ``key``; True if another flow was forgotten."""
        cdef uint64_t fp = self._fp(src, dst, sport, dport)
        cdef pes_flow_entry *e = pes_flow_lookup(&self.ft, fp)
        if e != NULL:
            e.key = key
            return False
        return bool(pes_flow_insert(&self.ft, fp, key))

    def recall(self, bytes src not None, bytes dst not None, uint16_t sport, uint16_t dport):
        """The backend key remembered for the flow, or None."""
        cdef pes_flow_entry *e = pes_flow_lookup(&self.ft, self._fp(src, dst, sport, dport))
        return None if e == NULL else e.key
