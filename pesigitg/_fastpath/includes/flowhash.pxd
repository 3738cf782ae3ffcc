from libc.stdint cimport uint8_t, uint64_t


cdef extern from "flowhash.h" nogil:
    uint64_t pes_flow_hash(const uint8_t *key, size_t len)
