# checksum.h and rng.h: what the worker needs to write Retries itself.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from pesigitg._fastpath.includes.aesni cimport pes_aes128_key


cdef extern from "checksum.h" nogil:
    uint32_t pes_csum_add(uint32_t sum, const uint8_t *p, size_t len)
    uint16_t pes_csum_fold(uint32_t sum)


cdef extern from "rng.h" nogil:
    ctypedef struct pes_rng:
        pes_aes128_key key
        uint64_t counter

    void pes_rng_seed(pes_rng *r, const uint8_t *key)
    void pes_rng_bytes(pes_rng *r, uint8_t *out, size_t n)
