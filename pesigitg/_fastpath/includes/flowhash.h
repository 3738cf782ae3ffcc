/* Flow hash for Maglev: FNV-1a 64 over the key, then the splitmix64 finalizer so
 * the low bits (the table index) are well mixed. Unkeyed and fixed, so every load
 * balancer behind ECMP picks the same backend; pesigitg.routing has the reference. */
#ifndef PESIGITG_FLOWHASH_H
#define PESIGITG_FLOWHASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t pes_flow_hash(const uint8_t *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= key[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

#endif /* PESIGITG_FLOWHASH_H */
