// SPDX-License-Identifier: GPL-2.0
/* The kernel's crypto for XDP, through our loader: a syscall program creates an
 * ecb(aes) context from a key (bpf_crypto_ctx_create, sleepable) and keeps it as a kptr
 * in a map; the XDP program decrypts the frame's first 16 octets with it
 * (bpf_crypto_decrypt over dynptrs) and writes the result at octets 16..31. Built with a
 * clang that emits BTF type tags (clang-19): the kptr field needs one. */
#include "bpf_crypto.h"

char LICENSE[] SEC("license") = "GPL";

struct holder {
    struct bpf_crypto_ctx __kptr *ctx;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct holder);
    __uint(max_entries, 1);
} ctxs SEC(".maps");

struct block {
    __u8 b[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct block);
    __uint(max_entries, 1);
} scratch SEC(".maps");

struct create_args {
    __u8 key[16];
    int err;
};

SEC("syscall")
int create(struct create_args *args)
{
    struct bpf_crypto_params params = {.type = "skcipher", .algo = "ecb(aes)", .key_len = 16};
    struct bpf_crypto_ctx *c;
    struct holder *h;
    __u32 k = 0;
    int err = 0;

    __builtin_memcpy(params.key, args->key, 16);
    c = bpf_crypto_ctx_create(&params, sizeof(params), &err);
    if (!c) {
        args->err = err ? err : -1;
        return 0;
    }
    h = bpf_map_lookup_elem(&ctxs, &k);
    if (!h) {
        bpf_crypto_ctx_release(c);
        args->err = -2;
        return 0;
    }
    c = bpf_kptr_xchg(&h->ctx, c);
    if (c)
        bpf_crypto_ctx_release(c);
    args->err = 0;
    return 0;
}

SEC("xdp")
int decrypt(struct xdp_md *ctx)
{
    struct bpf_dynptr src, dst;
    struct bpf_crypto_ctx *c;
    struct holder *h;
    struct block *buf;
    __u32 k = 0;
    __u8 *data = (void *)(long)ctx->data;
    __u8 *end = (void *)(long)ctx->data_end;

    h = bpf_map_lookup_elem(&ctxs, &k);
    buf = bpf_map_lookup_elem(&scratch, &k);
    if (!h || !buf)
        return XDP_ABORTED;
    c = h->ctx;
    if (!c)
        return XDP_PASS;
    bpf_dynptr_from_xdp(ctx, 0, &src);
    bpf_dynptr_adjust(&src, 0, 16);
    bpf_dynptr_from_mem(buf, 16, 0, &dst);
    if (bpf_crypto_decrypt(c, &src, &dst, 0))
        return XDP_DROP;
    if (data + 32 > end)
        return XDP_DROP;
    __builtin_memcpy(data + 16, buf->b, 16);
    return XDP_TX;
}
