# fourpass.h: four-pass Feistel decryption of a QUIC-LB CID in SSE registers.
from libc.stdint cimport uint8_t

from pesigitg._fastpath.includes.aesni cimport pes_aes128_key


cdef extern from "fourpass.h" nogil:
    void pes_four_pass_decrypt(const pes_aes128_key *key, const uint8_t *block, int length,
                               int sid_len, int nonce_len, uint8_t *sid_out)
