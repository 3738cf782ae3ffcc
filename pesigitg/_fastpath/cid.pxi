# QUIC-LB connection-ID decoder for the packet path (draft-ietf-quic-load-balancers-21).
#
# The same decisions as pesigitg.routing.quiclb, over a packed C table and without the
# GIL. cid_locate finds a CID's config and decodes plaintext at once; keyed CIDs wait
# for the AES of their whole batch (cidbatch.h), on the path chosen here once: the
# fastest this CPU has, or the one PESIGITG_AES_PATH forces. CidDecoder and its batch
# entry point exist for tests and benchmarks; the forwarding loop goes through decide.pxi.

from pesigitg._fastpath.includes.aesni cimport (
    pes_aes128_decrypt,
    pes_aes128_encrypt,
    pes_aes128_expand,
    pes_aes128_key,
    pes_aesni_supported,
)
from pesigitg._fastpath.includes.cidbatch cimport (
    PES_AES_AESNI,
    PES_AES_SCALAR,
    PES_AES_VAES,
    pes_cid_best_path,
    pes_cid_decrypt_batch,
    pes_cid_job,
    pes_cid_job_load,
    pes_sid_copy,
    pes_vaes_supported,
)
from pesigitg._fastpath.includes.cidtable cimport (
    PES_CID_FOUR_PASS,
    PES_CID_NO_CONFIG,
    PES_CID_PLAINTEXT,
    PES_CID_SINGLE_PASS,
    PES_CID_TOO_SHORT,
    PES_CID_UNSET,
    pes_cid_config,
    pes_cid_table,
)

DEF CID_CHUNK = 256     # rows decoded together (cidbatch.h's PES_CID_BATCH_MAX)
DEF CID_KEYED = 8       # cid_locate: config id + this, the AES still to run

CID_CONFIG_SIZE = sizeof(pes_cid_config)
NO_CONFIG = PES_CID_NO_CONFIG
TOO_SHORT = PES_CID_TOO_SHORT

# enum pes_cid_mode by CidConfig.mode (the decode table's and the kernel tier's).
CID_MODES = {"plaintext": PES_CID_PLAINTEXT, "single_pass": PES_CID_SINGLE_PASS,
             "four_pass": PES_CID_FOUR_PASS}
CID_UNSET = PES_CID_UNSET


AES_PATHS = ("scalar", "aesni", "vaes")
AES_PATH_ENV = "PESIGITG_AES_PATH"


def aesni_supported():
    """True when this CPU has AES-NI; keyed configs cannot be decoded without it."""
    return bool(pes_aesni_supported())


def aes_paths_available():
    """The AES paths this CPU can run, slowest first (see :data:`AES_PATHS`)."""
    if not pes_aesni_supported():
        return ("scalar",)
    return AES_PATHS if pes_vaes_supported() else AES_PATHS[:2]


cdef int _aes_path = pes_cid_best_path()


def aes_path():
    """The path keyed CIDs are decoded on: one of :data:`AES_PATHS`."""
    return AES_PATHS[_aes_path]


def set_aes_path(name=None):
    """Decode keyed CIDs on path ``name`` (None: the fastest this CPU has). Raises
    ValueError for a name that is not a path or that this CPU cannot run."""
    global _aes_path
    if name is None:
        _aes_path = pes_cid_best_path()
        return
    if name not in AES_PATHS:
        raise ValueError(f"AES path {name!r} is not one of {', '.join(AES_PATHS)}")
    if name not in aes_paths_available():
        raise ValueError(f"AES path {name!r} needs instructions this CPU does not have "
                         f"(it has {', '.join(aes_paths_available())})")
    _aes_path = AES_PATHS.index(name)


def _aes_path_from_environment():
    forced = os.environ.get(AES_PATH_ENV)
    if forced:
        try:
            set_aes_path(forced)
        except ValueError as err:
            raise ImportError(f"{AES_PATH_ENV}={forced}: {err}") from None


_aes_path_from_environment()


def _require_aesni():
    if not pes_aesni_supported():
        raise RuntimeError("this CPU has no AES-NI instructions; pesigitg needs them to "
                           "decode encrypted QUIC-LB connection IDs")


def aes128_expand(key):
    """Expanded AES-128 key schedule (encrypt then decrypt round keys) as bytes."""
    cdef const uint8_t[::1] raw = key
    cdef pes_aes128_key out
    if raw.shape[0] != 16:
        raise ValueError(f"key is {raw.shape[0]} octets, AES-128 needs 16")
    _require_aesni()
    pes_aes128_expand(&raw[0], &out)
    return (<char *>&out)[:sizeof(out)]


def _block_op(key, block, bint decrypt):
    cdef const uint8_t[::1] inp = block
    cdef const uint8_t[::1] sched = aes128_expand(key)
    cdef uint8_t out[16]
    if inp.shape[0] != 16:
        raise ValueError(f"block is {inp.shape[0]} octets, AES needs 16")
    if decrypt:
        pes_aes128_decrypt(<const pes_aes128_key *>&sched[0], &inp[0], out)
    else:
        pes_aes128_encrypt(<const pes_aes128_key *>&sched[0], &inp[0], out)
    return (<char *>out)[:16]


def aes128_encrypt_block(key, block):
    """One AES-128 block through the AES-NI shim (for tests against a reference)."""
    return _block_op(key, block, False)


def aes128_decrypt_block(key, block):
    """Inverse of :func:`aes128_encrypt_block`."""
    return _block_op(key, block, True)


def pack_cid_table(configs):
    """Pack ``CidConfig`` objects into the C decode table (bytes, one slot per id)."""
    cdef pes_cid_table table
    cdef pes_cid_config *slot
    cdef const uint8_t[::1] raw
    memset(&table, 0, sizeof(table))
    for config in configs:
        slot = &table.conf[config.config_id]
        if slot.mode != PES_CID_UNSET:
            raise ValueError(f"config id {config.config_id} is given twice")
        slot.mode = CID_MODES[config.mode]
        slot.server_id_len = config.server_id_len
        slot.nonce_len = config.nonce_len
        slot.cid_len = config.cid_len
        if config.key is not None:
            _require_aesni()
            raw = config.key
            pes_aes128_expand(&raw[0], &slot.key)
    return (<char *>&table)[:sizeof(table)]


# -- decoding (§5.3 plaintext, §5.4 single pass, §5.5 four pass) ------------------------

cdef inline int cid_locate(const pes_cid_table *table, const uint8_t *cid, size_t avail,
                           uint8_t *sid_out, pes_cid_job *job) noexcept nogil:
    # The config id of cid (avail octets readable), or a negative pes_cid_result. A
    # plaintext server ID is copied to sid_out (PES_SERVER_ID_MAX octets) at once; for a
    # keyed config the result is CID_KEYED + the config id, job is loaded (conf, cid,
    # block) and the server ID is for pes_cid_decrypt_batch to write into job.sid. (The
    # answer is in the result, not in job: a store and its load back would sit on
    # every frame's path.)
    cdef int config_id
    cdef const pes_cid_config *conf
    if avail < 1:
        return PES_CID_TOO_SHORT
    config_id = cid[0] >> 5
    if config_id >= PES_CID_CONFIGS:
        return PES_CID_NO_CONFIG
    conf = &table.conf[config_id]
    if conf.mode == PES_CID_UNSET:
        return PES_CID_NO_CONFIG
    if avail < conf.cid_len:
        return PES_CID_TOO_SHORT
    if conf.mode == PES_CID_PLAINTEXT:
        memcpy(sid_out, cid + 1, conf.server_id_len)
        return config_id
    job.conf = conf
    job.cid = cid
    pes_cid_job_load(job, cid, avail)
    return CID_KEYED + config_id


cdef inline int cid_decode(const pes_cid_table *table, const uint8_t *cid, size_t avail,
                           uint8_t *sid_out) noexcept nogil:
    # cid_locate and, for a keyed config, its AES: one CID alone.
    cdef pes_cid_job job
    cdef int rc = cid_locate(table, cid, avail, sid_out, &job)
    if rc >= CID_KEYED:
        pes_cid_decrypt_batch(&job, 1, _aes_path)
        pes_sid_copy(sid_out, job.sid, job.conf.server_id_len)
        rc -= CID_KEYED
    return rc


cdef class CidDecoder:
    """Decoder over a set of ``CidConfig`` (at most one per config id)."""

    cdef bytes _table
    cdef const pes_cid_table *_t

    def __cinit__(self, configs):
        configs = list(configs)
        self._table = pack_cid_table(configs)
        self._t = <const pes_cid_table *><const char *>self._table

    def decode(self, cid):
        """``(config_id, server_id)`` for a routable CID, else ``None``."""
        cdef const uint8_t[::1] buf = cid
        cdef uint8_t sid[PES_SERVER_ID_MAX]
        cdef int rc
        if buf.shape[0] == 0:
            return None
        rc = cid_decode(self._t, &buf[0], buf.shape[0], sid)
        if rc < 0:
            return None
        return rc, (<char *>sid)[:self._t.conf[rc].server_id_len]

    def decode_batch(self, const uint8_t[:, ::1] cids, int8_t[::1] config_ids,
                     uint8_t[:, ::1] server_ids):
        """Decode every row of ``cids`` (each row one CID, row width = octets available).

        Writes the config id or a negative reason to ``config_ids[i]`` and the server ID
        (left-aligned) to ``server_ids[i]``, which must be SERVER_ID_MAX wide. Returns
        how many rows decoded. Runs without the GIL.
        """
        cdef Py_ssize_t n = cids.shape[0]
        cdef Py_ssize_t width = cids.shape[1]
        cdef Py_ssize_t i
        cdef Py_ssize_t ok = 0
        if config_ids.shape[0] < n or server_ids.shape[0] < n:
            raise ValueError("output buffers have fewer rows than the input")
        if server_ids.shape[1] < PES_SERVER_ID_MAX:
            raise ValueError(f"server_ids rows must be {PES_SERVER_ID_MAX} octets wide")
        if n == 0 or width == 0:
            config_ids[:n] = PES_CID_TOO_SHORT
            return 0
        with nogil:
            for i in range(0, n, CID_CHUNK):
                ok += _decode_rows(self._t, cids[i:i + CID_CHUNK], config_ids[i:],
                                   server_ids[i:])
        return ok


cdef Py_ssize_t _decode_rows(const pes_cid_table *t, const uint8_t[:, ::1] cids,
                             int8_t[::1] config_ids, uint8_t[:, ::1] server_ids
                             ) noexcept nogil:
    # As the forwarding loop decodes a batch (at most CID_CHUNK rows): every row located,
    # the keyed ones' AES together, then their server IDs copied out.
    cdef pes_cid_job jobs[CID_CHUNK]
    cdef Py_ssize_t i, j, n_jobs = 0, ok = 0
    cdef int rc
    for i in range(cids.shape[0]):
        rc = cid_locate(t, &cids[i, 0], cids.shape[1], &server_ids[i, 0], &jobs[n_jobs])
        if rc >= CID_KEYED:
            rc -= CID_KEYED
            jobs[n_jobs].frame = <uint32_t>i
            n_jobs += 1
        config_ids[i] = rc
        if rc >= 0:
            ok += 1
    pes_cid_decrypt_batch(jobs, <int>n_jobs, _aes_path)
    for j in range(n_jobs):
        pes_sid_copy(&server_ids[jobs[j].frame, 0], jobs[j].sid, jobs[j].conf.server_id_len)
    return ok
