/* AF_XDP ring access (Documentation/networking/af_xdp.rst), and the few atomics the
 * loop shares with its control thread.
 *
 * Each ring is a single-producer single-consumer queue shared with the kernel. The
 * producer publishes entries with a release store of the producer index; the
 * consumer reads the index with an acquire load before touching entries, and
 * publishes consumption with a release store. Cached copies of the other side's
 * index keep the shared cache line out of the fast path.
 */
#ifndef PESIGITG_XSKRING_H
#define PESIGITG_XSKRING_H

#include <linux/if_xdp.h>
#include <stdint.h>

typedef struct {
    uint32_t cached_prod;
    uint32_t cached_cons;
    uint32_t mask;
    uint32_t size;
    uint32_t *producer;
    uint32_t *consumer;
    uint32_t *flags;
    void *ring;
    void *map;          /* mmap base, for munmap */
    uint64_t map_len;
} pes_ring;

/* Producer rings (fill, TX): how many slots are free, up to what we need. */
static inline uint32_t pes_ring_free(pes_ring *r, uint32_t want)
{
    uint32_t free_entries = r->cached_cons - r->cached_prod;

    if (free_entries >= want)
        return free_entries;
    r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE) + r->size;
    return r->cached_cons - r->cached_prod;
}

static inline uint32_t pes_ring_reserve(pes_ring *r, uint32_t want, uint32_t *idx)
{
    uint32_t n = pes_ring_free(r, want);

    if (n > want)
        n = want;
    *idx = r->cached_prod;
    r->cached_prod += n;
    return n;
}

static inline void pes_ring_submit(pes_ring *r, uint32_t n)
{
    __atomic_store_n(r->producer, *r->producer + n, __ATOMIC_RELEASE);
}

/* Consumer rings (RX, completion). */
static inline uint32_t pes_ring_peek(pes_ring *r, uint32_t want, uint32_t *idx)
{
    uint32_t entries = r->cached_prod - r->cached_cons;

    if (entries == 0) {
        r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
        entries = r->cached_prod - r->cached_cons;
    }
    if (entries > want)
        entries = want;
    *idx = r->cached_cons;
    r->cached_cons += entries;
    return entries;
}

static inline void pes_ring_release(pes_ring *r, uint32_t n)
{
    __atomic_store_n(r->consumer, *r->consumer + n, __ATOMIC_RELEASE);
}

static inline uint64_t *pes_ring_addr(pes_ring *r, uint32_t idx)
{
    return &((uint64_t *)r->ring)[idx & r->mask];
}

static inline struct xdp_desc *pes_ring_desc(pes_ring *r, uint32_t idx)
{
    return &((struct xdp_desc *)r->ring)[idx & r->mask];
}

static inline int pes_ring_needs_wakeup(const pes_ring *r)
{
    return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

/* Entries the kernel has not consumed yet (producer rings). */
static inline uint32_t pes_ring_pending(const pes_ring *r)
{
    return *r->producer - __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
}

static inline void *pes_atomic_load_ptr(void **where)
{
    return __atomic_load_n(where, __ATOMIC_ACQUIRE);
}

static inline void pes_atomic_store_int(int *where, int value)
{
    __atomic_store_n(where, value, __ATOMIC_RELEASE);
}

static inline int pes_atomic_load_int(int *where)
{
    return __atomic_load_n(where, __ATOMIC_ACQUIRE);
}

/* The table handoff between the control thread and the loop (held for a few
 * instructions, taken by the loop only when a table is pending). */
static inline void pes_spin_lock(int *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static inline void pes_spin_unlock(int *lock)
{
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

static inline void pes_atomic_add_u64(uint64_t *where, uint64_t n)
{
    /* One writer per counter block: a relaxed load+store is enough for readers to
     * never see a torn value, and cheaper than a locked add. */
    __atomic_store_n(where, __atomic_load_n(where, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

#endif /* PESIGITG_XSKRING_H */
