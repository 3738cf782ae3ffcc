# AES-128-GCM (includes/gcm.h, AES-NI and PCLMULQDQ): the Retry offload's tokens and
# integrity tags. Python entries for the tests.

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
