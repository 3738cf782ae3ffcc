/* Flow hash for Maglev: FNV-1a 64 over the key, then the splitmix64 finalizer so
 * the low bits (the table index) are well mixed. Unkeyed and fixed, so every load
 * balancer behind ECMP picks the same backend; pesigitg.routing.decision has the
 * reference. FNV-1a is sequential, so a key can be hashed in pieces (update) without
 * being assembled. */
#ifndef PESIGITG_FLOWHASH_H
#define PESIGITG_FLOWHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PES_FNV_OFFSET 0xcbf29ce484222325ULL
#define PES_FNV_PRIME 0x100000001b3ULL
#define PES_MIX_1 0xbf58476d1ce4e5b9ULL     /* splitmix64's finalizer */
#define PES_MIX_2 0x94d049bb133111ebULL
#define PES_SIP_V0 0x736f6d6570736575ULL    /* SipHash's initial state, less the key */
#define PES_SIP_V1 0x646f72616e646f6dULL
#define PES_SIP_V2 0x6c7967656e657261ULL
#define PES_SIP_V3 0x7465646279746573ULL

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
    h *= PES_MIX_1;
    h ^= h >> 27;
    h *= PES_MIX_2;
    h ^= h >> 31;
    return h;
}

static inline uint64_t pes_flow_hash(const uint8_t *key, size_t len)
{
    return pes_hash_finish(pes_fnv_update(PES_FNV_OFFSET, key, len));
}

/* The 4-tuple key written out: source, destination addresses (alen octets each), then
 * both ports in network order; returns its length. */
static inline size_t pes_tuple_key(uint8_t *out, const uint8_t *src, const uint8_t *dst,
                                   size_t alen, uint16_t sport, uint16_t dport)
{
    memcpy(out, src, alen);
    memcpy(out + alen, dst, alen);
    out[2 * alen] = (uint8_t)(sport >> 8);
    out[2 * alen + 1] = (uint8_t)sport;
    out[2 * alen + 2] = (uint8_t)(dport >> 8);
    out[2 * alen + 3] = (uint8_t)dport;
    return 2 * alen + 4;
}

/* The same key hashed in place: alen is 4 or 16. */
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

/* SipHash-2-4 (Aumasson and Bernstein), the fallback's hash when lb.toml sets
 * [fallback] hash_key: every balancer with the key agrees, a client without it cannot
 * aim its connection IDs at one backend. */
static inline uint64_t pes_rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define PES_SIPROUND(v0, v1, v2, v3)                                                     \
    do {                                                                                \
        v0 += v1; v1 = pes_rotl64(v1, 13); v1 ^= v0; v0 = pes_rotl64(v0, 32);          \
        v2 += v3; v3 = pes_rotl64(v3, 16); v3 ^= v2;                                    \
        v0 += v3; v3 = pes_rotl64(v3, 21); v3 ^= v0;                                    \
        v2 += v1; v1 = pes_rotl64(v1, 17); v1 ^= v2; v2 = pes_rotl64(v2, 32);          \
    } while (0)

static inline uint64_t pes_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t pes_siphash24(const uint8_t key[16], const uint8_t *p, size_t len)
{
    uint64_t k0 = pes_le64(key), k1 = pes_le64(key + 8);
    uint64_t v0 = k0 ^ PES_SIP_V0, v1 = k1 ^ PES_SIP_V1;
    uint64_t v2 = k0 ^ PES_SIP_V2, v3 = k1 ^ PES_SIP_V3;
    uint64_t m, last = (uint64_t)len << 56;
    size_t i, whole = len & ~(size_t)7;

    for (i = 0; i < whole; i += 8) {
        m = pes_le64(p + i);
        v3 ^= m;
        PES_SIPROUND(v0, v1, v2, v3);
        PES_SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (i = 0; i < (len & 7); i++)
        last |= (uint64_t)p[whole + i] << (8 * i);
    v3 ^= last;
    PES_SIPROUND(v0, v1, v2, v3);
    PES_SIPROUND(v0, v1, v2, v3);
    v0 ^= last;
    v2 ^= 0xff;
    for (i = 0; i < 4; i++)
        PES_SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#endif /* PESIGITG_FLOWHASH_H */
