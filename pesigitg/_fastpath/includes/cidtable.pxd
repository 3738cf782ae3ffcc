# cidtable.h: the packed QUIC-LB decode table (one slot per config id).
from libc.stdint cimport uint8_t

from pesigitg._fastpath.includes.aesni cimport pes_aes128_key


cdef extern from "cidtable.h" nogil:
    enum pes_cid_mode:
        PES_CID_UNSET
        PES_CID_PLAINTEXT
        PES_CID_SINGLE_PASS
        PES_CID_FOUR_PASS

    enum pes_cid_result:
        PES_CID_NO_CONFIG
        PES_CID_TOO_SHORT

    ctypedef struct pes_cid_config:
        uint8_t mode
        uint8_t server_id_len
        uint8_t nonce_len
        uint8_t cid_len
        pes_aes128_key key

    ctypedef struct pes_cid_table:
        pes_cid_config conf[7]
