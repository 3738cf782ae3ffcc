/* The fallback flow table (draft-ietf-quic-load-balancers §3, "the load balancer
 * SHOULD remember the 4-tuples of flows with unroutable connection IDs"): which backend
 * a fallback-routed 4-tuple went to, so it stays there when the pool, and with it the
 * Maglev table, changes.
 *
 * One per worker, fixed size, no allocation per packet. Set-associative: a 4-tuple's
 * keyed 64-bit fingerprint picks a bucket of four 16-octet entries (one cache line);
 * a full bucket evicts by second chance (CLOCK within the bucket). Entries remember the
 * backend's key, not its index, which a reload may change. The fingerprint is keyed
 * with a per-worker random seed, so nobody can aim flows at one bucket without knowing
 * it; flows that collide are ones Maglev would send to one backend anyway.
 */
#ifndef PESIGITG_FLOWTABLE_H
#define PESIGITG_FLOWTABLE_H

#include <stdint.h>
#include "flowhash.h"

#define PES_FLOW_WAYS 4u

typedef struct {
    uint64_t fp;        /* fingerprint of the 4-tuple; 0: empty */
    uint32_t key;       /* the backend's key (routetable.h) */
    uint32_t ref;       /* used since the clock last passed */
} pes_flow_entry;

typedef struct {
    pes_flow_entry *entries;
    uint32_t buckets;
    uint32_t reserved;
    uint64_t seed;
} pes_flow_table;

/* The fingerprint of a 4-tuple whose Maglev hash without a hash_key is ``h``
 * (pes_tuple_hash, which the decision has mostly computed already): the seed, then
 * the finalizer again. Two 4-tuples share a fingerprint only if they share that hash,
 * and then unkeyed Maglev sends them to one backend anyway. Not from the keyed hash:
 * a new [fallback] hash_key must not make the table forget its flows. */
static inline uint64_t pes_flow_fp_of(const pes_flow_table *ft, uint64_t h)
{
    h = pes_hash_finish(h ^ ft->seed);
    return h ? h : 1;
}

static inline uint64_t pes_flow_fp(const pes_flow_table *ft, const uint8_t *src,
                                   const uint8_t *dst, size_t alen, uint16_t sport,
                                   uint16_t dport)
{
    return pes_flow_fp_of(ft, pes_tuple_hash(src, dst, alen, sport, dport));
}

static inline pes_flow_entry *pes_flow_bucket(const pes_flow_table *ft, uint64_t fp)
{
    /* Lemire's multiply-shift: any bucket count, no division. */
    uint64_t b = ((fp >> 32) * (uint64_t)ft->buckets) >> 32;

    return ft->entries + b * PES_FLOW_WAYS;
}

/* Start fetching ``fp``'s bucket: the loop does it for a whole batch first, so the
 * cache misses overlap instead of following one another. */
static inline void pes_flow_prefetch(const pes_flow_table *ft, uint64_t fp)
{
    __builtin_prefetch(pes_flow_bucket(ft, fp), 1);
}

/* The entry of ``fp``, or NULL. */
static inline pes_flow_entry *pes_flow_lookup(const pes_flow_table *ft, uint64_t fp)
{
    pes_flow_entry *b = pes_flow_bucket(ft, fp);

    for (uint32_t i = 0; i < PES_FLOW_WAYS; i++) {
        if (b[i].fp == fp) {
            b[i].ref = 1;
            return &b[i];
        }
    }
    return 0;
}

/* Remember ``fp`` -> ``key`` (fp not in the table); 1 if another flow was evicted. */
static inline int pes_flow_insert(pes_flow_table *ft, uint64_t fp, uint32_t key)
{
    pes_flow_entry *b = pes_flow_bucket(ft, fp);
    uint32_t start = (uint32_t)fp & (PES_FLOW_WAYS - 1);
    uint32_t i;

    for (i = 0; i < PES_FLOW_WAYS; i++) {
        if (b[i].fp == 0) {
            b[i].fp = fp;
            b[i].key = key;
            b[i].ref = 0;
            return 0;
        }
    }
    /* Second chance: the first entry not used since the clock passed it goes; the
     * ones passed lose their bit. Two rounds at most. */
    for (i = 0; i < 2 * PES_FLOW_WAYS; i++) {
        pes_flow_entry *e = &b[(start + i) & (PES_FLOW_WAYS - 1)];

        if (!e->ref) {
            e->fp = fp;
            e->key = key;
            return 1;
        }
        e->ref = 0;
    }
    return 1;   /* not reached: the first round clears every bit */
}

#endif /* PESIGITG_FLOWTABLE_H */
