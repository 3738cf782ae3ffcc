/* pesigitg's one contract: every limit, reason, counter and map name that the XDP
 * program, the Cython fast path and Python agree on, written once.
 *
 * Lists are X-macros: each entry is one line, NAME and its meaning. C expands them into
 * enums (and the fast path into name tables); Python reads the names from the compiled
 * fast path (pesigitg._fastpath) or from the XDP object's BTF, never restating them.
 * Adding a drop reason is one line here plus the code that decides it.
 *
 * The workers' counters carry their names, so a daemon of another version adopts them
 * by name (daemon/counters.py) and those lists may change in any order; the XDP
 * verdicts are counted in a map a restart keeps, by value: add verdicts at the end.
 * Compiled by clang -target bpf and by the C compiler of the extension.
 */
#ifndef PESIGITG_ABI_H
#define PESIGITG_ABI_H

#include <linux/types.h>

/* -- limits ---------------------------------------------------------------------------- */

#define PES_LIMITS(X)                                                                     \
    X(XSK_SLOTS, 256, "AF_XDP sockets, one per RX queue")                                 \
    X(MAX_PORTS, 64, "steered UDP ports")                                                 \
    X(MAX_VIPS, 256, "VIPs per address family")                                          \
    X(IPV6_EXT_MAX, 8, "IPv6 extension headers walked before the upper layer")           \
    X(CID_CONFIGS, 7, "QUIC-LB config ids 0..6 (7 means unroutable)")                    \
    X(CID_MAX_LEN, 20, "connection ID octets in QUIC v1 (RFC 9000 17.2)")                \
    X(SERVER_ID_MIN, 1, "server ID octets, at least")                                    \
    X(SERVER_ID_MAX, 15, "server ID octets, at most (19 - 4 nonce octets)")              \
    X(NONCE_MIN, 4, "nonce octets, at least")                                            \
    X(NONCE_MAX, 18, "nonce octets, at most (19 - 1 server ID octet)")                   \
    X(PLAINTEXT_MAX, 19, "server ID + nonce octets, at most")                            \
    X(SHORT_HEADER_MIN, 21, "octets of a 1-RTT packet with an empty DCID (RFC 9001 5.4.2)") \
    X(MAX_BACKENDS, 0xFFFE, "backends in one route table")                               \
    X(MAGLEV_MAX, 1000003, "Maglev lookup table slots, at most")                         \
    X(FLOW_ENTRIES_MAX, 16777216, "flow table entries per worker, at most (2^24)")      \
    X(RETRY_KEYS, 128, "Retry token key sequence numbers 0..127")                          \
    X(INITIAL_MIN, 1200, "UDP payload octets of a datagram carrying a client Initial")    \
    X(BACKEND_SLOTS, 4096, "backends whose frames each worker counts one by one")        \
    X(PTB_COPY_MAX, 1280, "IP octets of a Packet Too Big copied to every backend")       \
    X(RETRY_ADMITTED, 16384, "client 4-tuples a worker remembers a valid token from")     \
    X(ODCID_MIN, 8, "octets of a client's first DCID, at least (RFC 9000 7.2)")           \
    X(TIER_SERVERS, 65536, "server slots of the kernel tier, both generations together")

#define PES_LIMIT_ENUM(name, value, doc) PES_##name = (value),
enum pes_limit { PES_LIMITS(PES_LIMIT_ENUM) };

/* -- the XDP program ------------------------------------------------------------------- */

/* Map names: the program declares its maps with these identifiers, user space finds
 * them by these names (bpftool shows them). */
#define PES_MAP_PORTS ports
#define PES_MAP_VIPS4 vips4
#define PES_MAP_VIPS6 vips6
#define PES_MAP_XSKS xsks
#define PES_MAP_COUNTERS counters
#define PES_MAP_TIER tier
#define PES_MAP_TIER_SERVERS tier_servers
#define PES_MAP_TIER_COUNTS tier_counts
#define PES_MAP_TIER_KEYS tier_keys
#define PES_MAP_TIER_SCRATCH tier_scratch
#define PES_SETTINGS_VAR settings

#define PES_MAPS(X)                                                                       \
    X(PORTS, "steered UDP destination ports, host order")                                 \
    X(VIPS4, "IPv4 VIPs of the destination filter")                                      \
    X(VIPS6, "IPv6 VIPs of the destination filter")                                      \
    X(XSKS, "AF_XDP socket of each RX queue")                                            \
    X(COUNTERS, "per-CPU verdict counters")                                               \
    X(TIER, "the kernel tier's table of each generation: on, interface MAC, configs")     \
    X(TIER_SERVERS, "the kernel tier's servers, hashed into buckets, per generation")     \
    X(TIER_COUNTS, "per-CPU frames the kernel tier sent, per config id and backend slot")

/* Every verdict of the XDP program, each a per-CPU counter. */
#define PES_XDP_VERDICTS(X)                                                               \
    X(PASS_NOT_IP, "ARP, VLAN-tagged, other ethertypes")                                  \
    X(PASS_NOT_UDP, "TCP, other protocols, unknown IPv6 headers")                        \
    X(PASS_PORT, "UDP to a port that is not steered")                                    \
    X(PASS_VIP, "steered port, destination not a listed VIP")                            \
    X(PASS_FRAGMENT, "an IP fragment that is not a UDP fragment to a listed VIP")        \
    X(PASS_MALFORMED, "truncated or inconsistent headers")                               \
    X(PASS_ICMP, "ICMP that is not an error quoting a steered datagram")                 \
    X(PASS_EXT_DEPTH, "IPv6 header chain longer than we walk")                           \
    X(REDIRECT_UDP, "steered to the queue's AF_XDP socket")                              \
    X(REDIRECT_ICMP, "ICMP error about a steered flow, steered")                         \
    X(DROP_NO_SOCKET, "would be steered, but no socket on this queue")                   \
    X(DROP_FRAGMENT, "UDP fragment to a listed VIP: QUIC never fragments (DF)")          \
    X(TX_CID, "routed by its connection ID and sent back out by the kernel tier")

#define PES_XDP_ENUM(name, doc) PES_XDP_##name,
enum pes_xdp_reason { PES_XDP_VERDICTS(PES_XDP_ENUM) PES_XDP_REASONS };

/* Key of the IPv6 VIP map: the address in network order. */
struct pes_ipv6_key {
    __u8 addr[16];
};

/* Run-time settings, a global in .bss (one global-data map). */
struct pes_xdp_settings {
    __u32 vip_filter;       /* 0: any destination; 1: only listed VIPs */
    __u32 tier_generation;  /* the kernel tier's generation the program reads: 0 or 1 */
};

/* -- the kernel tier: QUIC-LB decode and forwarding inside the XDP program --------------- */

/* How a QUIC-LB config encodes its server IDs (draft-ietf-quic-load-balancers-21 §5). */
enum pes_cid_mode {
    PES_CID_UNSET = 0,
    PES_CID_PLAINTEXT = 1,
    PES_CID_SINGLE_PASS = 2,
    PES_CID_FOUR_PASS = 3,
};

/* What the kernel tier does with a config id (a pes_cid_mode of cidtable.h where it
 * decodes it; PES_CID_UNSET: leave its frames to the workers). */
struct pes_tier_config {
    __u8 mode;
    __u8 server_id_len;
    __u8 cid_len;
    __u8 reserved;
};

/* One generation's table: the supervisor writes the generation the program does not
 * read, then switches settings.tier_generation to it. */
struct pes_tier_table {
    __u8 on;                /* 0: every frame goes to the workers */
    __u8 bucket_bits;       /* the generation's servers: 1 << bucket_bits buckets */
    __u8 if_mac[6];         /* the rewritten frame's source */
    __u64 seed;             /* of the servers' hash (pes_tier_bucket) */
    struct pes_tier_config configs[PES_CID_CONFIGS];
};

/* A server the kernel tier may forward to: routable (up, MAC known; draining or not).
 * Servers are found by hashing config id and server ID into a bucket of
 * PES_TIER_BUCKET_SLOTS entries of an array, the supervisor choosing the seed so that
 * no bucket overflows: no hash map, no helper call on the packet path. */
struct pes_tier_server {
    __u8 config_id;         /* PES_TIER_EMPTY: a free slot */
    __u8 server_id[PES_SERVER_ID_MAX];  /* server_id_len octets, then zeros */
    __u8 mac[6];
    __u16 slot;             /* the backend's counter slot (0xFFFF: none) */
};

#define PES_TIER_EMPTY 0xFF
/* tier_counts: per config id, one count per backend slot and one for no slot. */
#define PES_TIER_COUNT_STRIDE (PES_BACKEND_SLOTS + 1)
#define PES_TIER_BUCKET_SLOTS 4
#define PES_TIER_BUCKET_BITS_MAX 13     /* 8192 buckets of 4 per generation */
#define PES_TIER_HASH_K1 0x9E3779B97F4A7C15ULL
#define PES_TIER_HASH_K2 0xC2B2AE3D27D4EB4FULL

/* The bucket of a server: the first 16 octets of its entry (config id, server ID) as
 * two little-endian words, mixed with the generation's seed; the top bits. */
static inline __u32 pes_tier_bucket(__u64 lo, __u64 hi, __u64 seed, __u32 bits)
{
    __u64 h = ((lo ^ seed) * PES_TIER_HASH_K1 + hi) * PES_TIER_HASH_K2;

    return (__u32)(h >> (64 - bits));
}

/* -- the shared parser (pesigitg_parse.h) ----------------------------------------------- */

/* What the L2-L4 parser found, and what each side does with it: the worker's drop
 * reason and the XDP program's verdict (UDP and ICMP_ERROR are decided further). */
#define PES_PARSE_OUTCOMES(X)                                                             \
    X(UDP, NONE, REDIRECT_UDP, "a whole UDP datagram")                                   \
    X(ICMP_ERROR, NONE, REDIRECT_ICMP, "an ICMP or ICMPv6 error quoting a UDP datagram") \
    X(NOT_IP, NOT_IP, PASS_NOT_IP, "not IPv4 or IPv6")                                   \
    X(NOT_UDP, NOT_UDP, PASS_NOT_UDP, "neither UDP nor ICMP")                            \
    X(ICMP, NOT_UDP, PASS_ICMP, "ICMP that is not an error quoting a whole UDP header")  \
    X(FRAGMENT, FRAGMENT, PASS_FRAGMENT, "IPv4 MF or offset, IPv6 non-atomic fragment")  \
    X(MALFORMED, MALFORMED, PASS_MALFORMED, "truncated or inconsistent headers")         \
    X(EXT_DEPTH, EXT_DEPTH, PASS_EXT_DEPTH, "more IPv6 extension headers than we walk")

#define PES_PARSE_ENUM(name, drop, xdp, doc) PES_PARSE_##name,
enum pes_parse_outcome { PES_PARSE_OUTCOMES(PES_PARSE_ENUM) PES_PARSE_COUNT };

/* -- the worker's decision -------------------------------------------------------------- */

#define PES_ROUTES(X)                                                                     \
    X(NONE, "dropped")                                                                    \
    X(CID, "routable CID: the server it names")                                          \
    X(FALLBACK, "Maglev over the fallback pool")                                         \
    X(ICMP, "ICMP error: Maglev on the quoted flow's 4-tuple")                            \
    X(ICMP_CID, "ICMP error quoting a long header: the server its source CID names")     \
    X(ICMP_FANOUT, "Packet Too Big that names no server: a copy to every backend")        \
    X(ICMP_NOT_VIP, "Packet Too Big quoting a source that is no VIP: Maglev, never copied")

/* Why a CID was not routable (the frame then falls back). */
#define PES_UNROUTABLE(X)                                                                 \
    X(NONE, "routable")                                                                   \
    X(NO_CONFIG, "config id 7 or one that is not configured")                            \
    X(SHORT_CID, "fewer octets than the config's CID length")                            \
    X(UNKNOWN_SERVER, "decoded server ID is not in the config")                          \
    X(SERVER_DOWN, "known server, but down or its MAC unknown")

/* Why the worker dropped a frame. */
#define PES_DROPS(X)                                                                      \
    X(NONE, "forwarded")                                                                  \
    X(NOT_IP, "not IPv4 or IPv6 (the XDP program passes these)")                         \
    X(NOT_UDP, "not UDP, or ICMP that is not an error we route")                         \
    X(MALFORMED, "truncated or inconsistent headers")                                    \
    X(FRAGMENT, "an IP fragment (the XDP program never steers one)")                     \
    X(NOT_QUIC, "UDP payload that breaks the QUIC invariants")                           \
    X(NO_BACKEND, "fallback needed, fallback pool empty")                                \
    X(EXT_DEPTH, "more IPv6 extension headers than we walk")                            \
    X(TOKEN, "an Initial whose Retry token is invalid or expired")                        \
    X(SHORT_INITIAL, "an Initial in a datagram under 1200 octets while Retries are sent")  \
    X(SHORT_DCID, "a tokenless Initial whose DCID is under 8 octets while Retries are sent")

#define PES_ROUTE_ENUM(name, doc) PES_ROUTE_##name,
#define PES_UNR_ENUM(name, doc) PES_UNR_##name,
#define PES_DROP_ENUM(name, doc) PES_DROP_##name,
enum pes_route_kind { PES_ROUTES(PES_ROUTE_ENUM) PES_ROUTE_COUNT };
enum pes_unroutable { PES_UNROUTABLE(PES_UNR_ENUM) PES_UNR_COUNT };
enum pes_drop { PES_DROPS(PES_DROP_ENUM) PES_DROP_COUNT };

typedef struct {
    __u16 backend;      /* when route != NONE */
    __u8 route;         /* enum pes_route_kind */
    __u8 unroutable;    /* enum pes_unroutable */
    __u8 drop;          /* enum pes_drop */
    __s8 config_id;     /* config of a CID-routed frame, else -1 */
    __u8 tuple_hashed;  /* tuple_hash holds the flow's unkeyed 4-tuple hash */
    __u64 tuple_hash;   /* (client -> VIP), where the flow table's fingerprint starts */
} pes_decision;

/* -- the worker's counters -------------------------------------------------------------- */

/* How the members of a counter family are named: a family of width 1 is one counter
 * named after it; CONFIG_ID families end in the config id, the others in the name of
 * their reason (NONE excluded). */
enum pes_counter_label {
    PES_LABEL_NONE,
    PES_LABEL_CONFIG_ID,
    PES_LABEL_UNROUTABLE,
    PES_LABEL_DROP,
    PES_LABEL_GAUGE,        /* width 1, a level the worker sets, not a count */
};

/* Counter families in block order: name, width, how members are labelled, what they
 * count (the Prometheus unit: pesigitg_<name>_<unit>_total), meaning. */
#define PES_COUNTERS(X)                                                                   \
    X(RX, 1, NONE, frames, "frames taken from the AF_XDP socket")                         \
    X(FORWARDED, 1, NONE, frames, "frames sent to a backend")                            \
    X(CID_ROUTED, PES_CID_CONFIGS, CONFIG_ID, frames,                                     \
      "frames routed by their connection ID, by QUIC-LB config id")                      \
    X(FALLBACK_ROUTED, 1, NONE, frames, "frames routed by Maglev over the fallback pool") \
    X(ICMP_ROUTED, 1, NONE, frames, "ICMP errors forwarded, however routed")             \
    X(UNROUTABLE, PES_UNR_COUNT - 1, UNROUTABLE, frames,                                  \
      "frames whose CID could not be routed (they fell back), by reason")                \
    X(DROPPED, PES_DROP_COUNT - 1, DROP, frames, "frames dropped, by reason")            \
    X(TX_FULL, 1, NONE, , "frames dropped because the TX ring was full")                 \
    X(FILL_EMPTY, 1, NONE, , "batches that found the fill ring empty")                   \
    X(TABLE_SWAPS, 1, NONE, , "route tables adopted by the worker")                       \
    X(ICMP_CID_ROUTED, 1, NONE, frames,                                                   \
      "ICMP errors sent to the server the quoted long header's source CID names")        \
    X(ICMP_FANOUT, 1, NONE, frames, "Packets Too Big copied to every backend")           \
    X(ICMP_FANOUT_LIMITED, 1, NONE, frames,                                               \
      "Packets Too Big sent to one backend by hash: over the rate, or short of frames")  \
    X(ICMP_HASH_ROUTED, 1, NONE, frames, "ICMP errors routed by the quoted flow's 4-tuple") \
    X(FLOW_HITS, 1, NONE, frames, "fallback frames whose 4-tuple the flow table held")   \
    X(FLOW_INSERTS, 1, NONE, , "flows the flow table learnt")                            \
    X(FLOW_EVICTIONS, 1, NONE, , "flows the flow table forgot for want of room")        \
    X(INITIALS, 1, NONE, frames, "QUIC v1 and v2 Initials seen by the Retry offload")     \
    X(RETRY_SENT, 1, NONE, frames, "Retry packets sent to clients")                      \
    X(RETRY_TOKEN_VALID, 1, NONE, frames, "Initials whose Retry token was valid")         \
    X(RETRY_TOKEN_INVALID, 1, NONE, frames,                                               \
      "Initials whose token was not authentic, for another client, or malformed")        \
    X(RETRY_TOKEN_EXPIRED, 1, NONE, frames, "Initials whose Retry token had expired")     \
    X(RETRY_ACTIVE, 1, GAUGE, , "1 while the worker answers tokenless Initials with Retries") \
    X(BAD_DESCRIPTORS, 1, NONE, ,                                                         \
      "ring entries outside the UMEM or their frame, skipped (a subverted worker's legacy)") \
    X(ICMP_FANOUT_REFUSED, 1, NONE, frames,                                               \
      "Packets Too Big not copied to every backend: the quoted source is no VIP")        \
    X(RETRY_TUPLE_ADMITTED, 1, NONE, frames,                                              \
      "Initials with a token to a server's CID from a 4-tuple a valid token admitted")

#define PES_CNT_ENUM(name, width, label, unit, doc) \
    PES_CNT_##name, PES_CNT_##name##_LAST = PES_CNT_##name + (width) - 1,
enum pes_counter { PES_COUNTERS(PES_CNT_ENUM) PES_CNT_COUNT };

/* One worker's counters: one writer (its loop), cache-line aligned and padded. */
typedef struct {
    __u64 v[PES_CNT_COUNT];
} __attribute__((aligned(64))) pes_counters;

#endif /* PESIGITG_ABI_H */
