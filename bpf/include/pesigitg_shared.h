/* What the XDP program, the Cython packet path and Python agree on.
 *
 * Python reads the names below from the object's BTF (map names, the counter enum),
 * so this header is the one place they are written. Keep enum members prefixed
 * PES_XDP_: the loader turns PES_XDP_PASS_NOT_IP into the counter "pass_not_ip".
 */
#ifndef PESIGITG_SHARED_H
#define PESIGITG_SHARED_H

#define PES_XSK_SLOTS 256      /* one AF_XDP socket per RX queue */
#define PES_MAX_PORTS 64       /* steered UDP ports */
#define PES_MAX_VIPS 256       /* per address family */
#define PES_IPV6_EXT_MAX 8     /* IPv6 extension headers walked before giving up */

/* Every verdict of the XDP program, counted per CPU. Order is ABI: append only. */
enum pes_xdp_reason {
    PES_XDP_PASS_NOT_IP = 0,    /* ARP, VLAN-tagged, other ethertypes */
    PES_XDP_PASS_NOT_UDP,       /* TCP, other protocols, unknown IPv6 headers */
    PES_XDP_PASS_PORT,          /* UDP to a port that is not steered */
    PES_XDP_PASS_VIP,           /* steered port, destination not a listed VIP */
    PES_XDP_PASS_FRAGMENT,      /* non-first fragment: no UDP header to look at */
    PES_XDP_PASS_MALFORMED,     /* truncated or inconsistent headers */
    PES_XDP_PASS_ICMP,          /* ICMP that is not an error quoting a steered packet */
    PES_XDP_PASS_EXT_DEPTH,     /* IPv6 header chain longer than we walk */
    PES_XDP_REDIRECT_UDP,       /* steered to the queue's AF_XDP socket */
    PES_XDP_REDIRECT_ICMP,      /* ICMP error about a steered flow, steered */
    PES_XDP_DROP_NO_SOCKET,     /* would be steered, but no socket on this queue */
    PES_XDP_REASONS,
};

/* Run-time settings, a global in .bss (one global-data map). */
struct pes_xdp_settings {
    unsigned int vip_filter;    /* 0: any destination; 1: only listed VIPs */
};

#endif /* PESIGITG_SHARED_H */
