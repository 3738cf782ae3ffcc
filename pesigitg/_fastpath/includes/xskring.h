/* AF_XDP ring access (Documentation/networking/af_xdp.rst), and the few atomics the
 * loop shares with its control thread.
 *
 * Each ring is a single-producer single-consumer queue shared with the kernel. The
 * producer publishes entries with a release store of the producer index; the
 * consumer reads the index with an acquire load before touching entries, and
 * publishes consumption with a release store. Cached copies of the other side's
 * index keep the shared cache line out of the fast path.
 *
 * Every UMEM frame is always in a ring, held by the kernel, or in the stash: a few
 * spare frames listed in the UMEM memfd's state page, which the loop copies a frame
 * into when one frame must go to several backends (a Packet Too Big for every
 * backend). A process that takes a socket over has no free list to rebuild. A
 * batch's effect is published through a journal in the state page: the loop writes
 * its descriptors and the new stash (into the array not in use), records the four
 * indices and the stash it is about to publish, makes seq odd, publishes them, and
 * makes seq even. Whoever owns the socket next (a restarted worker, or the new daemon
 * after a hand-over) completes a publication a kill interrupted (seq odd) and
 * otherwise re-reads what was never published. So no crash point loses a frame or
 * puts one in two places.
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

#define PES_XSK_STATE_MAGIC 0x53584550u   /* "PEXS" little endian */
#define PES_XSK_STATE_VERSION 2u          /* 1: no stash (adopted, and upgraded) */
#define PES_XSK_STATE_SIZE 4096u          /* one page after the frames */
#define PES_XSK_STASH_MAX 256u            /* spare frames, at most */

/* The state page: what a new owner needs to adopt the socket, and the journal. */
typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t frame_size;
    uint32_t frame_count;
    uint32_t rx_size;
    uint32_t tx_size;
    uint32_t fill_size;
    uint32_t comp_size;
    uint32_t ifindex;
    uint32_t queue;
    uint32_t zero_copy;     /* bound in zero-copy mode */
    uint32_t seq;           /* odd while a batch's indices are being published */
    uint32_t fill_prod;     /* the batch's indices, valid while seq is odd */
    uint32_t tx_prod;
    uint32_t rx_cons;
    uint32_t comp_cons;
    /* version 2 */
    uint32_t stash_target;  /* spare frames the stash keeps */
    uint32_t stash_which;   /* the array holding the stash */
    uint32_t stash_count;
    uint32_t j_stash_which; /* the batch's stash, valid while seq is odd */
    uint32_t j_stash_count;
    uint32_t stash[2][PES_XSK_STASH_MAX];    /* frame numbers */
} pes_xsk_state;

/* The owner's working copy of the stash; ``dirty`` once the batch changed it. */
typedef struct {
    uint32_t count;
    uint32_t dirty;
    uint32_t frames[PES_XSK_STASH_MAX];
} pes_stash;

static inline void pes_stash_load(const pes_xsk_state *st, pes_stash *s)
{
    uint32_t n = st->stash_count <= PES_XSK_STASH_MAX ? st->stash_count : 0;

    s->count = n;
    s->dirty = 0;
    for (uint32_t i = 0; i < n; i++)
        s->frames[i] = st->stash[st->stash_which & 1][i];
}

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

/* Publish a batch: fill and TX producers, RX and completion consumers, each at the
 * position this process reached, through the journal (see above). */
static inline void pes_xsk_publish(pes_xsk_state *st, pes_ring *fill, pes_ring *tx,
                                   pes_ring *rx, pes_ring *comp, pes_stash *stash)
{
    uint32_t seq = st->seq;

    st->fill_prod = fill->cached_prod;
    st->tx_prod = tx->cached_prod;
    st->rx_cons = rx->cached_cons;
    st->comp_cons = comp->cached_cons;
    if (stash->dirty) {
        uint32_t spare = (st->stash_which & 1) ^ 1;

        for (uint32_t i = 0; i < stash->count; i++)
            st->stash[spare][i] = stash->frames[i];
        st->j_stash_which = spare;
        st->j_stash_count = stash->count;
        stash->dirty = 0;
    } else {
        st->j_stash_which = st->stash_which;
        st->j_stash_count = st->stash_count;
    }
    __atomic_store_n(&st->seq, seq + 1, __ATOMIC_RELEASE);
    __atomic_store_n(fill->producer, st->fill_prod, __ATOMIC_RELEASE);
    __atomic_store_n(tx->producer, st->tx_prod, __ATOMIC_RELEASE);
    __atomic_store_n(rx->consumer, st->rx_cons, __ATOMIC_RELEASE);
    __atomic_store_n(comp->consumer, st->comp_cons, __ATOMIC_RELEASE);
    st->stash_which = st->j_stash_which;
    st->stash_count = st->j_stash_count;
    __atomic_store_n(&st->seq, seq + 2, __ATOMIC_RELEASE);
}

/* Taking the socket over: finish a publication the previous owner left half done,
 * then see the rings as they are. Returns 1 when there was one to finish. */
static inline int pes_xsk_recover(pes_xsk_state *st, pes_ring *fill, pes_ring *tx,
                                  pes_ring *rx, pes_ring *comp, pes_stash *stash)
{
    int finished = 0;

    if (__atomic_load_n(&st->seq, __ATOMIC_ACQUIRE) & 1) {
        __atomic_store_n(fill->producer, st->fill_prod, __ATOMIC_RELEASE);
        __atomic_store_n(tx->producer, st->tx_prod, __ATOMIC_RELEASE);
        __atomic_store_n(rx->consumer, st->rx_cons, __ATOMIC_RELEASE);
        __atomic_store_n(comp->consumer, st->comp_cons, __ATOMIC_RELEASE);
        st->stash_which = st->j_stash_which;
        st->stash_count = st->j_stash_count;
        __atomic_store_n(&st->seq, st->seq + 1, __ATOMIC_RELEASE);
        finished = 1;
    }
    pes_stash_load(st, stash);
    fill->cached_prod = *fill->producer;
    fill->cached_cons = __atomic_load_n(fill->consumer, __ATOMIC_ACQUIRE) + fill->size;
    tx->cached_prod = *tx->producer;
    tx->cached_cons = __atomic_load_n(tx->consumer, __ATOMIC_ACQUIRE) + tx->size;
    rx->cached_cons = *rx->consumer;
    rx->cached_prod = __atomic_load_n(rx->producer, __ATOMIC_ACQUIRE);
    comp->cached_cons = *comp->consumer;
    comp->cached_prod = __atomic_load_n(comp->producer, __ATOMIC_ACQUIRE);
    return finished;
}

/* What a new owner repaired in what the previous one left (a worker can write the
 * state page and its rings' indices: a subverted one may have). */
enum {
    PES_XSK_REPAIR_JOURNAL = 1, /* a journal with impossible indices or stash: not applied */
    PES_XSK_REPAIR_STASH = 2,   /* a stash with too many, unknown or repeated frames: emptied */
    PES_XSK_REPAIR_RINGS = 4,   /* a ring whose indices are further apart than its size */
};

/* Whether ``n`` frame numbers at ``frames`` are each below ``frame_count`` and distinct. */
static inline int pes_stash_valid(const uint32_t *frames, uint32_t n, uint32_t frame_count)
{
    for (uint32_t i = 0; i < n; i++) {
        if (frames[i] >= frame_count)
            return 0;
        for (uint32_t j = 0; j < i; j++)
            if (frames[j] == frames[i])
                return 0;
    }
    return 1;
}

static inline int pes_index_fits(uint32_t ahead, uint32_t behind, uint32_t size)
{
    return ahead - behind <= size;
}

/* Before taking the rings over: refuse what cannot be true of the state page and the
 * rings (the sizes are the owner's own, never the page's). Returns PES_XSK_REPAIR_*
 * bits for what it refused. */
static inline int pes_xsk_sanitize(pes_xsk_state *st, pes_ring *fill, pes_ring *tx,
                                   pes_ring *rx, pes_ring *comp, uint32_t frame_count,
                                   uint32_t stash_target)
{
    int repaired = 0;
    uint32_t seq = __atomic_load_n(&st->seq, __ATOMIC_ACQUIRE);

    st->stash_target = stash_target;
    if (seq & 1) {
        int ok = pes_index_fits(st->fill_prod, *fill->consumer, fill->size) &&
                 pes_index_fits(st->tx_prod, *tx->consumer, tx->size) &&
                 pes_index_fits(*rx->producer, st->rx_cons, rx->size) &&
                 pes_index_fits(*comp->producer, st->comp_cons, comp->size) &&
                 st->j_stash_which <= 1 && st->j_stash_count <= stash_target &&
                 pes_stash_valid(st->stash[st->j_stash_which & 1], st->j_stash_count,
                                 frame_count);
        if (!ok) {
            __atomic_store_n(&st->seq, seq + 1, __ATOMIC_RELEASE);
            repaired |= PES_XSK_REPAIR_JOURNAL;
        }
    }
    if (!(__atomic_load_n(&st->seq, __ATOMIC_ACQUIRE) & 1) &&
        (st->stash_which > 1 || st->stash_count > stash_target ||
         !pes_stash_valid(st->stash[st->stash_which & 1], st->stash_count, frame_count))) {
        st->stash_which &= 1;
        st->stash_count = 0;
        repaired |= PES_XSK_REPAIR_STASH;
    }
    if (!pes_index_fits(*fill->producer, *fill->consumer, fill->size)) {
        *fill->producer = *fill->consumer;
        repaired |= PES_XSK_REPAIR_RINGS;
    }
    if (!pes_index_fits(*tx->producer, *tx->consumer, tx->size)) {
        *tx->producer = *tx->consumer;
        repaired |= PES_XSK_REPAIR_RINGS;
    }
    if (!pes_index_fits(*rx->producer, *rx->consumer, rx->size)) {
        *rx->consumer = *rx->producer;
        repaired |= PES_XSK_REPAIR_RINGS;
    }
    if (!pes_index_fits(*comp->producer, *comp->consumer, comp->size)) {
        *comp->consumer = *comp->producer;
        repaired |= PES_XSK_REPAIR_RINGS;
    }
    return repaired;
}

/* Entries between the consumer and the producer, as the kernel and we see them now. */
static inline uint32_t pes_ring_count(const pes_ring *r)
{
    return __atomic_load_n(r->producer, __ATOMIC_ACQUIRE) -
           __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
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

static inline void pes_atomic_store_u64(uint64_t *where, uint64_t value)
{
    __atomic_store_n(where, value, __ATOMIC_RELAXED);
}

static inline void pes_atomic_add_u64(uint64_t *where, uint64_t n)
{
    /* One writer per counter block: a relaxed load+store is enough for readers to
     * never see a torn value, and cheaper than a locked add. */
    __atomic_store_n(where, __atomic_load_n(where, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

#endif /* PESIGITG_XSKRING_H */
