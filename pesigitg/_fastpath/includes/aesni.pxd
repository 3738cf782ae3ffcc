# aesni.h: AES-128 with AES-NI (key schedule, one-block encrypt and decrypt).
from libc.stdint cimport uint8_t


cdef extern from "aesni.h" nogil:
    ctypedef struct pes_aes128_key:
        uint8_t enc[11][16]
        uint8_t dec[11][16]

    int pes_aesni_supported()
    void pes_aes128_expand(const uint8_t *raw, pes_aes128_key *key)
    void pes_aes128_encrypt(const pes_aes128_key *key, const uint8_t *inp, uint8_t *out)
    void pes_aes128_decrypt(const pes_aes128_key *key, const uint8_t *inp, uint8_t *out)
