# flowhash.h: the Maglev flow hash (FNV-1a 64 + splitmix64), whole keys or 4-tuples.
from libc.stdint cimport uint8_t, uint16_t, uint64_t


cdef extern from "flowhash.h" nogil:
    uint64_t pes_flow_hash(const uint8_t *key, size_t len)
    size_t pes_tuple_key(uint8_t *out, const uint8_t *src, const uint8_t *dst, size_t alen,
                         uint16_t sport, uint16_t dport)
    uint64_t pes_tuple_hash(const uint8_t *src, const uint8_t *dst, size_t alen,
                            uint16_t sport, uint16_t dport)
    uint64_t pes_siphash24(const uint8_t *key, const uint8_t *p, size_t len)
