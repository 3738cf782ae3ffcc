from libc.stdint cimport uint8_t, uint32_t, uint64_t

from pesigitg._fastpath.includes.if_xdp cimport xdp_ring_offset
from pesigitg._fastpath.includes.xskring cimport pes_ring


cdef class XskSocket:
    cdef readonly int fd
    cdef readonly int umem_fd
    cdef readonly unsigned int ifindex
    cdef readonly unsigned int queue
    cdef readonly uint32_t frame_size
    cdef readonly uint32_t frame_count
    cdef readonly str mode
    cdef uint8_t *umem
    cdef uint64_t umem_len
    cdef pes_ring rx
    cdef pes_ring tx
    cdef pes_ring fill
    cdef pes_ring comp
    # Frames owned by user space and not in any ring (a stack of chunk addresses).
    cdef uint64_t *free_frames
    cdef uint32_t n_free

    cdef _open(self, str ifname, uint32_t rx_size, uint32_t tx_size, uint32_t fill_size,
               uint32_t comp_size, zero_copy)
    cdef _map_ring(self, pes_ring *r, xdp_ring_offset *off, uint32_t size, size_t elem,
                   unsigned long long pgoff, bint producer, str name)
    cdef _bind(self, zero_copy, str where)
    cdef uint32_t refill(self) noexcept nogil
    cdef inline void recycle(self, uint64_t addr) noexcept nogil
    cdef void kick_tx(self) noexcept nogil
