"""The AF_XDP engine forwarding real frames on a veth pair (DSR: only MACs change)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pesigitg._fastpath import decide_frame
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, Server, compile_routes
from tests import frames as f
from tests.netns.forwarder import forwarder

KEY = bytes.fromhex("fdf726a9893ec05c0632d3956680baf0")
CONFIGS = [CidConfig(0, 3, 4), CidConfig(1, 8, 8, KEY), CidConfig(2, 3, 4, KEY),
           CidConfig(3, 10, 5, KEY)]
MODES = {0: "plaintext", 1: "single_pass", 2: "four_pass_odd", 3: "four_pass_long_sid"}
LB_MAC_PLACEHOLDER = bytes(6)


def mac(n: int) -> bytes:
    return bytes([2, 0xBE, 0, 0, 0, n])


MACS = {mac(n) for n in range(1, 5)}


def sid(config: CidConfig, n: int) -> bytes:
    return bytes([n]) * config.server_id_len


def build_routes(lb_mac: bytes, down: frozenset[int] | set[int] = frozenset(),
                 extra: bool = False):
    backends = [Backend(f"10.0.0.{n}", mac(n), up=n not in down) for n in range(1, 4)]
    if extra:
        backends.append(Backend("10.0.0.4", mac(4)))
    servers = [Server(c.config_id, sid(c, n), f"10.0.0.{n}") for c in CONFIGS
               for n in range(1, 4)]
    return compile_routes(lb_mac, CONFIGS, backends, servers, TableOptions(5003))


@pytest.fixture
def lb():
    # Routes need the LB's MAC, known only once the veth exists: build, then swap.
    with forwarder(build_routes(LB_MAC_PLACEHOLDER)) as fw:
        fw.routes = build_routes(fw.lb_mac)
        fw.engine.swap_table(fw.routes.table)
        # Until the loop has adopted it and counted the swap: a test that compares
        # counters before and after a frame must not see this one move.
        deadline = time.monotonic() + 5
        while fw.engine.table is not fw.routes.table or \
                fw.engine.counters()["table_swaps"] == 0:
            assert time.monotonic() < deadline, "the loop never adopted the table"
            time.sleep(0.005)
        yield fw


def cid(config: CidConfig, backend: int) -> bytes:
    return config.encode(sid(config, backend), os.urandom(config.nonce_len))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: MODES[c.config_id])
def test_every_mode_reaches_the_right_mac_with_the_payload_intact(lb, config):
    frames = [f.udp4_frame(f.quic_short(cid(config, n), os.urandom(40 + n)), sport=40000 + n)
              for n in (1, 2, 3, 2, 1)]
    got = lb.roundtrip(frames, MACS)
    assert len(got) == len(frames)
    by_payload = {g[12:]: g for g in got}
    for n, frame in zip((1, 2, 3, 2, 1), frames, strict=True):
        out = by_payload[frame[12:]]                     # byte-identical after the MACs
        assert out[:6] == mac(n) and out[6:12] == lb.lb_mac
    assert lb.engine.counters()[f"cid_routed_{config.config_id}"] == len(frames)


def test_ipv6_frames_with_extension_headers_are_routed(lb):
    frames = [f.udp6_frame(f.quic_short(cid(CONFIGS[3], 2)),
                           ext=[(f.HOPOPTS, f.ext_header()), (f.DSTOPTS, f.ext_header(1))]),
              f.udp6_frame(f.quic_long(cid(CONFIGS[1], 3)))]
    got = lb.roundtrip(frames, MACS)
    assert sorted(g[:6] for g in got) == sorted([mac(2), mac(3)])
    assert {g[12:] for g in got} == {fr[12:] for fr in frames}


def test_initials_with_the_same_random_dcid_go_to_one_backend(lb):
    dcid = os.urandom(8)
    frames = [f.udp4_frame(f.quic_long(dcid, scid=os.urandom(8), payload=os.urandom(60)),
                           sport=30000 + n, src=f"192.0.2.{n + 1}") for n in range(16)]
    got = lb.roundtrip(frames, MACS)
    assert len(got) == 16 and len({g[:6] for g in got}) == 1
    counters = lb.engine.counters()
    assert counters["fallback_routed"] >= 16


def test_unknown_config_and_unknown_server_fall_back(lb):
    frames = [f.udp4_frame(f.quic_short(CidConfig(5, 3, 4).encode(b"abc", b"1234"))),
              f.udp4_frame(f.quic_short(CONFIGS[2].encode(b"\x09\x09\x09", b"1234")))]
    got = lb.roundtrip(frames, MACS)
    assert len(got) == 2
    counters = lb.engine.counters()
    assert counters["unroutable_no_config"] == 1
    assert counters["unroutable_unknown_server"] == 1
    assert counters["fallback_routed"] == 2


def test_a_down_servers_cids_fall_back_to_the_others(lb):
    lb.engine.swap_table(build_routes(lb.lb_mac, down={2}).table)
    frames = [f.udp4_frame(f.quic_short(cid(CONFIGS[1], 2)), sport=20000 + n)
              for n in range(12)]
    got = lb.roundtrip(frames, MACS)
    assert len(got) == 12 and mac(2) not in {g[:6] for g in got}
    assert lb.engine.counters()["unroutable_server_down"] == 12


def test_garbage_on_the_port_is_counted_and_dropped(lb):
    garbage = [f.udp4_frame(b""), f.udp4_frame(b"\xc0\x00\x00"), f.udp4_frame(b"\x40" * 10),
               f.udp4_frame(b"\xc0\x00\x00\x00\x01\x40" + bytes(30)),
               f.udp6_frame(b"\x80\x00\x00\x00\x01\x15" + bytes(40))]
    assert lb.roundtrip(garbage, MACS) == []
    counters = lb.engine.counters()
    assert counters["dropped_not_quic"] == len(garbage)
    assert counters["forwarded"] == 0


def test_table_swap_under_a_stream_loses_no_frame(lb):
    tables = [lb.routes.table, build_routes(lb.lb_mac, extra=True).table]
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            lb.engine.swap_table(tables[swaps % 2])
            swaps += 1
            stop.wait(0.0005)

    thread = threading.Thread(target=swapper)
    thread.start()
    sent = []
    try:
        for burst in range(40):
            frames = [f.udp4_frame(f.quic_short(cid(CONFIGS[burst % 4], 1 + i % 3)),
                                   sport=10000 + burst * 64 + i) for i in range(64)]
            before = lb.engine.counters()["rx"]
            lb.send(frames)
            lb.wait_rx(before + len(frames))
            sent.extend(frames)
    finally:
        stop.set()
        thread.join()
    got = lb.capture(MACS, len(sent), timeout=3.0)
    counters = lb.engine.counters()
    assert counters["forwarded"] == len(sent)
    assert counters["table_swaps"] > 10
    assert len(got) == len(sent)
    assert {g[12:] for g in got} == {s[12:] for s in sent}
    assert lb.xsk.statistics()["rx_dropped"] == 0


def test_every_umem_frame_is_back_in_the_fill_ring_or_the_stash_once_traffic_stops(lb):
    garbage = [f.udp4_frame(b"\x40" * 10)] * 20                 # dropped by the loop
    lb.roundtrip([f.udp4_frame(f.quic_short(cid(CONFIGS[0], 1)))] * 30 + garbage, MACS)
    # Transmitted frames come back through the completion ring at the next batch.
    lb.roundtrip([f.udp4_frame(f.quic_short(cid(CONFIGS[0], 2)))], MACS)
    lb.engine.stop()
    lb.engine_thread.join(timeout=5)
    census = lb.xsk.census(distinct=True)
    assert census["fill"] + census["comp"] + census["stash"] == lb.xsk.frame_count, census
    assert census["stash"] == 256                   # the spares, all there
    assert lb.xsk.journal_seq % 2 == 0


def test_the_engine_reports_the_table_it_switched_to(lb):
    new = build_routes(lb.lb_mac, extra=True).table
    lb.engine.swap_table(new)
    deadline = time.monotonic() + 5
    while lb.engine.table is not new:
        assert time.monotonic() < deadline, "the loop never adopted the new table"
        time.sleep(0.01)
    assert lb.engine.counters()["table_swaps"] >= 2


def test_each_decision_moves_the_counters_named_after_it(lb):
    # The loop indexes counters by enum value; the names come from the ABI header. For
    # every reason a steered frame can carry, the counters that move are those named
    # after the decision the fast path reports for it.
    frames = [
        f.udp4_frame(f.quic_short(cid(CONFIGS[1], 2))),                          # cid
        f.udp4_frame(f.quic_short(CidConfig(5, 3, 4).encode(b"abc", b"1234"))),  # no_config
        f.udp4_frame(f.quic_long(b"")),                                          # short_cid
        f.udp4_frame(f.quic_short(CONFIGS[2].encode(b"\x09\x09\x09", b"1234"))),  # unknown
        f.udp4_frame(b"\x40" * 10),                                              # not_quic
    ]
    for frame in frames:
        route, _, config_id, unroutable, drop, _ = decide_frame(lb.routes.table, frame)
        want = {"rx"}
        if route != "none":
            want |= {"forwarded",
                     f"cid_routed_{config_id}" if route == "cid" else f"{route}_routed"}
        if unroutable != "none":
            want.add(f"unroutable_{unroutable}")
        if drop != "none":
            want.add(f"dropped_{drop}")
        before = lb.engine.counters()
        lb.roundtrip([frame], MACS)
        after = lb.engine.counters()
        assert {name for name in after if after[name] != before[name]} == want, want
