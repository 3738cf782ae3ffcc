"""The loader and the kernel's crypto kfuncs: kfunc calls relocated against the running
kernel's BTF, a kptr kept in a map, a SEC("syscall") program run to create a crypto
context, and an XDP program decrypting with it (the groundwork of keyed QUIC-LB decode
in XDP; README, Status). A program calling a kfunc the kernel lacks is refused by name
before anything is loaded."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pesigitg.ebpf.kernel_btf import MissingKernelFunction, kernel_function
from pesigitg.ebpf.loader import load_object
from pesigitg.ebpf.program import Program
from pesigitg.ebpf.xdp import Verdict
from tests.bpf.test_loader import PROGS, compile_bpf

pytestmark = pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(),
                                reason="the kernel has no BTF")


def aes(key: bytes, block: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)


def create(program: Program, key: bytes) -> int:
    """Run the syscall program: the error it reports (0: a context is in the map)."""
    _, ctx = program.call(key + struct.pack("<i", 99))
    return int(struct.unpack_from("<i", ctx, 16)[0])


def test_an_xdp_program_decrypts_with_a_context_a_syscall_program_made(tmp_path):
    obj = compile_bpf(PROGS / "crypto.bpf.c", tmp_path / "crypto.o", "clang-19")
    with load_object(obj) as loaded:
        xdp = loaded.programs["xdp"]
        frame = bytes(64)
        assert Verdict(xdp.test_run(frame).retval) == Verdict.PASS   # no context yet
        for key in (os.urandom(16), os.urandom(16)):        # the second replaces the first
            assert create(loaded.programs["syscall"], key) == 0
            for _ in range(20):
                block = os.urandom(16)
                result = xdp.test_run(aes(key, block) + bytes(48))
                assert Verdict(result.retval) == Verdict.TX
                assert result.data[16:32] == block


def test_a_kfunc_the_kernel_lacks_is_refused_by_name(tmp_path):
    assert kernel_function("bpf_crypto_decrypt") > 0
    obj = compile_bpf(PROGS / "missing_kfunc.bpf.c", tmp_path / "missing.o")
    with pytest.raises(MissingKernelFunction, match="no function bpf_pesigitg_no_such_kfunc"):
        load_object(obj)


def test_a_crypto_variant_that_does_not_load_leaves_the_shipped_program(tmp_path, monkeypatch,
                                                                       caplog):
    """A kernel with the kfuncs that still refuses the crypto build: the daemon loads
    the plain one and says so, it does not stop."""
    from pesigitg.daemon import steering

    broken = tmp_path / "pesigitg-crypto.bpf.o"
    broken.write_bytes(b"not an object")
    monkeypatch.setattr(steering, "crypto_object", lambda: broken)
    monkeypatch.setattr(steering, "kernel_has_crypto", lambda: True)
    with steering.Steering.load() as xdp:
        assert not xdp.crypto and xdp.object_path == steering.shipped_object()
    assert "crypto variant did not load" in caplog.text
