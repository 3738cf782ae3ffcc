/* The one L2-L4 parser: Ethernet, IPv4 (options) or IPv6 (extension headers), then UDP
 * or an ICMP/ICMPv6 error and the datagram it quotes; and the QUIC long header's
 * version-independent fields, wherever a payload is read (RFC 8999).
 *
 * Compiled into the XDP program and into the fast path, so both read frames by the same
 * rules: a cursor with a bounds check at every step (the verifier's pattern), octet-wise
 * loads (no alignment assumptions), nothing but the frame as input. Fragment and ICMP
 * rules are written here and nowhere else.
 *
 * Fragments (policy in the README): an IPv4 datagram with MF set or a fragment offset,
 * and an IPv6 fragment header with M set or an offset, is a FRAGMENT, first or not, so
 * the two sides can never steer one fragment of a datagram and pass another. An IPv6
 * atomic fragment (offset 0, M clear; RFC 6946) is a whole datagram: parsing goes on.
 */
#ifndef PESIGITG_PARSE_H
#define PESIGITG_PARSE_H

#include <linux/types.h>

#include "pesigitg_abi.h"

#define PES_INLINE static inline __attribute__((always_inline))

/* Wire constants the parser reads (RFC 791, 792, 768, 8200, 4443, IEEE 802.3), here so
 * the same text builds for BPF and for user space without libc's network headers. */
enum {
    PES_ETH_HLEN = 14,
    PES_IPV4_HLEN = 20,            /* without options */
    PES_IPV6_HLEN = 40,
    PES_UDP_HLEN = 8,
    PES_ICMP_HLEN = 8,             /* type, code, checksum, and 4 octets of the type's */
    PES_ETH_P_IP = 0x0800,
    PES_ETH_P_IPV6 = 0x86DD,
    PES_PROTO_HOPOPTS = 0,
    PES_PROTO_ICMP = 1,
    PES_PROTO_UDP = 17,
    PES_PROTO_ROUTING = 43,
    PES_PROTO_FRAGMENT = 44,
    PES_PROTO_ICMPV6 = 58,
    PES_PROTO_DSTOPTS = 60,
    PES_IPV4_FRAG_MASK = 0x3FFF,   /* MF and the 13-bit offset */
    PES_IPV6_FRAG_MASK = 0xFFF9,   /* the 13-bit offset and M */
    PES_PARSE_MORE = -1,           /* internal: this header is fine, go on */
};

/* ICMPv4 errors (RFC 792, RFC 1191) and ICMPv6 errors (RFC 4443 2.1, types 1..4). */
enum {
    PES_ICMP4_DEST_UNREACH = 3,
    PES_ICMP4_SOURCE_QUENCH = 4,
    PES_ICMP4_TIME_EXCEEDED = 11,
    PES_ICMP4_PARAMPROB = 12,
    PES_ICMP4_FRAG_NEEDED = 4,     /* code of DEST_UNREACH: Packet Too Big */
    PES_ICMP6_DEST_UNREACH = 1,
    PES_ICMP6_PACKET_TOO_BIG = 2,
    PES_ICMP6_TIME_EXCEEDED = 3,
    PES_ICMP6_PARAMPROB = 4,
};

struct pes_cursor {
    const __u8 *pos;
    const __u8 *end;
    __u32 off;      /* octets pulled so far: pos - start, kept as a scalar */
};

/* One direction of a UDP flow. IPv4 addresses fill the first 4 octets. */
struct pes_flow {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;    /* host order */
    __u16 dport;
};

struct pes_pkt {
    __u8 family;        /* 4 or 6 */
    __u8 proto;         /* upper-layer protocol, also of a fragment */
    __u8 icmp_type;
    __u8 icmp_code;
    struct pes_flow flow;       /* the datagram (ports for UDP only) */
    struct pes_flow quoted;     /* ICMP_ERROR: the datagram the error quotes */
    __u32 l4;           /* offset of the UDP or ICMP header */
    __u32 payload;      /* offset of the UDP payload, or of the quoted UDP payload */
    __u32 payload_len;  /* bounded by the UDP length and by the frame */
};

/* Pulls len octets: 1 with *out at them, or 0 when the frame is shorter. A status, not
 * a NULL pointer: a program loaded without CAP_PERFMON may not compare a packet pointer
 * with a scalar, only with another packet pointer. */
PES_INLINE int pes_pull(struct pes_cursor *c, __u32 len, const __u8 **out)
{
    const __u8 *start = c->pos;

    if (start + len > c->end)
        return 0;
    c->pos = start + len;
    c->off += len;
    *out = start;
    return 1;
}

PES_INLINE int pes_skip(struct pes_cursor *c, __u32 len)
{
    const __u8 *unused;

    return pes_pull(c, len, &unused);
}

PES_INLINE __u16 pes_be16(const __u8 *p)
{
    return (__u16)((p[0] << 8) | p[1]);
}

PES_INLINE void pes_copy_addr(__u8 *dst, const __u8 *src, int len)
{
    /* Constant lengths, so both compilers emit plain loads and stores. */
    if (len == 4)
        __builtin_memcpy(dst, src, 4);
    else
        __builtin_memcpy(dst, src, 16);
}

/* IPv4 header with options (RFC 791). */
PES_INLINE int pes_pull_ipv4(struct pes_cursor *c, struct pes_flow *flow, __u8 *proto)
{
    const __u8 *ip;
    __u32 opts;

    if (!pes_pull(c, PES_IPV4_HLEN, &ip) || (ip[0] >> 4) != 4 || (ip[0] & 0xF) < 5)
        return PES_PARSE_MALFORMED;
    opts = ((ip[0] & 0xF) - 5) * 4;
    if (opts && !pes_skip(c, opts))
        return PES_PARSE_MALFORMED;
    pes_copy_addr(flow->saddr, ip + 12, 4);
    pes_copy_addr(flow->daddr, ip + 16, 4);
    *proto = ip[9];
    if (pes_be16(ip + 6) & PES_IPV4_FRAG_MASK)
        return PES_PARSE_FRAGMENT;
    return PES_PARSE_MORE;
}

PES_INLINE int pes_ipv6_ext(__u8 next)
{
    return next == PES_PROTO_HOPOPTS || next == PES_PROTO_ROUTING ||
           next == PES_PROTO_DSTOPTS || next == PES_PROTO_FRAGMENT;
}

/* IPv6 header and its extension-header chain (RFC 8200 4): hop-by-hop, routing,
 * destination options and fragment headers, up to PES_IPV6_EXT_MAX of them. */
PES_INLINE int pes_pull_ipv6(struct pes_cursor *c, struct pes_flow *flow, __u8 *proto)
{
    const __u8 *ip6;
    __u8 next;

    if (!pes_pull(c, PES_IPV6_HLEN, &ip6) || (ip6[0] >> 4) != 6)
        return PES_PARSE_MALFORMED;
    pes_copy_addr(flow->saddr, ip6 + 8, 16);
    pes_copy_addr(flow->daddr, ip6 + 24, 16);
    next = ip6[6];
    for (int i = 0; i < PES_IPV6_EXT_MAX; i++) {
        if (!pes_ipv6_ext(next))
            break;
        if (next == PES_PROTO_FRAGMENT) {
            const __u8 *frag;

            if (!pes_pull(c, 8, &frag))
                return PES_PARSE_MALFORMED;
            next = frag[0];
            if (pes_be16(frag + 2) & PES_IPV6_FRAG_MASK) {
                *proto = next;
                return PES_PARSE_FRAGMENT;
            }
        } else {
            const __u8 *opt;

            /* Header Ext Len counts 8-octet units after the first 8 octets. */
            if (!pes_pull(c, 2, &opt) || !pes_skip(c, (opt[1] + 1) * 8 - 2))
                return PES_PARSE_MALFORMED;
            next = opt[0];
        }
    }
    if (pes_ipv6_ext(next))
        return PES_PARSE_EXT_DEPTH;
    *proto = next;
    return PES_PARSE_MORE;
}

PES_INLINE int pes_pull_ip(struct pes_cursor *c, int family, struct pes_flow *flow,
                           __u8 *proto)
{
    if (family == 4)
        return pes_pull_ipv4(c, flow, proto);
    return pes_pull_ipv6(c, flow, proto);
}

/* UDP header (RFC 768); the payload is bounded by the UDP length (Ethernet pads short
 * frames) and by what the frame holds (an ICMP error quotes a prefix). */
PES_INLINE int pes_pull_udp(struct pes_cursor *c, struct pes_flow *flow, struct pes_pkt *pkt)
{
    const __u8 *udp;
    __u32 ulen, avail;

    if (!pes_pull(c, PES_UDP_HLEN, &udp))
        return PES_PARSE_MALFORMED;
    ulen = pes_be16(udp + 4);
    if (ulen < PES_UDP_HLEN)
        return PES_PARSE_MALFORMED;
    flow->sport = pes_be16(udp);
    flow->dport = pes_be16(udp + 2);
#ifndef __bpf__
    /* Only the worker reads payloads; the verifier refuses pointer - pointer to a
     * program loaded without CAP_PERFMON, so the XDP object never computes it. */
    avail = (__u32)(c->end - c->pos);
    pkt->payload = c->off;
    pkt->payload_len = ulen - PES_UDP_HLEN < avail ? ulen - PES_UDP_HLEN : avail;
#else
    (void)avail;
    (void)pkt;
#endif
    return PES_PARSE_MORE;
}

PES_INLINE int pes_icmp_error(int family, __u8 type)
{
    if (family == 4)
        return type == PES_ICMP4_DEST_UNREACH || type == PES_ICMP4_SOURCE_QUENCH ||
               type == PES_ICMP4_TIME_EXCEEDED || type == PES_ICMP4_PARAMPROB;
    return type >= PES_ICMP6_DEST_UNREACH && type <= PES_ICMP6_PARAMPROB;
}

/* RFC 792 / RFC 4443: an error quotes the offending packet's IP header and at least
 * its first 8 payload octets. Only a whole quoted UDP header makes it routable. */
PES_INLINE int pes_pull_icmp(struct pes_cursor *c, struct pes_pkt *pkt)
{
    const __u8 *icmp;
    __u8 quoted_proto = 0;
    int rc;

    if (!pes_pull(c, PES_ICMP_HLEN, &icmp))
        return PES_PARSE_MALFORMED;
    pkt->icmp_type = icmp[0];
    pkt->icmp_code = icmp[1];
    if (!pes_icmp_error(pkt->family, icmp[0]))
        return PES_PARSE_ICMP;
    rc = pes_pull_ip(c, pkt->family, &pkt->quoted, &quoted_proto);
    if (rc == PES_PARSE_FRAGMENT || rc == PES_PARSE_EXT_DEPTH)
        return PES_PARSE_ICMP;
    if (rc != PES_PARSE_MORE)
        return rc;
    if (quoted_proto != PES_PROTO_UDP)
        return PES_PARSE_ICMP;
    rc = pes_pull_udp(c, &pkt->quoted, pkt);
    return rc == PES_PARSE_MORE ? PES_PARSE_ICMP_ERROR : rc;
}

/* Parse one Ethernet frame; returns an enum pes_parse_outcome. */
PES_INLINE int pes_parse_frame(struct pes_cursor *c, struct pes_pkt *pkt)
{
    const __u8 *eth;
    __u16 ethertype;
    int rc;

    if (!pes_pull(c, PES_ETH_HLEN, &eth))
        return PES_PARSE_MALFORMED;
    ethertype = pes_be16(eth + 12);
    if (ethertype == PES_ETH_P_IP)
        pkt->family = 4;
    else if (ethertype == PES_ETH_P_IPV6)
        pkt->family = 6;
    else
        return PES_PARSE_NOT_IP;
    rc = pes_pull_ip(c, pkt->family, &pkt->flow, &pkt->proto);
    if (rc != PES_PARSE_MORE)
        return rc;
    pkt->l4 = c->off;
    if (pkt->proto == PES_PROTO_UDP) {
        rc = pes_pull_udp(c, &pkt->flow, pkt);
        return rc == PES_PARSE_MORE ? PES_PARSE_UDP : rc;
    }
    if (pkt->proto == (pkt->family == 4 ? PES_PROTO_ICMP : PES_PROTO_ICMPV6))
        return pes_pull_icmp(c, pkt);
    return PES_PARSE_NOT_UDP;
}

PES_INLINE void pes_cursor_init(struct pes_cursor *c, const void *data, const void *end)
{
    c->pos = (const __u8 *)data;
    c->end = (const __u8 *)end;
    c->off = 0;
}

/* A Packet Too Big: ICMP destination unreachable, fragmentation needed (RFC 1191), or
 * ICMPv6 Packet Too Big (RFC 4443 3.2). */
PES_INLINE int pes_packet_too_big(const struct pes_pkt *pkt)
{
    if (pkt->family == 4)
        return pkt->icmp_type == PES_ICMP4_DEST_UNREACH &&
               pkt->icmp_code == PES_ICMP4_FRAG_NEEDED;
    return pkt->icmp_type == PES_ICMP6_PACKET_TOO_BIG;
}

/* QUIC's long header, the fields every version has (RFC 8999 5.1): the form bit, the
 * version, the DCID length and DCID, the SCID length and SCID; the version's own
 * fields follow. How much of it a payload holds: */
enum {
    PES_QUIC_LONG_FORM = 0x80,
    PES_LONG_NONE = 0,      /* empty, or a short header */
    PES_LONG_CUT = 1,       /* a long header cut before the end of its DCID */
    PES_LONG_DCID = 2,      /* version and DCID, cut before the end of its SCID */
    PES_LONG_WHOLE = 3,     /* version, DCID and SCID */
};

struct pes_long_header {
    __u32 version;          /* 0 when cut before it */
    __u32 dcid;             /* offsets from where the cursor started */
    __u32 scid;
    __u32 rest;             /* what follows the SCID */
    __u8 first;
    __u8 dcid_len;
    __u8 scid_len;
};

/* Read a long header at the cursor (a UDP payload); returns a PES_LONG_* extent. The
 * one reader of these fields: the decision's DCID, an ICMP error's quoted SCID and the
 * Retry offload's Initial all come from here. */
PES_INLINE int pes_pull_long_header(struct pes_cursor *c, struct pes_long_header *lh)
{
    const __u8 *h;

    lh->version = lh->dcid = lh->scid = lh->rest = 0;
    lh->first = lh->dcid_len = lh->scid_len = 0;
    if (!pes_pull(c, 1, &h) || !(h[0] & PES_QUIC_LONG_FORM))
        return PES_LONG_NONE;
    lh->first = h[0];
    if (!pes_pull(c, 5, &h))
        return PES_LONG_CUT;
    lh->version = ((__u32)h[0] << 24) | ((__u32)h[1] << 16) | ((__u32)h[2] << 8) | h[3];
    lh->dcid_len = h[4];
    lh->dcid = c->off;
    if (!pes_skip(c, lh->dcid_len))
        return PES_LONG_CUT;
    if (!pes_pull(c, 1, &h))
        return PES_LONG_DCID;
    lh->scid_len = h[0];
    lh->scid = c->off;
    if (!pes_skip(c, lh->scid_len))
        return PES_LONG_DCID;
    lh->rest = c->off;
    return PES_LONG_WHOLE;
}

/* What the XDP program does with an outcome the parser already settles. */
#define PES_PARSE_XDP_CASE(name, drop, xdp, doc) \
    case PES_PARSE_##name:                       \
        return PES_XDP_##xdp;
PES_INLINE int pes_parse_xdp_verdict(int outcome)
{
    switch (outcome) {
        PES_PARSE_OUTCOMES(PES_PARSE_XDP_CASE)
    }
    return PES_XDP_PASS_MALFORMED;
}

/* What the worker drops an outcome as. */
#define PES_PARSE_DROP_CASE(name, drop, xdp, doc) \
    case PES_PARSE_##name:                        \
        return PES_DROP_##drop;
PES_INLINE int pes_parse_drop(int outcome)
{
    switch (outcome) {
        PES_PARSE_OUTCOMES(PES_PARSE_DROP_CASE)
    }
    return PES_DROP_MALFORMED;
}

#endif /* PESIGITG_PARSE_H */
