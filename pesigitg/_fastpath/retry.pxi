# The Retry offload (draft-ietf-quic-retry-offload, shared-state mode): AES-128-GCM,
# the token, the Retry packet. The loop's part is in engine.pxi; these are the
# pieces, with Python entries for the tests.

from pesigitg._fastpath.includes.gcm cimport pes_gcm_key, pes_gcm_open, pes_gcm_seal


def gcm_supported():
    """Whether this CPU has AES-NI and PCLMULQDQ (the Retry offload needs both)."""
    return bool(pes_gcm_supported())


cdef _gcm_key(bytes key, pes_gcm_key *k):
    if len(key) != 16:
        raise ValueError(f"an AES-128 key is 16 octets, not {len(key)}")
    if not pes_gcm_supported():
        raise RuntimeError("this CPU has no AES-NI and PCLMULQDQ")
    pes_gcm_init(k, <const uint8_t *>PyBytes_AS_STRING(key))


def gcm_seal(bytes key not None, bytes iv not None, bytes aad not None, bytes plaintext not None):
    """AES-128-GCM: ciphertext followed by the 16-octet tag."""
    cdef pes_gcm_key k
    if len(iv) != 12:
        raise ValueError("the IV is 12 octets")
    _gcm_key(key, &k)
    out = PyBytes_FromStringAndSize(NULL, len(plaintext) + 16)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    pes_gcm_seal(&k, <const uint8_t *>PyBytes_AS_STRING(iv),
                 <const uint8_t *>PyBytes_AS_STRING(aad), len(aad),
                 <const uint8_t *>PyBytes_AS_STRING(plaintext), len(plaintext), o,
                 o + len(plaintext))
    return out


def gcm_open(bytes key not None, bytes iv not None, bytes aad not None, bytes sealed not None):
    """The plaintext of ``sealed`` (ciphertext and tag), or None when it is not
    authentic."""
    cdef pes_gcm_key k
    cdef Py_ssize_t n = len(sealed) - 16
    if len(iv) != 12:
        raise ValueError("the IV is 12 octets")
    if n < 0:
        return None
    _gcm_key(key, &k)
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef const uint8_t *s = <const uint8_t *>PyBytes_AS_STRING(sealed)
    if not pes_gcm_open(&k, <const uint8_t *>PyBytes_AS_STRING(iv),
                        <const uint8_t *>PyBytes_AS_STRING(aad), len(aad), s, n, s + n,
                        <uint8_t *>PyBytes_AS_STRING(out)):
        return None
    return out


# -- the packet path's part -----------------------------------------------------------------

from pesigitg._fastpath.includes.retrywire cimport pes_csum_add, pes_csum_fold, pes_rng, \
    pes_rng_bytes, pes_rng_seed
from pesigitg._fastpath.includes.routetable cimport (
    PES_KNOB_RETRY_LIFETIME_S,
    PES_KNOB_RETRY_MODE,
    PES_RETRY_OFF,
    pes_retry_key,
)

DEF QUIC_V1 = 0x00000001
DEF QUIC_V2 = 0x6b3343cf
DEF TOKEN_MAX_BODY = 256        # octets of token body we decrypt (ours hold 11 + ODCID)
DEF SKEW_S = 2                  # the draft: SHOULD allow 2 s of clock skew
DEF RSCID_LEN = 8

# What the offload does with an Initial.
cdef enum:
    RETRY_FORWARD = 0
    RETRY_SEND = 1              # the frame becomes a Retry to its sender
    RETRY_SEND_AND_FORWARD = 2  # transition mode: a Retry from a spare frame, and forward
    RETRY_DROP = 3              # d.drop says why

# Where a worker's offload stands.
cdef enum:
    PHASE_OFF = 0               # no [retry], or mode off: nothing inspected
    PHASE_INACTIVE = 1          # mode load, below the trigger: Initials counted only
    PHASE_TRANSITION = 2        # becoming active: tokenless Initials answered and forwarded
    PHASE_ACTIVE = 3

cdef enum:
    TOKEN_VALID = 0
    TOKEN_INVALID = 1
    TOKEN_EXPIRED = 2

# What the offload works with for one frame: the table, the worker's random numbers and
# its admitted 4-tuples, the batch's phase and time, and its counters.
cdef struct pes_offload:
    const pes_route_table *t
    pes_rng *rng
    pes_flow_table *admitted
    uint64_t now_s
    uint64_t *local
    uint32_t *initials
    int phase

cdef struct pes_initial:
    uint32_t version
    uint32_t dcid_len
    uint32_t scid_len
    uint32_t token_len
    const uint8_t *dcid
    const uint8_t *scid
    const uint8_t *token

# The Retry integrity keys (RFC 9001 §5.8, RFC 9369 §3.3.3), expanded at import.
cdef pes_gcm_key _INTEGRITY_V1
cdef pes_gcm_key _INTEGRITY_V2
cdef const uint8_t *_NONCE_V1 = b"\x46\x15\x99\xd3\x5d\x63\x2b\xf2\x23\x98\x25\xbb"
cdef const uint8_t *_NONCE_V2 = b"\xd8\x69\x69\xbc\x2d\x7c\x6d\x99\x90\xef\xb0\x4a"
if pes_gcm_supported():
    pes_gcm_init(&_INTEGRITY_V1, b"\xbe\x0c\x69\x0b\x9f\x66\x57\x5a\x1d\x76\x6b\x54\xe3\x68\xc8\x4e")
    pes_gcm_init(&_INTEGRITY_V2, b"\x8f\xb4\xb0\x1b\x56\xac\x48\xe2\x60\xfb\xcb\xce\xad\x7c\xcc\x92")


cdef inline uint32_t _be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline int _varint(const uint8_t *p, size_t len, uint64_t *value) noexcept nogil:
    # RFC 9000 §16: the octets it takes, 0 when it does not fit.
    cdef size_t n, i
    cdef uint64_t v
    if len == 0:
        return 0
    n = <size_t>1 << (p[0] >> 6)
    if n > len:
        return 0
    v = p[0] & 0x3F
    for i in range(1, n):
        v = (v << 8) | p[i]
    value[0] = v
    return <int>n


cdef inline int _initial_type(uint32_t version) noexcept nogil:
    # The long-header type bits of an Initial (RFC 9000 §17.2, RFC 9369 §3.2); -1: a
    # version the offload does not support (forwarded untouched).
    if version == QUIC_V1:
        return 0
    if version == QUIC_V2:
        return 1
    return -1


cdef inline int _parse_initial(const uint8_t *p, size_t len, pes_initial *ini) noexcept nogil:
    # 1: p (a UDP payload) starts with a v1/v2 Initial whose header and token fit; 0: not
    # an Initial of those versions; -1: one, but cut short or malformed.
    cdef size_t pos
    cdef uint64_t token_len
    cdef int n, kind
    if len < 6 or not p[0] & 0x80:
        return 0
    kind = _initial_type(_be32(p + 1))
    if kind < 0 or (p[0] >> 4) & 3 != kind:
        return 0
    ini.version = _be32(p + 1)
    ini.dcid_len = p[5]
    pos = 6 + ini.dcid_len
    if ini.dcid_len > PES_CID_MAX_LEN or pos >= len:
        return -1
    ini.dcid = p + 6
    ini.scid_len = p[pos]
    if ini.scid_len > PES_CID_MAX_LEN or pos + 1 + ini.scid_len > len:
        return -1
    ini.scid = p + pos + 1
    pos += 1 + ini.scid_len
    n = _varint(p + pos, len - pos, &token_len)
    if n == 0 or token_len > len - pos - n:
        return -1
    ini.token = p + pos + n
    ini.token_len = <uint32_t>token_len
    return 1


cdef inline size_t _token_aad(uint8_t *aad, const pes_pkt *pkt, uint8_t first,
                              const uint8_t *utn, const uint8_t *rscid, uint32_t rscid_len,
                              int with_rscid) noexcept nogil:
    # The token pseudo-header: client address (IPv4 zero-padded to 16), type and key
    # sequence, unique token number, and for a Retry token the Retry source CID.
    cdef size_t n = 30
    memset(aad, 0, 16)
    memcpy(aad, pkt.flow.saddr, 4 if pkt.family == 4 else 16)
    aad[16] = first
    memcpy(aad + 17, utn, 12)
    if with_rscid:
        aad[29] = <uint8_t>rscid_len
        memcpy(aad + 30, rscid, rscid_len)
        n += rscid_len
    else:
        n = 29
    return n


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


cdef inline int _open_token(const pes_route_table *t, const pes_initial *ini,
                            const pes_pkt *pkt, uint64_t now_s, int *kind,
                            uint64_t *expires) noexcept nogil:
    # TOKEN_VALID, _INVALID or _EXPIRED; kind: 0 a Retry token, 1 a NEW_TOKEN one;
    # expires: the token's expiry (POSIX seconds) when it is valid.
    cdef const uint8_t *tok = ini.token
    cdef const pes_retry_key *key
    cdef uint8_t nonce[12]
    cdef uint8_t aad[64]
    cdef uint8_t body[TOKEN_MAX_BODY]
    cdef size_t body_len, aad_len, i
    cdef uint64_t expiry = 0
    cdef uint32_t odcil
    kind[0] = tok[0] >> 7
    key = (<const pes_retry_key *>(<const uint8_t *>t + t.retry_keys_off)) + (tok[0] & 0x7F)
    if ini.token_len < 1 + 12 + 8 + 16 or ini.token_len - 29 > TOKEN_MAX_BODY \
            or not key.present or _v4_shaped(pkt):
        return TOKEN_INVALID
    body_len = ini.token_len - 29
    for i in range(12):
        nonce[i] = key.iv[i] ^ tok[1 + i]
    aad_len = _token_aad(aad, pkt, tok[0], tok + 1, ini.dcid, ini.dcid_len, kind[0] == 0)
    if not pes_gcm_open(&key.gcm, nonce, aad, aad_len, tok + 13, body_len,
                        tok + 13 + body_len, body):
        return TOKEN_INVALID
    for i in range(8):
        expiry = (expiry << 8) | body[i]
    if kind[0] == 0:
        odcil = body[8] if body_len > 8 else 0
        if odcil < 8 or odcil > PES_CID_MAX_LEN or body_len < 8 + 1 + odcil + 2:
            return TOKEN_INVALID
        if ((<uint32_t>body[9 + odcil] << 8) | body[10 + odcil]) != pkt.flow.sport:
            return TOKEN_INVALID
    if expiry + SKEW_S < now_s:
        return TOKEN_EXPIRED
    expires[0] = expiry + SKEW_S
    return TOKEN_VALID


cdef inline size_t _retry_quic(uint32_t version, uint8_t unused, const uint8_t *dcid,
                               uint32_t dcid_len, const uint8_t *scid, uint32_t scid_len,
                               const uint8_t *odcid, uint32_t odcid_len, const uint8_t *token,
                               uint32_t token_len, uint8_t *out) noexcept nogil:
    # A Retry (RFC 9000 §17.2.5) with its integrity tag (RFC 9001 §5.8) into out; its
    # length. ``out`` must not overlap the inputs.
    cdef uint8_t pseudo[1 + 20 + 1 + 4 + 1 + 20 + 1 + 20 + 512]
    cdef size_t n = 0
    cdef const pes_gcm_key *key = &_INTEGRITY_V1 if version == QUIC_V1 else &_INTEGRITY_V2
    cdef const uint8_t *nonce = _NONCE_V1 if version == QUIC_V1 else _NONCE_V2
    # The pseudo-packet: original DCID (length first), then the Retry without its tag.
    pseudo[0] = <uint8_t>odcid_len
    memcpy(pseudo + 1, odcid, odcid_len)
    n = 1 + odcid_len
    pseudo[n] = 0xC0 | ((3 if version == QUIC_V1 else 0) << 4) | (unused & 0x0F)
    pseudo[n + 1] = <uint8_t>(version >> 24)
    pseudo[n + 2] = <uint8_t>(version >> 16)
    pseudo[n + 3] = <uint8_t>(version >> 8)
    pseudo[n + 4] = <uint8_t>version
    pseudo[n + 5] = <uint8_t>dcid_len
    memcpy(pseudo + n + 6, dcid, dcid_len)
    n += 6 + dcid_len
    pseudo[n] = <uint8_t>scid_len
    memcpy(pseudo + n + 1, scid, scid_len)
    n += 1 + scid_len
    memcpy(pseudo + n, token, token_len)
    n += token_len
    pes_gcm_seal(key, nonce, pseudo, n, NULL, 0, NULL, out + n - 1 - odcid_len)
    memcpy(out, pseudo + 1 + odcid_len, n - 1 - odcid_len)
    return n - 1 - odcid_len + 16


cdef inline size_t _make_token(const pes_route_table *t, pes_rng *rng, const pes_pkt *pkt,
                               const uint8_t *odcid, uint32_t odcid_len, const uint8_t *rscid,
                               uint64_t now_s, uint8_t *token) noexcept nogil:
    # A Retry (type 0) token for this client under the newest key; its length.
    cdef const pes_retry_key *key = (<const pes_retry_key *>(<const uint8_t *>t
                                                              + t.retry_keys_off)
                                     + t.retry_newest)
    cdef uint8_t nonce[12]
    cdef uint8_t aad[64]
    cdef uint8_t body[8 + 1 + 20 + 2]
    cdef uint64_t expiry = now_s + t.knobs[PES_KNOB_RETRY_LIFETIME_S]
    cdef size_t body_len = 8 + 1 + odcid_len + 2, aad_len, i
    token[0] = <uint8_t>t.retry_newest               # type 0, key sequence
    pes_rng_bytes(rng, token + 1, 12)
    for i in range(8):
        body[i] = <uint8_t>(expiry >> (56 - 8 * i))
    body[8] = <uint8_t>odcid_len
    memcpy(body + 9, odcid, odcid_len)
    _put16(body + 9 + odcid_len, pkt.flow.sport)
    for i in range(12):
        nonce[i] = key.iv[i] ^ token[1 + i]
    aad_len = _token_aad(aad, pkt, token[0], token + 1, rscid, RSCID_LEN, 1)
    pes_gcm_seal(&key.gcm, nonce, aad, aad_len, body, body_len, token + 13,
                 token + 13 + body_len)
    return 13 + body_len + 16


cdef inline uint32_t _build_retry(const pes_route_table *t, pes_rng *rng, const uint8_t *frame,
                                  const pes_pkt *pkt, const pes_initial *ini, uint64_t now_s,
                                  uint8_t *out) noexcept nogil:
    # The Retry answering the Initial in frame, as a whole frame back to its sender, into
    # out (which may be frame itself); its length.
    cdef uint8_t macs[12]
    cdef uint8_t client[16]
    cdef uint8_t vip[16]
    cdef uint8_t odcid[20]
    cdef uint8_t csid[20]
    cdef uint8_t rscid[RSCID_LEN]
    cdef uint8_t token[13 + 31 + 16]
    cdef uint8_t unused
    cdef uint8_t retry[1 + 4 + 1 + 20 + 1 + RSCID_LEN + 60 + 16]
    cdef uint32_t alen = 4 if pkt.family == 4 else 16
    cdef uint32_t odcil = ini.dcid_len, csil = ini.scid_len, version = ini.version
    cdef uint32_t ip_len, l4, retry_len, udp_len, sum
    cdef uint16_t client_port = pkt.flow.sport, vip_port = pkt.flow.dport
    cdef size_t token_len
    # Everything the answer needs, before out (possibly the frame) is written.
    memcpy(macs, frame + 6, 6)
    memcpy(macs + 6, frame, 6)
    memcpy(client, pkt.flow.saddr, alen)
    memcpy(vip, pkt.flow.daddr, alen)
    memcpy(odcid, ini.dcid, odcil)
    memcpy(csid, ini.scid, csil)
    pes_rng_bytes(rng, rscid, RSCID_LEN)
    # QUIC-LB config id 7: the retried Initial is routed by the fallback's hash of this
    # CID, the same on every balancer.
    rscid[0] |= 0xE0
    pes_rng_bytes(rng, &unused, 1)
    token_len = _make_token(t, rng, pkt, odcid, odcil, rscid, now_s, token)
    retry_len = <uint32_t>_retry_quic(version, unused, csid, csil, rscid, RSCID_LEN, odcid,
                                      odcil, token, <uint32_t>token_len, retry)
    udp_len = 8 + retry_len
    ip_len = 20 if pkt.family == 4 else 40
    memcpy(out, macs, 12)
    out[12] = 0x08 if pkt.family == 4 else 0x86
    out[13] = 0x00 if pkt.family == 4 else 0xDD
    l4 = 14 + ip_len
    if pkt.family == 4:
        out[14] = 0x45
        out[15] = 0
        _put16(out + 16, ip_len + udp_len)
        out[18] = out[19] = 0                       # identification
        out[20] = 0x40                              # DF
        out[21] = 0
        out[22] = 64                                # TTL
        out[23] = 17
        out[24] = out[25] = 0
        memcpy(out + 26, vip, 4)
        memcpy(out + 30, client, 4)
        _put16(out + 24, pes_csum_fold(pes_csum_add(0, out + 14, 20)))
    else:
        out[14] = 0x60
        out[15] = out[16] = out[17] = 0
        _put16(out + 18, udp_len)
        out[20] = 17
        out[21] = 64                                # hop limit
        memcpy(out + 22, vip, 16)
        memcpy(out + 38, client, 16)
    _put16(out + l4, vip_port)
    _put16(out + l4 + 2, client_port)
    _put16(out + l4 + 4, udp_len)
    out[l4 + 6] = out[l4 + 7] = 0
    memcpy(out + l4 + 8, retry, retry_len)
    # UDP checksum: the pseudo-header (addresses, protocol, length), then the datagram.
    sum = pes_csum_add(0, vip, alen)
    sum = pes_csum_add(sum, client, alen)
    sum += 17 + udp_len
    sum = pes_csum_add(sum, out + l4, udp_len)
    _put16(out + l4 + 6, pes_csum_fold(sum) or 0xFFFF)
    return l4 + udp_len


cdef inline uint64_t _tuple_fp(pes_flow_table *ft, const pes_pkt *pkt) noexcept nogil:
    return pes_flow_fp(ft, pkt.flow.saddr, pkt.flow.daddr, 4 if pkt.family == 4 else 16,
                       pkt.flow.sport, pkt.flow.dport)


cdef inline void _admit(pes_flow_table *ft, const pes_pkt *pkt, uint64_t until) noexcept nogil:
    # A valid token came from this 4-tuple: its later Initials, to the CID the server
    # chose (which the token, bound to the Retry's CID, no longer matches), are let in
    # until the token expires.
    cdef uint64_t fp = _tuple_fp(ft, pkt)
    cdef pes_flow_entry *e = pes_flow_lookup(ft, fp)
    if e != NULL:
        e.key = <uint32_t>until
    else:
        pes_flow_insert(ft, fp, <uint32_t>until)


cdef inline int _admitted(pes_flow_table *ft, const pes_pkt *pkt, uint64_t now_s
                          ) noexcept nogil:
    cdef pes_flow_entry *e = pes_flow_lookup(ft, _tuple_fp(ft, pkt))
    return e != NULL and e.key >= <uint32_t>now_s


cdef inline int _retry_or_drop(pes_offload *o, uint8_t *frame, uint32_t *len,
                               const pes_pkt *pkt, const pes_initial *ini, pes_decision *d,
                               uint8_t *spare, uint32_t *spare_len) noexcept nogil:
    # Answer with a Retry (into the frame, or into the spare: RETRY_SEND_AND_FORWARD),
    # unless the client's DCID is too short to be an original one (RFC 9000 7.2): its
    # token could never validate, so it is dropped.
    if ini.dcid_len < PES_ODCID_MIN:
        d.drop = PES_DROP_SHORT_DCID
        return RETRY_DROP
    if spare != NULL:
        spare_len[0] = _build_retry(o.t, o.rng, frame, pkt, ini, o.now_s, spare)
        return RETRY_SEND_AND_FORWARD
    len[0] = _build_retry(o.t, o.rng, frame, pkt, ini, o.now_s, frame)
    return RETRY_SEND


cdef inline int _retry_screen(pes_offload *o, uint8_t *frame, uint32_t *len,
                              const pes_pkt *pkt, pes_decision *d, uint8_t *spare,
                              uint32_t *spare_len) noexcept nogil:
    # What the offload does with a frame the decision forwards (a UDP datagram): one of
    # RETRY_*. For RETRY_SEND the frame has become the Retry (len updated); for
    # RETRY_SEND_AND_FORWARD the Retry is in spare (spare_len), a free frame the caller
    # offers (NULL: none, and the Initial is only forwarded); RETRY_DROP sets d.drop.
    # Every token is opened (the draft: the offload MUST try to decrypt every token).
    cdef pes_initial ini
    cdef int parsed, state, kind
    cdef uint64_t expires = 0
    cdef const uint8_t *payload = frame + pkt.payload
    if d.route != PES_ROUTE_CID and d.route != PES_ROUTE_FALLBACK:
        return RETRY_FORWARD
    parsed = _parse_initial(payload, pkt.payload_len, &ini)
    if parsed == 0:
        return RETRY_FORWARD
    o.local[PES_CNT_INITIALS] += 1
    o.initials[0] += 1
    if o.phase <= PHASE_INACTIVE:
        return RETRY_FORWARD
    if parsed < 0:
        d.drop = PES_DROP_NOT_QUIC
        return RETRY_DROP
    if pkt.payload_len < PES_INITIAL_MIN:
        d.drop = PES_DROP_SHORT_INITIAL
        return RETRY_DROP
    if ini.token_len == 0:
        if o.phase == PHASE_TRANSITION:
            if spare == NULL:
                return RETRY_FORWARD
            return _retry_or_drop(o, frame, len, pkt, &ini, d, spare, spare_len)
        return _retry_or_drop(o, frame, len, pkt, &ini, d, NULL, NULL)
    state = _open_token(o.t, &ini, pkt, o.now_s, &kind, &expires)
    if state == TOKEN_VALID:
        o.local[PES_CNT_RETRY_TOKEN_VALID] += 1
        _admit(o.admitted, pkt, expires)
        return RETRY_FORWARD
    if d.route == PES_ROUTE_CID and _admitted(o.admitted, pkt, o.now_s):
        # The client's later Initials, to the CID the server chose after the Retry: the
        # token is bound to the Retry's CID, but this 4-tuple showed a valid one.
        o.local[PES_CNT_RETRY_TUPLE_ADMITTED] += 1
        return RETRY_FORWARD
    o.local[PES_CNT_RETRY_TOKEN_EXPIRED if state == TOKEN_EXPIRED
            else PES_CNT_RETRY_TOKEN_INVALID] += 1
    if kind == 1:
        # A NEW_TOKEN token that fails: the client may retry through a Retry.
        return _retry_or_drop(o, frame, len, pkt, &ini, d, NULL, NULL)
    d.drop = PES_DROP_TOKEN
    return RETRY_DROP


# -- Python entries for the tests -----------------------------------------------------------

RETRY_ACTIONS = ("forward", "send", "send_and_forward", "drop")
RETRY_PHASES = {"off": PHASE_OFF, "inactive": PHASE_INACTIVE, "transition": PHASE_TRANSITION,
                "active": PHASE_ACTIVE}


def retry_packet(uint32_t version, bytes dcid not None, bytes scid not None,
                 bytes odcid not None, bytes token not None, uint8_t unused=0):
    """The packet path's Retry (QUIC part, with its integrity tag) for the same inputs
    as pesigitg.routing.retry.retry_packet."""
    cdef uint8_t out[1 + 4 + 1 + 20 + 1 + 20 + 512 + 16]
    cdef size_t n
    if _initial_type(version) < 0:
        raise ValueError(f"version {version:#x} is neither QUIC v1 nor v2")
    if len(dcid) > 20 or len(scid) > 20 or len(odcid) > 20 or len(token) > 512:
        raise ValueError("connection IDs are at most 20 octets, tokens here 512")
    if not pes_gcm_supported():
        raise RuntimeError("this CPU has no AES-NI and PCLMULQDQ")
    n = _retry_quic(version, unused, <const uint8_t *>PyBytes_AS_STRING(dcid), len(dcid),
                    <const uint8_t *>PyBytes_AS_STRING(scid), len(scid),
                    <const uint8_t *>PyBytes_AS_STRING(odcid), len(odcid),
                    <const uint8_t *>PyBytes_AS_STRING(token), len(token), out)
    return bytes(out[:n])


def retry_screen(RouteTable table not None, frame, str phase="active", now=None,
                 FlowTable admitted=None):
    """What the worker's offload does with ``frame`` in ``phase`` (a key of
    RETRY_PHASES), at wall-clock time ``now`` (POSIX seconds; default: now), with the
    worker's table of admitted 4-tuples ``admitted`` (default: an empty one):
    ``(action, frame_out, drop, counters)``, the action one of RETRY_ACTIONS,
    frame_out the Retry sent (for "send" and "send_and_forward"), drop the drop
    reason, counters those the offload bumped."""
    cdef bytearray buf = bytearray(frame)
    cdef bytearray spare = bytearray(2048)
    cdef uint8_t *data = <uint8_t *>_frame_pointer(buf)
    cdef uint8_t[::1] spare_view = spare
    cdef pes_decision d
    cdef pes_pkt pkt
    cdef pes_rng rng
    cdef pes_offload o
    cdef uint64_t local[PES_CNT_COUNT]
    cdef uint32_t length = len(buf), spare_len = 0, initials = 0
    cdef int act
    if table.table.knobs[PES_KNOB_RETRY_MODE] == PES_RETRY_OFF:
        raise ValueError("the route table's Retry offload is off")
    if admitted is None:
        admitted = FlowTable(PES_RETRY_ADMITTED)
    seed = os.urandom(16)
    pes_rng_seed(&rng, <const uint8_t *>PyBytes_AS_STRING(seed))
    memset(local, 0, sizeof(local))
    if not decide(table.table, data, len(buf), &d, &pkt):
        return "drop", None, DROPS[d.drop], {}
    o.t, o.rng, o.admitted, o.local, o.initials = table.table, &rng, &admitted.ft, local, \
        &initials
    o.now_s, o.phase = int(time.time() if now is None else now), RETRY_PHASES[phase]
    act = _retry_screen(&o, data, &length, &pkt, &d,
                        &spare_view[0] if o.phase == PHASE_TRANSITION else NULL, &spare_len)
    counters = {COUNTER_NAMES[i]: local[i] for i in range(PES_CNT_COUNT) if local[i]}
    if act == RETRY_SEND:
        return "send", bytes(buf[:length]), "none", counters
    if act == RETRY_SEND_AND_FORWARD:
        return "send_and_forward", bytes(spare[:spare_len]), "none", counters
    return RETRY_ACTIONS[act], None, DROPS[d.drop], counters
