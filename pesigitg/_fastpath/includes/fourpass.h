/* Four-pass Feistel decryption (draft-ietf-quic-load-balancers-21 §5.5) in SSE registers.
 *
 * Each half lives zero-padded in a 128-bit register, so the round input
 * expand(L, pass, half) = half || zeros || L || pass is one OR with a constant, the
 * truncation to the half length and the odd-length nibble clearing are ANDs, and
 * the whole round inlines with the AES rounds. pesigitg.quiclb is the reference.
 */
#ifndef PESIGITG_FOURPASS_H
#define PESIGITG_FOURPASS_H

#include <stdint.h>
#include <string.h>
#include "aesni.h"

#if defined(__x86_64__) || defined(__i386__)

static inline PES_AES_TARGET __m128i pes_aes_encrypt_vec(const pes_aes128_key *key, __m128i b)
{
    b = _mm_xor_si128(b, _mm_loadu_si128((const __m128i *)key->enc[0]));
    for (int i = 1; i < PES_AES_ROUNDS; i++)
        b = _mm_aesenc_si128(b, _mm_loadu_si128((const __m128i *)key->enc[i]));
    return _mm_aesenclast_si128(b, _mm_loadu_si128((const __m128i *)key->enc[PES_AES_ROUNDS]));
}

/* Octets 14 and 15 of the round input: the plaintext length and the pass number. */
static inline PES_AES_TARGET __m128i pes_expand_const(int length, int pass)
{
    return _mm_set_epi8((char)pass, (char)length, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

/* Decrypt the 1 + length octets after the first CID octet and write the server ID.
 * When sid_len <= nonce_len the server ID is complete after three rounds. */
static PES_AES_TARGET void pes_four_pass_decrypt(const pes_aes128_key *key, const uint8_t *block,
                                                 int length, int sid_len, int nonce_len,
                                                 uint8_t *sid_out)
{
    int half = (length + 1) >> 1;
    int odd = length & 1;
    uint8_t buf[32] = {0};
    uint8_t mask[16] = {0};
    __m128i left, right, keep, lmask, rmask;

    memcpy(buf, block, half);
    memcpy(buf + 16, block + length - half, half);
    memset(mask, 0xff, half);
    keep = _mm_loadu_si128((const __m128i *)mask);
    lmask = keep;
    rmask = keep;
    if (odd) {
        /* The shared middle octet: high nibble left, low nibble right. */
        mask[half - 1] = 0xf0;
        lmask = _mm_loadu_si128((const __m128i *)mask);
        mask[half - 1] = 0xff;
        mask[0] = 0x0f;
        rmask = _mm_loadu_si128((const __m128i *)mask);
    }
    left = _mm_and_si128(_mm_loadu_si128((const __m128i *)buf), lmask);
    right = _mm_and_si128(_mm_loadu_si128((const __m128i *)(buf + 16)), rmask);

#define PES_ROUND(dst, src, pass, m)                                                    \
    dst = _mm_and_si128(_mm_xor_si128(dst, pes_aes_encrypt_vec(key,                     \
              _mm_or_si128(src, pes_expand_const(length, pass)))), m)

    PES_ROUND(left, right, 4, lmask);
    PES_ROUND(right, left, 3, rmask);
    PES_ROUND(left, right, 2, lmask);
    _mm_storeu_si128((__m128i *)buf, left);
    if (sid_len <= nonce_len) {
        memcpy(sid_out, buf, sid_len);
        return;
    }
    PES_ROUND(right, left, 1, rmask);
#undef PES_ROUND
    _mm_storeu_si128((__m128i *)(buf + 16), right);
    if (odd) {
        buf[half - 1] |= buf[16];
        memmove(buf + half, buf + 17, half - 1);
    } else {
        memmove(buf + half, buf + 16, half);
    }
    memcpy(sid_out, buf, sid_len);
}

#else

static inline void pes_four_pass_decrypt(const pes_aes128_key *key, const uint8_t *block,
                                         int length, int sid_len, int nonce_len,
                                         uint8_t *sid_out)
{
    (void)key; (void)block; (void)length; (void)nonce_len;
    memset(sid_out, 0, sid_len);
}

#endif
#endif /* PESIGITG_FOURPASS_H */
