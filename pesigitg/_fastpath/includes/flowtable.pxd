# flowtable.h: the per-worker fallback flow table.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "flowtable.h" nogil:
    enum:
        PES_FLOW_WAYS

    ctypedef struct pes_flow_entry:
        uint64_t fp
        uint32_t key
        uint32_t ref

    ctypedef struct pes_flow_table:
        pes_flow_entry *entries
        uint32_t buckets
        uint64_t seed

    uint64_t pes_flow_fp_of(const pes_flow_table *ft, uint64_t h)
    uint64_t pes_flow_fp(const pes_flow_table *ft, const uint8_t *src, const uint8_t *dst,
                         size_t alen, uint16_t sport, uint16_t dport)
    void pes_flow_prefetch(const pes_flow_table *ft, uint64_t fp)
    pes_flow_entry *pes_flow_lookup(const pes_flow_table *ft, uint64_t fp)
    int pes_flow_insert(pes_flow_table *ft, uint64_t fp, uint32_t key)
