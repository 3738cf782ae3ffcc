// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Benchmark traffic: a generator run with BPF_PROG_TEST_RUN in live-frames mode and
 * a sink that counts frames by destination MAC.
 *
 * gen: writes the next CID of the `cids` table into the frame at `cid_offset` (and,
 *      with `flow_count` set, the frame's number modulo flow_count as 4 octets at
 *      `flow_offset`: that many distinct flows) and returns XDP_TX, so each repetition
 *      leaves the generator's veth as a new frame.
 * sink: counts IP frames whose destination MAC starts with sink_prefix (5 octets; all
 *       zero: any) by the last octet of that MAC, then drops them; other frames pass.
 * swap: the in-kernel floor of any forwarder: swaps the Ethernet addresses and sends
 *       the frame back out (XDP_TX), nothing else.
 */
#include <linux/if_ether.h>

#include "bpf_defs.h"

char LICENSE[] SEC("license") = "GPL";

#define CID_SLOT 20
#define MAX_CIDS 4096
#define MAX_OFFSET 128

struct cid_slot {
    __u8 octets[CID_SLOT];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct cid_slot);
    __uint(max_entries, MAX_CIDS);
} cids SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 1);
} cursor SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 256);
} seen SEC(".maps");

__u32 cid_count;
__u32 cid_offset;
__u32 flow_count;
__u32 flow_offset;
__u8 sink_prefix[5];

SEC("xdp/gen")
int gen(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 zero = 0, offset = cid_offset, count = cid_count, idx;
    __u32 flows = flow_count, at = flow_offset, flow;
    __u64 *next = bpf_map_lookup_elem(&cursor, &zero);
    struct cid_slot *slot;

    if (!next || !count || offset > MAX_OFFSET)
        return XDP_TX;
    idx = (__u32)(*next % count);
    if (flows && at <= MAX_OFFSET && data + at + 4 <= data_end) {
        flow = (__u32)(*next % flows);
        __builtin_memcpy(data + at, &flow, 4);
    }
    *next += 1;
    slot = bpf_map_lookup_elem(&cids, &idx);
    if (!slot || data + offset + CID_SLOT > data_end)
        return XDP_TX;
    __builtin_memcpy(data + offset, slot->octets, CID_SLOT);
    return XDP_TX;
}

SEC("xdp/sink")
int sink(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u32 key;
    __u64 *count;

    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
        return XDP_PASS;
    if ((sink_prefix[0] | sink_prefix[1] | sink_prefix[2] | sink_prefix[3] | sink_prefix[4]) &&
        (eth->h_dest[0] != sink_prefix[0] || eth->h_dest[1] != sink_prefix[1] ||
         eth->h_dest[2] != sink_prefix[2] || eth->h_dest[3] != sink_prefix[3] ||
         eth->h_dest[4] != sink_prefix[4]))
        return XDP_PASS;
    key = eth->h_dest[5];
    count = bpf_map_lookup_elem(&seen, &key);
    if (count)
        *count += 1;
    return XDP_DROP;
}

SEC("xdp/swap")
int swap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u8 tmp[ETH_ALEN];

    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    __builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
    return XDP_TX;
}
