"""Decoding, one test body per behaviour, run against the reference and the fast path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pesigitg.routing.quiclb import CidConfig
from tests.conftest import _fastpath_decode, _reference_decode
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


@settings(max_examples=600, deadline=None)
@given(configs_and_cids(), st.binary(min_size=0, max_size=24))
def test_arbitrary_bytes_decode_the_same_in_both_and_never_crash(case, junk):
    config, _sid, _nonce = case
    assert _fastpath_decode([config], junk) == _reference_decode([config], junk)
