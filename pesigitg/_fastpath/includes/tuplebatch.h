/* The fallback's hash of IPv4 4-tuples over a batch: pes_tuple_hash's value, eight
 * tuples per AVX-512 instruction.
 *
 * FNV-1a is a chain of one multiply per octet, and an unroutable short header's frame
 * spends more on it than on anything else. The tuples of a batch are independent, so
 * their chains run side by side, one 64-bit lane each: the octets are turned into
 * columns (column j holds octet j of each of eight tuples, a byte permutation over two
 * registers), then each step is one XOR and one VPMULLQ for all eight.
 *
 * Chosen with the AES path (cidbatch.h): the VAES path's CPUs also have the AVX-512
 * instructions this needs (VBMI, DQ), which pes_vaes_supported checks; on other paths
 * each tuple is hashed alone, as it comes. With lb.toml's [fallback] hash_key the
 * hash is SipHash-2-4 (flowhash.h), eight lanes the same way: its rounds are 64-bit
 * additions, rotations and XORs, which AVX-512 has for every lane, so nothing depends
 * on the key's or the tuple's values but the arithmetic.
 */
#ifndef PESIGITG_TUPLEBATCH_H
#define PESIGITG_TUPLEBATCH_H

#include <stdint.h>
#include <string.h>
#include "flowhash.h"

#define PES_TUPLE_LANES 8

/* One IPv4 4-tuple as the hash reads it: source, destination, source port, destination
 * port (network order), then 4 octets the hash ignores. */
typedef struct {
    uint8_t octets[16];
} pes_tuple4;

static inline void pes_tuple4_set(pes_tuple4 *k, const uint8_t *src, const uint8_t *dst,
                                  uint16_t sport, uint16_t dport)
{
    pes_tuple_key(k->octets, src, dst, 4, sport, dport);
}

#if defined(__x86_64__)
#include <immintrin.h>

#define PES_TUPLE_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vbmi")))

static inline PES_TUPLE_TARGET __m512i pes_hash_finish8(__m512i h)
{
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 30));
    h = _mm512_mullo_epi64(h, _mm512_set1_epi64((long long)PES_MIX_1));
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 27));
    h = _mm512_mullo_epi64(h, _mm512_set1_epi64((long long)PES_MIX_2));
    return _mm512_xor_si512(h, _mm512_srli_epi64(h, 31));
}

/* The hashes of keys[0..7] into out[0..7]. */
static inline PES_TUPLE_TARGET void pes_tuple4_hash8(const pes_tuple4 *keys, uint64_t *out)
{
    /* Column j, lane k: octet 16k + j of the two registers, in the lane's low octet
     * (the mask keeps one octet in eight, the rest are zero). */
    const __m512i lo = _mm512_loadu_si512((const void *)keys);
    const __m512i hi = _mm512_loadu_si512((const void *)(keys + 4));
    const __m512i lane = _mm512_set_epi64(112, 96, 80, 64, 48, 32, 16, 0);
    const __mmask64 low_octets = 0x0101010101010101ULL;
    const __m512i prime = _mm512_set1_epi64((long long)PES_FNV_PRIME);
    __m512i h = _mm512_set1_epi64((long long)PES_FNV_OFFSET);

    for (int j = 0; j < 12; j++) {
        __m512i index = _mm512_add_epi64(lane, _mm512_set1_epi64(j));
        __m512i column = _mm512_maskz_permutex2var_epi8(low_octets, lo, index, hi);

        h = _mm512_mullo_epi64(_mm512_xor_si512(h, column), prime);
    }
    _mm512_storeu_si512((void *)out, pes_hash_finish8(h));
}

#define PES_SIPROUND8(v0, v1, v2, v3)                                                    \
    do {                                                                                \
        v0 = _mm512_add_epi64(v0, v1); v1 = _mm512_rol_epi64(v1, 13);                   \
        v1 = _mm512_xor_si512(v1, v0); v0 = _mm512_rol_epi64(v0, 32);                   \
        v2 = _mm512_add_epi64(v2, v3); v3 = _mm512_rol_epi64(v3, 16);                   \
        v3 = _mm512_xor_si512(v3, v2);                                                  \
        v0 = _mm512_add_epi64(v0, v3); v3 = _mm512_rol_epi64(v3, 21);                   \
        v3 = _mm512_xor_si512(v3, v0);                                                  \
        v2 = _mm512_add_epi64(v2, v1); v1 = _mm512_rol_epi64(v1, 17);                   \
        v1 = _mm512_xor_si512(v1, v2); v2 = _mm512_rol_epi64(v2, 32);                   \
    } while (0)

/* With a hash_key: SipHash-2-4 of keys[0..7] (12 octets each, as pes_siphash24) into
 * out[0..7]: the first word of each is its addresses, the last its ports and the
 * length; no lane waits on another. */
static inline PES_TUPLE_TARGET void pes_tuple4_siphash8(const uint8_t hash_key[16],
                                                        const pes_tuple4 *keys, uint64_t *out)
{
    const __m512i lo = _mm512_loadu_si512((const void *)keys);
    const __m512i hi = _mm512_loadu_si512((const void *)(keys + 4));
    const __m512i m = _mm512_permutex2var_epi64(lo, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), hi);
    __m512i last = _mm512_permutex2var_epi64(lo, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), hi);
    uint64_t k0 = pes_le64(hash_key), k1 = pes_le64(hash_key + 8);
    __m512i v0 = _mm512_set1_epi64((long long)(k0 ^ PES_SIP_V0));
    __m512i v1 = _mm512_set1_epi64((long long)(k1 ^ PES_SIP_V1));
    __m512i v2 = _mm512_set1_epi64((long long)(k0 ^ PES_SIP_V2));
    __m512i v3 = _mm512_set1_epi64((long long)(k1 ^ PES_SIP_V3));

    last = _mm512_or_si512(_mm512_and_si512(last, _mm512_set1_epi64(0xffffffff)),
                           _mm512_set1_epi64((long long)(12ULL << 56)));
    v3 = _mm512_xor_si512(v3, m);
    PES_SIPROUND8(v0, v1, v2, v3);
    PES_SIPROUND8(v0, v1, v2, v3);
    v0 = _mm512_xor_si512(v0, m);
    v3 = _mm512_xor_si512(v3, last);
    PES_SIPROUND8(v0, v1, v2, v3);
    PES_SIPROUND8(v0, v1, v2, v3);
    v0 = _mm512_xor_si512(v0, last);
    v2 = _mm512_xor_si512(v2, _mm512_set1_epi64(0xff));
    for (int i = 0; i < 4; i++)
        PES_SIPROUND8(v0, v1, v2, v3);
    _mm512_storeu_si512((void *)out, _mm512_xor_si512(_mm512_xor_si512(v0, v1),
                                                      _mm512_xor_si512(v2, v3)));
}

/* The hashes of keys[0..n-1] into out, keyed with hash_key (SipHash-2-4) or, when it
 * is NULL, not (FNV-1a): groups of eight, the last one padded with whatever follows
 * in keys (which must have room for a whole group; those lanes' hashes go to out's
 * room after n, which must be there too). */
static inline void pes_tuple4_hash_batch(const pes_tuple4 *keys, uint64_t *out, uint32_t n,
                                         const uint8_t *hash_key)
{
    for (uint32_t i = 0; i < n; i += PES_TUPLE_LANES) {
        if (hash_key)
            pes_tuple4_siphash8(hash_key, keys + i, out + i);
        else
            pes_tuple4_hash8(keys + i, out + i);
    }
}

#else
/* Not reached: the VAES path is x86-64's. */
static inline void pes_tuple4_hash_batch(const pes_tuple4 *keys, uint64_t *out, uint32_t n,
                                         const uint8_t *hash_key)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = hash_key ? pes_siphash24(hash_key, keys[i].octets, 12)
                          : pes_flow_hash(keys[i].octets, 12);
}
#endif

#endif /* PESIGITG_TUPLEBATCH_H */
