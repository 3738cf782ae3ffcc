/* AES-128-GCM (NIST SP 800-38D) with AES-NI and PCLMULQDQ, 96-bit IVs only: the Retry
 * offload's token protection and the Retry integrity tag (RFC 9001 §5.8).
 *
 * As in aesni.h, only these functions are compiled for the instructions they use
 * (target attribute); callers check pes_gcm_supported() before using a key. Messages
 * are short (a token body, a Retry packet), so GHASH multiplies one block at a time.
 *
 * GHASH works on bit-reflected blocks. Each block is byte-reversed on load (pshufb),
 * which leaves every bit reflected in place; the carry-less product of two such
 * values is then shifted left by one and reduced modulo x^128 + x^7 + x^2 + x + 1
 * (Gueron and Kounavis, "Intel Carry-Less Multiplication Instruction and its Usage for
 * Computing the GCM Mode", algorithms 1 and 5).
 */
#ifndef PESIGITG_GCM_H
#define PESIGITG_GCM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "aesni.h"

typedef struct {
    pes_aes128_key aes;
    uint8_t h[16];          /* the hash key E(K, 0), byte-reversed */
} pes_gcm_key;

#if defined(__x86_64__)
#include <emmintrin.h>
#include <tmmintrin.h>
#include <wmmintrin.h>

#define PES_GCM_TARGET __attribute__((target("aes,pclmul,ssse3,sse2")))

static inline int pes_gcm_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
}

static inline PES_GCM_TARGET __m128i pes_gcm_bswap(__m128i x)
{
    return _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                            14, 15));
}

/* a * b in GF(2^128), both byte-reversed. */
static inline PES_GCM_TARGET __m128i pes_gcm_mul(__m128i a, __m128i b)
{
    __m128i lo = _mm_clmulepi64_si128(a, b, 0x00);
    __m128i hi = _mm_clmulepi64_si128(a, b, 0x11);
    __m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10),
                                _mm_clmulepi64_si128(a, b, 0x01));
    __m128i carry_lo, carry_hi, carry_mid, t1, t2;

    lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
    hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
    /* The 256-bit product hi:lo shifted left by one (reflection). */
    carry_lo = _mm_srli_epi32(lo, 31);
    carry_hi = _mm_srli_epi32(hi, 31);
    lo = _mm_slli_epi32(lo, 1);
    hi = _mm_slli_epi32(hi, 1);
    carry_mid = _mm_srli_si128(carry_lo, 12);
    hi = _mm_or_si128(hi, _mm_slli_si128(carry_hi, 4));
    hi = _mm_or_si128(hi, carry_mid);
    lo = _mm_or_si128(lo, _mm_slli_si128(carry_lo, 4));
    /* Reduction: first phase folds lo's 32-bit words by x^63, x^62, x^57 ... */
    t1 = _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)),
                       _mm_slli_epi32(lo, 25));
    t2 = _mm_srli_si128(t1, 4);
    lo = _mm_xor_si128(lo, _mm_slli_si128(t1, 12));
    /* ... second phase by x, x^2, x^7, into the high half. */
    t1 = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)),
                       _mm_srli_epi32(lo, 7));
    t1 = _mm_xor_si128(t1, t2);
    lo = _mm_xor_si128(lo, t1);
    return _mm_xor_si128(hi, lo);
}

/* Fold ``len`` octets into the running hash y (zero-padded to whole blocks). */
static inline PES_GCM_TARGET __m128i pes_ghash(__m128i y, __m128i h, const uint8_t *p,
                                               size_t len)
{
    uint8_t last[16];

    for (; len >= 16; p += 16, len -= 16)
        y = pes_gcm_mul(_mm_xor_si128(y, pes_gcm_bswap(_mm_loadu_si128((const __m128i *)p))),
                        h);
    if (len) {
        memset(last, 0, 16);
        memcpy(last, p, len);
        y = pes_gcm_mul(_mm_xor_si128(y, pes_gcm_bswap(_mm_loadu_si128((const __m128i *)last))),
                        h);
    }
    return y;
}

static PES_GCM_TARGET void pes_gcm_init(pes_gcm_key *k, const uint8_t raw[16])
{
    uint8_t zero[16] = {0}, h[16];

    pes_aes128_expand(raw, &k->aes);
    pes_aes128_encrypt(&k->aes, zero, h);
    _mm_storeu_si128((__m128i *)k->h, pes_gcm_bswap(_mm_loadu_si128((const __m128i *)h)));
}

/* XOR len octets of in with the keystream from counter block ctr (IV || 2, 3, ...). */
static inline PES_GCM_TARGET void pes_gcm_ctr(const pes_gcm_key *k, const uint8_t iv[12],
                                              const uint8_t *in, uint8_t *out, size_t len)
{
    uint8_t block[16], stream[16];
    uint32_t counter = 2;

    memcpy(block, iv, 12);
    for (size_t off = 0; off < len; off += 16, counter++) {
        size_t n = len - off < 16 ? len - off : 16;

        block[12] = (uint8_t)(counter >> 24);
        block[13] = (uint8_t)(counter >> 16);
        block[14] = (uint8_t)(counter >> 8);
        block[15] = (uint8_t)counter;
        pes_aes128_encrypt(&k->aes, block, stream);
        for (size_t i = 0; i < n; i++)
            out[off + i] = in[off + i] ^ stream[i];
    }
}

/* The tag over aad and the ciphertext ct. */
static inline PES_GCM_TARGET void pes_gcm_tag(const pes_gcm_key *k, const uint8_t iv[12],
                                              const uint8_t *aad, size_t aad_len,
                                              const uint8_t *ct, size_t len, uint8_t tag[16])
{
    __m128i h = _mm_loadu_si128((const __m128i *)k->h);
    __m128i y = _mm_setzero_si128();
    uint8_t lengths[16], j0[16], mask[16];

    y = pes_ghash(y, h, aad, aad_len);
    y = pes_ghash(y, h, ct, len);
    for (int i = 0; i < 8; i++) {
        lengths[i] = (uint8_t)(((uint64_t)aad_len * 8) >> (56 - 8 * i));
        lengths[8 + i] = (uint8_t)(((uint64_t)len * 8) >> (56 - 8 * i));
    }
    y = pes_ghash(y, h, lengths, 16);
    memcpy(j0, iv, 12);
    j0[12] = j0[13] = j0[14] = 0;
    j0[15] = 1;
    pes_aes128_encrypt(&k->aes, j0, mask);
    _mm_storeu_si128((__m128i *)tag, _mm_xor_si128(pes_gcm_bswap(y),
                                                   _mm_loadu_si128((const __m128i *)mask)));
}

/* Encrypt len octets of pt into ct (may be the same buffer) and write the tag. */
static PES_GCM_TARGET void pes_gcm_seal(const pes_gcm_key *k, const uint8_t iv[12],
                                        const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                                        size_t len, uint8_t *ct, uint8_t tag[16])
{
    pes_gcm_ctr(k, iv, pt, ct, len);
    pes_gcm_tag(k, iv, aad, aad_len, ct, len, tag);
}

/* Check the tag (in constant time) and decrypt; 1 when authentic, else 0 (pt is then
 * left untouched). */
static PES_GCM_TARGET int pes_gcm_open(const pes_gcm_key *k, const uint8_t iv[12],
                                       const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                       size_t len, const uint8_t tag[16], uint8_t *pt)
{
    uint8_t want[16], diff = 0;

    pes_gcm_tag(k, iv, aad, aad_len, ct, len, want);
    for (int i = 0; i < 16; i++)
        diff |= want[i] ^ tag[i];
    if (diff)
        return 0;
    pes_gcm_ctr(k, iv, ct, pt, len);
    return 1;
}

#else /* not x86-64: no Retry offload; refused at table build time */

static inline int pes_gcm_supported(void) { return 0; }
static inline void pes_gcm_init(pes_gcm_key *k, const uint8_t raw[16])
{
    (void)raw;
    memset(k, 0, sizeof(*k));
}
static inline void pes_gcm_seal(const pes_gcm_key *k, const uint8_t iv[12], const uint8_t *aad,
                                size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
                                uint8_t tag[16])
{
    (void)k; (void)iv; (void)aad; (void)aad_len; (void)pt;
    memset(ct, 0, len);
    memset(tag, 0, 16);
}
static inline int pes_gcm_open(const pes_gcm_key *k, const uint8_t iv[12], const uint8_t *aad,
                               size_t aad_len, const uint8_t *ct, size_t len,
                               const uint8_t tag[16], uint8_t *pt)
{
    (void)k; (void)iv; (void)aad; (void)aad_len; (void)ct; (void)len; (void)tag; (void)pt;
    return 0;
}

#endif
#endif /* PESIGITG_GCM_H */
