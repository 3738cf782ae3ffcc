/* What the packet path decided about one frame, and the per-worker counters.
 *
 * Counter names live beside this enum in pesigitg/_fastpath/decide.pyx
 * (COUNTER_NAMES); a test checks both have the same length and order.
 */
#ifndef PESIGITG_DECISION_H
#define PESIGITG_DECISION_H

#include <stdint.h>

enum pes_route_kind {
    PES_ROUTE_NONE = 0,     /* dropped */
    PES_ROUTE_CID = 1,      /* routable CID: the server it names */
    PES_ROUTE_FALLBACK = 2, /* Maglev over the fallback pool */
    PES_ROUTE_ICMP = 3,     /* ICMP error: Maglev on the quoted flow's 4-tuple */
    PES_ROUTE_SWAP = 4,     /* MAC-swap-only benchmark mode */
};

/* Why a CID was not routable (the frame then falls back). */
enum pes_unroutable {
    PES_UNR_NONE = 0,
    PES_UNR_NO_CONFIG,      /* config id 7 or one that is not configured */
    PES_UNR_SHORT_CID,      /* fewer octets than the config's CID length */
    PES_UNR_UNKNOWN_SERVER, /* decoded server ID is not in the config */
    PES_UNR_SERVER_DOWN,    /* known server, but down or its MAC unknown */
    PES_UNR_COUNT,
};

enum pes_drop {
    PES_DROP_NONE = 0,
    PES_DROP_NOT_IP,        /* not IPv4/IPv6 (the XDP program passes these) */
    PES_DROP_NOT_UDP,       /* not UDP, or ICMP that is not an error we route */
    PES_DROP_MALFORMED,     /* truncated or inconsistent headers */
    PES_DROP_FRAGMENT,      /* fragmented datagram: the rest went to the kernel */
    PES_DROP_NOT_QUIC,      /* UDP payload that breaks the QUIC invariants */
    PES_DROP_NO_BACKEND,    /* fallback needed, fallback pool empty */
    PES_DROP_COUNT,
};

typedef struct {
    uint16_t backend;       /* when route != NONE */
    uint8_t route;          /* enum pes_route_kind */
    uint8_t unroutable;     /* enum pes_unroutable */
    uint8_t drop;           /* enum pes_drop */
    int8_t config_id;       /* config of a CID-routed frame, else -1 */
} pes_decision;

enum pes_counter {
    PES_CNT_RX = 0,
    PES_CNT_FORWARDED,
    PES_CNT_CID_ROUTED,                         /* + config id, 7 slots */
    PES_CNT_FALLBACK_ROUTED = PES_CNT_CID_ROUTED + 7,
    PES_CNT_ICMP_ROUTED,
    PES_CNT_UNROUTABLE,                         /* + (reason - 1), 4 slots */
    PES_CNT_DROPPED = PES_CNT_UNROUTABLE + PES_UNR_COUNT - 1, /* + (reason - 1) */
    PES_CNT_TX_FULL = PES_CNT_DROPPED + PES_DROP_COUNT - 1,
    PES_CNT_FILL_EMPTY,
    PES_CNT_TABLE_SWAPS,
    PES_CNT_COUNT,
};

/* One worker's counters: one writer (its loop), cache-line aligned and padded. */
typedef struct {
    uint64_t v[PES_CNT_COUNT];
} __attribute__((aligned(64))) pes_counters;

#endif /* PESIGITG_DECISION_H */
