"""Attaching the steering program to a real veth in a throwaway namespace."""

from __future__ import annotations

import errno
import json
import shutil
import struct
import subprocess
import sys

import pytest

from pesigitg.daemon.steering import Steering
from pesigitg.ebpf import XdpAttachError, load_program
from pesigitg.ebpf.attach import XDP_FLAGS_DRV_MODE, attached_xdp, ifindex, set_xdp
from pesigitg.ebpf.syscall import map_info
from pesigitg.testing.netns import inside, ip

XDP = 6
RETURN_PASS = struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def link_xdp(ns: str, dev: str) -> str:
    return ip("-d", "link", "show", "dev", dev, ns=ns)


def test_attach_native_shows_program_and_named_maps(veth_ns):
    with Steering.load() as xdp, inside(veth_ns):
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
            crypto = {"tier_keys", "tier_scratch"} if xdp.crypto else set()
            assert names == {"ports", "vips4", "vips6", "xsks", "counters", "tier",
                             "tier_servers", "tier_counts", "pesigitg.bss", *crypto}
        xdp.detach()
        assert "prog/xdp" not in link_xdp(veth_ns, "v0")
        assert attached_xdp(ifindex("v0")) is None


def test_generic_mode_on_request(veth_ns):
    with Steering.load() as xdp, inside(veth_ns):
        assert xdp.attach("v0", mode="generic") == "generic"
        assert "xdpgeneric" in link_xdp(veth_ns, "v0")
        xdp.detach()
        assert "xdpgeneric" not in link_xdp(veth_ns, "v0")


def test_foreign_program_is_not_replaced_without_force(veth_ns):
    foreign = load_program(XDP, RETURN_PASS, "GPL", "foreign_xdp")
    try:
        with Steering.load() as xdp, inside(veth_ns):
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


def test_netlink_detach_leaves_a_program_that_replaced_ours(veth_ns):
    foreign = load_program(XDP, RETURN_PASS, "GPL", "foreign_xdp")
    try:
        with Steering.load() as xdp, inside(veth_ns):
            xdp.attach("v0", kind="netlink")
            assert xdp.attach_kind == "netlink"
            set_xdp(ifindex("v0"), foreign.fd, XDP_FLAGS_DRV_MODE, "replacing ours")
            xdp.detach()
            assert "name foreign_xdp" in link_xdp(veth_ns, "v0")
    finally:
        foreign.close()


def test_a_link_cannot_be_replaced_behind_our_back(veth_ns):
    foreign = load_program(XDP, RETURN_PASS, "GPL", "foreign_xdp")
    try:
        with Steering.load() as xdp, inside(veth_ns):
            xdp.attach("v0")
            assert xdp.attach_kind == "link"
            with pytest.raises(OSError) as refused:
                set_xdp(ifindex("v0"), foreign.fd, XDP_FLAGS_DRV_MODE, "replacing ours")
            assert refused.value.errno == errno.EBUSY
            assert "name pesigitg_xdp" in link_xdp(veth_ns, "v0")
            xdp.detach()
            assert "prog/xdp" not in link_xdp(veth_ns, "v0")
    finally:
        foreign.close()


def test_a_program_left_by_a_netlink_attachment_is_replaced(veth_ns):
    with Steering.load() as old, Steering.load() as new, inside(veth_ns):
        old.attach("v0", kind="netlink")
        new.attach("v0")  # a restart after a crash of a netlink-mode daemon
        attached = attached_xdp(ifindex("v0"))
        assert attached is not None and attached.prog_id == new.program.id
        assert new.attach_kind == "link"
        new.detach()


def test_a_second_link_holder_is_refused(veth_ns):
    with Steering.load() as first, Steering.load() as second, inside(veth_ns):
        first.attach("v0")
        with pytest.raises(XdpAttachError, match="BPF link another process holds"):
            second.attach("v0")
        first.detach()


def test_the_program_detaches_when_the_last_holder_of_its_link_exits(veth_ns):
    child = subprocess.Popen(
        ["ip", "netns", "exec", veth_ns, sys.executable, "-c",
         "import sys, time\n"
         "from pesigitg.daemon.steering import Steering\n"
         "xdp = Steering.load(); xdp.attach('v0'); print(xdp.program.id, flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        prog_id = int(child.stdout.readline())
        assert f"prog/xdp id {prog_id}" in link_xdp(veth_ns, "v0")
        child.kill()                    # no detach, no cleanup: a crash
        child.wait(10)
        assert "prog/xdp" not in link_xdp(veth_ns, "v0")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_handed_over_link_keeps_the_program_or_swaps_it_atomically(veth_ns):
    with Steering.load() as old, inside(veth_ns):
        old.attach("v0")
        maps = {name: m.fd for name, m in old.maps.items()}
        # The same object: maps and program are reused, the link is only taken over.
        with Steering.load(reuse=maps, programs={"xdp": old.fd}) as same:
            assert same.program.id == old.program.id
            assert old.ifindex is not None and old.mode is not None
            same.adopt_attachment(old.ifindex, old.mode, "link", old.link_fd, old.fd)
            # An upgrade: a new program over the same maps replaces it on the link.
            with Steering.load(reuse=maps) as upgraded:
                assert upgraded.program.id != old.program.id
                # Every map is the old kernel object (same id), contents and all.
                assert {n: map_info(m.fd).id for n, m in upgraded.maps.items()} == \
                    {n: map_info(m.fd).id for n, m in old.maps.items()}
                upgraded.adopt_attachment(old.ifindex, old.mode, "link", old.link_fd, old.fd)
                old.release()
                same.release()
                attached = attached_xdp(ifindex("v0"))
                assert attached is not None and attached.prog_id == upgraded.program.id
                upgraded.detach()
        assert "prog/xdp" not in link_xdp(veth_ns, "v0")


def test_attach_to_a_missing_interface_says_so(veth_ns):
    with Steering.load() as xdp, inside(veth_ns), \
            pytest.raises(OSError, match=r"looking up interface nope0.*no such interface"):
        xdp.attach("nope0")
