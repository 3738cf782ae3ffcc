# routetable.h: the route-table blob (header, backends, Maglev slots, server IDs).
from libc.stdint cimport uint8_t, uint16_t, uint32_t

from pesigitg._fastpath.includes.cidtable cimport pes_cid_table
from pesigitg._fastpath.includes.gcm cimport pes_gcm_key


cdef extern from "routetable.h" nogil:
    enum:
        PES_ROUTE_MAGIC
        PES_ROUTE_VERSION
        PES_BACKEND_NONE
        PES_BACKEND_ROUTABLE

    enum pes_backend_state:
        PES_BACKEND_UP
        PES_BACKEND_DRAINING
        PES_BACKEND_MAC_KNOWN

    ctypedef struct pes_backend:
        uint8_t mac[6]
        uint8_t state
        uint16_t slot
        uint32_t key

    enum pes_retry_mode:
        PES_RETRY_OFF
        PES_RETRY_ALWAYS
        PES_RETRY_LOAD
        PES_RETRY_MODE_COUNT

    # Anonymous here so the values index arrays (the C enum is pes_knob).
    enum:
        PES_KNOB_FLOW_ENTRIES
        PES_KNOB_ICMP_FANOUT_RATE
        PES_KNOB_RETRY_MODE
        PES_KNOB_RETRY_LIFETIME_S
        PES_KNOB_RETRY_TRIGGER
        PES_KNOB_RETRY_TRANSITION_MS
        PES_KNOB_COUNT

    ctypedef struct pes_retry_key:
        pes_gcm_key gcm
        uint8_t iv[12]
        uint8_t present

    ctypedef struct pes_sid_entry:
        uint8_t server_id[15]  # PES_SERVER_ID_MAX
        uint16_t backend

    ctypedef struct pes_route_table:
        uint32_t magic
        uint32_t version
        uint32_t size
        uint32_t n_backends
        uint32_t maglev_size
        uint32_t backends_off
        uint32_t maglev_off
        uint32_t sids_off[7]
        uint32_t sids_count[7]
        uint8_t if_mac[6]
        uint32_t keys_off
        uint32_t keys_mask
        uint32_t knobs[PES_KNOB_COUNT]
        uint32_t retry_newest
        uint32_t retry_keys_off
        uint32_t hash_keyed
        uint8_t hash_key[16]
        uint32_t vips_off[2]
        uint32_t vips_count[2]
        pes_cid_table cid

    int pes_backend_by_key(const pes_route_table *t, uint32_t key)
    int pes_find_server(const pes_route_table *t, int config_id, const uint8_t *sid)
    int pes_vip_listed(const pes_route_table *t, int family, const uint8_t *addr)
