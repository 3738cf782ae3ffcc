from libc.stdint cimport uint8_t

from pesigitg._fastpath.includes.cidtable cimport pes_cid_table


# Decode the server ID of ``cid`` (``avail`` octets readable) into ``sid_out``
# (PES_SERVER_ID_MAX octets). Returns the config id, or a negative pes_cid_result.
cdef int cid_decode(const pes_cid_table *table, const uint8_t *cid, size_t avail,
                    uint8_t *sid_out) noexcept nogil
