/* The kernel's crypto for BPF programs (kernel/bpf/crypto.c, Linux 6.10+) and the dynptr
 * kfuncs it takes, declared for the loader to relocate against the kernel's BTF
 * (pesigitg/ebpf/kernel_btf.py). A map value holding a context needs a clang that writes
 * BTF type tags (__kptr): clang-19. */
#ifndef PESIGITG_BPF_CRYPTO_H
#define PESIGITG_BPF_CRYPTO_H

#include "bpf_defs.h"

#define __ksym __attribute__((section(".ksyms")))
#define __kptr __attribute__((btf_type_tag("kptr")))

struct bpf_crypto_ctx {};       /* the kernel's, found by name (a kptr's target) */
struct bpf_crypto_params {
    char type[14];
    __u8 reserved[2];
    char algo[128];
    __u8 key[256];
    __u32 key_len;
    __u32 authsize;
};

extern struct bpf_crypto_ctx *bpf_crypto_ctx_create(const struct bpf_crypto_params *params,
                                                    __u32 params__sz, int *err) __ksym;
extern void bpf_crypto_ctx_release(struct bpf_crypto_ctx *ctx) __ksym;
extern int bpf_crypto_decrypt(struct bpf_crypto_ctx *ctx, const struct bpf_dynptr *src,
                              const struct bpf_dynptr *dst,
                              const struct bpf_dynptr *siv__nullable) __ksym;
extern int bpf_crypto_encrypt(struct bpf_crypto_ctx *ctx, const struct bpf_dynptr *src,
                              const struct bpf_dynptr *dst,
                              const struct bpf_dynptr *siv__nullable) __ksym;
extern int bpf_dynptr_from_xdp(struct xdp_md *x, __u64 flags,
                               struct bpf_dynptr *ptr__uninit) __ksym;
extern int bpf_dynptr_adjust(const struct bpf_dynptr *p, __u32 start, __u32 end) __ksym;
static long (*bpf_dynptr_from_mem)(void *data, __u32 size, __u64 flags,
                                   struct bpf_dynptr *ptr) = (void *)BPF_FUNC_dynptr_from_mem;
static void *(*bpf_kptr_xchg)(void *map_value, void *ptr) = (void *)BPF_FUNC_kptr_xchg;

#endif /* PESIGITG_BPF_CRYPTO_H */
