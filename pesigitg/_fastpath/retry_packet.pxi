# The Retry packet (RFC 9000 §17.2.5) with its integrity tag (RFC 9001 §5.8, RFC 9369
# §3.3.3), and the frame that carries it from the VIP back to the client.

DEF QUIC_V1 = 0x00000001
DEF QUIC_V2 = 0x6b3343cf
DEF HOP_LIMIT = 64              # TTL of the Retry's IPv4 header, hop limit of IPv6's
DEF IPV4_DF = 0x40              # the Don't Fragment flag, in the flags octet

# The Retry integrity keys (RFC 9001 §5.8, RFC 9369 §3.3.3), expanded at import.
cdef pes_gcm_key _INTEGRITY_V1
cdef pes_gcm_key _INTEGRITY_V2
cdef const uint8_t *_NONCE_V1 = b"\x46\x15\x99\xd3\x5d\x63\x2b\xf2\x23\x98\x25\xbb"
cdef const uint8_t *_NONCE_V2 = b"\xd8\x69\x69\xbc\x2d\x7c\x6d\x99\x90\xef\xb0\x4a"
if pes_gcm_supported():
    pes_gcm_init(&_INTEGRITY_V1, b"\xbe\x0c\x69\x0b\x9f\x66\x57\x5a\x1d\x76\x6b\x54\xe3\x68\xc8\x4e")
    pes_gcm_init(&_INTEGRITY_V2, b"\x8f\xb4\xb0\x1b\x56\xac\x48\xe2\x60\xfb\xcb\xce\xad\x7c\xcc\x92")

# What a Retry says: to the client's SCID (dcid), from the Retry's SCID (scid), about
# its first Initial's DCID (odcid), with a token.
cdef struct pes_retry_fields:
    uint32_t version
    uint8_t unused              # the low four bits of the first octet (random)
    const uint8_t *dcid
    uint32_t dcid_len
    const uint8_t *scid
    uint32_t scid_len
    const uint8_t *odcid
    uint32_t odcid_len
    const uint8_t *token
    uint32_t token_len


cdef inline uint32_t _be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline int _initial_type(uint32_t version) noexcept nogil:
    # The long-header type bits of an Initial (RFC 9000 §17.2, RFC 9369 §3.2); -1: a
    # version the offload does not support (forwarded untouched).
    if version == QUIC_V1:
        return 0
    if version == QUIC_V2:
        return 1
    return -1


cdef inline size_t _retry_quic(const pes_retry_fields *r, uint8_t *out) noexcept nogil:
    # The Retry's QUIC packet with its integrity tag into out; its length. ``out`` must
    # not overlap the inputs.
    cdef uint8_t pseudo[1 + PES_CID_MAX_LEN + 1 + 4 + 1 + PES_CID_MAX_LEN + 1
                        + PES_CID_MAX_LEN + 512]
    cdef size_t n, start = 1 + r.odcid_len
    cdef uint32_t version = r.version
    cdef const pes_gcm_key *key = &_INTEGRITY_V1 if version == QUIC_V1 else &_INTEGRITY_V2
    cdef const uint8_t *nonce = _NONCE_V1 if version == QUIC_V1 else _NONCE_V2
    # The pseudo-packet: original DCID (length first), then the Retry without its tag.
    pseudo[0] = <uint8_t>r.odcid_len
    memcpy(pseudo + 1, r.odcid, r.odcid_len)
    n = start
    # Long header, fixed bit, type Retry (v1: 3, v2: 0), the unused bits.
    pseudo[n] = PES_QUIC_LONG_FORM | 0x40 | ((3 if version == QUIC_V1 else 0) << 4) \
        | (r.unused & 0x0F)
    pseudo[n + 1] = <uint8_t>(version >> 24)
    pseudo[n + 2] = <uint8_t>(version >> 16)
    pseudo[n + 3] = <uint8_t>(version >> 8)
    pseudo[n + 4] = <uint8_t>version
    pseudo[n + 5] = <uint8_t>r.dcid_len
    memcpy(pseudo + n + 6, r.dcid, r.dcid_len)
    n += 6 + r.dcid_len
    pseudo[n] = <uint8_t>r.scid_len
    memcpy(pseudo + n + 1, r.scid, r.scid_len)
    n += 1 + r.scid_len
    memcpy(pseudo + n, r.token, r.token_len)
    n += r.token_len
    pes_gcm_seal(key, nonce, pseudo, n, NULL, 0, NULL, out + n - start)
    memcpy(out, pseudo + start, n - start)
    return n - start + TAG_LEN


cdef inline uint32_t _frame_back(uint8_t *out, const uint8_t *macs, const pes_pkt *pkt,
                                 uint32_t udp_len) noexcept nogil:
    # Ethernet, IP and UDP headers of a datagram from the VIP back to the client that
    # sent pkt (``macs``: its destination and source MAC, swapped), UDP checksum left
    # zero; the offset of the UDP header.
    cdef uint32_t l4
    memcpy(out, macs, 12)
    if pkt.family == 4:
        _put16(out + 12, PES_ETH_P_IP)
        l4 = PES_ETH_HLEN + PES_IPV4_HLEN
        memset(out + PES_ETH_HLEN, 0, PES_IPV4_HLEN)
        out[14] = (4 << 4) | (PES_IPV4_HLEN // 4)
        _put16(out + 16, PES_IPV4_HLEN + udp_len)
        out[20] = IPV4_DF
        out[22] = HOP_LIMIT
        out[23] = PES_PROTO_UDP
        memcpy(out + 26, pkt.flow.daddr, 4)
        memcpy(out + 30, pkt.flow.saddr, 4)
        _put16(out + 24, pes_csum_fold(pes_csum_add(0, out + PES_ETH_HLEN, PES_IPV4_HLEN)))
    else:
        _put16(out + 12, PES_ETH_P_IPV6)
        l4 = PES_ETH_HLEN + PES_IPV6_HLEN
        memset(out + PES_ETH_HLEN, 0, 8)
        out[14] = 6 << 4
        _put16(out + 18, udp_len)
        out[20] = PES_PROTO_UDP
        out[21] = HOP_LIMIT
        memcpy(out + 22, pkt.flow.daddr, 16)
        memcpy(out + 38, pkt.flow.saddr, 16)
    _put16(out + l4, pkt.flow.dport)
    _put16(out + l4 + 2, pkt.flow.sport)
    _put16(out + l4 + 4, udp_len)
    out[l4 + 6] = out[l4 + 7] = 0
    return l4


cdef inline void _udp_checksum(uint8_t *out, const pes_pkt *pkt, uint32_t l4,
                               uint32_t udp_len) noexcept nogil:
    # Over the pseudo-header (addresses, protocol, length), then the datagram.
    cdef uint32_t alen = 4 if pkt.family == 4 else 16
    cdef uint32_t sum = pes_csum_add(0, pkt.flow.daddr, alen)
    sum = pes_csum_add(sum, pkt.flow.saddr, alen)
    sum += PES_PROTO_UDP + udp_len
    sum = pes_csum_add(sum, out + l4, udp_len)
    _put16(out + l4 + 6, pes_csum_fold(sum) or 0xFFFF)


cdef inline uint32_t _build_retry(const pes_offload *o, const uint8_t *frame,
                                  const pes_pkt *pkt, const pes_initial *ini, uint8_t *out
                                  ) noexcept nogil:
    # The Retry answering the Initial in frame, as a whole frame back to its sender, into
    # out (which may be frame itself); its length.
    cdef uint8_t macs[12]
    cdef uint8_t odcid[PES_CID_MAX_LEN]
    cdef uint8_t csid[PES_CID_MAX_LEN]
    cdef uint8_t rscid[RSCID_LEN]
    cdef uint8_t token[TOKEN_HEAD + 8 + 1 + PES_CID_MAX_LEN + 2 + TAG_LEN]
    cdef uint8_t retry[1 + 4 + 1 + PES_CID_MAX_LEN + 1 + RSCID_LEN
                       + TOKEN_HEAD + 8 + 1 + PES_CID_MAX_LEN + 2 + TAG_LEN + TAG_LEN]
    cdef pes_retry_fields r
    cdef uint32_t l4, retry_len
    # Everything the answer needs from the frame, before out (possibly the frame) is
    # written.
    memcpy(macs, frame + 6, 6)
    memcpy(macs + 6, frame, 6)
    memcpy(odcid, ini.dcid, ini.dcid_len)
    memcpy(csid, ini.scid, ini.scid_len)
    pes_rng_bytes(o.rng, rscid, RSCID_LEN)
    # QUIC-LB config id 7: the retried Initial is routed by the fallback's hash of this
    # CID, the same on every balancer.
    rscid[0] |= 0xE0
    r.version = ini.version
    pes_rng_bytes(o.rng, &r.unused, 1)
    r.dcid, r.dcid_len = csid, ini.scid_len
    r.scid, r.scid_len = rscid, RSCID_LEN
    r.odcid, r.odcid_len = odcid, ini.dcid_len
    r.token = token
    r.token_len = <uint32_t>_make_token(o, pkt, odcid, ini.dcid_len, rscid, token)
    retry_len = <uint32_t>_retry_quic(&r, retry)
    l4 = _frame_back(out, macs, pkt, PES_UDP_HLEN + retry_len)
    memcpy(out + l4 + PES_UDP_HLEN, retry, retry_len)
    _udp_checksum(out, pkt, l4, PES_UDP_HLEN + retry_len)
    return l4 + PES_UDP_HLEN + retry_len


def retry_packet(uint32_t version, bytes dcid not None, bytes scid not None,
                 bytes odcid not None, bytes token not None, uint8_t unused=0):
    """The packet path's Retry (QUIC part, with its integrity tag) for the same inputs
    as pesigitg.routing.retry.retry_packet."""
    cdef uint8_t out[1 + 4 + 1 + 20 + 1 + 20 + 512 + 16]
    cdef pes_retry_fields r
    if _initial_type(version) < 0:
        raise ValueError(f"version {version:#x} is neither QUIC v1 nor v2")
    if len(dcid) > 20 or len(scid) > 20 or len(odcid) > 20 or len(token) > 512:
        raise ValueError("connection IDs are at most 20 octets, tokens here 512")
    if not pes_gcm_supported():
        raise RuntimeError("this CPU has no AES-NI and PCLMULQDQ")
    r.version, r.unused = version, unused
    r.dcid, r.dcid_len = <const uint8_t *>PyBytes_AS_STRING(dcid), len(dcid)
    r.scid, r.scid_len = <const uint8_t *>PyBytes_AS_STRING(scid), len(scid)
    r.odcid, r.odcid_len = <const uint8_t *>PyBytes_AS_STRING(odcid), len(odcid)
    r.token, r.token_len = <const uint8_t *>PyBytes_AS_STRING(token), len(token)
    return bytes(out[:_retry_quic(&r, out)])
