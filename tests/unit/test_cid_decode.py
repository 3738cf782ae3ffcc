"""Decoding, one test body per behaviour, run against the reference and the fast path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pesigitg.routing.quiclb import CidConfig
from tests.conftest import _fastpath_decode, _reference_decode, aes_paths, batch_decoder
from tests.unit.quiclb_vectors import ALL

KEY = bytes.fromhex("fdf726a9893ec05c0632d3956680baf0")


@pytest.mark.parametrize(("config_id", "sid_len", "nonce_len", "key", "sid", "nonce", "cid"), ALL)
def test_draft_vectors_decode_to_their_server(decode, config_id, sid_len, nonce_len, key, sid,
                                              nonce, cid):
    config = CidConfig(config_id, sid_len, nonce_len, bytes.fromhex(key) if key else None)
    assert decode([config], bytes.fromhex(cid)) == (config_id, bytes.fromhex(sid))


def test_unknown_config_id_is_unroutable(decode):
    configs = [CidConfig(0, 3, 4, KEY)]
    cid = CidConfig(1, 3, 4, KEY).encode(b"abc", b"1234")
    assert decode(configs, cid) is None


def test_config_id_7_is_unroutable(decode):
    assert decode([CidConfig(0, 3, 4)], b"\xe7" + bytes(7)) is None


def test_cid_shorter_than_its_config_is_unroutable(decode):
    config = CidConfig(0, 3, 4, KEY)
    cid = config.encode(b"abc", b"1234")
    assert decode([config], cid[:-1]) is None
    assert decode([config], cid[:1]) is None
    assert decode([config], b"") is None


def test_trailing_octets_after_the_block_are_ignored(decode):
    config = CidConfig(4, 5, 7, KEY)
    cid = config.encode(b"srv01", b"nonce01") + b"\x99" * 8
    assert decode([config], cid) == (4, b"srv01")


def test_configs_are_selected_by_the_first_octet(decode):
    configs = [CidConfig(0, 3, 4), CidConfig(1, 8, 8, KEY), CidConfig(6, 10, 5, KEY)]
    for config, sid in zip(configs, [b"abc", b"12345678", b"0123456789"], strict=True):
        cid = config.encode(sid, bytes(config.nonce_len))
        assert decode(configs, cid) == (config.config_id, sid)


def test_decode_four_pass_odd_length_with_server_id_longer_than_nonce(decode):
    config = CidConfig(2, 12, 5, KEY)
    sid = bytes(range(1, 13))
    assert decode([config], config.encode(sid, b"\xab\xcd\xef\x01\x23")) == (2, sid)


# -- properties over every (server_id_len, nonce_len) the draft allows -------------------

lengths = st.integers(1, 15).flatmap(
    lambda sid_len: st.tuples(st.just(sid_len), st.integers(4, 19 - sid_len)))


@st.composite
def configs_and_cids(draw):
    sid_len, nonce_len = draw(lengths)
    key = draw(st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
    config = CidConfig(draw(st.integers(0, 6)), sid_len, nonce_len, key,
                       encode_length=draw(st.booleans()))
    sid = draw(st.binary(min_size=sid_len, max_size=sid_len))
    nonce = draw(st.binary(min_size=nonce_len, max_size=nonce_len))
    return config, sid, nonce


@settings(max_examples=600, deadline=None)
@given(configs_and_cids())
def test_fast_path_equals_reference_and_decode_inverts_encode(case):
    config, sid, nonce = case
    cid = config.encode(sid, nonce)
    assert config.decode(cid) == (sid, nonce)
    assert _fastpath_decode([config], cid) == (config.config_id, sid)
    assert _reference_decode([config], cid) == (config.config_id, sid)
    for path in aes_paths():
        assert batch_decoder(path)([config], cid) == (config.config_id, sid)


@pytest.mark.parametrize("path", aes_paths())
@pytest.mark.parametrize("keyed", [False, True])
def test_every_length_the_draft_allows_round_trips_in_a_batch(path, keyed):
    """Every (server_id_len, nonce_len) of §3, in one mixed batch of all of them: a
    config per length pair (config ids reused), each CID in groups of every size."""
    import random

    rng = random.Random(f"{path}{keyed}")
    pairs = [(s, n) for s in range(1, 16) for n in range(4, 20 - s)]
    for start in range(0, len(pairs), 7):
        configs = [CidConfig(i, s, n, rng.randbytes(16) if keyed else None)
                   for i, (s, n) in enumerate(pairs[start:start + 7])]
        for config in configs:
            sid = rng.randbytes(config.server_id_len)
            cid = config.encode(sid, rng.randbytes(config.nonce_len))
            assert batch_decoder(path)(configs, cid) == (config.config_id, sid)


@settings(max_examples=600, deadline=None)
@given(configs_and_cids(), st.binary(min_size=0, max_size=24))
def test_arbitrary_bytes_decode_the_same_in_both_and_never_crash(case, junk):
    config, _sid, _nonce = case
    assert _fastpath_decode([config], junk) == _reference_decode([config], junk)


@pytest.mark.parametrize("path", aes_paths())
@pytest.mark.parametrize(("sid_len", "nonce_len"), [(3, 4), (10, 5), (8, 8), (6, 13)])
def test_batches_of_one_config_decode_at_every_size(path, sid_len, nonce_len):
    """One config in use (the decode's fast case: keys and constants set up once):
    every batch size from 1 to 40, so whole groups of 8 and 16 and every remainder."""
    import random

    import numpy as np

    from pesigitg._fastpath import SERVER_ID_MAX, CidDecoder
    from tests.conftest import forced_aes_path

    rng = random.Random(sid_len * 100 + nonce_len)
    config = CidConfig(5, sid_len, nonce_len, rng.randbytes(16))
    decoder = CidDecoder([config])
    for size in range(1, 41):
        sids = [rng.randbytes(sid_len) for _ in range(size)]
        rows = b"".join(config.encode(sid, rng.randbytes(nonce_len)) for sid in sids)
        cids = np.frombuffer(rows, dtype=np.uint8).reshape(size, config.cid_len)
        config_ids = np.empty(size, dtype=np.int8)
        server_ids = np.zeros((size, SERVER_ID_MAX), dtype=np.uint8)
        with forced_aes_path(path):
            assert decoder.decode_batch(cids, config_ids, server_ids) == size
        assert [bytes(row[:sid_len]) for row in server_ids] == sids
