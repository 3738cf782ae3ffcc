"""AF_XDP sockets on a veth: modes, ring sizes, resource accounting, rebinding."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from pesigitg._fastpath import XskSocket
from pesigitg.daemon.steering import Steering
from pesigitg.testing.netns import inside, mac_of
from tests import frames as f


@pytest.fixture
def xdp_on_v0(veth_ns: str) -> Iterator[Steering]:
    """The steering program attached to v0; the test runs inside the namespace."""
    with inside(veth_ns), Steering.load() as xdp:
        xdp.attach("v0")
        try:
            yield xdp
        finally:
            xdp.detach()


def test_veth_binds_in_copy_mode_with_every_frame_in_the_fill_ring_or_the_stash(xdp_on_v0):
    with XskSocket("v0", 0) as xsk:
        assert xsk.mode == "copy"          # veth offers no zero-copy
        assert xsk.frame_size == 2048 and xsk.frame_count == 4096
        # Every frame starts in the fill ring, once, but one in sixteen: the spares
        # copies come from (the stash, in the state page).
        assert xsk.census(distinct=True) == {"fill": 3840, "rx": 0, "tx": 0, "comp": 0,
                                             "stash": 256, "kernel": 0}
        assert xsk.journal_seq == 2        # one publication, complete
        xdp_on_v0.register_socket(0, xsk.fd)
        assert xsk.statistics()["rx_dropped"] == 0


def test_an_adopted_socket_sees_the_same_rings_and_frames(xdp_on_v0):
    with XskSocket("v0", 0, frame_count=1024, fill_size=1024) as xsk:
        with XskSocket.adopt(xsk.fd, xsk.umem_fd) as adopted:
            assert adopted.fd != xsk.fd and adopted.umem_fd != xsk.umem_fd
            assert (adopted.ifindex, adopted.queue, adopted.mode) == (xsk.ifindex, 0, "copy")
            assert (adopted.frame_size, adopted.frame_count) == (2048, 1024)
            assert adopted.recover() is False      # nothing was left half published
            assert adopted.census(distinct=True) == xsk.census()


def test_adopting_a_memfd_that_is_not_a_umem_is_refused(xdp_on_v0):
    with XskSocket("v0", 0, frame_count=1024, fill_size=1024) as xsk:
        stranger = os.memfd_create("stranger")
        try:
            os.ftruncate(stranger, 8192)
            with pytest.raises(ValueError, match="state page has another magic"):
                XskSocket.adopt(xsk.fd, stranger)
        finally:
            os.close(stranger)


def test_zero_copy_on_request_fails_clearly_where_the_driver_lacks_it(xdp_on_v0):
    with pytest.raises(OSError, match="binding the AF_XDP socket to v0 queue 0 in "
                                      "zero-copy mode"):
        XskSocket("v0", 0, zero_copy=True)


def test_a_queue_can_be_rebound_right_after_its_socket_closes_and_receives(veth_ns,
                                                                          xdp_on_v0):
    # A worker restart: the kernel releases the old socket asynchronously, and the new
    # socket must get the queue, and its frames, at once.
    xdp_on_v0.set_ports([443])
    frame = f.ether(f.ipv4(f.udp(b"\x40" + bytes(40), 40000, 443), f.PROTO_UDP,
                           src="10.9.0.2", dst="10.9.0.1"), f.ETH_P_IP,
                    src=mac_of(veth_ns, "v1"), dst=mac_of(veth_ns, "v0"))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sender:
        sender.bind(("v1", 0))
        for _ in range(3):
            with XskSocket("v0", 0, frame_count=1024, fill_size=1024) as xsk:
                xdp_on_v0.register_socket(0, xsk.fd)
                assert (xsk.queue, xsk.mode) == (0, "copy")
                sender.send(frame)
                deadline = time.monotonic() + 5
                while xsk.census()["rx"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert xsk.census()["rx"] == 1
                assert xdp_on_v0.counters()["redirect_udp"] >= 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frame_size": 3000}, "frame_size 3000 is not a power of two"),
    ({"frame_size": 1024}, "frame_size 1024 must be 2048 or 4096"),
    ({"rx_size": 1000}, "rx_size 1000 is not a power of two"),
    ({"fill_size": 1024}, r"the fill ring \(1024\) must hold every frame \(4096\)"),
    ({"frame_count": 1023, "fill_size": 1024}, "1023 frames of 2048 octets are not whole"),
    ({"zero_copy": "yes"}, "zero_copy must be 'auto', True or False"),
])
def test_bad_socket_parameters_are_refused(veth_ns, kwargs, message):
    with inside(veth_ns), pytest.raises(ValueError, match=message):
        XskSocket("v0", 0, **kwargs)


def test_unknown_interface_is_named(veth_ns):
    with inside(veth_ns), pytest.raises(OSError, match="looking up interface nope0"):
        XskSocket("nope0", 0)


def test_closing_a_socket_releases_its_fds_and_mappings(xdp_on_v0):
    def mappings() -> int:
        with open("/proc/self/maps") as maps:
            return sum(1 for line in maps if "pesigitg-umem" in line or "anon_inode" in line
                       or "xdp" in line)

    fds, maps = set(os.listdir("/proc/self/fd")), mappings()
    for _ in range(3):
        with XskSocket("v0", 0, frame_count=1024, fill_size=1024):
            assert mappings() > maps
    assert set(os.listdir("/proc/self/fd")) == fds and mappings() == maps
