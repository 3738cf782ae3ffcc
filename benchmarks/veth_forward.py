"""Forwarding throughput on a veth pair: pesigitg's engine vs the AF_XDP floor vs nginx,
then the kernel tier (CIDs decoded in XDP) vs the in-kernel XDP_TX MAC-swap floor and
vs the workers, on one forwarding core.

The lab is benchmarks/veth_lab.py: a generator in one namespace, pesigitg's XDP
program and one engine worker (pesigitgd's own, pinned to another CPU) in the other,
a sink counting what comes back by destination MAC. The same traffic then goes
through nginx's UDP stream proxy (``proxy_responses 0``).

Part one, the workers: l0's receive path runs in the generator's softirq and the
worker spins on its own CPU. Part two, the kernel tier: each path gets one core, the
worker's CPU, for everything from receiving a frame to sending it on (l0's NAPI as a
thread pinned there, the worker on it sleeping when idle, as pesigitgd runs): the
XDP_TX cases then cost that core alone, not the generator's, and compare per core
with the workers' AF_XDP path.

Each part first measures the generator's own ceiling: the same frames into a sink on
``l0`` that drops them at once. In part one a case that forwards every frame sent is
marked: bound by the generator, not by pesigitgd. (In part two a full veth ring holds
the generator back, so an XDP case forwards every frame at the rate its core allows.)

    python benchmarks/veth_forward.py [--frames N] [--size OCTETS] [--png FILE]

Prints Mpps forwarded per case and the worker's resident memory before and after
its run (it must not grow: no per-packet allocation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
from veth_cases import FOUR_PASS, SINGLE_PASS, EngineCase, engine_case
from veth_lab import (
    BACKENDS,
    BOUND,
    CIDS,
    GEN_IP,
    LB_IP,
    ROOT,
    Lab,
    Result,
    backend_mac,
    ceiling,
    engine_worker,
    measure,
    one_forwarding_core,
    pin_receive,
    veth_lab,
)
from veth_tier import report_tier, tier_cases

from pesigitg.routing.route_config import RetryKey, RetrySpec, TableOptions
from pesigitg.routing.routes import Backend, compile_routes
from pesigitg.testing.netns import inside
from tests import frames as f

FLOWS = 1_000_000       # the flow table case's working set
T = TypeVar("T")


def initial_case(lab: Lab, name: str, frames: int, retry: bool) -> Result:
    """1200-octet tokenless client Initials (a fresh DCID each, from a table): forwarded
    to the backends by the fallback (retry off), or each answered with a Retry sent
    back to the generator (retry always)."""
    backends = [Backend(f"10.9.1.{n}", backend_mac(n)) for n in range(1, BACKENDS + 1)]
    spec = RetrySpec("always" if retry else "off", 10, 0, 200)
    routes = compile_routes(lab.lb_mac, [FOUR_PASS], backends, [], TableOptions(
        knobs=spec.knobs(), retry_keys=(RetryKey(1, os.urandom(16), os.urandom(12)),)))
    # A 20-octet DCID: the generator writes 20 octets of the CID table there.
    head = (b"\xc3" + (1).to_bytes(4, "big") + b"\x14" + bytes(20) + b"\x08"
            + os.urandom(8) + b"\x00")
    frame = f.ether(f.ipv4(f.udp(head + os.urandom(1200 - len(head)), 40000, 443),
                           f.PROTO_UDP, src=GEN_IP, dst=LB_IP), f.ETH_P_IP,
                    src=lab.g0_mac, dst=lab.lb_mac)
    lab.gen.load(frame, [os.urandom(20) for _ in range(CIDS)], 14 + 20 + 8 + 6)  # DCID
    macs = {lab.g0_mac[5]} if retry else set(range(1, BACKENDS + 1))
    with engine_worker(lab, routes.blob, floor=False) as worker:
        m = measure(lab, frames, macs)
        counters = worker.counts()
    note = (f"worker sent {counters['retry_sent']:,} Retries" if retry else
            f"worker forwarded {counters['forwarded']:,}") + f", tx_full {counters['tx_full']:,}"
    return Result(name, m.mpps, note=note, taken=m.taken)


def nginx_case(lab: Lab, frames: int) -> Result:
    """The same traffic through nginx's UDP stream proxy (``proxy_responses 0``), one
    worker on the engine's CPU."""
    workdir, cpu = lab.workdir, lab.worker_cpu
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        return Result("nginx UDP proxy", 0.0, note="nginx not installed (make bench installs it)")
    conf = workdir / "nginx.conf"
    module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    conf.write_text(f"""
load_module {module};
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen {LB_IP}:443 udp;
        proxy_pass {GEN_IP}:4433;
        proxy_responses 0;
        proxy_timeout 5s;
    }}
}}
""")
    lab.xdp.set_ports([])   # our program passes everything: the kernel stack gets the UDP
    lab.gen.load(lab.frame, [os.urandom(8) for _ in range(CIDS)], 14 + 20 + 8 + 1)
    proc = subprocess.Popen(["ip", "netns", "exec", lab.lb_ns, "taskset", "-c", str(cpu), nginx,
                             "-c", str(conf), "-e", str(workdir / "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        if proc.poll() is not None:
            return Result("nginx UDP proxy", 0.0, note="nginx failed to start: "
                          + (workdir / "nginx-error.log").read_text()[-300:])
        m = measure(lab, frames, {lab.g0_mac[5]})
        rss = sum(p.memory_info().rss for p in psutil.Process(proc.pid).children(recursive=True))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return Result("nginx UDP proxy (1 worker)", m.mpps, rss, rss, taken=m.taken)


def plot(results: list[Result], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh([r.case for r in results][::-1], [r.mpps for r in results][::-1], color="#3a7")
    ax.set_xlabel("Mpps forwarded (one worker, veth, copy mode)")
    for i, r in enumerate(results[::-1]):
        ax.text(r.mpps, i, f" {r.mpps:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def run_cases(lab: Lab, args: argparse.Namespace) -> list[Result]:
    """Part one: the workers' cases."""
    engine = [EngineCase("QUIC-LB routing, four-pass", FOUR_PASS, soak=args.soak),
              EngineCase("QUIC-LB routing, single-pass", SINGLE_PASS),
              EngineCase("MAC swap only (AF_XDP floor)", None),
              # The flow table sized at twice the working set (4-way buckets then
              # rarely overflow).
              EngineCase(f"fallback, {FLOWS // 10**6}M flows, no flow table", FOUR_PASS,
                         flows=FLOWS),
              EngineCase(f"fallback, {FLOWS // 10**6}M flows, flow table", FOUR_PASS,
                         flows=FLOWS, flow_entries=2 * FLOWS)]
    results = []
    for case in engine:
        print(f"running {case.name} ...", flush=True)
        results.append(engine_case(lab, case, args.frames))
    for name, retry in (("1200-octet Initials, forwarded", False),
                        ("1200-octet Initials, answered with Retries", True)):
        print(f"running {name} ...", flush=True)
        results.append(initial_case(lab, name, args.frames // 2, retry))
    if not args.skip_nginx:
        print("running nginx ...", flush=True)
        results.append(nginx_case(lab, min(args.frames, 2_000_000)))
    return results


def table(results: list[Result], bound: Callable[[Result], bool]) -> None:
    print(f"{'case':44} {'Mpps':>7} {'taken':>6} {'worker RSS (MiB)':>17}  note")
    for r in results:
        rss = f"{r.rss_before / 2**20:.1f} / {r.rss_after / 2**20:.1f}" if r.rss_before else "-"
        mark = " [generator-bound]" if bound(r) else ""
        print(f"{r.case:44} {r.mpps:7.3f} {r.taken:6.0%} {rss:>17}  {r.note}{mark}")


def report(results: list[Result], top: float, args: argparse.Namespace, gen: str) -> None:
    print(f"\nveth forwarding, {args.size}-octet frames, generator ({gen}) on CPU "
          f"{args.gen_cpu}, worker on CPU {args.worker_cpu}, {args.frames:,} generated frames "
          "per engine case (what the path does not take is dropped before the socket)")
    print(f"generator ceiling (its frames into a sink that drops them at once): {top:.3f} "
          "Mpps. A case that forwards every frame sent is bound by the generator (and by the "
          "generator's CPU, which also carries l0's receive path), not by pesigitgd: marked")
    table(results, lambda r: r.taken >= BOUND)
    by = {r.case: r for r in results}
    floor = by["MAC swap only (AF_XDP floor)"].mpps
    four = by["QUIC-LB routing, four-pass"].mpps
    nginx = next((r.mpps for r in results if r.case.startswith("nginx")), 0.0)
    forwarded = by["1200-octet Initials, forwarded"].mpps
    retries = by["1200-octet Initials, answered with Retries"].mpps
    if forwarded:
        print(f"Retries are generated at {retries / forwarded:.2f}x the forwarding rate of "
              "the same Initials (target >= 0.8)")
    if floor:
        print(f"\nfour-pass routing is {four / floor:.0%} of the MAC-swap floor "
              "(target >= 80%)")
    if nginx:
        print(f"four-pass routing is {four / nginx:.1f}x nginx (target >= 5x)")
    growth = [r for r in results if r.rss_before and r.rss_after > r.rss_before + (1 << 20)]
    print("worker RSS: " + ("flat" if not growth else
                            "GREW in " + ", ".join(r.case for r in growth)))


def attached(lab: Lab, run: Callable[[], T]) -> T:
    """``run`` with pesigitg's XDP program on l0 (steering port 443)."""
    with inside(lab.lb_ns):
        lab.xdp.set_ports([443])
        lab.xdp.attach("l0")
    pin_receive(lab)
    try:
        return run()
    finally:
        with inside(lab.lb_ns):
            lab.xdp.detach()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000_000,
                        help="frames per case (default 10 million)")
    parser.add_argument("--size", type=int, default=128, help="frame size in octets")
    parser.add_argument("--gen-cpu", type=int, default=0)
    parser.add_argument("--worker-cpu", type=int, default=1)
    parser.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "out" / "veth.png")
    parser.add_argument("--soak", type=int, default=10_000_000,
                        help="frames the worker must forward in the four-pass case before "
                             "its resident memory is read (default 10 million)")
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds of the kernel tier's cases (default 4; half --frames "
                             "each)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, XDP, AF_XDP)", file=sys.stderr)
        return 1
    with veth_lab(args.size, args.gen_cpu, args.worker_cpu) as lab:
        print(f"generator: {lab.gen.name}; measuring its own ceiling ...", flush=True)
        top = ceiling(lab, args.frames)
        results = attached(lab, lambda: run_cases(lab, args))
        with one_forwarding_core(lab):
            print("one forwarding core: measuring the generator's ceiling again ...",
                  flush=True)
            tier_top = ceiling(lab, args.frames)
            tier = attached(lab, lambda: tier_cases(lab, args))
        gen = lab.gen.name
    report(results, top, args, gen)
    report_tier(tier, tier_top)
    results += tier[-1]
    args.png.parent.mkdir(parents=True, exist_ok=True)
    if plot(results, args.png):
        print(f"chart: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
