/* Flow hash for Maglev: FNV-1a 64 over the key, then the splitmix64 finalizer so
 * the low bits (the table index) are well mixed. Unkeyed and fixed, so every load
 * balancer behind ECMP picks the same backend; pesigitg.routing.decision has the
 * reference. FNV-1a is sequential, so a key can be hashed in pieces (update) without
 * being assembled. */
#ifndef PESIGITG_FLOWHASH_H
#define PESIGITG_FLOWHASH_H

#include <stddef.h>
#include <stdint.h>

#define PES_FNV_OFFSET 0xcbf29ce484222325ULL
#define PES_FNV_PRIME 0x100000001b3ULL

static inline uint64_t pes_fnv_update(uint64_t h, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= PES_FNV_PRIME;
    }
    return h;
}

static inline uint64_t pes_hash_finish(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static inline uint64_t pes_flow_hash(const uint8_t *key, size_t len)
{
    return pes_hash_finish(pes_fnv_update(PES_FNV_OFFSET, key, len));
}

/* The 4-tuple key (source, destination addresses, then both ports in network order)
 * hashed in place: alen is 4 or 16. */
static inline uint64_t pes_tuple_hash(const uint8_t *src, const uint8_t *dst, size_t alen,
                                      uint16_t sport, uint16_t dport)
{
    uint8_t ports[4] = {(uint8_t)(sport >> 8), (uint8_t)sport, (uint8_t)(dport >> 8),
                        (uint8_t)dport};
    uint64_t h = PES_FNV_OFFSET;

    if (alen == 4) {
        h = pes_fnv_update(h, src, 4);
        h = pes_fnv_update(h, dst, 4);
    } else {
        h = pes_fnv_update(h, src, 16);
        h = pes_fnv_update(h, dst, 16);
    }
    return pes_hash_finish(pes_fnv_update(h, ports, 4));
}

#endif /* PESIGITG_FLOWHASH_H */
