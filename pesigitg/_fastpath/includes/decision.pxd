from libc.stdint cimport int8_t, uint8_t, uint16_t, uint64_t


cdef extern from "decision.h" nogil:
    enum pes_route_kind:
        PES_ROUTE_NONE
        PES_ROUTE_CID
        PES_ROUTE_FALLBACK
        PES_ROUTE_ICMP
        PES_ROUTE_SWAP

    enum pes_unroutable:
        PES_UNR_NONE
        PES_UNR_NO_CONFIG
        PES_UNR_SHORT_CID
        PES_UNR_UNKNOWN_SERVER
        PES_UNR_SERVER_DOWN
        PES_UNR_COUNT

    enum pes_drop:
        PES_DROP_NONE
        PES_DROP_NOT_IP
        PES_DROP_NOT_UDP
        PES_DROP_MALFORMED
        PES_DROP_FRAGMENT
        PES_DROP_NOT_QUIC
        PES_DROP_NO_BACKEND
        PES_DROP_COUNT

    ctypedef struct pes_decision:
        uint16_t backend
        uint8_t route
        uint8_t unroutable
        uint8_t drop
        int8_t config_id

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
        PES_CNT_COUNT

    ctypedef struct pes_counters:
        uint64_t v[1]
