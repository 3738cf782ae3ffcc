# The Retry offload's tokens (draft-ietf-quic-retry-offload §3, shared-state mode):
# sealed with the newest key, opened with the key their first octet names, bound to
# the client's address and, for a Retry token, to the Retry's source CID.

DEF TOKEN_MAX_BODY = 256        # octets of token body we decrypt (ours hold 11 + ODCID)
DEF SKEW_S = 2                  # the draft: SHOULD allow 2 s of clock skew
DEF RSCID_LEN = 8
DEF UTN_LEN = 12                # the unique token number, also the nonce's mask
DEF TAG_LEN = 16
DEF TOKEN_HEAD = 1 + UTN_LEN    # first octet (type, key sequence) and the number

cdef enum:
    TOKEN_VALID = 0
    TOKEN_INVALID = 1
    TOKEN_EXPIRED = 2


cdef inline size_t _token_aad(uint8_t *aad, const pes_pkt *pkt, uint8_t first,
                              const uint8_t *utn, const uint8_t *rscid, uint32_t rscid_len
                              ) noexcept nogil:
    # The token pseudo-header: client address (IPv4 zero-padded to 16), type and key
    # sequence, unique token number, and for a Retry token (rscid not NULL) the Retry
    # source CID; its length.
    memset(aad, 0, 16)
    memcpy(aad, pkt.flow.saddr, 4 if pkt.family == 4 else 16)
    aad[16] = first
    memcpy(aad + 17, utn, UTN_LEN)
    if rscid == NULL:
        return 17 + UTN_LEN
    aad[17 + UTN_LEN] = <uint8_t>rscid_len
    memcpy(aad + 18 + UTN_LEN, rscid, rscid_len)
    return 18 + UTN_LEN + rscid_len


cdef inline int _v4_shaped(const pes_pkt *pkt) noexcept nogil:
    # An IPv6 source whose last 12 octets are zero has the pseudo-header of an IPv4
    # address (4 octets, 12 zeros): it could present a token bound to that address.
    cdef int i
    if pkt.family != 6:
        return 0
    for i in range(4, 16):
        if pkt.flow.saddr[i]:
            return 0
    return 1


cdef inline const pes_retry_key *_token_key(const pes_route_table *t, uint8_t sequence
                                            ) noexcept nogil:
    return (<const pes_retry_key *>(<const uint8_t *>t + t.retry_keys_off)) + sequence


cdef inline int _open_token(const pes_offload *o, const pes_initial *ini, const pes_pkt *pkt,
                            int *kind, uint64_t *expires) noexcept nogil:
    # TOKEN_VALID, _INVALID or _EXPIRED; kind: 0 a Retry token, 1 a NEW_TOKEN one;
    # expires: the token's expiry (POSIX seconds) when it is valid.
    cdef const uint8_t *tok = ini.token
    cdef const pes_retry_key *key = _token_key(o.t, tok[0] & 0x7F)
    cdef uint8_t nonce[UTN_LEN]
    cdef uint8_t aad[16 + 1 + UTN_LEN + 1 + PES_CID_MAX_LEN]
    cdef uint8_t body[TOKEN_MAX_BODY]
    cdef size_t body_len, aad_len, i
    cdef uint64_t expiry = 0
    cdef uint32_t odcil
    kind[0] = tok[0] >> 7
    if ini.token_len < TOKEN_HEAD + 8 + TAG_LEN or \
            ini.token_len - TOKEN_HEAD - TAG_LEN > TOKEN_MAX_BODY \
            or not key.present or _v4_shaped(pkt):
        return TOKEN_INVALID
    body_len = ini.token_len - TOKEN_HEAD - TAG_LEN
    for i in range(UTN_LEN):
        nonce[i] = key.iv[i] ^ tok[1 + i]
    aad_len = _token_aad(aad, pkt, tok[0], tok + 1, ini.dcid if kind[0] == 0 else NULL,
                         ini.dcid_len)
    if not pes_gcm_open(&key.gcm, nonce, aad, aad_len, tok + TOKEN_HEAD, body_len,
                        tok + TOKEN_HEAD + body_len, body):
        return TOKEN_INVALID
    for i in range(8):
        expiry = (expiry << 8) | body[i]
    if kind[0] == 0:
        odcil = body[8] if body_len > 8 else 0
        if odcil < PES_ODCID_MIN or odcil > PES_CID_MAX_LEN or body_len < 8 + 1 + odcil + 2:
            return TOKEN_INVALID
        if ((<uint32_t>body[9 + odcil] << 8) | body[10 + odcil]) != pkt.flow.sport:
            return TOKEN_INVALID
    if expiry + SKEW_S < o.now_s:
        return TOKEN_EXPIRED
    expires[0] = expiry + SKEW_S
    return TOKEN_VALID


cdef inline size_t _make_token(const pes_offload *o, const pes_pkt *pkt, const uint8_t *odcid,
                               uint32_t odcid_len, const uint8_t *rscid, uint8_t *token
                               ) noexcept nogil:
    # A Retry (type 0) token for this client under the newest key: expiry, the original
    # DCID and the client's port, sealed; its length.
    cdef const pes_route_table *t = o.t
    cdef const pes_retry_key *key = _token_key(t, <uint8_t>t.retry_newest)
    cdef uint8_t nonce[UTN_LEN]
    cdef uint8_t aad[16 + 1 + UTN_LEN + 1 + PES_CID_MAX_LEN]
    cdef uint8_t body[8 + 1 + PES_CID_MAX_LEN + 2]
    cdef uint64_t expiry = o.now_s + t.knobs[PES_KNOB_RETRY_LIFETIME_S]
    cdef size_t body_len = 8 + 1 + odcid_len + 2, aad_len, i
    token[0] = <uint8_t>t.retry_newest               # type 0, key sequence
    pes_rng_bytes(o.rng, token + 1, UTN_LEN)
    for i in range(8):
        body[i] = <uint8_t>(expiry >> (56 - 8 * i))
    body[8] = <uint8_t>odcid_len
    memcpy(body + 9, odcid, odcid_len)
    _put16(body + 9 + odcid_len, pkt.flow.sport)
    for i in range(UTN_LEN):
        nonce[i] = key.iv[i] ^ token[1 + i]
    aad_len = _token_aad(aad, pkt, token[0], token + 1, rscid, RSCID_LEN)
    pes_gcm_seal(&key.gcm, nonce, aad, aad_len, body, body_len, token + TOKEN_HEAD,
                 token + TOKEN_HEAD + body_len)
    return TOKEN_HEAD + body_len + TAG_LEN
