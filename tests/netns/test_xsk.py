"""AF_XDP sockets on a veth: modes, ring sizes, resource accounting, rebinding."""

from __future__ import annotations

import pytest

from pesigitg._fastpath.xsk import XskSocket
from pesigitg.ebpf import XdpProgram
from pesigitg.netns import inside


def test_veth_binds_in_copy_mode_with_every_frame_accounted(veth_ns):
    with inside(veth_ns), XdpProgram.load() as xdp:
        xdp.attach("v0")
        try:
            with XskSocket("v0", 0) as xsk:
                assert xsk.mode == "copy"          # veth offers no zero-copy
                assert xsk.frame_size == 2048 and xsk.frame_count == 4096
                assert xsk.fill_pending == 2048     # the fill ring starts full
                assert xsk.frames_free + xsk.fill_pending == xsk.frame_count
                xdp.register_socket(0, xsk.fd)
                assert xsk.statistics()["rx_dropped"] == 0
        finally:
            xdp.detach()


def test_zero_copy_on_request_fails_clearly_where_the_driver_lacks_it(veth_ns):
    with inside(veth_ns), XdpProgram.load() as xdp:
        xdp.attach("v0")
        try:
            with pytest.raises(OSError, match="binding the AF_XDP socket to v0 queue 0 in "
                                              "zero-copy mode"):
                XskSocket("v0", 0, zero_copy=True)
        finally:
            xdp.detach()


def test_a_queue_can_be_rebound_right_after_its_socket_closes(veth_ns):
    # A worker restart: the kernel releases the old socket asynchronously.
    with inside(veth_ns), XdpProgram.load() as xdp:
        xdp.attach("v0")
        try:
            for _ in range(3):
                with XskSocket("v0", 0, frame_count=2048, fill_size=1024) as xsk:
                    xdp.register_socket(0, xsk.fd)
        finally:
            xdp.detach()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frame_size": 3000}, "frame_size 3000 is not a power of two"),
    ({"frame_size": 1024}, "frame_size 1024 must be 2048 or 4096"),
    ({"rx_size": 1000}, "rx_size 1000 is not a power of two"),
    ({"frame_count": 512}, "frame_count 512 is smaller than the fill ring"),
    ({"zero_copy": "yes"}, "zero_copy must be 'auto', True or False"),
])
def test_bad_socket_parameters_are_refused(veth_ns, kwargs, message):
    with inside(veth_ns), pytest.raises(ValueError, match=message):
        XskSocket("v0", 0, **kwargs)


def test_unknown_interface_is_named(veth_ns):
    with inside(veth_ns), pytest.raises(OSError, match="looking up interface nope0"):
        XskSocket("nope0", 0)
