"""The Cython fast path on its own: the AES-NI shim, the packed table, the batch API."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from pesigitg import _fastpath as fast
from pesigitg.routing.quiclb import CidConfig

KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")

pytestmark = pytest.mark.skipif(not fast.aesni_supported(), reason="CPU has no AES-NI")


def test_aes_matches_fips197_appendix_c1():
    # FIPS-197 Appendix C.1 (AES-128)
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    cipher = fast.aes128_encrypt_block(key, plain)
    assert cipher.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert fast.aes128_decrypt_block(key, cipher) == plain


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_aes_matches_openssl_for_any_key_and_block(key, block):
    expected = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
    assert fast.aes128_encrypt_block(key, block) == expected
    assert fast.aes128_decrypt_block(key, expected) == block


def test_aes_refuses_wrong_sizes():
    with pytest.raises(ValueError, match="key is 15 octets, AES-128 needs 16"):
        fast.aes128_expand(bytes(15))
    with pytest.raises(ValueError, match="block is 8 octets, AES needs 16"):
        fast.aes128_encrypt_block(bytes(16), bytes(8))


def test_table_layout_is_one_slot_per_config_id():
    # 4 length octets + 12 reserved + 2 x 11 round keys of 16 octets
    assert fast.CID_CONFIG_SIZE == 16 + 2 * 11 * 16
    assert len(fast.pack_cid_table([CidConfig(0, 3, 4)])) == 7 * fast.CID_CONFIG_SIZE


def test_table_refuses_a_config_id_given_twice():
    with pytest.raises(ValueError, match="config id 2 is given twice"):
        fast.CidDecoder([CidConfig(2, 3, 4), CidConfig(2, 5, 5)])


class _Batch:
    """Row-major buffers for decode_batch and a way to read a row's server ID back."""

    def __init__(self, rows: list[bytes], width: int) -> None:
        self.cids = memoryview(bytearray(b"".join(r.ljust(width, b"\0") for r in rows)))
        self.cids = self.cids.cast("B", (len(rows), width))
        self.config_ids = memoryview(bytearray(len(rows))).cast("b")
        self._sids = bytearray(len(rows) * fast.SERVER_ID_MAX)
        self.server_ids = memoryview(self._sids).cast("B", (len(rows), fast.SERVER_ID_MAX))

    def run(self, decoder: fast.CidDecoder) -> int:
        return decoder.decode_batch(self.cids, self.config_ids, self.server_ids)

    def server_id(self, row: int, length: int) -> bytes:
        start = row * fast.SERVER_ID_MAX
        return bytes(self._sids[start:start + length])


def test_batch_decodes_mixed_configs_and_reports_reasons():
    configs = [CidConfig(0, 3, 4), CidConfig(1, 8, 8, KEY), CidConfig(2, 10, 5, KEY)]
    decoder = fast.CidDecoder(configs)
    rows = [configs[0].encode(b"abc", b"1234"),
            configs[1].encode(b"12345678", b"abcdefgh"),
            configs[2].encode(b"0123456789", b"vwxyz"),
            b"\x60" + bytes(19),   # config id 3: not configured
            b"\xe0" + bytes(19)]   # config id 7: unroutable by definition
    batch = _Batch(rows, 20)
    assert batch.run(decoder) == 3
    assert list(batch.config_ids) == [0, 1, 2, fast.NO_CONFIG, fast.NO_CONFIG]
    assert batch.server_id(0, 3) == b"abc"
    assert batch.server_id(1, 8) == b"12345678"
    assert batch.server_id(2, 10) == b"0123456789"


def test_batch_reports_rows_narrower_than_the_config_as_too_short():
    config = CidConfig(1, 8, 8, KEY)
    decoder = fast.CidDecoder([config])
    batch = _Batch([config.encode(bytes(8), bytes(8))[:10]], 10)
    assert batch.run(decoder) == 0
    assert list(batch.config_ids) == [fast.TOO_SHORT]


def test_batch_checks_its_output_buffers():
    decoder = fast.CidDecoder([CidConfig(0, 3, 4)])
    batch = _Batch([bytes(8), bytes(8)], 8)
    with pytest.raises(ValueError, match="fewer rows"):
        decoder.decode_batch(batch.cids, batch.config_ids[:1], batch.server_ids)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 64), st.integers(1, 24))
def test_batch_of_random_rows_never_crashes_and_matches_single_decodes(count, width):
    configs = [CidConfig(i, 1 + i, 4 + i, KEY if i % 2 else None) for i in range(7)]
    decoder = fast.CidDecoder(configs)
    rows = [os.urandom(width) for _ in range(count)]
    batch = _Batch(rows, width)
    ok = batch.run(decoder)
    assert ok == sum(1 for c in batch.config_ids if c >= 0)
    for i, row in enumerate(rows):
        single = decoder.decode(row)
        if single is None:
            assert batch.config_ids[i] < 0
        else:
            assert single == (batch.config_ids[i], batch.server_id(i, len(single[1])))


def test_an_aes_path_can_be_forced_and_a_wrong_one_is_refused():
    available = fast.aes_paths_available()
    assert available[0] == "scalar" and fast.aes_path() == available[-1]
    for path in available:
        fast.set_aes_path(path)
        assert fast.aes_path() == path
    fast.set_aes_path(None)
    assert fast.aes_path() == available[-1]
    with pytest.raises(ValueError, match="'aes256' is not one of scalar, aesni, vaes"):
        fast.set_aes_path("aes256")


@pytest.mark.parametrize("value", ["scalar", "aes-ni"])
def test_the_environment_forces_the_path_or_says_what_is_wrong(value):
    """PESIGITG_AES_PATH is read when the module loads: a daemon started with a wrong
    value stops with the variable, the value and the choices, not a traceback deep in
    the packet path."""
    run = subprocess.run(
        [sys.executable, "-c", "from pesigitg._fastpath import aes_path; print(aes_path())"],
        env={**os.environ, fast.AES_PATH_ENV: value}, capture_output=True, text=True,
        check=False)
    if value == "scalar":
        assert run.returncode == 0 and run.stdout.strip() == "scalar"
    else:
        assert run.returncode != 0
        assert "PESIGITG_AES_PATH=aes-ni: AES path 'aes-ni' is not one of scalar, aesni, " \
               "vaes" in run.stderr


def test_the_daemon_names_a_wrong_aes_path_and_exits():
    run = subprocess.run(
        [sys.executable, "-m", "pesigitg.daemon", "--check", "-c", "contrib/lb.toml"],
        env={**os.environ, fast.AES_PATH_ENV: "vaes512"}, capture_output=True, text=True,
        check=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("pesigitgd: PESIGITG_AES_PATH=vaes512: AES path 'vaes512'")
