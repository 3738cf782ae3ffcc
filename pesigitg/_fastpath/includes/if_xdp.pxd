# linux/if_xdp.h: AF_XDP socket options, ring offsets and descriptors.
from libc.stdint cimport uint16_t, uint32_t, uint64_t


cdef extern from "<linux/if_xdp.h>" nogil:
    enum:
        XDP_SHARED_UMEM
        XDP_COPY
        XDP_ZEROCOPY
        XDP_USE_NEED_WAKEUP
        XDP_MMAP_OFFSETS
        XDP_RX_RING
        XDP_TX_RING
        XDP_UMEM_REG
        XDP_UMEM_FILL_RING
        XDP_UMEM_COMPLETION_RING
        XDP_STATISTICS
        XDP_OPTIONS
        XDP_OPTIONS_ZEROCOPY
        XDP_PGOFF_RX_RING
        XDP_PGOFF_TX_RING
        XDP_UMEM_PGOFF_FILL_RING
        XDP_UMEM_PGOFF_COMPLETION_RING

    struct sockaddr_xdp:
        uint16_t sxdp_family
        uint16_t sxdp_flags
        uint32_t sxdp_ifindex
        uint32_t sxdp_queue_id
        uint32_t sxdp_shared_umem_fd

    struct xdp_ring_offset:
        uint64_t producer
        uint64_t consumer
        uint64_t desc
        uint64_t flags

    struct xdp_mmap_offsets:
        xdp_ring_offset rx
        xdp_ring_offset tx
        xdp_ring_offset fr
        xdp_ring_offset cr

    struct xdp_umem_reg:
        uint64_t addr
        uint64_t len
        uint32_t chunk_size
        uint32_t headroom
        uint32_t flags

    struct xdp_statistics:
        uint64_t rx_dropped
        uint64_t rx_invalid_descs
        uint64_t tx_invalid_descs
        uint64_t rx_ring_full
        uint64_t rx_fill_ring_empty_descs
        uint64_t tx_ring_empty_descs

    struct xdp_options:
        uint32_t flags
