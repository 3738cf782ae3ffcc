"""The reference codec: draft vectors, parameter limits, the server-side encoder."""

from __future__ import annotations

import itertools

import pytest

from pesigitg.routing.quiclb import (
    CidConfig,
    CidEncoder,
    NonceSpaceExhausted,
    first_octet_config_id,
    unroutable_cid,
)
from tests.unit.quiclb_vectors import ALL

KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")


def _config(config_id: int, sid_len: int, nonce_len: int, key: str | None) -> CidConfig:
    return CidConfig(config_id, sid_len, nonce_len, bytes.fromhex(key) if key else None,
                     encode_length=True)


@pytest.mark.parametrize(("config_id", "sid_len", "nonce_len", "key", "sid", "nonce", "cid"), ALL)
def test_draft_vectors_encode_exactly(config_id, sid_len, nonce_len, key, sid, nonce, cid):
    config = _config(config_id, sid_len, nonce_len, key)
    assert config.encode(bytes.fromhex(sid), bytes.fromhex(nonce)).hex() == cid


@pytest.mark.parametrize(("config_id", "sid_len", "nonce_len", "key", "sid", "nonce", "cid"), ALL)
def test_draft_vectors_decode_exactly(config_id, sid_len, nonce_len, key, sid, nonce, cid):
    config = _config(config_id, sid_len, nonce_len, key)
    assert config.decode(bytes.fromhex(cid)) == (bytes.fromhex(sid), bytes.fromhex(nonce))


@pytest.mark.parametrize(("sid_len", "nonce_len", "key", "mode"), [
    (3, 4, None, "plaintext"),
    (8, 8, KEY, "single_pass"),
    (3, 4, KEY, "four_pass"),
    (10, 5, KEY, "four_pass"),
    (15, 4, None, "plaintext"),
])
def test_mode_follows_from_lengths_and_key(sid_len, nonce_len, key, mode):
    assert CidConfig(0, sid_len, nonce_len, key).mode == mode


@pytest.mark.parametrize(("args", "message"), [
    ((7, 3, 4), "config_id 7 is outside 0..6"),
    ((-1, 3, 4), "config_id -1 is outside 0..6"),
    ((0, 0, 4), "server_id_len 0 is below the minimum of 1"),
    ((0, 3, 3), "nonce_len 3 is below the minimum of 4"),
    ((0, 10, 10), r"server_id_len \+ nonce_len = 20 exceeds the maximum of 19"),
    ((0, 3, 4, b"short"), "key is 5 octets, AES-128 needs 16"),
])
def test_bad_parameters_are_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        CidConfig(*args)


def test_repr_never_shows_the_key():
    text = repr(CidConfig(1, 3, 4, KEY))
    assert KEY.hex() not in text and "key=set" in text


@pytest.mark.parametrize(("cid", "message"), [
    (bytes.fromhex("07c4605e4504cc"), "CID is 7 octets, config 0 needs at least 8"),
    (bytes.fromhex("27c4605e4504cc4f"), "CID carries config id 1, this config is 0"),
    (bytes(21), "CID is 21 octets, the maximum is 20"),
])
def test_decode_refuses_cids_that_do_not_fit(cid, message):
    with pytest.raises(ValueError, match=message):
        CidConfig(0, 3, 4).decode(cid)


def test_encode_refuses_wrong_lengths():
    config = CidConfig(0, 3, 4)
    with pytest.raises(ValueError, match="server ID is 2 octets, config 0 needs 3"):
        config.encode(b"ab", b"1234")
    with pytest.raises(ValueError, match="nonce is 5 octets, config 0 needs 4"):
        config.encode(b"abc", b"12345")
    with pytest.raises(ValueError, match="CID would be 22 octets, the maximum is 20"):
        CidConfig(0, 15, 4).encode(bytes(15), bytes(4), extra=b"xy")


def test_first_octet_low_bits_are_random_without_length_encoding():
    config = CidConfig(2, 3, 4)
    firsts = {config.encode(b"abc", b"1234")[0] for _ in range(64)}
    assert {f >> 5 for f in firsts} == {2}
    assert len(firsts) > 1


def test_extra_octets_follow_the_block_and_do_not_disturb_decoding():
    config = CidConfig(0, 3, 4, KEY, encode_length=True)
    cid = config.encode(b"abc", b"1234", extra=b"\xee\xff")
    assert len(cid) == 10 and cid[0] & 0x1F == 9 and cid[-2:] == b"\xee\xff"
    assert config.decode(cid) == (b"abc", b"1234")


def test_encoder_issues_distinct_cids_for_its_server():
    config = CidConfig(3, 4, 6, KEY, encode_length=True)
    encoder = CidEncoder(config, b"\x01\x02\x03\x04", extra_len=2)
    cids = [encoder.new_cid() for _ in range(500)]
    assert len(set(cids)) == 500
    for cid in cids:
        assert len(cid) == 13 and first_octet_config_id(cid) == 3 and cid[0] & 0x1F == 12
        assert config.decode(cid)[0] == b"\x01\x02\x03\x04"


def test_encoder_nonce_counter_starts_random_and_wraps():
    config = CidConfig(0, 3, 4)
    encoder = CidEncoder(config, b"abc", random=lambda n: b"\xff" * n)
    nonces = [config.decode(encoder.new_cid())[1] for _ in range(3)]
    assert nonces == [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"]


def test_encoder_refuses_to_reuse_a_nonce_when_the_space_is_exhausted():
    encoder = CidEncoder(CidConfig(0, 3, 4), b"abc")
    # Walking 2**32 nonces takes hours; start two short of the end of the space.
    encoder._issued = encoder._space - 2
    encoder.new_cid()
    encoder.new_cid()
    assert encoder.remaining == 0
    with pytest.raises(NonceSpaceExhausted, match="all 4294967296 nonces of config 0 are used"):
        encoder.new_cid()


def test_encoder_checks_server_id_and_extra_length():
    with pytest.raises(ValueError, match="server ID is 2 octets, config 0 needs 3 octets"):
        CidEncoder(CidConfig(0, 3, 4), b"ab")
    with pytest.raises(ValueError, match="extra_len 13 makes the CID longer than 20"):
        CidEncoder(CidConfig(0, 3, 4), b"abc", extra_len=13)


@pytest.mark.parametrize("length", [1, 8, 20])
def test_unroutable_cids_carry_config_id_7_and_their_length(length):
    encoder = CidEncoder(None, length=length)
    for cid in itertools.islice(iter(encoder.new_cid, None), 20):
        assert len(cid) == length and cid[0] >> 5 == 7 and (cid[0] & 0x1F) + 1 == length


def test_unroutable_cid_length_limits():
    with pytest.raises(ValueError, match=r"CID length 21 is outside 1\.\.20"):
        unroutable_cid(21)
    with pytest.raises(ValueError, match=r"CID length 0 is outside 1\.\.20"):
        CidEncoder(None, length=0)
