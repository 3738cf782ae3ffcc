// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* pesigitg XDP program: steer QUIC (UDP to the configured ports) into AF_XDP.
 *
 * Frames are read by the shared parser (include/pesigitg_parse.h), the same code the
 * worker runs. A UDP datagram to a steered port (and a listed VIP when the filter is
 * on) goes to the AF_XDP socket of its RX queue; ICMP errors quoting a datagram we sent
 * from a steered port go there too, so the worker can route them to the backend. UDP
 * fragments to a listed VIP are dropped (QUIC sets DF; see the README), every other
 * fragment passes, whole. Anything else, including every malformed or truncated frame,
 * is XDP_PASS: the kernel is the better judge of what does not concern us. Never
 * XDP_ABORTED. Every verdict bumps one per-CPU counter with its reason.
 *
 * The kernel tier (tier_forward) decides some steered datagrams here instead: those
 * whose connection ID names a server in a config it decodes (plaintext) go straight
 * back out to that server (XDP_TX), as the worker would send them.
 */
#include "bpf_defs.h"
#include "pesigitg_abi.h"
#include "pesigitg_parse.h"

/* 1: the crypto build (keyed configs in the kernel tier; bpf/Makefile). */
#ifndef PES_TIER_CRYPTO
#define PES_TIER_CRYPTO 0
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u16);
    __type(value, __u8);
    __uint(max_entries, PES_MAX_PORTS);
} PES_MAP_PORTS SEC(".maps");

/* The VIP filter (used only when settings.vip_filter is set), network byte order. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, __u8);
    __uint(max_entries, PES_MAX_VIPS);
} PES_MAP_VIPS4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct pes_ipv6_key);
    __type(value, __u8);
    __uint(max_entries, PES_MAX_VIPS);
} PES_MAP_VIPS6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, PES_XSK_SLOTS);
} PES_MAP_XSKS SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, PES_XDP_REASONS);
} PES_MAP_COUNTERS SEC(".maps");

/* The kernel tier (see tier_forward): two generations of its table, its servers, and
 * what it forwarded per backend slot (then per config id). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct pes_tier_table);
    __uint(max_entries, 2);
} PES_MAP_TIER SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct pes_tier_server);
    __uint(max_entries, PES_TIER_SERVERS);
} PES_MAP_TIER_SERVERS SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, PES_CID_CONFIGS * PES_TIER_COUNT_STRIDE);
} PES_MAP_TIER_COUNTS SEC(".maps");

#if PES_TIER_CRYPTO
/* Keyed configs in the kernel tier (the crypto variant of this object, built with a
 * clang that emits BTF type tags): one ecb(aes) context per generation and config id,
 * made from the key by the syscall program tier_key (the key itself is in no map), and
 * a per-CPU block the decrypt writes into (the kfunc wants map memory). */
#include "bpf_crypto.h"

struct pes_tier_key {
    struct bpf_crypto_ctx __kptr *ctx;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct pes_tier_key);
    __uint(max_entries, 2 * PES_CID_CONFIGS);
} PES_MAP_TIER_KEYS SEC(".maps");

struct pes_tier_block {
    __u8 octets[16];
    __u8 input[16];         /* a four-pass round's AES input */
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct pes_tier_block);
    __uint(max_entries, 1);
} PES_MAP_TIER_SCRATCH SEC(".maps");

/* tier_key's argument: put a context for key into slot index (generation * 7 + config
 * id), or empty the slot (clear); err is what bpf_crypto_ctx_create said. */
struct pes_tier_key_args {
    __u8 key[16];
    __u32 index;
    __u32 clear;
    __s32 err;
};

SEC("syscall")
int tier_key(struct pes_tier_key_args *args)
{
    struct bpf_crypto_params params = {.type = "skcipher", .algo = "ecb(aes)", .key_len = 16};
    struct bpf_crypto_ctx *c = 0;
    struct pes_tier_key *slot;
    __u32 index = args->index;
    int err = 0;

    slot = bpf_map_lookup_elem(&PES_MAP_TIER_KEYS, &index);
    if (!slot) {
        args->err = -2;     /* -ENOENT */
        return 0;
    }
    if (!args->clear) {
        __builtin_memcpy(params.key, args->key, 16);
        c = bpf_crypto_ctx_create(&params, sizeof(params), &err);
        __builtin_memset(params.key, 0, 16);
        if (!c) {
            args->err = err ? err : -22;
            return 0;
        }
    }
    c = bpf_kptr_xchg(&slot->ctx, c);
    if (c)
        bpf_crypto_ctx_release(c);
    args->err = 0;
    return 0;
}

/* The words tier_forward compares, from a decrypted server ID: the config id, then
 * the plaintext's first 15 octets. */
static __always_inline void tier_words(const __u8 *plain, __u32 config_id, __u64 *lo,
                                       __u64 *hi)
{
    __u64 w0, w1;

    __builtin_memcpy(&w0, plain, 8);
    __builtin_memcpy(&w1, plain + 8, 8);
    *lo = (w0 << 8) | config_id;
    *hi = (w0 >> 56) | (w1 << 8);
}

/* The server ID of a single-pass CID whose encrypted block is at block_off: decrypted
 * with the generation's context for the config, as the words tier_forward compares
 * (config id, then the plaintext). 1 when done. */
static __always_inline int tier_decrypt(struct xdp_md *ctx, __u32 index, __u32 block_off,
                                        __u32 config_id, __u64 *lo, __u64 *hi)
{
    struct pes_tier_key *key = bpf_map_lookup_elem(&PES_MAP_TIER_KEYS, &index);
    __u32 zero = 0;
    struct pes_tier_block *out = bpf_map_lookup_elem(&PES_MAP_TIER_SCRATCH, &zero);
    struct bpf_crypto_ctx *c;
    struct bpf_dynptr src, dst;

    if (!key || !out)
        return 0;
    c = key->ctx;
    if (!c)
        return 0;
    if (bpf_dynptr_from_xdp(ctx, 0, &src) || bpf_dynptr_adjust(&src, block_off, block_off + 16))
        return 0;
    if (bpf_dynptr_from_mem(out->octets, 16, 0, &dst) || bpf_crypto_decrypt(c, &src, &dst, 0))
        return 0;
    tier_words(out->octets, config_id, lo, hi);
    return 1;
}

/* One four-pass round (draft §5.5): dst ^= AES(src || zeros || length || pass),
 * truncated by mask m; the halves and masks as two little-endian words each. */
static __always_inline int tier_round(struct bpf_crypto_ctx *c, struct pes_tier_block *s,
                                      __u64 *d0, __u64 *d1, __u64 s0, __u64 s1, __u32 length,
                                      __u32 pass, __u64 m0, __u64 m1)
{
    struct bpf_dynptr src, dst;
    __u64 in1 = s1 | ((__u64)length << 48) | ((__u64)pass << 56), o0, o1;

    __builtin_memcpy(s->input, &s0, 8);
    __builtin_memcpy(s->input + 8, &in1, 8);
    if (bpf_dynptr_from_mem(s->input, 16, 0, &src) ||
        bpf_dynptr_from_mem(s->octets, 16, 0, &dst) || bpf_crypto_encrypt(c, &src, &dst, 0))
        return 0;
    __builtin_memcpy(&o0, s->octets, 8);
    __builtin_memcpy(&o1, s->octets + 8, 8);
    *d0 = (*d0 ^ o0) & m0;
    *d1 = (*d1 ^ o1) & m1;
    return 1;
}

/* The first n octets of a 16-octet value kept (n <= 16), as two words. */
static __always_inline void tier_keep(__u32 n, __u64 *m0, __u64 *m1)
{
    *m0 = n >= 8 ? ~0ULL : (1ULL << (8 * n)) - 1;
    *m1 = n <= 8 ? 0 : n >= 16 ? ~0ULL : (1ULL << (8 * (n - 8))) - 1;
}

/* The server ID of a four-pass CID (its length octets after the first at block): three
 * rounds when it lies in the left half, four otherwise, as the workers do
 * (includes/fourpass.h); as the words tier_forward compares. 1 when done. */
static __always_inline int tier_four_pass(__u32 index, const __u8 *block, const __u8 *end,
                                          __u32 length, __u32 sid_len, __u32 config_id,
                                          __u64 *lo, __u64 *hi)
{
    struct pes_tier_key *key = bpf_map_lookup_elem(&PES_MAP_TIER_KEYS, &index);
    __u32 zero = 0, half = (length + 1) >> 1, odd = length & 1;
    struct pes_tier_block *s = bpf_map_lookup_elem(&PES_MAP_TIER_SCRATCH, &zero);
    struct bpf_crypto_ctx *c;
    __u8 raw[32] = {}, sid[32] = {};
    __u64 l0, l1, r0, r1, lm0, lm1, rm0, rm1;
    __u32 roff;

    if (!key || !s || length > PES_PLAINTEXT_MAX || length < 2)
        return 0;
    c = key->ctx;
    if (!c || block + PES_PLAINTEXT_MAX > end)
        return 0;
    /* Word operations, no loops: fewer paths for the verifier. The halves, zero padded:
     * left from the first octet, right from octet length - half. */
    __builtin_memcpy(raw, block, PES_PLAINTEXT_MAX);
    roff = (length - half) & 15;
    __builtin_memcpy(&l0, raw, 8);
    __builtin_memcpy(&l1, raw + 8, 8);
    __builtin_memcpy(&r0, raw + roff, 8);
    __builtin_memcpy(&r1, raw + roff + 8, 8);
    tier_keep(half, &lm0, &lm1);
    rm0 = lm0;
    rm1 = lm1;
    if (odd) {
        /* The shared middle octet: its high nibble is the left's, its low the right's. */
        __u32 bit = 8 * (half - 1);

        if (bit < 64)
            lm0 &= ~(0x0FULL << bit);
        else
            lm1 &= ~(0x0FULL << ((bit - 64) & 63));
        rm0 &= ~0xF0ULL;
    }
    l0 &= lm0;
    l1 &= lm1;
    r0 &= rm0;
    r1 &= rm1;
    if (!tier_round(c, s, &l0, &l1, r0, r1, length, 4, lm0, lm1) ||
        !tier_round(c, s, &r0, &r1, l0, l1, length, 3, rm0, rm1) ||
        !tier_round(c, s, &l0, &l1, r0, r1, length, 2, lm0, lm1))
        return 0;
    __builtin_memcpy(sid, &l0, 8);
    __builtin_memcpy(sid + 8, &l1, 8);
    if (sid_len > length - sid_len) {       /* the server ID reaches the right half */
        if (!tier_round(c, s, &r0, &r1, l0, l1, length, 1, rm0, rm1))
            return 0;
        if (odd) {
            /* Its first octet's low nibble completes the shared octet; the rest
             * follows the left half. */
            sid[(half - 1) & 31] |= (__u8)r0;
            r0 = (r0 >> 8) | (r1 << 56);
            r1 >>= 8;
        }
        __builtin_memcpy(sid + (half & 15), &r0, 8);
        __builtin_memcpy(sid + (half & 15) + 8, &r1, 8);
    }
    tier_words(sid, config_id, lo, hi);
    return 1;
}
#endif

struct pes_xdp_settings PES_SETTINGS_VAR;

/* Which build this is (bpf/Makefile BUILD_TAG): two builds that differ only here are
 * two objects, as an upgrade would install. */
#ifndef PES_BUILD_TAG
#define PES_BUILD_TAG 0
#endif
const volatile __u32 pes_build_tag = PES_BUILD_TAG;

/* Forces the reason enum into BTF so user space can read the counter names. */
enum pes_xdp_reason pes_xdp_reason_names;

static __always_inline int count(int reason, int action)
{
    __u32 key = reason;
    __u64 *value = bpf_map_lookup_elem(&PES_MAP_COUNTERS, &key);

    if (value)
        *value += 1;
    return action;
}

static __always_inline int steer(struct xdp_md *ctx, int reason)
{
    __u32 queue = ctx->rx_queue_index;

    /* No socket on this queue: drop and count, never hand QUIC to the kernel. */
    if (!bpf_map_lookup_elem(&PES_MAP_XSKS, &queue))
        return count(PES_XDP_DROP_NO_SOCKET, XDP_DROP);
    count(reason, XDP_PASS);
    return bpf_redirect_map(&PES_MAP_XSKS, queue, XDP_DROP);
}

static __always_inline int port_steered(__u16 port)
{
    return bpf_map_lookup_elem(&PES_MAP_PORTS, &port) != 0;
}

static __always_inline int vip_in_map(int family, const __u8 *addr)
{
    if (family == 4) {
        __u32 key;

        __builtin_memcpy(&key, addr, 4);
        return bpf_map_lookup_elem(&PES_MAP_VIPS4, &key) != 0;
    }
    struct pes_ipv6_key key6;

    __builtin_memcpy(key6.addr, addr, 16);
    return bpf_map_lookup_elem(&PES_MAP_VIPS6, &key6) != 0;
}

static __always_inline int vip_listed(int family, const __u8 *addr)
{
    return !PES_SETTINGS_VAR.vip_filter || vip_in_map(family, addr);
}

static __always_inline void tier_count(__u32 key)
{
    __u64 *value = bpf_map_lookup_elem(&PES_MAP_TIER_COUNTS, &key);

    if (value)
        *value += 1;
}

/* Where a UDP header may start: any frame XDP sees fits in a page. */
#define PES_TIER_MAX_L4 0xFFF

/* QUIC versions whose long-header types the kernel tier knows (RFC 9000, RFC 9369). */
#define PES_QUIC_V1 0x00000001
#define PES_QUIC_V2 0x6b3343cf

/* Whether a long header is a 0-RTT or Handshake packet: no Initial (the Retry offload
 * and the fallback are the workers'), no Retry, no unknown version. */
static __always_inline int tier_long_type(__u32 version, __u8 first)
{
    __u8 type = (first >> 4) & 3;

    if (version == PES_QUIC_V1)
        return type == 1 || type == 2;
    if (version == PES_QUIC_V2)
        return type == 2 || type == 3;
    return 0;
}

/* The kernel tier: a steered QUIC datagram whose DCID names, in a config the tier
 * decodes, a server that can take it is rewritten as the worker would (destination:
 * the server's MAC, source: ours) and sent back out. 1 when it did; 0 leaves the frame
 * to the worker, which decides everything else. It forwards only what the worker would
 * forward to the same MAC: a short header of at least PES_SHORT_HEADER_MIN octets, or
 * a whole 0-RTT or Handshake long header, the DCID at least the config's CID length,
 * its server in the table the supervisor compiled with the workers'. */
/* Whether the payload at p holds n octets, as the worker counts them: the UDP length
 * says len, the frame may hold fewer (the worker takes the smaller). Compared, never
 * subtracted: a program may not subtract packet pointers without CAP_PERFMON. n is a
 * header's or a CID's length (the verifier wants every offset bounded). */
static __always_inline int holds(const __u8 *p, const __u8 *end, __u32 len, __u32 n)
{
    return len >= n && n <= 0xFF && p + n <= end;
}

static __always_inline int tier_forward(struct xdp_md *ctx, const struct pes_pkt *pkt)
{
    __u32 generation = PES_SETTINGS_VAR.tier_generation & 1;
    struct pes_tier_table *t = bpf_map_lookup_elem(&PES_MAP_TIER, &generation);
    __u8 *data = (void *)(long)ctx->data;
    const __u8 *end = (void *)(long)ctx->data_end;
    __u32 off = pkt->l4, len, avail, cid_off;
    const __u8 *udp, *p, *cid;

    if (!t || !t->on || off > PES_TIER_MAX_L4)
        return 0;
    udp = data + off;
    if (udp + PES_UDP_HLEN > end || pes_be16(udp + 4) < PES_UDP_HLEN)
        return 0;
    len = pes_be16(udp + 4) - PES_UDP_HLEN;
    p = udp + PES_UDP_HLEN;
    if (!holds(p, end, len, 1))
        return 0;
    if (p[0] & PES_QUIC_LONG_FORM) {
        struct pes_cursor c;
        struct pes_long_header lh;

        pes_cursor_init(&c, p, end);
        if (pes_pull_long_header(&c, &lh) == PES_LONG_CUT || lh.dcid + lh.dcid_len > len)
            return 0;
        if (!tier_long_type(lh.version, lh.first) || lh.dcid_len == 0 ||
            lh.dcid_len > PES_CID_MAX_LEN)
            return 0;
        cid = p + 6;
        cid_off = off + PES_UDP_HLEN + 6;
        avail = lh.dcid_len;
    } else {
        if (!holds(p, end, len, PES_SHORT_HEADER_MIN))
            return 0;
        cid = p + 1;
        cid_off = off + PES_UDP_HLEN + 1;
        avail = len - 1;
    }
    if (cid + 1 + PES_SERVER_ID_MAX > end)
        return 0;

    __u32 config_id = cid[0] >> 5;

    if (config_id >= PES_CID_CONFIGS)
        return 0;
    struct pes_tier_config conf = t->configs[config_id];

    if (!holds(cid, end, avail, conf.cid_len))
        return 0;
    /* What the server's entry starts with: config id, server ID zero padded, as two
     * little-endian words: the CID's first 16 octets, its first replaced by the config
     * id, the nonce and what follows cut off. */
    __u64 lo, hi;
    __u32 kept = 1 + conf.server_id_len;    /* 2..16 octets */

    if (conf.mode == PES_CID_PLAINTEXT) {
        __builtin_memcpy(&lo, cid, 8);
        __builtin_memcpy(&hi, cid + 8, 8);
        lo = (lo & ~0xFFULL) | config_id;
#if PES_TIER_CRYPTO
    } else if (conf.mode == PES_CID_SINGLE_PASS) {
        if (!tier_decrypt(ctx, generation * PES_CID_CONFIGS + config_id, cid_off + 1,
                          config_id, &lo, &hi))
            return 0;
    } else if (conf.mode == PES_CID_FOUR_PASS) {
        if (!tier_four_pass(generation * PES_CID_CONFIGS + config_id, cid + 1, end,
                            conf.cid_len - 1, conf.server_id_len, config_id, &lo, &hi))
            return 0;
#endif
    } else {
        return 0;
    }
    (void)cid_off;          /* the keyed variant reads it */
    if (kept < 8)
        lo &= (1ULL << (8 * kept)) - 1;
    hi = kept <= 8 ? 0 : kept >= 16 ? hi : hi & ((1ULL << (8 * (kept - 8))) - 1);
    __u32 bits = t->bucket_bits;

    if (bits < 4 || bits > PES_TIER_BUCKET_BITS_MAX)
        return 0;
    __u32 base = generation * (PES_TIER_SERVERS / 2) +
                 pes_tier_bucket(lo, hi, t->seed, bits) * PES_TIER_BUCKET_SLOTS;
    struct pes_tier_server *server = 0;

#pragma unroll
    for (int j = 0; j < PES_TIER_BUCKET_SLOTS; j++) {
        __u32 index = base + j;
        struct pes_tier_server *entry = bpf_map_lookup_elem(&PES_MAP_TIER_SERVERS, &index);
        __u64 elo, ehi;

        if (!entry)
            break;
        __builtin_memcpy(&elo, entry, 8);
        __builtin_memcpy(&ehi, (__u8 *)entry + 8, 8);
        if (elo == lo && ehi == hi) {
            server = entry;
            break;
        }
    }
    if (!server || data + 12 > end)
        return 0;
    __builtin_memcpy(data, server->mac, 6);
    __builtin_memcpy(data + 6, t->if_mac, 6);
    /* One count a frame: per config id and backend slot (the slot past the last for a
     * backend without one); the supervisor sums them. */
    tier_count(config_id * PES_TIER_COUNT_STRIDE +
               (server->slot < PES_BACKEND_SLOTS ? server->slot : PES_BACKEND_SLOTS));
    return 1;
}

SEC("xdp")
int pesigitg_xdp(struct xdp_md *ctx)
{
    struct pes_cursor c;
    struct pes_pkt pkt = {};
    int outcome;

    pes_cursor_init(&c, (void *)(long)ctx->data, (void *)(long)ctx->data_end);
    outcome = pes_parse_frame(&c, &pkt);
    switch (outcome) {
    case PES_PARSE_UDP:
        if (!port_steered(pkt.flow.dport))
            return count(PES_XDP_PASS_PORT, XDP_PASS);
        if (!vip_listed(pkt.family, pkt.flow.daddr))
            return count(PES_XDP_PASS_VIP, XDP_PASS);
        if (tier_forward(ctx, &pkt))
            return count(PES_XDP_TX_CID, XDP_TX);
        return steer(ctx, PES_XDP_REDIRECT_UDP);
    case PES_PARSE_ICMP_ERROR:
        /* Ours went out from VIP:steered-port: match the quoted source. */
        if (!port_steered(pkt.quoted.sport) || !vip_listed(pkt.family, pkt.quoted.saddr))
            return count(PES_XDP_PASS_ICMP, XDP_PASS);
        return steer(ctx, PES_XDP_REDIRECT_ICMP);
    case PES_PARSE_FRAGMENT:
        /* Only the destination identifies a non-first fragment: with the filter on,
         * every UDP fragment to a VIP goes one way (dropped); else all pass. */
        if (pkt.proto == PES_PROTO_UDP && PES_SETTINGS_VAR.vip_filter &&
            vip_in_map(pkt.family, pkt.flow.daddr))
            return count(PES_XDP_DROP_FRAGMENT, XDP_DROP);
        return count(PES_XDP_PASS_FRAGMENT, XDP_PASS);
    }
    return count(pes_parse_xdp_verdict(outcome), XDP_PASS);
}
