"""The kernel tier's rule (pesigitgd(8), KERNEL TIER): which config is decoded where, for
each xdp_decode, by what the kernel offers and how the sockets bound."""

from __future__ import annotations

from typing import Any

import pytest

from pesigitg.daemon.tier import choose

MODES = {0: "plaintext", 1: "single_pass", 2: "four_pass"}


def paths(decode: str, **kernel: Any) -> dict[int, str]:
    return {c: path for c, (path, _) in choose(decode, MODES, **kernel).configs.items()}


def test_off_keeps_every_config_with_the_workers():
    assert paths("off", crypto=True) == {0: "af_xdp", 1: "af_xdp", 2: "af_xdp"}


def test_plaintext_decodes_only_plaintext_configs_in_xdp():
    assert paths("plaintext", crypto=True) == {0: "xdp", 1: "af_xdp", 2: "af_xdp"}


@pytest.mark.parametrize("decode", ["all", "auto"])
def test_keyed_configs_need_the_kfuncs(decode):
    assert paths(decode, crypto=False, copy=True) == {0: "xdp", 1: "af_xdp", 2: "af_xdp"}
    reason = choose(decode, MODES, crypto=False).configs[1][1]
    assert reason == "single_pass: this kernel has no bpf_crypto kfuncs"


def test_auto_keeps_four_pass_with_the_workers_on_zero_copy_sockets_and_all_does_not():
    zero_copy = choose("auto", MODES, crypto=True, copy=False, aes_driver="ecb-aes-aesni")
    assert zero_copy.configs[2] == ("af_xdp", "four_pass: zero-copy sockets: decoded by the "
                                    "workers (3-4 kernel AES calls a packet in XDP cost more)")
    assert paths("all", crypto=True, copy=False)[2] == "xdp"


def test_auto_decodes_four_pass_in_xdp_on_copy_mode_sockets():
    # A copy to a worker and back costs more than the kernel's AES calls (make bench,
    # one forwarding core), even with the generic constant-time AES.
    choice = choose("auto", MODES, crypto=True, copy=True, aes_driver="ecb(aes-fixed-time)")
    assert choice.configs[2] == ("xdp", "four_pass: kernel AES (ecb(aes-fixed-time)), "
                                 "copy-mode sockets")


def test_all_decrypts_single_pass_in_xdp_wherever_it_can():
    assert paths("all", crypto=True, copy=False, aes_driver="ecb(aes-fixed-time)")[1] == "xdp"


def test_auto_decrypts_in_xdp_when_a_copy_or_slow_aes_would_cost_more():
    # Copy-mode sockets: every frame to a worker is copied; one kernel decrypt is cheaper.
    assert paths("auto", crypto=True, copy=True, aes_driver="ecb(aes-fixed-time)")[1] == "xdp"
    # Zero-copy with the generic constant-time AES: the workers' batch AES-NI wins.
    zero_copy = choose("auto", MODES, crypto=True, copy=False, aes_driver="ecb(aes-fixed-time)")
    assert zero_copy.configs[1] == ("af_xdp", "single_pass: zero-copy sockets and the "
                                    "kernel's AES is ecb(aes-fixed-time) (not AES-NI)")
    # Zero-copy, and the kernel's own AES is AES-NI: XDP.
    assert paths("auto", crypto=True, copy=False, aes_driver="ecb-aes-aesni")[1] == "xdp"
