"""Forwarding throughput on a veth pair: pesigitg's engine vs the AF_XDP floor vs nginx.

Two namespaces joined by a veth pair. In ``gen``, a generator transmits QUIC frames
with CIDs cycled from a table out of ``g0``: BPF_PROG_TEST_RUN in live-frames mode
where the kernel allows it, else an AF_PACKET sendmmsg sender (pesigitg.testing.
traffic.generator picks, and the run says which). A sink XDP program on ``g0`` counts
what comes back by destination MAC and drops it. In ``lb``, ``l0`` carries pesigitg's
XDP program and one engine worker process, pinned to another CPU than the generator.
The same traffic then goes through nginx's UDP stream proxy (``proxy_responses 0``).

First the generator's own ceiling: the same frames into a sink on ``l0`` that drops
them at once. A case within 10 % of it is marked: bound by the generator, not by
pesigitgd.

    python benchmarks/veth_forward.py [--frames N] [--size OCTETS] [--png FILE]

Prints Mpps forwarded per case and the worker's resident memory before and after
its run (it must not grow: no per-packet allocation).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pesigitg._fastpath import (  # noqa: E402
    XskSocket,
    new_counters,
    read_counters,
)
from pesigitg.daemon import worker_messages as wire  # noqa: E402
from pesigitg.daemon.steering import Steering  # noqa: E402
from pesigitg.daemon.worker import WorkerProcess, WorkerSpec, start_worker  # noqa: E402
from pesigitg.ebpf.attach import ifindex  # noqa: E402
from pesigitg.routing.quiclb import CidConfig  # noqa: E402
from pesigitg.routing.route_config import RetryKey, RetrySpec, TableOptions  # noqa: E402
from pesigitg.routing.routes import Backend, Server, compile_routes  # noqa: E402
from pesigitg.testing.netns import inside, ip, mac_of, namespace, veth_pair  # noqa: E402
from pesigitg.testing.traffic import (  # noqa: E402
    Generator,
    Traffic,
    compile_traffic,
    generator,
)
from tests import frames as f  # noqa: E402

GEN_IP, LB_IP = "10.9.0.2", "10.9.0.1"
BACKENDS = 8
KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")
FOUR_PASS = CidConfig(0, 3, 4, KEY)
SINGLE_PASS = CidConfig(1, 8, 8, KEY)
CIDS = 4096
FLOWS = 1_000_000       # the flow table case's working set
BOUND = 0.99            # a case that forwards this share of what was sent is bound by the
                        # generator: the path had room for more


def backend_mac(n: int) -> bytes:
    return bytes([2, 0xBE, 0, 0, 0, n])


@dataclass
class Result:
    case: str
    mpps: float
    rss_before: int = 0
    rss_after: int = 0
    note: str = ""
    taken: float = 0.0      # the share of the frames sent that came back forwarded


# -- the engine worker: pesigitgd's own worker process, pinned -------------------------

@dataclass
class Worker:
    process: WorkerProcess
    counters: object
    rss_at_start: int

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss


@contextlib.contextmanager
def engine_worker(lb_ns: str, cpu: int, blob: bytes, xdp: Steering, floor: bool
                  ) -> Iterator[Worker]:
    """pesigitgd's own worker on a socket made and registered the way the supervisor does."""
    counters = new_counters(1)
    with inside(lb_ns):
        xsk = XskSocket("l0", 0)
    xdp.register_socket(0, xsk.fd)
    proc = start_worker(WorkerSpec(0, "l0", 0, cpu, busy_poll=True, floor=floor), xsk, blob,
                        counters)
    try:
        proc.conn.settimeout(15)
        message = wire.read_message(proc.conn, wire.FROM_WORKER)
        if message is None or message.kind != wire.Kind.READY:
            raise RuntimeError("the engine worker failed: "
                               + (message.reason() if message else "it exited"))
        yield Worker(proc, counters, 0)
    finally:
        with contextlib.suppress(OSError):
            proc.conn.sendall(wire.encode(wire.Kind.STOP))
        deadline = time.monotonic() + 10
        while os.waitpid(proc.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                os.waitpid(proc.pid, 0)
                break
            time.sleep(0.01)
        os.close(proc.pidfd)
        proc.conn.close()
        xsk.close()


@dataclass
class Bench:
    """The generator and the sink of the run."""
    traffic: Traffic
    gen: Generator


def measure(bench: Bench, frames: int, macs: set[int], warmup: int = 0
            ) -> tuple[float, float]:
    """(Mpps counted at the sink by the last octet of ``macs`` while the generator sends
    ``frames`` of what was loaded into it, the share of them counted)."""
    # Warm-up: caches, rings, ARP (and, for the flow cases, every flow seen once).
    bench.gen.send(warmup or min(frames // 10, 200_000))
    time.sleep(0.2)
    before = bench.traffic.sink_count(macs)
    start = time.perf_counter()
    bench.gen.send(frames)
    seconds = time.perf_counter() - start
    time.sleep(0.2)                                   # let the last batches drain
    counted = bench.traffic.sink_count(macs) - before
    return counted / seconds / 1e6, counted / frames


def ceiling(bench: Bench, lb_ns: str, lb_mac: bytes, frame: bytes, frames: int) -> float:
    """The generator's own rate: its frames into a sink on l0 that drops them at once."""
    with inside(lb_ns):
        l0 = ifindex("l0")
    bench.gen.load(frame, [os.urandom(8) for _ in range(CIDS)], 14 + 20 + 8 + 1)
    bench.traffic.count_macs(lb_mac)
    bench.traffic.sink_also(lb_ns, l0)
    try:
        return measure(bench, frames, {lb_mac[5]})[0]
    finally:
        bench.traffic.sink_also(lb_ns, l0, attach=False)
        bench.traffic.count_macs(bytes(5))


def engine_case(name: str, bench: Bench, xdp: Steering, lb_ns: str, lb_mac: bytes,
                config: CidConfig | None, frame_template: bytes, frames: int,
                worker_cpu: int, soak: int = 0, flows: int = 0, flow_entries: int = 0
                ) -> Result:
    """One engine case; with ``flows``, every CID is unroutable (config 7) and the
    frames come from that many client addresses: Maglev on the 4-tuple, through a flow
    table of ``flow_entries`` (0: none)."""
    configs = [config] if config else []
    backends = [Backend(f"10.9.1.{n}", backend_mac(n)) for n in range(1, BACKENDS + 1)]
    servers = [Server(config.config_id, bytes([n]) * config.server_id_len, f"10.9.1.{n}")
               for n in range(1, BACKENDS + 1)] if config else []
    routes = compile_routes(lb_mac, configs, backends, servers,
                            TableOptions(knobs={"flow_entries": flow_entries}))
    if config and not flows:
        cids = [config.encode(bytes([1 + i % BACKENDS]) * config.server_id_len,
                              os.urandom(config.nonce_len), extra=b"") for i in range(CIDS)]
    elif flows:
        cids = [b"\xe0" + os.urandom(7) for _ in range(CIDS)]        # config 7: unroutable
    else:
        cids = [os.urandom(8) for _ in range(CIDS)]
    bench.gen.load(frame_template, cids, 14 + 20 + 8 + 1, flows, 14 + 12)  # flow: source
    # In swap mode the frame comes back addressed to its sender, g0.
    macs = set(range(1, BACKENDS + 1)) if config else {frame_template[11]}
    with engine_worker(lb_ns, worker_cpu, routes.blob, xdp, floor=config is None) as worker:
        # The generator outruns the worker: several frames per flow reach it.
        mpps, taken = measure(bench, frames, macs, warmup=10 * flows)
        # Resident memory from here on: the worker has touched every UMEM frame by now
        # (the supervisor's pages, counted in its RSS once it uses them).
        worker.rss_at_start = worker.rss()
        # Soak: keep going until the worker itself has forwarded `soak` frames, so
        # the resident-memory reading covers that many packets through the loop.
        while read_counters(worker.counters)["forwarded"] < soak:
            bench.gen.send(2_000_000)
        rss_after = worker.rss()
        counters = read_counters(worker.counters)
        rss_before = worker.rss_at_start
    routed = sum(v for k, v in counters.items() if k.startswith("cid_routed_"))
    note = (f"worker forwarded {counters['forwarded']:,} ({routed:,} by CID), tx_full "
            f"{counters['tx_full']:,}")
    if flows and flow_entries:
        note += (f", flow table of {flow_entries:,}: hits {counters['flow_hits']:,} inserts "
                 f"{counters['flow_inserts']:,} evictions {counters['flow_evictions']:,}")
    return Result(name, mpps, rss_before, rss_after, note, taken)


def initial_case(name: str, bench: Bench, xdp: Steering, lb_ns: str, lb_mac: bytes,
                 g0_mac: bytes, frames: int, worker_cpu: int, retry: bool) -> Result:
    """1200-octet tokenless client Initials (a fresh DCID each, from a table): forwarded
    to the backends by the fallback (retry off), or each answered with a Retry sent
    back to the generator (retry always)."""
    backends = [Backend(f"10.9.1.{n}", backend_mac(n)) for n in range(1, BACKENDS + 1)]
    spec = RetrySpec("always" if retry else "off", 10, 0, 200)
    routes = compile_routes(lb_mac, [FOUR_PASS], backends, [], TableOptions(
        knobs=spec.knobs(), retry_keys=(RetryKey(1, os.urandom(16), os.urandom(12)),)))
    # A 20-octet DCID: the generator writes 20 octets of the CID table there.
    head = (b"\xc3" + (1).to_bytes(4, "big") + b"\x14" + bytes(20) + b"\x08"
            + os.urandom(8) + b"\x00")
    frame = f.ether(f.ipv4(f.udp(head + os.urandom(1200 - len(head)), 40000, 443),
                           f.PROTO_UDP, src=GEN_IP, dst=LB_IP), f.ETH_P_IP,
                    src=g0_mac, dst=lb_mac)
    bench.gen.load(frame, [os.urandom(20) for _ in range(CIDS)], 14 + 20 + 8 + 6)  # DCID
    macs = {g0_mac[5]} if retry else set(range(1, BACKENDS + 1))
    with engine_worker(lb_ns, worker_cpu, routes.blob, xdp, floor=False) as worker:
        mpps, taken = measure(bench, frames, macs)
        counters = read_counters(worker.counters)
    note = (f"worker sent {counters['retry_sent']:,} Retries" if retry else
            f"worker forwarded {counters['forwarded']:,}") + f", tx_full {counters['tx_full']:,}"
    return Result(name, mpps, note=note, taken=taken)


def nginx_case(bench: Bench, xdp: Steering, lb_ns: str, g0_mac: bytes,
               frame: bytes, frames: int, cpu: int, workdir: Path) -> Result:
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
    xdp.set_ports([])   # our program passes everything: the kernel stack gets the UDP
    bench.gen.load(frame, [os.urandom(8) for _ in range(CIDS)], 14 + 20 + 8 + 1)
    proc = subprocess.Popen(["ip", "netns", "exec", lb_ns, "taskset", "-c", str(cpu), nginx,
                             "-c", str(conf), "-e", str(workdir / "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        if proc.poll() is not None:
            return Result("nginx UDP proxy", 0.0, note="nginx failed to start: "
                          + (workdir / "nginx-error.log").read_text()[-300:])
        mpps, taken = measure(bench, frames, {g0_mac[5]})
        rss = sum(p.memory_info().rss for p in psutil.Process(proc.pid).children(recursive=True))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return Result("nginx UDP proxy (1 worker)", mpps, rss, rss, taken=taken)


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
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, XDP, AF_XDP)", file=sys.stderr)
        return 1
    # Terminated from outside: unwind so the namespaces are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.sched_setaffinity(0, {args.gen_cpu})
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pesi-bench-") as tmp, \
            namespace("pesi-gen") as gen_ns, namespace("pesi-lb") as lb_ns:
        workdir = Path(tmp)
        veth_pair(gen_ns, "g0", "l0", lb_ns)
        ip("addr", "add", f"{GEN_IP}/24", "dev", "g0", ns=gen_ns)
        ip("addr", "add", f"{LB_IP}/24", "dev", "l0", ns=lb_ns)
        g0_mac, lb_mac = mac_of(gen_ns, "g0"), mac_of(lb_ns, "l0")
        ip("neigh", "replace", GEN_IP, "lladdr", g0_mac.hex(":"), "dev", "l0", ns=lb_ns)
        with inside(gen_ns):
            g0_index = ifindex("g0")
        payload_len = max(args.size - 14 - 20 - 8, 32)
        frame = f.ether(f.ipv4(f.udp(b"\x40" + os.urandom(payload_len - 1), 40000, 443),
                               f.PROTO_UDP, src=GEN_IP, dst=LB_IP), f.ETH_P_IP,
                        src=g0_mac, dst=lb_mac)
        traffic = Traffic(compile_traffic(workdir), gen_ns, g0_index)
        gen = generator(traffic, gen_ns, "g0")
        bench = Bench(traffic, gen)
        with contextlib.closing(traffic), contextlib.closing(gen), Steering.load() as xdp:
            print(f"generator: {gen.name}; measuring its own ceiling ...", flush=True)
            top = ceiling(bench, lb_ns, lb_mac, frame, args.frames)
            with inside(lb_ns):
                xdp.set_ports([443])
                xdp.attach("l0")
            cases = [("QUIC-LB routing, four-pass", FOUR_PASS),
                     ("QUIC-LB routing, single-pass", SINGLE_PASS),
                     ("MAC swap only (AF_XDP floor)", None)]
            for i, (name, config) in enumerate(cases):
                print(f"running {name} ...", flush=True)
                results.append(engine_case(name, bench, xdp, lb_ns, lb_mac, config, frame,
                                           args.frames, args.worker_cpu,
                                           args.soak if i == 0 else 0))
            # The flow table sized at twice the working set (4-way buckets then
            # rarely overflow).
            for name, entries in ((f"fallback, {FLOWS // 10**6}M flows, no flow table", 0),
                                  (f"fallback, {FLOWS // 10**6}M flows, flow table",
                                   2 * FLOWS)):
                print(f"running {name} ...", flush=True)
                results.append(engine_case(name, bench, xdp, lb_ns, lb_mac, FOUR_PASS,
                                           frame, args.frames, args.worker_cpu,
                                           flows=FLOWS, flow_entries=entries))
            for name, retry in (("1200-octet Initials, forwarded", False),
                                ("1200-octet Initials, answered with Retries", True)):
                print(f"running {name} ...", flush=True)
                results.append(initial_case(name, bench, xdp, lb_ns, lb_mac, g0_mac,
                                            args.frames // 2, args.worker_cpu, retry))
            if not args.skip_nginx:
                print("running nginx ...", flush=True)
                results.append(nginx_case(bench, xdp, lb_ns, g0_mac, frame,
                                          min(args.frames, 2_000_000), args.worker_cpu,
                                          workdir))
            with inside(lb_ns):
                xdp.detach()

    print(f"\nveth forwarding, {args.size}-octet frames, generator ({gen.name}) on CPU "
          f"{args.gen_cpu}, worker on CPU {args.worker_cpu}, {args.frames:,} generated frames "
          "per engine case (what the path does not take is dropped before the socket)")
    print(f"generator ceiling (its frames into a sink that drops them at once): {top:.3f} "
          "Mpps. A case that forwards every frame sent is bound by the generator (and by the "
          "generator's CPU, which also carries l0's receive path), not by pesigitgd: marked")
    print(f"{'case':44} {'Mpps':>7} {'taken':>6} {'worker RSS (MiB)':>17}  note")
    for r in results:
        rss = f"{r.rss_before / 2**20:.1f} / {r.rss_after / 2**20:.1f}" if r.rss_before else "-"
        bound = " [generator-bound]" if r.taken >= BOUND else ""
        print(f"{r.case:44} {r.mpps:7.3f} {r.taken:6.0%} {rss:>17}  {r.note}{bound}")
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
    args.png.parent.mkdir(parents=True, exist_ok=True)
    if plot(results, args.png):
        print(f"chart: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
