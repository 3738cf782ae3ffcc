/* AES-128 with AES-NI intrinsics: key expansion, one-block encrypt and decrypt.
 *
 * Only these functions are compiled for AES-NI (target attribute), so the module
 * builds on any x86-64 compiler and loads on any CPU; callers must check
 * pes_aesni_supported() before using a key. Round keys are stored as plain octets
 * so the route-table blob has no alignment requirement beyond the C struct's.
 */
#ifndef PESIGITG_AESNI_H
#define PESIGITG_AESNI_H

#include <stdint.h>
#include <string.h>

#define PES_AES_ROUNDS 10

typedef struct {
    uint8_t enc[PES_AES_ROUNDS + 1][16];
    uint8_t dec[PES_AES_ROUNDS + 1][16];
} pes_aes128_key;

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#include <wmmintrin.h>

#define PES_AES_TARGET __attribute__((target("aes,sse2")))

static inline int pes_aesni_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes");
}

/* FIPS-197 §5.2 key schedule: aeskeygenassist gives SubWord(RotWord(w)) ^ rcon. */
static inline PES_AES_TARGET __m128i pes_aes_expand_step(__m128i key, __m128i assist)
{
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

/* The rcon operand of aeskeygenassist must be an immediate, hence the macro. */
#define PES_AES_EXPAND(k, rcon) pes_aes_expand_step((k), _mm_aeskeygenassist_si128((k), (rcon)))

static PES_AES_TARGET void pes_aes128_expand(const uint8_t *raw, pes_aes128_key *key)
{
    __m128i rk[PES_AES_ROUNDS + 1];
    rk[0] = _mm_loadu_si128((const __m128i *)raw);
    rk[1] = PES_AES_EXPAND(rk[0], 0x01);
    rk[2] = PES_AES_EXPAND(rk[1], 0x02);
    rk[3] = PES_AES_EXPAND(rk[2], 0x04);
    rk[4] = PES_AES_EXPAND(rk[3], 0x08);
    rk[5] = PES_AES_EXPAND(rk[4], 0x10);
    rk[6] = PES_AES_EXPAND(rk[5], 0x20);
    rk[7] = PES_AES_EXPAND(rk[6], 0x40);
    rk[8] = PES_AES_EXPAND(rk[7], 0x80);
    rk[9] = PES_AES_EXPAND(rk[8], 0x1b);
    rk[10] = PES_AES_EXPAND(rk[9], 0x36);
    for (int i = 0; i <= PES_AES_ROUNDS; i++)
        _mm_storeu_si128((__m128i *)key->enc[i], rk[i]);
    /* Equivalent inverse cipher (FIPS-197 §5.3.5): reversed keys through InvMixColumns. */
    _mm_storeu_si128((__m128i *)key->dec[0], rk[PES_AES_ROUNDS]);
    for (int i = 1; i < PES_AES_ROUNDS; i++)
        _mm_storeu_si128((__m128i *)key->dec[i], _mm_aesimc_si128(rk[PES_AES_ROUNDS - i]));
    _mm_storeu_si128((__m128i *)key->dec[PES_AES_ROUNDS], rk[0]);
}

static PES_AES_TARGET void pes_aes128_encrypt(const pes_aes128_key *key, const uint8_t *in,
                                              uint8_t *out)
{
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)in),
                              _mm_loadu_si128((const __m128i *)key->enc[0]));
    for (int i = 1; i < PES_AES_ROUNDS; i++)
        b = _mm_aesenc_si128(b, _mm_loadu_si128((const __m128i *)key->enc[i]));
    b = _mm_aesenclast_si128(b, _mm_loadu_si128((const __m128i *)key->enc[PES_AES_ROUNDS]));
    _mm_storeu_si128((__m128i *)out, b);
}

static PES_AES_TARGET void pes_aes128_decrypt(const pes_aes128_key *key, const uint8_t *in,
                                              uint8_t *out)
{
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)in),
                              _mm_loadu_si128((const __m128i *)key->dec[0]));
    for (int i = 1; i < PES_AES_ROUNDS; i++)
        b = _mm_aesdec_si128(b, _mm_loadu_si128((const __m128i *)key->dec[i]));
    b = _mm_aesdeclast_si128(b, _mm_loadu_si128((const __m128i *)key->dec[PES_AES_ROUNDS]));
    _mm_storeu_si128((__m128i *)out, b);
}

#else /* not x86: no AES-NI; keyed configs are refused at table build time */

static inline int pes_aesni_supported(void) { return 0; }
static inline void pes_aes128_expand(const uint8_t *raw, pes_aes128_key *key)
{
    (void)raw;
    memset(key, 0, sizeof(*key));
}
static inline void pes_aes128_encrypt(const pes_aes128_key *key, const uint8_t *in, uint8_t *out)
{
    (void)key; (void)in;
    memset(out, 0, 16);
}
static inline void pes_aes128_decrypt(const pes_aes128_key *key, const uint8_t *in, uint8_t *out)
{
    (void)key; (void)in;
    memset(out, 0, 16);
}

#endif
#endif /* PESIGITG_AESNI_H */
