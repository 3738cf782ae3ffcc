/* The few BPF definitions the program needs, so building it takes only clang and
 * the kernel UAPI headers (no libbpf at build or run time). Helper numbers are
 * from enum bpf_func_id in linux/bpf.h. */
#ifndef PESIGITG_BPF_DEFS_H
#define PESIGITG_BPF_DEFS_H

#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))
/* linux/stddef.h defines it as plain inline; everything here must inline so the
 * object is one program with no BPF-to-BPF calls. */
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

/* BTF-style map definitions: the loader reads these member types back from BTF. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* For the other BPF programs (benchmarks, tests); the steering program reads octets. */
#define bpf_htons(x) __builtin_bswap16(x)

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

#endif /* PESIGITG_BPF_DEFS_H */
