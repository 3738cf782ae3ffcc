# The contract (bpf/include/pesigitg_abi.h) and the shared parser (pesigitg_parse.h).
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "pesigitg_abi.h" nogil:
    enum:
        PES_XSK_SLOTS
        PES_MAX_PORTS
        PES_MAX_VIPS
        PES_CID_CONFIGS
        PES_CID_MAX_LEN
        PES_SERVER_ID_MIN
        PES_SERVER_ID_MAX
        PES_NONCE_MIN
        PES_PLAINTEXT_MAX
        PES_SHORT_HEADER_MIN
        PES_MAX_BACKENDS
        PES_FLOW_ENTRIES_MAX
        PES_RETRY_KEYS
        PES_INITIAL_MIN
        PES_BACKEND_SLOTS
        PES_PTB_COPY_MAX
        PES_RETRY_ADMITTED
        PES_ODCID_MIN
        PES_TIER_SERVERS
        PES_XDP_REASONS

    enum pes_route_kind:
        PES_ROUTE_NONE
        PES_ROUTE_CID
        PES_ROUTE_FALLBACK
        PES_ROUTE_ICMP
        PES_ROUTE_ICMP_CID
        PES_ROUTE_ICMP_FANOUT
        PES_ROUTE_ICMP_NOT_VIP
        PES_ROUTE_COUNT

    enum pes_unroutable:
        PES_UNR_NONE
        PES_UNR_NO_CONFIG
        PES_UNR_SHORT_CID
        PES_UNR_UNKNOWN_SERVER
        PES_UNR_SERVER_DOWN
        PES_UNR_COUNT

    enum pes_drop:
        PES_DROP_NONE
        PES_DROP_NOT_QUIC
        PES_DROP_NO_BACKEND
        PES_DROP_TOKEN
        PES_DROP_SHORT_INITIAL
        PES_DROP_SHORT_DCID
        PES_DROP_COUNT

    ctypedef struct pes_decision:
        uint16_t backend
        uint8_t route
        uint8_t unroutable
        uint8_t drop
        int8_t config_id
        uint8_t tuple_hashed
        uint64_t tuple_hash

    # Anonymous here so the values index arrays (the C enum is pes_counter).
    enum:
        PES_CNT_RX
        PES_CNT_FORWARDED
        PES_CNT_CID_ROUTED
        PES_CNT_FALLBACK_ROUTED
        PES_CNT_ICMP_ROUTED
        PES_CNT_UNROUTABLE
        PES_CNT_DROPPED
        PES_CNT_TX_FULL
        PES_CNT_FILL_EMPTY
        PES_CNT_TABLE_SWAPS
        PES_CNT_ICMP_CID_ROUTED
        PES_CNT_ICMP_FANOUT
        PES_CNT_ICMP_FANOUT_LIMITED
        PES_CNT_ICMP_HASH_ROUTED
        PES_CNT_FLOW_HITS
        PES_CNT_FLOW_INSERTS
        PES_CNT_FLOW_EVICTIONS
        PES_CNT_INITIALS
        PES_CNT_RETRY_SENT
        PES_CNT_RETRY_TOKEN_VALID
        PES_CNT_RETRY_TOKEN_INVALID
        PES_CNT_RETRY_TOKEN_EXPIRED
        PES_CNT_RETRY_ACTIVE
        PES_CNT_BAD_DESCRIPTORS
        PES_CNT_ICMP_FANOUT_REFUSED
        PES_CNT_RETRY_TUPLE_ADMITTED
        PES_CNT_COUNT

    enum pes_counter_label:
        PES_LABEL_NONE
        PES_LABEL_CONFIG_ID
        PES_LABEL_UNROUTABLE
        PES_LABEL_DROP
        PES_LABEL_GAUGE

    ctypedef struct pes_counters:
        uint64_t v[1]


cdef extern from "pesigitg_parse.h" nogil:
    enum:
        PES_PARSE_UDP
        PES_PARSE_ICMP_ERROR
        PES_PARSE_COUNT

    enum:
        PES_ETH_HLEN
        PES_IPV4_HLEN
        PES_IPV6_HLEN
        PES_UDP_HLEN
        PES_ICMP_HLEN
        PES_ETH_P_IP
        PES_ETH_P_IPV6
        PES_PROTO_UDP
        PES_PROTO_ICMP
        PES_PROTO_ICMPV6
        PES_QUIC_LONG_FORM
        PES_LONG_NONE
        PES_LONG_CUT
        PES_LONG_DCID
        PES_LONG_WHOLE

    struct pes_cursor:
        const uint8_t *pos
        const uint8_t *end
        uint32_t off

    struct pes_flow:
        uint8_t saddr[16]
        uint8_t daddr[16]
        uint16_t sport
        uint16_t dport

    struct pes_pkt:
        uint8_t family
        uint8_t proto
        uint8_t icmp_type
        uint8_t icmp_code
        pes_flow flow
        pes_flow quoted
        uint32_t l4
        uint32_t payload
        uint32_t payload_len

    struct pes_long_header:
        uint32_t version
        uint32_t dcid
        uint32_t scid
        uint32_t rest
        uint8_t first
        uint8_t dcid_len
        uint8_t scid_len

    void pes_cursor_init(pes_cursor *c, const void *data, const void *end)
    int pes_parse_frame(pes_cursor *c, pes_pkt *pkt)
    int pes_pull_long_header(pes_cursor *c, pes_long_header *lh)
    int pes_packet_too_big(const pes_pkt *pkt)
    int pes_parse_drop(int outcome)
    int pes_parse_xdp_verdict(int outcome)


cdef extern from "abi_names.h" nogil:
    ctypedef struct pes_name:
        const char *name
        const char *doc

    ctypedef struct pes_limit_entry:
        const char *name
        long long value
        const char *doc

    ctypedef struct pes_family:
        const char *name
        int width
        int label
        const char *unit
        const char *doc

    ctypedef struct pes_outcome:
        const char *name
        int drop
        int xdp
        const char *doc

    ctypedef struct pes_map_name:
        const char *role
        const char *name
        const char *doc

    const pes_limit_entry pes_limit_table[]
    const pes_name pes_xdp_verdict_table[]
    const pes_outcome pes_outcome_table[]
    const pes_name pes_route_table_names[]
    const pes_name pes_unroutable_table[]
    const pes_name pes_drop_table[]
    const pes_family pes_family_table[]
    const pes_map_name pes_map_table[]
    const char pes_settings_var[]
    const pes_name pes_knob_table[]
    const pes_name pes_retry_mode_table[]
    const int pes_limit_count
    const int pes_family_count
    const int pes_map_count
