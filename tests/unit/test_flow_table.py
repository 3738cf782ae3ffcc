"""The fallback flow table in the loop's batch function: a flow keeps its backend when
the pool changes, whichever AES path hashed its 4-tuple (eight together on the VAES
path, one at a time on the others), and the table's own face finds it by the same
fingerprint."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import pytest

from pesigitg._fastpath import FlowTable, decide_frames_together
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, compile_routes
from tests.conftest import aes_paths, forced_aes_path
from tests.corpus import CONFIGS, LB_MAC, mac, unroutable

if TYPE_CHECKING:
    from pesigitg._fastpath.fastpath import Decision

FIVE = [Backend(f"10.0.0.{n}", mac(n)) for n in range(1, 6)]
# Both families, IPv4 ones enough to fill groups of the tuples' hash and part of one.
FRAMES = [unroutable(n, v6=n % 5 == 0) for n in range(60)]


def tuple_of(frame: bytes) -> tuple[bytes, bytes, int, int]:
    """The frame's 4-tuple as the flow table's face takes it."""
    if frame[12:14] == b"\x86\xdd":
        return frame[22:38], frame[38:54], *_ports(frame[54:58])
    return frame[26:30], frame[30:34], *_ports(frame[34:38])


def _ports(octets: bytes) -> tuple[int, int]:
    return int.from_bytes(octets[:2], "big"), int.from_bytes(octets[2:], "big")


@pytest.mark.parametrize("keyed", [False, True], ids=["fnv", "hash_key"])
@pytest.mark.parametrize("learnt_on", aes_paths())
def test_a_flow_keeps_its_backend_across_a_pool_change_on_every_path(keyed, learnt_on):
    options = TableOptions(5003, hash_key=bytes(range(16)) if keyed else None)
    before = compile_routes(LB_MAC, CONFIGS, FIVE, [], options)
    # A sixth backend joins, listed first: Maglev moves some flows, and every index shifts.
    after = compile_routes(LB_MAC, CONFIGS, [Backend("10.0.0.9", mac(9)), *FIVE], [], options)
    without = macs(decide_frames_together(after.table, FRAMES))
    for later_on in aes_paths():
        flows = FlowTable(1024)
        with forced_aes_path(learnt_on):
            first = decide_frames_together(before.table, FRAMES, flows)
        for frame, (route, backend, *_) in zip(FRAMES, first, strict=True):
            assert route == "fallback" and backend is not None
            key = before.table.backend(backend)[2]
            assert flows.recall(*tuple_of(frame)) == key, ipaddress.ip_address(
                tuple_of(frame)[0])
        with forced_aes_path(later_on):
            second = decide_frames_together(after.table, FRAMES, flows)
        assert macs(second) == macs(first)
    moved = [n for n, (a, b) in enumerate(zip(macs(first), without, strict=True)) if a != b]
    assert moved and any(FRAMES[n][12:14] == b"\x08\x00" for n in moved)


def macs(decisions: list[Decision]) -> list[bytes]:
    """The backend MAC each frame was rewritten to."""
    out = []
    for *_, frame in decisions:
        assert frame is not None
        out.append(frame[:6])
    return out
