"""The XDP program and the fast path compile the same parser: over the fuzz corpus, the
program's verdict is what the fast path's parse outcome says it must be.

The expected verdict (tests/corpus.py) is written independently of the C, from the
outcome the fast path reports (pesigitg._fastpath.parse_frame) and the rules in the
README. No socket is bound under BPF_PROG_TEST_RUN, so a steered frame shows as
drop_no_socket.
"""

from __future__ import annotations

import ipaddress

import pytest

from pesigitg._fastpath import parse_frame
from pesigitg.daemon.steering import Steering
from tests.corpus import PORTS, VIP4, VIP6, XDP_VERDICT, corpus, expected_verdict


def verdict(xdp: Steering, frame: bytes) -> str:
    before = xdp.counters()
    xdp.test_run(frame)
    after = xdp.counters()
    bumped = [name for name in after if after[name] != before[name]]
    assert len(bumped) == 1, bumped
    return bumped[0]


@pytest.mark.parametrize("vips", [[], [VIP4, VIP6]], ids=["filter-off", "filter-on"])
def test_xdp_verdicts_follow_the_shared_parser_over_the_fuzz_corpus(xdp, vips):
    xdp.set_ports(PORTS)
    xdp.set_vips(vips)
    wanted = {ipaddress.ip_address(v) for v in vips}
    frames = [frame for frame in corpus(per_seed=400) if len(frame) >= 14]
    outcomes = set()
    try:
        for frame in frames:
            assert verdict(xdp, frame) == expected_verdict(frame, wanted), frame.hex()
            outcomes.add(parse_frame(frame)[0])
    finally:
        xdp.set_vips([])
    # The corpus reaches every outcome, so every rule above was exercised.
    assert outcomes == set(XDP_VERDICT)
