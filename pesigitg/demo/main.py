"""``python -m pesigitg.demo`` (``make demo``): the end-to-end scenario
(demo/scenario.py), narrated."""

from __future__ import annotations

import argparse
import asyncio

from pesigitg.demo.narration import narrate
from pesigitg.demo.scenario import FAMILIES, Demo, demo_environment

__all__ = ["main", "run_all"]


async def run_all(demo: Demo) -> None:
    await demo.spread()
    await demo.migration()
    await demo.reload_under_load()
    if len(demo.net.families) > 1:
        await demo.other_family()
    await demo.drain()
    await demo.failure()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pesigitg.demo",
                                     description="pesigitg's end-to-end demo")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="dual",
                        help="dual (default): IPv4 steps, then the IPv6 VIP of the same "
                             "daemon; 6: everything over IPv6, backends probed and resolved "
                             "(NDP) over IPv6; 4: IPv4 only; mixed: both VIPs, backends "
                             "known by IPv6 and IPv4 addresses")
    family = parser.parse_args(argv).family

    def steps() -> None:
        with demo_environment(family=family, xdp_decode="all") as demo:
            print(f"VIPs {', '.join(demo.net.vips.values())}; backends " + ", ".join(
                f"{b.role}={b.address} (server ID {demo.server_ids()[b.role]})"
                for b in demo.net.backends))
            asyncio.run(run_all(demo))
            demo.counters()

    status = narrate("pesigitg demo: a client, pesigitgd and three HTTP/3 backends (aioquic) "
                     "in network namespaces,\nDirect Server Return, QUIC-LB four-pass "
                     "config, health checks on, the kernel tier on (xdp_decode = all: "
                     "1-RTT packets\ndecoded and forwarded in XDP where the kernel has "
                     "the crypto kfuncs).", steps)
    if status == 0 and family == "dual":
        print("IPv6 only, backends probed and resolved over IPv6: "
              "python -m pesigitg.demo --family 6 (make demo-ipv6)")
    return status
