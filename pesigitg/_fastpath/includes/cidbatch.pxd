# cidbatch.h: keyed QUIC-LB decode over a batch, AES interleaved across the CIDs.
from libc.stddef cimport size_t
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t

from pesigitg._fastpath.includes.cidtable cimport pes_cid_config


cdef extern from "cidbatch.h" nogil:
    enum pes_aes_path:
        PES_AES_SCALAR
        PES_AES_AESNI
        PES_AES_VAES

    ctypedef struct pes_cid_job:
        uint8_t block[32]
        uint8_t sid[16]
        const pes_cid_config *conf
        const uint8_t *cid
        uint32_t frame
        uint16_t avail
        uint8_t kind
        int8_t config_id

    void pes_cid_job_load(pes_cid_job *job, const uint8_t *cid, size_t readable)
    void pes_sid_copy(uint8_t *dst, const uint8_t *sid, size_t n)
    int pes_vaes_supported()
    int pes_cid_best_path()
    void pes_cid_decrypt_batch(pes_cid_job *jobs, int n, int path)
