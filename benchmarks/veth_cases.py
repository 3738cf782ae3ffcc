"""The cases the veth benchmarks run through the lab (veth_lab.py): one engine worker
(pesigitgd's own) deciding a generated stream, with or without the kernel tier, and
the in-kernel MAC swap; each measured at the sink (veth_lab.measure)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from veth_lab import BACKENDS, CIDS, Lab, Result, backend_mac, engine_worker, measure, pin_receive

from pesigitg.daemon.tier import choose, install
from pesigitg.ebpf.attach import XDP_FLAGS_DRV_MODE, ifindex, set_xdp
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.route_config import TableOptions
from pesigitg.routing.routes import Backend, CompiledRoutes, Server, compile_routes
from pesigitg.testing.netns import inside

__all__ = ["FOUR_PASS", "KEY", "PLAINTEXT", "SINGLE_PASS", "XDP_SWAP", "EngineCase",
           "engine_case", "swap_case"]

KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")
FOUR_PASS = CidConfig(0, 3, 4, KEY)
SINGLE_PASS = CidConfig(1, 8, 8, KEY)
PLAINTEXT = CidConfig(2, 3, 4)
XDP_SWAP = "XDP_TX MAC swap (in-kernel floor)"


@dataclass(frozen=True)
class EngineCase:
    """One engine case. ``config`` None: the MAC swap floor. With ``flows``, every CID
    is unroutable (config 7) and the frames come from that many client addresses:
    Maglev on the 4-tuple, through a flow table of ``flow_entries`` (0: none).
    ``soak``: frames the worker forwards before its memory is read again. ``tier``:
    the kernel tier decodes the config (xdp_decode = plaintext)."""
    name: str
    config: CidConfig | None
    soak: int = 0
    flows: int = 0
    flow_entries: int = 0
    tier: bool = False


def engine_routes(lab: Lab, case: EngineCase) -> CompiledRoutes:
    config = case.config
    backends = [Backend(f"10.9.1.{n}", backend_mac(n)) for n in range(1, BACKENDS + 1)]
    servers = [Server(config.config_id, bytes([n]) * config.server_id_len, f"10.9.1.{n}")
               for n in range(1, BACKENDS + 1)] if config else []
    return compile_routes(lab.lb_mac, [config] if config else [], backends, servers,
                          TableOptions(knobs={"flow_entries": case.flow_entries}))


def engine_cids(case: EngineCase) -> list[bytes]:
    config = case.config
    if config and not case.flows:
        return [config.encode(bytes([1 + i % BACKENDS]) * config.server_id_len,
                              os.urandom(config.nonce_len), extra=b"") for i in range(CIDS)]
    if case.flows:
        return [b"\xe0" + os.urandom(7) for _ in range(CIDS)]   # config 7: unroutable
    return [os.urandom(8) for _ in range(CIDS)]


def engine_case(lab: Lab, case: EngineCase, frames: int) -> Result:
    routes = engine_routes(lab, case)
    lab.gen.load(lab.frame, engine_cids(case), 14 + 20 + 8 + 1, case.flows,
                 14 + 12)                                   # flow: the source address
    # In swap mode the frame comes back addressed to its sender, g0.
    macs = set(range(1, BACKENDS + 1)) if case.config else {lab.frame[11]}
    modes = {c.config_id: c.mode for c in routes.configs}
    with engine_worker(lab, routes.blob, floor=case.config is None) as worker:
        install(lab.xdp, routes, choose("all" if case.tier else "off", modes,
                                        crypto=lab.xdp.crypto))
        # The generator outruns the worker: several frames per flow reach it.
        m = measure(lab, frames, macs, warmup=10 * case.flows)
        # Resident memory from here on: the worker has touched every UMEM frame by now
        # (the supervisor's pages, counted in its RSS once it uses them).
        rss_before = worker.rss()
        # Soak: keep going until the worker itself has forwarded `soak` frames, so
        # the resident-memory reading covers that many packets through the loop.
        while worker.counts()["forwarded"] < case.soak:
            lab.gen.send(2_000_000)
        rss_after, counters = worker.rss(), worker.counts()
        install(lab.xdp, routes, choose("off", modes))
    routed = sum(v for k, v in counters.items() if k.startswith("cid_routed_"))
    note = (f"worker forwarded {counters['forwarded']:,} ({routed:,} by CID), tx_full "
            f"{counters['tx_full']:,}")
    if case.tier:
        note += f", XDP sent {lab.xdp.counters()['tx_cid']:,} in all"
    if case.flows and case.flow_entries:
        note += (f", flow table of {case.flow_entries:,}: hits {counters['flow_hits']:,} "
                 f"inserts {counters['flow_inserts']:,} evictions "
                 f"{counters['flow_evictions']:,}")
    return Result(case.name, m.mpps, rss_before, rss_after, note, m.taken, m.core_ns)


def swap_case(lab: Lab, frames: int) -> Result:
    """The in-kernel floor: an XDP program on l0 that swaps the MACs and sends the frame
    back (XDP_TX), instead of pesigitg's."""
    lab.gen.load(lab.frame, [os.urandom(8) for _ in range(CIDS)], 14 + 20 + 8 + 1)
    with inside(lab.lb_ns):
        l0 = ifindex("l0")
        lab.xdp.detach()
        set_xdp(l0, lab.traffic.swap.fd, XDP_FLAGS_DRV_MODE, "attaching the MAC swap")
    try:
        pin_receive(lab)
        m = measure(lab, frames, {lab.frame[11]})
    finally:
        with inside(lab.lb_ns):
            set_xdp(l0, -1, XDP_FLAGS_DRV_MODE, "detaching the MAC swap")
            lab.xdp.attach("l0")
        pin_receive(lab)
    return Result(XDP_SWAP, m.mpps, taken=m.taken, core_ns=m.core_ns)
