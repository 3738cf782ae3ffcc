# xskring.h: AF_XDP ring access with acquire/release ordering, and atomics.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "xskring.h" nogil:
    struct xdp_desc:
        uint64_t addr
        uint32_t len
        uint32_t options

    ctypedef struct pes_ring:
        uint32_t cached_prod
        uint32_t cached_cons
        uint32_t mask
        uint32_t size
        uint32_t *producer
        uint32_t *consumer
        uint32_t *flags
        void *ring
        void *map
        uint64_t map_len

    enum:
        PES_XSK_STATE_MAGIC
        PES_XSK_STATE_VERSION
        PES_XSK_STATE_SIZE
        PES_XSK_STASH_MAX

    ctypedef struct pes_xsk_state:
        uint32_t magic
        uint32_t version
        uint32_t frame_size
        uint32_t frame_count
        uint32_t rx_size
        uint32_t tx_size
        uint32_t fill_size
        uint32_t comp_size
        uint32_t ifindex
        uint32_t queue
        uint32_t zero_copy
        uint32_t seq
        uint32_t stash_target
        uint32_t stash_which
        uint32_t stash_count
        uint32_t j_stash_which
        uint32_t j_stash_count
        uint32_t stash[2][256]

    ctypedef struct pes_stash:
        uint32_t count
        uint32_t dirty
        uint32_t frames[256]

    void pes_stash_load(const pes_xsk_state *st, pes_stash *s)

    enum:
        PES_XSK_REPAIR_JOURNAL
        PES_XSK_REPAIR_STASH
        PES_XSK_REPAIR_RINGS

    int pes_xsk_sanitize(pes_xsk_state *st, pes_ring *fill, pes_ring *tx, pes_ring *rx,
                         pes_ring *comp, uint32_t frame_count, uint32_t stash_target)

    uint32_t pes_ring_free(pes_ring *r, uint32_t want)
    uint32_t pes_ring_reserve(pes_ring *r, uint32_t want, uint32_t *idx)
    uint32_t pes_ring_peek(pes_ring *r, uint32_t want, uint32_t *idx)
    void pes_xsk_publish(pes_xsk_state *st, pes_ring *fill, pes_ring *tx, pes_ring *rx,
                         pes_ring *comp, pes_stash *stash)
    int pes_xsk_recover(pes_xsk_state *st, pes_ring *fill, pes_ring *tx, pes_ring *rx,
                        pes_ring *comp, pes_stash *stash)
    uint32_t pes_ring_count(const pes_ring *r)
    uint64_t *pes_ring_addr(pes_ring *r, uint32_t idx)
    xdp_desc *pes_ring_desc(pes_ring *r, uint32_t idx)
    int pes_ring_needs_wakeup(const pes_ring *r)
    uint32_t pes_ring_pending(const pes_ring *r)
    void *pes_atomic_load_ptr(void **where)
    void pes_atomic_store_int(int *where, int value)
    int pes_atomic_load_int(int *where)
    void pes_atomic_add_u64(uint64_t *where, uint64_t n)
    void pes_atomic_store_u64(uint64_t *where, uint64_t value)
    void pes_spin_lock(int *lock)
    void pes_spin_unlock(int *lock)
