// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Relocation test: map fds and global data (.data, .rodata, .bss) at non-zero offsets.
 * Returns values[2] + data_b + ro_c + bss_d, so every relocation shows in retval. */
#include "bpf_defs.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 4);
} values SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 8);
} extra SEC(".maps");

__u64 data_a = 7;
__u64 data_b = 100;
const volatile __u64 ro_a = 1;
const volatile __u64 ro_c = 1000;
__u64 bss_a;
__u64 bss_d;

SEC("xdp")
int relocs(struct xdp_md *ctx)
{
    __u32 key = 2;
    __u64 *value = bpf_map_lookup_elem(&values, &key);
    __u64 *bonus = bpf_map_lookup_elem(&extra, &key);
    __u64 sum = data_b + ro_c + bss_d;

    if (value)
        sum += *value;
    if (bonus)
        sum += *bonus;
    return (int)sum;
}
