/* The route table: one immutable blob, compiled in Python, read by the loop without
 * the GIL. Layout is the contract between pesigitg/routing/routes.py (through
 * pack_route_table in table.pxi) and the packet path.
 *
 *   pes_route_table   header, with the QUIC-LB decode table embedded
 *   pes_backend[n]    at backends_off
 *   uint16_t[m]       Maglev lookup table at maglev_off (backend index or NONE)
 *   pes_sid_entry[k]  per config id, sorted by server ID, at sids_off[id]
 *   uint16_t[mask+1]  backend index by key, open addressing (linear probing from
 *                     key & mask), NONE where empty, at keys_off
 *   pes_retry_key[128] the Retry offload's token keys by sequence, at retry_keys_off
 *                     (0: the offload is off)
 *   uint8_t[4][n4]    the IPv4 VIPs, sorted, at vips_off[0]; then the IPv6 ones,
 *   uint8_t[16][n6]   sorted, at vips_off[1] (a Packet Too Big is copied to every
 *                     backend only when the packet it quotes left from a VIP)
 *
 * A backend's key is a hash of its address, the same in every table: the flow table
 * remembers keys, not indices, which change when a reload adds or removes a backend.
 */
#ifndef PESIGITG_ROUTETABLE_H
#define PESIGITG_ROUTETABLE_H

#include <stdint.h>
#include <string.h>
#include "cidtable.h"
#include "gcm.h"

#define PES_ROUTE_MAGIC 0x52534550u /* "PESR" little endian */
#define PES_ROUTE_VERSION 6u
#define PES_BACKEND_NONE 0xFFFFu /* a Maglev slot with no backend (PES_MAX_BACKENDS + 1) */

enum pes_backend_state {
    PES_BACKEND_UP = 1,        /* passes health checks (or checks are off) */
    PES_BACKEND_DRAINING = 2,  /* keeps its CIDs, gets no new connections */
    PES_BACKEND_MAC_KNOWN = 4, /* the MAC below is valid */
};

/* Routable for its own CIDs: up and MAC known (draining or not). */
#define PES_BACKEND_ROUTABLE (PES_BACKEND_UP | PES_BACKEND_MAC_KNOWN)

typedef struct {
    uint8_t mac[6];
    uint8_t state;
    uint8_t reserved;
    uint16_t slot;          /* its frame counters (< PES_BACKEND_SLOTS), or NONE */
    uint16_t reserved2;
    uint32_t key;           /* nonzero, unique in the table */
} pes_backend;

/* The Retry offload's modes, as lb.toml's [retry] mode names them. */
#define PES_RETRY_MODES(X)                                                           \
    X(OFF, "no Retry offload: nothing inspected")                                   \
    X(ALWAYS, "every worker answers every tokenless Initial")                      \
    X(LOAD, "a worker answers them while its Initials pass the trigger")
#define PES_RETRY_MODE_ENUM(name, doc) PES_RETRY_##name,
enum pes_retry_mode { PES_RETRY_MODES(PES_RETRY_MODE_ENUM) PES_RETRY_MODE_COUNT };

/* lb.toml's numbers the packet path reads, each filled from one key (routing/
 * route_config.py's schema names which): the packer writes them by name, the loop
 * reads them by index. A new one is a line here, a row there, and its use. */
#define PES_TABLE_KNOBS(X)                                                           \
    X(FLOW_ENTRIES, "each worker's flow table: entries, 0 for none")                \
    X(ICMP_FANOUT_RATE, "Packets Too Big copied to every backend per second")       \
    X(RETRY_MODE, "the Retry offload's mode (PES_RETRY_MODES)")                     \
    X(RETRY_LIFETIME_S, "seconds the tokens the offload makes live")                \
    X(RETRY_TRIGGER, "mode load: Initials a second per worker that make it active") \
    X(RETRY_TRANSITION_MS, "Retry and forward for this long while becoming active")
#define PES_KNOB_ENUM(name, doc) PES_KNOB_##name,
enum pes_knob { PES_TABLE_KNOBS(PES_KNOB_ENUM) PES_KNOB_COUNT };

/* A token key of the Retry offload: AES-128-GCM key (expanded) and IV. */
typedef struct {
    pes_gcm_key gcm;
    uint8_t iv[12];
    uint8_t present;
    uint8_t reserved[3];
} pes_retry_key;

typedef struct {
    uint8_t server_id[PES_SERVER_ID_MAX];
    uint8_t reserved;
    uint16_t backend;
} pes_sid_entry;

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t size;          /* whole blob, octets */
    uint32_t n_backends;
    uint32_t maglev_size;   /* a prime */
    uint32_t backends_off;
    uint32_t maglev_off;
    uint32_t sids_off[PES_CID_CONFIGS];
    uint32_t sids_count[PES_CID_CONFIGS];
    uint8_t if_mac[6];
    uint8_t reserved[2];
    uint32_t keys_off;
    uint32_t keys_mask;         /* slots - 1, a power of two minus one */
    uint32_t knobs[PES_KNOB_COUNT];  /* PES_TABLE_KNOBS */
    uint32_t retry_newest;      /* the key sequence new tokens use */
    uint32_t retry_keys_off;
    uint32_t hash_keyed;        /* the fallback hashes with SipHash-2-4 under hash_key */
    uint8_t hash_key[16];
    uint32_t vips_off[2];       /* IPv4, IPv6 */
    uint32_t vips_count[2];
    pes_cid_table cid;
} pes_route_table;

/* Index of the backend with ``key``, or -1. */
static inline int pes_backend_by_key(const pes_route_table *t, uint32_t key)
{
    const uint16_t *slots = (const uint16_t *)((const uint8_t *)t + t->keys_off);
    const pes_backend *backends = (const pes_backend *)((const uint8_t *)t + t->backends_off);
    uint32_t i = key & t->keys_mask;

    for (uint32_t probes = 0; probes <= t->keys_mask; probes++) {
        uint16_t b = slots[i];
        if (b == PES_BACKEND_NONE)
            return -1;
        if (backends[b].key == key)
            return b;
        i = (i + 1) & t->keys_mask;
    }
    return -1;
}

/* A server ID of len octets (1..PES_SERVER_ID_MAX, 16 readable at sid) as one
 * big-endian number: memcmp's order, in two loads instead of a call per probe. */
static inline unsigned __int128 pes_sid_number(const uint8_t *sid, size_t len)
{
    uint64_t hi, lo;
    unsigned __int128 n;
    memcpy(&hi, sid, 8);
    memcpy(&lo, sid + 8, 8);
    n = ((unsigned __int128)__builtin_bswap64(hi) << 64) | __builtin_bswap64(lo);
    return n & ~(~(unsigned __int128)0 >> (8 * len));
}

/* The backend index of config_id's server sid (16 octets readable, the first
 * server_id_len of them the server ID), or -1: a binary search of its sorted entries. */
static inline int pes_find_server(const pes_route_table *t, int config_id, const uint8_t *sid)
{
    const pes_sid_entry *entries =
        (const pes_sid_entry *)((const uint8_t *)t + t->sids_off[config_id]);
    size_t len = t->cid.conf[config_id].server_id_len;
    unsigned __int128 want = pes_sid_number(sid, len);
    int lo = 0, hi = (int)t->sids_count[config_id] - 1;

    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        unsigned __int128 have = pes_sid_number(entries[mid].server_id, len);

        if (have == want)
            return entries[mid].backend;
        if (have < want)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Whether ``addr`` (4 or 16 octets, by family) is a VIP: a binary search. */
static inline int pes_vip_listed(const pes_route_table *t, int family, const uint8_t *addr)
{
    int which = family == 4 ? 0 : 1;
    size_t len = family == 4 ? 4 : 16;
    const uint8_t *vips = (const uint8_t *)t + t->vips_off[which];
    int lo = 0, hi = (int)t->vips_count[which] - 1;

    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        int c = memcmp(vips + (size_t)mid * len, addr, len);

        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

#endif /* PESIGITG_ROUTETABLE_H */
