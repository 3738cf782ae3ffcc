"""Several balancers behind ECMP with BGP, end to end: ``python -m pesigitg.demo.ecmp``
(``make demo-ecmp``); tests/e2e/test_ecmp.py runs the same steps and asserts on them.

A client behind a router running BIRD 2, two balancer hosts each running pesigitgd
and ExaBGP, three aioquic backends answering by Direct Server Return, over IPv4 and
IPv6 (ecmp_topology.py). Each ExaBGP announces the VIPs while ``pesigitg-ctl health``
says the balancer forwards; the router installs one multipath route per VIP and
spreads flows over the balancers by their 5-tuple. Both balancers read the same
lb.toml (with a fallback ``hash_key``), so they decide alike. The steps: the routes
come up; connections spread over both balancers; a client whose path moves to the
other balancer keeps its connection and backend; a hitless restart of a balancer is
never withdrawn; a balancer stopped (SIGTERM), then another killed (``kill -9``),
withdraws its routes while live connections go on through the survivor, each with
its backend; each comes back and takes traffic again. The BGP daemons run
from the contrib/bgp files, filled in by contrib/bgp/render.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pesigitg.demo.ecmp_lifecycle import EcmpDemo, Failover
from pesigitg.demo.ecmp_steps import HASH_KEY, pesigitg_ctl
from pesigitg.demo.ecmp_topology import EcmpTopology
from pesigitg.demo.narration import narrate

__all__ = ["HASH_KEY", "EcmpDemo", "ecmp_environment", "main", "pesigitg_ctl"]


@contextlib.contextmanager
def ecmp_environment(say: Callable[[str], None] = print) -> Iterator[EcmpDemo]:
    """The network, the backends, both balancers and the BGP daemons, torn down
    whatever happens."""
    with tempfile.TemporaryDirectory(prefix="pesigitg-ecmp-") as tmp, \
            EcmpTopology() as net:
        demo = EcmpDemo(net, Path(tmp), say, hash_key=HASH_KEY)
        try:
            demo.start()
            yield demo
        finally:
            demo.stop()


async def run_all(demo: EcmpDemo) -> list[Failover]:
    await demo.announce()
    await demo.spread()
    await demo.move()
    await demo.restart("lb1")
    results = [await demo.failover("lb1", signal.SIGTERM)]
    await demo.come_back("lb1")
    results.append(await demo.failover("lb2", signal.SIGKILL))
    await demo.come_back("lb2")
    demo.totals()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pesigitg.demo.ecmp",
        description="two pesigitgd balancers behind a BGP/ECMP router, end to end")
    parser.parse_args(argv)

    def steps() -> None:
        with ecmp_environment() as demo:
            print(f"VIPs {', '.join(demo.net.vips.values())}; balancers " + ", ".join(
                f"{b.role}={b.host.address}" for b in demo.balancers.values())
                + "; backends " + ", ".join(f"{b.role}={b.address}" for b in demo.net.backends))
            results = asyncio.run(run_all(demo))
        print("\nFailover: " + "; ".join(
            f"{r.how} of {r.victim}: routes withdrawn after "
            + "/".join(f"{t:.2f}" for t in r.convergence.values()) + " s (IPv4/IPv6), "
            f"{r.after['failed']} failed requests after convergence" for r in results))

    return narrate("pesigitg ECMP demo: a client behind a router (BIRD 2, ECMP on the "
                   "5-tuple), two balancers each\nrunning pesigitgd and ExaBGP, three HTTP/3 "
                   "backends (aioquic), Direct Server Return, IPv4 and IPv6.", steps)


if __name__ == "__main__":
    sys.exit(main())
