"""Attaching the steering program to a real veth in a throwaway namespace."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from pesigitg.ebpf import XdpAttachError, XdpProgram, load_program
from pesigitg.ebpf.attach import XDP_FLAGS_DRV_MODE, attached_xdp, ifindex, set_xdp
from pesigitg.testing.netns import inside, ip

XDP = 6
RETURN_PASS = struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def link_xdp(ns: str, dev: str) -> str:
    return ip("-d", "link", "show", "dev", dev, ns=ns)


def test_attach_native_shows_program_and_named_maps(veth_ns):
    with XdpProgram.load() as xdp, inside(veth_ns):
        assert xdp.attach("v0") == "native"
        prog_id = xdp.program.id
        shown = link_xdp(veth_ns, "v0")
        assert f"prog/xdp id {prog_id}" in shown and "name pesigitg_xdp" in shown
        attached = attached_xdp(ifindex("v0"))
        assert attached is not None and attached.prog_id == prog_id
        assert attached.mode in ("native", "xdp")
        if shutil.which("bpftool"):
            prog = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id",
                                              str(prog_id)], capture_output=True, text=True,
                                             check=True).stdout)
            names = set()
            for map_id in prog["map_ids"]:
                info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id",
                                                  str(map_id)], capture_output=True,
                                                 text=True, check=True).stdout)
                names.add(info["name"])
                # The kernel takes no BTF key/value types for XSKMAP; every other map has them.
                if info["name"] != "xsks":
                    assert info.get("btf_id"), f"map {info['name']} carries no BTF"
            assert names == {"ports", "vips4", "vips6", "xsks", "counters", "pesigitg.bss"}
        xdp.detach()
        assert "prog/xdp" not in link_xdp(veth_ns, "v0")
        assert attached_xdp(ifindex("v0")) is None


def test_generic_mode_on_request(veth_ns):
    with XdpProgram.load() as xdp, inside(veth_ns):
        assert xdp.attach("v0", mode="generic") == "generic"
        assert "xdpgeneric" in link_xdp(veth_ns, "v0")
        xdp.detach()
        assert "xdpgeneric" not in link_xdp(veth_ns, "v0")


def test_foreign_program_is_not_replaced_without_force(veth_ns):
    foreign = load_program(XDP, RETURN_PASS, "GPL", "foreign_xdp")
    try:
        with XdpProgram.load() as xdp, inside(veth_ns):
            set_xdp(ifindex("v0"), foreign.fd, XDP_FLAGS_DRV_MODE, "attaching foreign")
            with pytest.raises(XdpAttachError, match=r"'foreign_xdp'.*not pesigitg's"):
                xdp.attach("v0")
            assert "name foreign_xdp" in link_xdp(veth_ns, "v0")
            assert xdp.attach("v0", force=True) == "native"
            assert "name pesigitg_xdp" in link_xdp(veth_ns, "v0")
            xdp.detach()
            assert "prog/xdp" not in link_xdp(veth_ns, "v0")
    finally:
        foreign.close()


def test_detach_leaves_a_program_that_replaced_ours(veth_ns):
    foreign = load_program(XDP, RETURN_PASS, "GPL", "foreign_xdp")
    try:
        with XdpProgram.load() as xdp, inside(veth_ns):
            xdp.attach("v0")
            set_xdp(ifindex("v0"), foreign.fd, XDP_FLAGS_DRV_MODE, "replacing ours")
            xdp.detach()
            assert "name foreign_xdp" in link_xdp(veth_ns, "v0")
    finally:
        foreign.close()


def test_a_previous_pesigitg_program_is_replaced(veth_ns):
    with XdpProgram.load() as old, XdpProgram.load() as new, inside(veth_ns):
        old.attach("v0")
        new.attach("v0")  # e.g. a restart after a crash left the old one attached
        attached = attached_xdp(ifindex("v0"))
        assert attached is not None and attached.prog_id == new.program.id
        new.detach()


def test_attach_to_a_missing_interface_says_so(veth_ns):
    with XdpProgram.load() as xdp, inside(veth_ns), \
            pytest.raises(OSError, match=r"looking up interface nope0.*no such interface"):
        xdp.attach("nope0")
