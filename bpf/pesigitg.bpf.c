// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* pesigitg XDP program: steer QUIC (UDP to the configured ports) into AF_XDP.
 *
 * A UDP datagram to a steered port (and a listed VIP when the filter is on) goes to
 * the AF_XDP socket of its RX queue; ICMP errors quoting a datagram we sent from a
 * steered port go there too, so the worker can route them to the backend. Anything
 * else, including every malformed or truncated frame, is XDP_PASS: the kernel is the
 * better judge of what it does not concern us. Never XDP_ABORTED. Every verdict
 * bumps one per-CPU counter with its reason.
 */
#include <linux/icmpv6.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#include "bpf_defs.h"
#include "pesigitg_shared.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Steered UDP destination ports, host byte order. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u16);
    __type(value, __u8);
    __uint(max_entries, PES_MAX_PORTS);
} ports SEC(".maps");

/* VIP filter (used only when settings.vip_filter is set), network byte order. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, __u8);
    __uint(max_entries, PES_MAX_VIPS);
} vips4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct in6_addr);
    __type(value, __u8);
    __uint(max_entries, PES_MAX_VIPS);
} vips6 SEC(".maps");

/* One AF_XDP socket per RX queue, indexed by queue. */
struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, PES_XSK_SLOTS);
} xsks SEC(".maps");

/* Verdict counters, one slot per enum pes_xdp_reason. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, PES_XDP_REASONS);
} counters SEC(".maps");

struct pes_xdp_settings settings;

/* Forces the reason enum into BTF so user space can read the counter names. */
enum pes_xdp_reason pes_xdp_reason_names;

/* IPv6 fragment header (RFC 8200 §4.5); not in the UAPI headers. */
struct pes_frag_hdr {
    __u8 nexthdr;
    __u8 reserved;
    __be16 frag_off;
    __be32 identification;
};

/* ICMPv4 header (RFC 792); linux/icmp.h would pull in libc's socket headers. */
struct pes_icmp_hdr {
    __u8 type;
    __u8 code;
    __sum16 checksum;
    __be32 rest;
};

enum {
    PES_ICMP_DEST_UNREACH = 3,
    PES_ICMP_SOURCE_QUENCH = 4,
    PES_ICMP_TIME_EXCEEDED = 11,
    PES_ICMP_PARAMETERPROB = 12,
};

/* Header parsing goes through a cursor with a bounds check at every step. */
struct cursor {
    void *pos;
    void *end;
};

static __always_inline void *pull(struct cursor *c, __u32 len)
{
    void *start = c->pos;

    if (start + len > c->end)
        return 0;
    c->pos = start + len;
    return start;
}

#define PULL(c, type) ((type *)pull((c), sizeof(type)))

static __always_inline int count(enum pes_xdp_reason reason, int action)
{
    __u32 key = reason;
    __u64 *value = bpf_map_lookup_elem(&counters, &key);

    if (value)
        *value += 1;
    return action;
}

static __always_inline int pass(enum pes_xdp_reason reason)
{
    return count(reason, XDP_PASS);
}

static __always_inline int steer(struct xdp_md *ctx, enum pes_xdp_reason reason)
{
    __u32 queue = ctx->rx_queue_index;

    /* No socket on this queue: drop and count, never hand QUIC to the kernel. */
    if (!bpf_map_lookup_elem(&xsks, &queue))
        return count(PES_XDP_DROP_NO_SOCKET, XDP_DROP);
    count(reason, XDP_PASS);
    return bpf_redirect_map(&xsks, queue, XDP_DROP);
}

static __always_inline int port_steered(__be16 port)
{
    __u16 key = bpf_ntohs(port);

    return bpf_map_lookup_elem(&ports, &key) != 0;
}

static __always_inline int vip4_listed(__be32 addr)
{
    return !settings.vip_filter || bpf_map_lookup_elem(&vips4, &addr) != 0;
}

static __always_inline int vip6_listed(struct in6_addr *addr)
{
    struct in6_addr key = *addr;

    return !settings.vip_filter || bpf_map_lookup_elem(&vips6, &key) != 0;
}

/* IPv4 header with options (RFC 791). Returns 0 with *proto set, or a reason. */
static __always_inline int pull_ipv4(struct cursor *c, struct iphdr **out)
{
    struct iphdr *ip = PULL(c, struct iphdr);
    __u32 opts;

    if (!ip || ip->version != 4 || ip->ihl < 5)
        return PES_XDP_PASS_MALFORMED;
    opts = (ip->ihl - 5) * 4;
    if (opts && !pull(c, opts))
        return PES_XDP_PASS_MALFORMED;
    if (ip->frag_off & bpf_htons(0x1fff))
        return PES_XDP_PASS_FRAGMENT;
    *out = ip;
    return -1;
}

/* IPv6 header and its extension-header chain (RFC 8200 §4): hop-by-hop, routing,
 * destination options and fragment. Returns -1 with *nexthdr set, or a reason. */
static __always_inline int pull_ipv6(struct cursor *c, struct ipv6hdr **out, __u8 *nexthdr)
{
    struct ipv6hdr *ip6 = PULL(c, struct ipv6hdr);
    __u8 next;

    if (!ip6 || ip6->version != 6)
        return PES_XDP_PASS_MALFORMED;
    next = ip6->nexthdr;
    for (int i = 0; i < PES_IPV6_EXT_MAX; i++) {
        if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
            struct ipv6_opt_hdr *opt = PULL(c, struct ipv6_opt_hdr);

            /* hdrlen counts 8-octet units beyond the first 8 octets. */
            if (!opt || !pull(c, (opt->hdrlen + 1) * 8 - sizeof(*opt)))
                return PES_XDP_PASS_MALFORMED;
            next = opt->nexthdr;
        } else if (next == IPPROTO_FRAGMENT) {
            struct pes_frag_hdr *frag = PULL(c, struct pes_frag_hdr);

            if (!frag)
                return PES_XDP_PASS_MALFORMED;
            if (frag->frag_off & bpf_htons(0xfff8))
                return PES_XDP_PASS_FRAGMENT;
            next = frag->nexthdr;
        } else {
            *out = ip6;
            *nexthdr = next;
            return -1;
        }
    }
    return PES_XDP_PASS_EXT_DEPTH;
}

/* RFC 792 / RFC 4443: an error quotes the offending packet's IP header and at least
 * its first 8 payload octets. Ours went out from VIP:steered-port, so steer errors
 * whose quoted UDP source is a steered port (and the quoted source a listed VIP). */
static __always_inline int icmp4_error(struct xdp_md *ctx, struct cursor *c)
{
    struct pes_icmp_hdr *icmp = PULL(c, struct pes_icmp_hdr);
    struct iphdr *inner;
    struct udphdr *udp;
    int rc;

    if (!icmp)
        return pass(PES_XDP_PASS_MALFORMED);
    if (icmp->type != PES_ICMP_DEST_UNREACH && icmp->type != PES_ICMP_TIME_EXCEEDED &&
        icmp->type != PES_ICMP_PARAMETERPROB && icmp->type != PES_ICMP_SOURCE_QUENCH)
        return pass(PES_XDP_PASS_ICMP);
    rc = pull_ipv4(c, &inner);
    if (rc == PES_XDP_PASS_FRAGMENT)
        return pass(PES_XDP_PASS_ICMP);
    if (rc >= 0)
        return pass(rc);
    if (inner->protocol != IPPROTO_UDP)
        return pass(PES_XDP_PASS_ICMP);
    udp = PULL(c, struct udphdr);
    if (!udp)
        return pass(PES_XDP_PASS_MALFORMED);
    if (!port_steered(udp->source) || !vip4_listed(inner->saddr))
        return pass(PES_XDP_PASS_ICMP);
    return steer(ctx, PES_XDP_REDIRECT_ICMP);
}

static __always_inline int icmp6_error(struct xdp_md *ctx, struct cursor *c)
{
    struct icmp6hdr *icmp = PULL(c, struct icmp6hdr);
    struct ipv6hdr *inner;
    struct udphdr *udp;
    __u8 next;
    int rc;

    if (!icmp)
        return pass(PES_XDP_PASS_MALFORMED);
    /* Error messages are types 0..127 (RFC 4443 §2.1); 1..4 are defined. */
    if (icmp->icmp6_type < ICMPV6_DEST_UNREACH || icmp->icmp6_type > ICMPV6_PARAMPROB)
        return pass(PES_XDP_PASS_ICMP);
    rc = pull_ipv6(c, &inner, &next);
    if (rc == PES_XDP_PASS_FRAGMENT || rc == PES_XDP_PASS_EXT_DEPTH)
        return pass(PES_XDP_PASS_ICMP);
    if (rc >= 0)
        return pass(rc);
    if (next != IPPROTO_UDP)
        return pass(PES_XDP_PASS_ICMP);
    udp = PULL(c, struct udphdr);
    if (!udp)
        return pass(PES_XDP_PASS_MALFORMED);
    if (!port_steered(udp->source) || !vip6_listed(&inner->saddr))
        return pass(PES_XDP_PASS_ICMP);
    return steer(ctx, PES_XDP_REDIRECT_ICMP);
}

static __always_inline int udp_datagram(struct xdp_md *ctx, struct cursor *c, int vip_ok)
{
    struct udphdr *udp = PULL(c, struct udphdr);

    if (!udp)
        return pass(PES_XDP_PASS_MALFORMED);
    if (!port_steered(udp->dest))
        return pass(PES_XDP_PASS_PORT);
    if (!vip_ok)
        return pass(PES_XDP_PASS_VIP);
    return steer(ctx, PES_XDP_REDIRECT_UDP);
}

SEC("xdp")
int pesigitg_xdp(struct xdp_md *ctx)
{
    struct cursor c = {
        .pos = (void *)(long)ctx->data,
        .end = (void *)(long)ctx->data_end,
    };
    struct ethhdr *eth = PULL(&c, struct ethhdr);
    int rc;

    if (!eth)
        return pass(PES_XDP_PASS_MALFORMED);
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip;

        rc = pull_ipv4(&c, &ip);
        if (rc >= 0)
            return pass(rc);
        if (ip->protocol == IPPROTO_UDP)
            return udp_datagram(ctx, &c, vip4_listed(ip->daddr));
        if (ip->protocol == IPPROTO_ICMP)
            return icmp4_error(ctx, &c);
        return pass(PES_XDP_PASS_NOT_UDP);
    }
    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6;
        __u8 next;

        rc = pull_ipv6(&c, &ip6, &next);
        if (rc >= 0)
            return pass(rc);
        if (next == IPPROTO_UDP)
            return udp_datagram(ctx, &c, vip6_listed(&ip6->daddr));
        if (next == IPPROTO_ICMPV6)
            return icmp6_error(ctx, &c);
        return pass(PES_XDP_PASS_NOT_UDP);
    }
    return pass(PES_XDP_PASS_NOT_IP);
}
