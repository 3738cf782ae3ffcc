"""The veth lab the forwarding benchmarks run in, and how they measure.

Two namespaces joined by a veth pair. In ``gen``, a generator transmits QUIC frames
with CIDs cycled from a table out of ``g0``: BPF_PROG_TEST_RUN in live-frames mode
where the kernel allows it, else an AF_PACKET sendmmsg sender (pesigitg.testing.
traffic.generator picks, and the run says which). A sink XDP program on ``g0`` counts
what comes back by destination MAC and drops it. In ``lb``, ``l0`` carries pesigitg's
XDP program and one engine worker process (pesigitgd's own), pinned to another CPU
than the generator.

Where ``l0``'s receive path runs is the lab's choice. By default it is the softirq of
the CPU that sent the frame (the generator's) and the worker spins on its own CPU.
With ``napi_cpu`` set (:func:`one_forwarding_core`), ``l0``'s NAPI, which runs the XDP
program, is a kernel thread pinned to that CPU and the worker, on the same CPU, sleeps
in poll() when idle (pesigitgd's default): everything between receiving a frame and
sending it on then costs that one CPU, as on a NIC whose queue is served by one core.
"""

from __future__ import annotations

import contextlib
import os
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

from pesigitg._fastpath import XskSocket  # noqa: E402
from pesigitg.daemon import worker_messages as wire  # noqa: E402
from pesigitg.daemon.counters import SharedCounters  # noqa: E402
from pesigitg.daemon.steering import Steering  # noqa: E402
from pesigitg.daemon.worker import WorkerProcess, WorkerSpec, start_worker  # noqa: E402
from pesigitg.ebpf.attach import ifindex  # noqa: E402
from pesigitg.testing.netns import inside, ip, mac_of, namespace, veth_pair  # noqa: E402
from pesigitg.testing.traffic import (  # noqa: E402
    Generator,
    Traffic,
    compile_traffic,
    generator,
)
from tests import frames as f  # noqa: E402

__all__ = ["BACKENDS", "BOUND", "CIDS", "GEN_IP", "LB_IP", "Lab", "Measured", "Result",
           "Worker", "backend_mac", "busy_ns", "ceiling", "engine_worker", "measure",
           "one_forwarding_core", "pin_receive", "veth_lab"]

GEN_IP, LB_IP = "10.9.0.2", "10.9.0.1"
BACKENDS = 8
CIDS = 4096
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
    core_ns: float = 0.0    # busy time of the worker's CPU per frame forwarded


@dataclass
class Lab:
    """The generator, its sink, and the balancer's side of the veth pair."""
    traffic: Traffic
    gen: Generator
    xdp: Steering
    lb_ns: str
    lb_mac: bytes
    g0_mac: bytes
    frame: bytes            # a 1-RTT frame to the VIP, the CID's first octet at 14+20+8
    worker_cpu: int
    workdir: Path
    napi_cpu: int | None = None     # l0's receive in a thread on this CPU (None: softirq)

    @property
    def spin(self) -> bool:
        """Whether the worker spins when idle (it would starve l0's receive thread on
        its own CPU)."""
        return self.napi_cpu is None


def pin_receive(lab: Lab) -> None:
    """With ``lab.napi_cpu`` set, run l0's NAPI (its receive path, the XDP program
    included) as a kernel thread pinned to that CPU. Called after every XDP attach on
    l0: veth makes its NAPI anew then. (The thread is found by its name, napi/l0-ID; a
    same-named device elsewhere would have its thread pinned too: affinity only.)"""
    if lab.napi_cpu is None:
        return
    done = napi_threaded(lab, True)
    if done.returncode:
        raise RuntimeError(f"threaded NAPI on l0: {done.stderr.strip()}")
    threads = [p.pid for p in psutil.process_iter(["name"])
               if (p.info["name"] or "").startswith("napi/l0-")]
    if not threads:
        raise RuntimeError("l0 has no NAPI thread (threaded NAPI needs an XDP program "
                           "on the veth)")
    for pid in threads:
        os.sched_setaffinity(pid, {lab.napi_cpu})


@contextlib.contextmanager
def one_forwarding_core(lab: Lab) -> Iterator[None]:
    """l0's receive thread on the worker's CPU from the next XDP attach on (see the
    module's text); back to the softirq on the way out."""
    lab.napi_cpu = lab.worker_cpu
    try:
        yield
    finally:
        lab.napi_cpu = None
        # (Refused while l0 has no NAPI, that is no XDP program: nothing to undo then.)
        napi_threaded(lab, False)


def napi_threaded(lab: Lab, on: bool) -> subprocess.CompletedProcess[str]:
    """l0's NAPI as kernel threads (``on``) or in softirq; sysfs shows a namespace's
    devices only from inside it, hence ``ip netns exec``."""
    return subprocess.run(["ip", "netns", "exec", lab.lb_ns, "sh", "-c",
                           f"echo {int(on)} > /sys/class/net/l0/threaded"],
                          capture_output=True, text=True)


@contextlib.contextmanager
def veth_lab(size: int, gen_cpu: int, worker_cpu: int) -> Iterator[Lab]:
    """The namespaces, the veth pair, the generator and the XDP program (not attached:
    :func:`ceiling` runs first); everything removed on the way out."""
    # Terminated from outside: unwind so the namespaces are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.sched_setaffinity(0, {gen_cpu})
    with tempfile.TemporaryDirectory(prefix="pesi-bench-") as tmp, \
            namespace("pesi-gen") as gen_ns, namespace("pesi-lb") as lb_ns:
        veth_pair(gen_ns, "g0", "l0", lb_ns)
        ip("addr", "add", f"{GEN_IP}/24", "dev", "g0", ns=gen_ns)
        ip("addr", "add", f"{LB_IP}/24", "dev", "l0", ns=lb_ns)
        g0_mac, lb_mac = mac_of(gen_ns, "g0"), mac_of(lb_ns, "l0")
        ip("neigh", "replace", GEN_IP, "lladdr", g0_mac.hex(":"), "dev", "l0", ns=lb_ns)
        with inside(gen_ns):
            g0_index = ifindex("g0")
        payload_len = max(size - 14 - 20 - 8, 32)
        frame = f.ether(f.ipv4(f.udp(b"\x40" + os.urandom(payload_len - 1), 40000, 443),
                               f.PROTO_UDP, src=GEN_IP, dst=LB_IP), f.ETH_P_IP,
                        src=g0_mac, dst=lb_mac)
        traffic = Traffic(compile_traffic(Path(tmp)), gen_ns, g0_index)
        gen = generator(traffic, gen_ns, "g0")
        with contextlib.closing(traffic), contextlib.closing(gen), Steering.load() as xdp:
            yield Lab(traffic, gen, xdp, lb_ns, lb_mac, g0_mac, frame, worker_cpu, Path(tmp))


# -- the engine worker: pesigitgd's own worker process, pinned -------------------------

@dataclass
class Worker:
    process: WorkerProcess
    counters: SharedCounters
    rss_at_start: int

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def counts(self) -> dict[str, int]:
        return self.counters.read(0)


@contextlib.contextmanager
def engine_worker(lab: Lab, blob: bytes, floor: bool) -> Iterator[Worker]:
    """pesigitgd's own worker on a socket made and registered the way the supervisor does."""
    counters = SharedCounters.create(1)
    with inside(lab.lb_ns):
        xsk = XskSocket("l0", 0)
    lab.xdp.register_socket(0, xsk.fd)
    proc = start_worker(WorkerSpec(0, "l0", 0, lab.worker_cpu, busy_poll=lab.spin,
                                   floor=floor), xsk, blob, counters)
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
        counters.close()


@dataclass
class Measured:
    mpps: float             # counted at the sink per second of sending
    taken: float            # the share of the frames sent that the sink counted
    core_ns: float          # busy time of the worker's CPU per frame counted


def busy_ns(cpu: int) -> int:
    """The time ``cpu`` has spent not idle (user, system, interrupts; not steal), ns."""
    with open("/proc/stat") as stat:
        fields = next(line.split() for line in stat if line.startswith(f"cpu{cpu} "))
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
    return (user + nice + system + irq + softirq) * 10**9 // os.sysconf("SC_CLK_TCK")


def measure(lab: Lab, frames: int, macs: set[int], warmup: int = 0) -> Measured:
    """The sink's count by the last octet of ``macs`` while the generator sends
    ``frames`` of what was loaded into it, and what that cost the worker's CPU."""
    # Warm-up: caches, rings, ARP (and, for the flow cases, every flow seen once).
    lab.gen.send(warmup or min(frames // 10, 200_000))
    time.sleep(0.2)
    before = lab.traffic.sink_count(macs)
    busy = busy_ns(lab.worker_cpu)
    start = time.perf_counter()
    lab.gen.send(frames)
    seconds = time.perf_counter() - start
    time.sleep(0.2)                                   # let the last batches drain
    counted = lab.traffic.sink_count(macs) - before
    busy = busy_ns(lab.worker_cpu) - busy
    return Measured(counted / seconds / 1e6, counted / frames, busy / max(counted, 1))


def ceiling(lab: Lab, frames: int) -> float:
    """The generator's own rate: its frames into a sink on l0 that drops them at once."""
    with inside(lab.lb_ns):
        l0 = ifindex("l0")
    lab.gen.load(lab.frame, [os.urandom(8) for _ in range(CIDS)], 14 + 20 + 8 + 1)
    lab.traffic.count_macs(lab.lb_mac)
    lab.traffic.sink_also(lab.lb_ns, l0)
    pin_receive(lab)
    try:
        return measure(lab, frames, {lab.lb_mac[5]}).mpps
    finally:
        lab.traffic.sink_also(lab.lb_ns, l0, attach=False)
        lab.traffic.count_macs(bytes(5))
