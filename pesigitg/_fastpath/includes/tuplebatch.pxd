# tuplebatch.h: the fallback's hash of a batch's IPv4 4-tuples, eight per instruction.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "tuplebatch.h" nogil:
    enum:
        PES_TUPLE_LANES

    ctypedef struct pes_tuple4:
        uint8_t octets[16]

    void pes_tuple4_set(pes_tuple4 *k, const uint8_t *src, const uint8_t *dst,
                        uint16_t sport, uint16_t dport)
    void pes_tuple4_hash_batch(const pes_tuple4 *keys, uint64_t *out, uint32_t n,
                               const uint8_t *hash_key)
