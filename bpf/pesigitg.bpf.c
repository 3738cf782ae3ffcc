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
 */
#include "bpf_defs.h"
#include "pesigitg_abi.h"
#include "pesigitg_parse.h"

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
