/* Keyed QUIC-LB decode over a batch: the AES of many connection IDs interleaved.
 *
 * An AES round instruction takes several cycles to give its result, and the core can
 * start another one every cycle or two. One CID at a time waits out that latency; the
 * CIDs of a batch are independent, so their blocks go through the rounds together:
 * 8 in flight in SSE registers with AES-NI, or 16 as four ZMM registers of 4 blocks
 * each with VAES (AVX-512). Four-pass runs each Feistel round across the CIDs; the
 * three-round shortcut (server ID no longer than the nonce) is kept by decoding those
 * CIDs in groups of their own. Every lane may have its own key; when every CID has
 * one config (the usual case) its keys and masks are set up once for the whole batch
 * and the groups are loaded straight from the jobs (the *_one_config kernels).
 *
 * The path is chosen at run time (pes_cid_best_path, from CPUID) and can be forced;
 * the scalar path (aesni.h, fourpass.h: one CID at a time) decodes a lone CID, and
 * every CID when it is forced. A short group is padded by repeating its last CID.
 * Constant time: no branch and no table lookup depends on a key or on CID octets;
 * lengths and modes come from the config, which the CID's clear first octet names.
 */
#ifndef PESIGITG_CIDBATCH_H
#define PESIGITG_CIDBATCH_H

#include <stdint.h>
#include <string.h>
#include "cidtable.h"
#include "fourpass.h"

enum pes_aes_path {
    PES_AES_SCALAR = 0, /* one CID at a time */
    PES_AES_AESNI = 1,  /* 8 CIDs interleaved in SSE registers */
    PES_AES_VAES = 2,   /* 16 CIDs, 4 per ZMM register (AVX-512 VAES) */
};

/* One keyed CID of a batch. The caller sets conf and loads block (pes_cid_job_load),
 * and keeps its own bookkeeping in the fields marked so, which the decode leaves. */
typedef struct {
    uint8_t block[32];          /* the CID's octets after the first (pes_cid_job_load) */
    uint8_t sid[16];            /* out: the server ID, left-aligned */
    const pes_cid_config *conf; /* single-pass or four-pass */
    const uint8_t *cid;         /* the caller's */
    uint32_t frame;             /* the caller's */
    uint16_t avail;             /* the caller's */
    uint8_t kind;               /* the caller's */
    int8_t config_id;           /* the caller's */
} pes_cid_job;

/* The job's block from a CID with `readable` octets at it (at least conf->cid_len),
 * copied while the packet is in the cache: the AES reads it after the whole batch has
 * been parsed, and 16-octet loads of a copy need no bounds. Octets of the block past
 * the CID are left as they are (the decode masks them off). */
static inline void pes_cid_job_load(pes_cid_job *job, const uint8_t *cid, size_t readable)
{
    const uint8_t *in = cid + 1;
    size_t n = job->conf->cid_len - 1u;     /* 5..19 */
    if (readable > sizeof(job->block)) {
        memcpy(job->block, in, sizeof(job->block));
    } else if (n >= 16) {                   /* two copies that overlap, of fixed sizes */
        memcpy(job->block, in, 16);
        memcpy(job->block + n - 16, in + n - 16, 16);
    } else if (n >= 8) {
        memcpy(job->block, in, 8);
        memcpy(job->block + n - 8, in + n - 8, 8);
    } else {
        memcpy(job->block, in, 4);
        memcpy(job->block + n - 4, in + n - 4, 4);
    }
}

/* A server ID (1..15 octets) out of a job: fixed-size copies that overlap, where a
 * copy of a variable size would be a loop or a call. */
static inline void pes_sid_copy(uint8_t *dst, const uint8_t *sid, size_t n)
{
    if (n >= 8) {
        memcpy(dst, sid, 8);
        memcpy(dst + n - 8, sid + n - 8, 8);
    } else if (n >= 4) {
        memcpy(dst, sid, 4);
        memcpy(dst + n - 4, sid + n - 4, 4);
    } else {
        dst[0] = sid[0];
        dst[n - 1] = sid[n - 1];
        dst[n >> 1] = sid[n >> 1];
    }
}

#define PES_AES_LANES 8        /* AES-NI group */
#define PES_VAES_LANES 16      /* VAES group: 4 registers of 4 blocks */
#define PES_CID_BATCH_MAX 256  /* sorted by kind in one pass; more are split */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define PES_BATCH_TARGET __attribute__((target("aes,sse4.1,ssse3")))
#define PES_VAES_TARGET __attribute__((target("aes,sse4.1,ssse3,avx2,avx512f,avx512bw,vaes")))
#define PES_UNROLL _Pragma("GCC unroll 16")

/* The VAES path: also the AVX-512 hash of a batch's 4-tuples (tuplebatch.h), whose
 * instructions (DQ, VBMI) every CPU with AVX-512 VAES has as well. */
static inline int pes_vaes_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vbmi");
}

static inline int pes_cid_best_path(void)
{
    if (!pes_aesni_supported())
        return PES_AES_SCALAR;
    return pes_vaes_supported() ? PES_AES_VAES : PES_AES_AESNI;
}

/* -- four-pass lane set-up, shared by both vector paths ---------------------------- */

typedef struct {
    __m128i left, right; /* the halves, zero-padded (§5.5) */
    __m128i lmask, rmask; /* their octets; the shared nibble of an odd length split */
    __m128i lenc;        /* octet 14 of every round input: the plaintext length */
    __m128i shift;       /* pshufb indexes placing the right half after the left */
} pes_fp_lane;

/* The lane's constants, from its config alone. */
static inline PES_BATCH_TARGET void pes_fp_constants(const pes_cid_config *conf, pes_fp_lane *s)
{
    int length = conf->server_id_len + conf->nonce_len;
    int half = (length + 1) >> 1;
    __m128i iota = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m128i odd = _mm_set1_epi8((char)-(length & 1));
    __m128i keep = _mm_cmpgt_epi8(_mm_set1_epi8((char)half), iota);
    /* An odd length shares its middle octet: high nibble left, low nibble right. */
    __m128i last = _mm_and_si128(_mm_cmpeq_epi8(iota, _mm_set1_epi8((char)(half - 1))),
                                 _mm_and_si128(odd, _mm_set1_epi8(0x0f)));
    __m128i first = _mm_and_si128(_mm_cmpeq_epi8(iota, _mm_setzero_si128()),
                                  _mm_and_si128(odd, _mm_set1_epi8((char)0xf0)));
    s->lmask = _mm_andnot_si128(last, keep);
    s->rmask = _mm_andnot_si128(first, keep);
    s->lenc = _mm_slli_si128(_mm_cvtsi32_si128(length), 14);
    /* Index i - length/2: negative (high bit set) gives 0 below the right half. */
    s->shift = _mm_sub_epi8(iota, _mm_set1_epi8((char)(length >> 1)));
}

/* Where the right half starts in a job's block. */
static inline int pes_fp_right(const pes_cid_config *conf)
{
    int length = conf->server_id_len + conf->nonce_len;
    return length - ((length + 1) >> 1);
}

static inline PES_BATCH_TARGET void pes_fp_setup(const pes_cid_job *job, pes_fp_lane *s)
{
    pes_fp_constants(job->conf, s);
    s->left = _mm_and_si128(_mm_loadu_si128((const __m128i *)job->block), s->lmask);
    s->right = _mm_and_si128(
        _mm_loadu_si128((const __m128i *)(job->block + pes_fp_right(job->conf))), s->rmask);
}

/* The server ID: after three rounds the left half holds it; after four, both halves
 * joined (the right one shifted in after length/2 octets). */
static inline PES_BATCH_TARGET void pes_fp_finish(const pes_fp_lane *s, int rounds,
                                                  pes_cid_job *job)
{
    __m128i plain = s->left;
    if (rounds == 4)
        plain = _mm_or_si128(plain, _mm_shuffle_epi8(s->right, s->shift));
    _mm_storeu_si128((__m128i *)job->sid, plain);
}

static inline PES_BATCH_TARGET __m128i pes_pass_const(int pass)
{
    return _mm_slli_si128(_mm_cvtsi32_si128(pass), 15);
}

/* -- AES-NI: 8 lanes -------------------------------------------------------------- */

static inline __attribute__((always_inline)) PES_BATCH_TARGET void
pes_aesni_encrypt8(const pes_aes128_key *const *k, __m128i *b)
{
    PES_UNROLL
    for (int l = 0; l < PES_AES_LANES; l++)
        b[l] = _mm_xor_si128(b[l], _mm_loadu_si128((const __m128i *)k[l]->enc[0]));
    for (int r = 1; r < PES_AES_ROUNDS; r++) {
        PES_UNROLL
        for (int l = 0; l < PES_AES_LANES; l++)
            b[l] = _mm_aesenc_si128(b[l], _mm_loadu_si128((const __m128i *)k[l]->enc[r]));
    }
    PES_UNROLL
    for (int l = 0; l < PES_AES_LANES; l++)
        b[l] = _mm_aesenclast_si128(
            b[l], _mm_loadu_si128((const __m128i *)k[l]->enc[PES_AES_ROUNDS]));
}

static PES_BATCH_TARGET void pes_aesni_single_pass(pes_cid_job *const *job)
{
    const pes_aes128_key *k[PES_AES_LANES];
    __m128i b[PES_AES_LANES];
    PES_UNROLL
    for (int l = 0; l < PES_AES_LANES; l++) {
        k[l] = &job[l]->conf->key;
        b[l] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)job[l]->block),
                             _mm_loadu_si128((const __m128i *)k[l]->dec[0]));
    }
    for (int r = 1; r < PES_AES_ROUNDS; r++) {
        PES_UNROLL
        for (int l = 0; l < PES_AES_LANES; l++)
            b[l] = _mm_aesdec_si128(b[l], _mm_loadu_si128((const __m128i *)k[l]->dec[r]));
    }
    PES_UNROLL
    for (int l = 0; l < PES_AES_LANES; l++)
        _mm_storeu_si128((__m128i *)job[l]->sid, _mm_aesdeclast_si128(
            b[l], _mm_loadu_si128((const __m128i *)k[l]->dec[PES_AES_ROUNDS])));
}

static PES_BATCH_TARGET void pes_aesni_four_pass(pes_cid_job *const *job, int rounds)
{
    const pes_aes128_key *k[PES_AES_LANES];
    pes_fp_lane s[PES_AES_LANES];
    __m128i b[PES_AES_LANES];
    for (int l = 0; l < PES_AES_LANES; l++) {
        k[l] = &job[l]->conf->key;
        pes_fp_setup(job[l], &s[l]);
    }
    /* Passes 4, 3, 2 (and 1): left, right, left (, right) take the AES of the other. */
    for (int pass = 4; pass > 4 - rounds; pass--) {
        __m128i pc = pes_pass_const(pass);
        int to_left = pass & 1 ? 0 : 1;
        PES_UNROLL
        for (int l = 0; l < PES_AES_LANES; l++)
            b[l] = _mm_or_si128(_mm_or_si128(to_left ? s[l].right : s[l].left, s[l].lenc), pc);
        pes_aesni_encrypt8(k, b);
        PES_UNROLL
        for (int l = 0; l < PES_AES_LANES; l++) {
            if (to_left)
                s[l].left = _mm_and_si128(_mm_xor_si128(s[l].left, b[l]), s[l].lmask);
            else
                s[l].right = _mm_and_si128(_mm_xor_si128(s[l].right, b[l]), s[l].rmask);
        }
    }
    for (int l = 0; l < PES_AES_LANES; l++)
        pes_fp_finish(&s[l], rounds, job[l]);
}

/* As pes_vaes_four_pass_one_config, 8 CIDs at a time in SSE registers. */
static PES_BATCH_TARGET int pes_aesni_four_pass_one_config(pes_cid_job *jobs, int n, int rounds)
{
    const pes_cid_config *conf = jobs[0].conf;
    int off = pes_fp_right(conf);
    pes_fp_lane s;
    __m128i rk[PES_AES_ROUNDS + 1];
    int i;
    pes_fp_constants(conf, &s);
    for (int r = 0; r <= PES_AES_ROUNDS; r++)
        rk[r] = _mm_loadu_si128((const __m128i *)conf->key.enc[r]);
    for (i = 0; i + PES_AES_LANES <= n; i += PES_AES_LANES) {
        pes_cid_job *g = jobs + i;
        __m128i left[PES_AES_LANES], right[PES_AES_LANES], b[PES_AES_LANES];
        PES_UNROLL
        for (int l = 0; l < PES_AES_LANES; l++) {
            left[l] = _mm_and_si128(s.lmask, _mm_loadu_si128((const __m128i *)g[l].block));
            right[l] = _mm_and_si128(s.rmask,
                                     _mm_loadu_si128((const __m128i *)(g[l].block + off)));
        }
        for (int pass = 4; pass > 4 - rounds; pass--) {
            __m128i pc = _mm_or_si128(s.lenc, pes_pass_const(pass));
            int to_left = pass & 1 ? 0 : 1;
            PES_UNROLL
            for (int l = 0; l < PES_AES_LANES; l++)
                b[l] = _mm_xor_si128(_mm_or_si128(to_left ? right[l] : left[l], pc), rk[0]);
            for (int r = 1; r < PES_AES_ROUNDS; r++) {
                PES_UNROLL
                for (int l = 0; l < PES_AES_LANES; l++)
                    b[l] = _mm_aesenc_si128(b[l], rk[r]);
            }
            PES_UNROLL
            for (int l = 0; l < PES_AES_LANES; l++) {
                b[l] = _mm_aesenclast_si128(b[l], rk[PES_AES_ROUNDS]);
                if (to_left)
                    left[l] = _mm_and_si128(_mm_xor_si128(left[l], b[l]), s.lmask);
                else
                    right[l] = _mm_and_si128(_mm_xor_si128(right[l], b[l]), s.rmask);
            }
        }
        PES_UNROLL
        for (int l = 0; l < PES_AES_LANES; l++) {
            if (rounds == 4)
                left[l] = _mm_or_si128(left[l], _mm_shuffle_epi8(right[l], s.shift));
            _mm_storeu_si128((__m128i *)g[l].sid, left[l]);
        }
    }
    return i;
}

/* -- VAES: 16 lanes, 4 blocks per ZMM register ------------------------------------- */

#define PES_VREGS (PES_VAES_LANES / 4)

/* Four lanes' 128-bit values as one register. */
static inline __attribute__((always_inline)) PES_VAES_TARGET __m512i
pes_zmm4(__m128i a, __m128i b, __m128i c, __m128i d)
{
    __m512i z = _mm512_castsi128_si512(a);
    z = _mm512_inserti32x4(z, b, 1);
    z = _mm512_inserti32x4(z, c, 2);
    return _mm512_inserti32x4(z, d, 3);
}

#define PES_ZMM_LANES(v, expr_of_l)                                                     \
    pes_zmm4(({ int l = 4 * (v); expr_of_l; }), ({ int l = 4 * (v) + 1; expr_of_l; }),  \
             ({ int l = 4 * (v) + 2; expr_of_l; }), ({ int l = 4 * (v) + 3; expr_of_l; }))

/* Each register's round keys, its four lanes' keys side by side; returns how many
 * registers' keys differ: 1 when every lane has the same key (one config: the
 * config id is the CID's clear first octet), so each round key is broadcast once. */
static inline __attribute__((always_inline)) PES_VAES_TARGET int
pes_vaes_keys(const pes_aes128_key *const *k, int decrypt, __m512i rk[][PES_AES_ROUNDS + 1])
{
    int shared = 1;
    for (int l = 1; l < PES_VAES_LANES; l++)
        shared &= k[l] == k[0];
    if (shared) {
        for (int r = 0; r <= PES_AES_ROUNDS; r++)
            rk[0][r] = _mm512_broadcast_i32x4(_mm_loadu_si128(
                (const __m128i *)(decrypt ? k[0]->dec[r] : k[0]->enc[r])));
        return 1;
    }
    for (int v = 0; v < PES_VREGS; v++)
        for (int r = 0; r <= PES_AES_ROUNDS; r++)
            rk[v][r] = PES_ZMM_LANES(v, _mm_loadu_si128(
                (const __m128i *)(decrypt ? k[l]->dec[r] : k[l]->enc[r])));
    return PES_VREGS;
}

/* Register v's round keys: its own, or the shared ones. */
#define PES_RK(rk, keys, v) ((rk)[(keys) == 1 ? 0 : (v)])

static inline __attribute__((always_inline)) PES_VAES_TARGET void
pes_vaes_encrypt16(__m512i rk[][PES_AES_ROUNDS + 1], int keys, __m512i *b)
{
    PES_UNROLL
    for (int v = 0; v < PES_VREGS; v++)
        b[v] = _mm512_xor_si512(b[v], PES_RK(rk, keys, v)[0]);
    for (int r = 1; r < PES_AES_ROUNDS; r++) {
        PES_UNROLL
        for (int v = 0; v < PES_VREGS; v++)
            b[v] = _mm512_aesenc_epi128(b[v], PES_RK(rk, keys, v)[r]);
    }
    PES_UNROLL
    for (int v = 0; v < PES_VREGS; v++)
        b[v] = _mm512_aesenclast_epi128(b[v], PES_RK(rk, keys, v)[PES_AES_ROUNDS]);
}

/* Lane l's 128 bits of register group z. */
static inline __attribute__((always_inline)) PES_VAES_TARGET __m128i
pes_zmm_lane(const __m512i *z, int l)
{
    __m512i v = z[l >> 2];
    switch (l & 3) {
    case 0: return _mm512_castsi512_si128(v);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
    }
}

static PES_VAES_TARGET void pes_vaes_single_pass(pes_cid_job *const *job)
{
    const pes_aes128_key *k[PES_VAES_LANES];
    __m512i rk[PES_VREGS][PES_AES_ROUNDS + 1];
    __m512i b[PES_VREGS];
    int keys;
    for (int l = 0; l < PES_VAES_LANES; l++)
        k[l] = &job[l]->conf->key;
    keys = pes_vaes_keys(k, 1, rk);
    PES_UNROLL
    for (int v = 0; v < PES_VREGS; v++)
        b[v] = _mm512_xor_si512(PES_ZMM_LANES(v, _mm_loadu_si128(
            (const __m128i *)job[l]->block)), PES_RK(rk, keys, v)[0]);
    for (int r = 1; r < PES_AES_ROUNDS; r++) {
        PES_UNROLL
        for (int v = 0; v < PES_VREGS; v++)
            b[v] = _mm512_aesdec_epi128(b[v], PES_RK(rk, keys, v)[r]);
    }
    PES_UNROLL
    for (int v = 0; v < PES_VREGS; v++)
        b[v] = _mm512_aesdeclast_epi128(b[v], PES_RK(rk, keys, v)[PES_AES_ROUNDS]);
    PES_UNROLL
    for (int l = 0; l < PES_VAES_LANES; l++)
        _mm_storeu_si128((__m128i *)job[l]->sid, pes_zmm_lane(b, l));
}

/* The halves and constants of a group in registers, lane by lane (CIDs of one config
 * in whole groups take pes_vaes_four_pass_one_config instead). */
static inline __attribute__((always_inline)) PES_VAES_TARGET void
pes_vaes_fp_setup(pes_cid_job *const *job, __m512i left[], __m512i right[], __m512i c[][4])
{
    pes_fp_lane s[PES_VAES_LANES];
    for (int l = 0; l < PES_VAES_LANES; l++)
        pes_fp_setup(job[l], &s[l]);
    PES_UNROLL
    for (int v = 0; v < PES_VREGS; v++) {
        left[v] = PES_ZMM_LANES(v, s[l].left);
        right[v] = PES_ZMM_LANES(v, s[l].right);
        c[v][0] = PES_ZMM_LANES(v, s[l].lmask);
        c[v][1] = PES_ZMM_LANES(v, s[l].rmask);
        c[v][2] = PES_ZMM_LANES(v, s[l].lenc);
        c[v][3] = PES_ZMM_LANES(v, s[l].shift);
    }
}

static PES_VAES_TARGET void pes_vaes_four_pass(pes_cid_job *const *job, int rounds)
{
    const pes_aes128_key *k[PES_VAES_LANES];
    __m512i rk[PES_VREGS][PES_AES_ROUNDS + 1];
    __m512i left[PES_VREGS], right[PES_VREGS], c[PES_VREGS][4], b[PES_VREGS];
    int keys;
    for (int l = 0; l < PES_VAES_LANES; l++)
        k[l] = &job[l]->conf->key;
    keys = pes_vaes_keys(k, 0, rk);
    pes_vaes_fp_setup(job, left, right, c);
    /* As pes_aesni_four_pass; c[v]: lmask, rmask, lenc, shift. */
    for (int pass = 4; pass > 4 - rounds; pass--) {
        __m512i pc = _mm512_broadcast_i32x4(pes_pass_const(pass));
        int to_left = pass & 1 ? 0 : 1;
        PES_UNROLL
        for (int v = 0; v < PES_VREGS; v++)
            b[v] = _mm512_or_si512(_mm512_or_si512(to_left ? right[v] : left[v], c[v][2]), pc);
        pes_vaes_encrypt16(rk, keys, b);
        PES_UNROLL
        for (int v = 0; v < PES_VREGS; v++) {
            if (to_left)
                left[v] = _mm512_and_si512(_mm512_xor_si512(left[v], b[v]), c[v][0]);
            else
                right[v] = _mm512_and_si512(_mm512_xor_si512(right[v], b[v]), c[v][1]);
        }
    }
    if (rounds == 4) {
        PES_UNROLL
        for (int v = 0; v < PES_VREGS; v++)
            left[v] = _mm512_or_si512(left[v], _mm512_shuffle_epi8(right[v], c[v][3]));
    }
    PES_UNROLL
    for (int l = 0; l < PES_VAES_LANES; l++)
        _mm_storeu_si128((__m128i *)job[l]->sid, pes_zmm_lane(left, l));
}

/* Four-pass over jobs that all have one config (the common case: one config in use):
 * constants and round keys set up once, each group of 16 loaded straight from the
 * jobs array. Decodes whole groups only; returns how many jobs that was. */
static PES_VAES_TARGET int pes_vaes_four_pass_one_config(pes_cid_job *jobs, int n, int rounds)
{
    const pes_cid_config *conf = jobs[0].conf;
    int off = pes_fp_right(conf);
    pes_fp_lane s;
    __m512i rk[PES_AES_ROUNDS + 1], lmask, rmask, lenc, shift;
    int i;
    pes_fp_constants(conf, &s);
    lmask = _mm512_broadcast_i32x4(s.lmask);
    rmask = _mm512_broadcast_i32x4(s.rmask);
    lenc = _mm512_broadcast_i32x4(s.lenc);
    shift = _mm512_broadcast_i32x4(s.shift);
    for (int r = 0; r <= PES_AES_ROUNDS; r++)
        rk[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)conf->key.enc[r]));
    for (i = 0; i + PES_VAES_LANES <= n; i += PES_VAES_LANES) {
        pes_cid_job *g = jobs + i;
        __m512i left[PES_VREGS], right[PES_VREGS], b[PES_VREGS];
        PES_UNROLL
        for (int v = 0; v < PES_VREGS; v++) {
            left[v] = _mm512_and_si512(lmask, PES_ZMM_LANES(v, _mm_loadu_si128(
                (const __m128i *)g[l].block)));
            right[v] = _mm512_and_si512(rmask, PES_ZMM_LANES(v, _mm_loadu_si128(
                (const __m128i *)(g[l].block + off))));
        }
        for (int pass = 4; pass > 4 - rounds; pass--) {
            __m512i pc = _mm512_or_si512(lenc, _mm512_broadcast_i32x4(pes_pass_const(pass)));
            int to_left = pass & 1 ? 0 : 1;
            PES_UNROLL
            for (int v = 0; v < PES_VREGS; v++)
                b[v] = _mm512_xor_si512(_mm512_or_si512(to_left ? right[v] : left[v], pc),
                                        rk[0]);
            for (int r = 1; r < PES_AES_ROUNDS; r++) {
                PES_UNROLL
                for (int v = 0; v < PES_VREGS; v++)
                    b[v] = _mm512_aesenc_epi128(b[v], rk[r]);
            }
            PES_UNROLL
            for (int v = 0; v < PES_VREGS; v++) {
                b[v] = _mm512_aesenclast_epi128(b[v], rk[PES_AES_ROUNDS]);
                if (to_left)
                    left[v] = _mm512_and_si512(_mm512_xor_si512(left[v], b[v]), lmask);
                else
                    right[v] = _mm512_and_si512(_mm512_xor_si512(right[v], b[v]), rmask);
            }
        }
        if (rounds == 4) {
            PES_UNROLL
            for (int v = 0; v < PES_VREGS; v++)
                left[v] = _mm512_or_si512(left[v], _mm512_shuffle_epi8(right[v], shift));
        }
        PES_UNROLL
        for (int l = 0; l < PES_VAES_LANES; l++)
            _mm_storeu_si128((__m128i *)g[l].sid, pes_zmm_lane(left, l));
    }
    return i;
}

/* -- dispatch --------------------------------------------------------------------- */

static inline void pes_cid_scalar(pes_cid_job *job)
{
    const pes_cid_config *conf = job->conf;
    if (conf->mode == PES_CID_SINGLE_PASS) {
        pes_aes128_decrypt(&conf->key, job->block, job->sid);
        return;
    }
    pes_four_pass_decrypt(&conf->key, job->block, conf->server_id_len + conf->nonce_len,
                          conf->server_id_len, conf->nonce_len, job->sid);
}

/* One kind of work (0: single pass, 3 or 4: four-pass rounds) over n CIDs, in groups;
 * the last group padded by repeating its last CID, or scalar when it is one CID. */
static inline void pes_cid_groups(pes_cid_job **job, int n, int kind, int path)
{
    pes_cid_job *group[PES_VAES_LANES];
    int i = 0;
    while (n - i > 1 && path != PES_AES_SCALAR) {
        int lanes = path == PES_AES_VAES && n - i > PES_AES_LANES ? PES_VAES_LANES
                                                                   : PES_AES_LANES;
        for (int l = 0; l < lanes; l++)
            group[l] = job[i + l < n ? i + l : n - 1];
        if (lanes == PES_VAES_LANES) {
            if (kind == 0)
                pes_vaes_single_pass(group);
            else
                pes_vaes_four_pass(group, kind);
        } else if (kind == 0) {
            pes_aesni_single_pass(group);
        } else {
            pes_aesni_four_pass(group, kind);
        }
        i += lanes;
    }
    for (; i < n; i++)
        pes_cid_scalar(job[i]);
}

/* Decode n keyed CIDs (conf and block set by the caller) on the given path. */
static void pes_cid_decrypt_batch(pes_cid_job *jobs, int n, int path)
{
    pes_cid_job *single[PES_CID_BATCH_MAX], *three[PES_CID_BATCH_MAX],
                *four[PES_CID_BATCH_MAX];
    int n1 = 0, n3 = 0, n4 = 0;     /* counters in registers, not an array in memory */
    int one_config = 1, done = 0;
    for (; n > PES_CID_BATCH_MAX; n -= PES_CID_BATCH_MAX, jobs += PES_CID_BATCH_MAX)
        pes_cid_decrypt_batch(jobs, PES_CID_BATCH_MAX, path);
    for (int i = 0; i < n; i++) {
        const pes_cid_config *conf = jobs[i].conf;
        one_config &= conf == jobs[0].conf;
        if (conf->mode == PES_CID_SINGLE_PASS)
            single[n1++] = &jobs[i];
        else if (conf->server_id_len <= conf->nonce_len)
            three[n3++] = &jobs[i];
        else
            four[n4++] = &jobs[i];
    }
    /* One config (the common case): its constants and keys once, no pointers. */
    if (one_config && n1 == 0 && path == PES_AES_VAES && n >= PES_VAES_LANES)
        done = pes_vaes_four_pass_one_config(jobs, n, n3 ? 3 : 4);
    else if (one_config && n1 == 0 && path == PES_AES_AESNI && n >= PES_AES_LANES)
        done = pes_aesni_four_pass_one_config(jobs, n, n3 ? 3 : 4);
    if (n1)
        pes_cid_groups(single, n1, 0, path);
    if (n3 > done)
        pes_cid_groups(three + done, n3 - done, 3, path);
    if (n4 > done)
        pes_cid_groups(four + done, n4 - done, 4, path);
}

#else /* not x86: no AES-NI; keyed configs are refused at table build time */

static inline int pes_vaes_supported(void) { return 0; }
static inline int pes_cid_best_path(void) { return PES_AES_SCALAR; }
static inline void pes_cid_decrypt_batch(pes_cid_job *jobs, int n, int path)
{
    (void)path;
    for (int i = 0; i < n; i++)
        memset(jobs[i].sid, 0, sizeof(jobs[i].sid));
}

#endif
#endif /* PESIGITG_CIDBATCH_H */
