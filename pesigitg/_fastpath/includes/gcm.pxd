# gcm.h: AES-128-GCM with AES-NI and PCLMULQDQ (96-bit IVs).
from libc.stdint cimport uint8_t

from pesigitg._fastpath.includes.aesni cimport pes_aes128_key


cdef extern from "gcm.h" nogil:
    ctypedef struct pes_gcm_key:
        pes_aes128_key aes
        uint8_t h[16]

    int pes_gcm_supported()
    void pes_gcm_init(pes_gcm_key *k, const uint8_t *raw)
    void pes_gcm_seal(const pes_gcm_key *k, const uint8_t *iv, const uint8_t *aad,
                      size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
                      uint8_t *tag)
    int pes_gcm_open(const pes_gcm_key *k, const uint8_t *iv, const uint8_t *aad,
                     size_t aad_len, const uint8_t *ct, size_t len, const uint8_t *tag,
                     uint8_t *pt)
