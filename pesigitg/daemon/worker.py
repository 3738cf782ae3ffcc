"""A worker process: one NIC queue, one AF_XDP socket, one engine.

Forked (so it inherits the XSKMAP and the shared counters) by the supervisor, or by
the forwarding benchmark, it
pins itself, opens and registers its socket, runs the engine loop in a thread and
serves the supervisor's pipe: ``("table", blob)`` swaps the route table,
``("stop",)`` or end-of-file stops it. The loop itself never touches Python.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

from pesigitg._fastpath import Engine, RouteTable, XskSocket
from pesigitg.ebpf.maps import Map
from pesigitg.ebpf.xdp import register_xsk

__all__ = ["WorkerSpec", "numa_cpus", "worker_main"]

log = logging.getLogger("pesigitg.daemon.worker")


@dataclass(frozen=True)
class WorkerSpec:
    index: int          # also its block in the shared counters
    interface: str
    queue: int
    cpu: int | None
    xsks: Map           # the steering program's XSKMAP, inherited across fork
    batch: int = 64
    busy_poll: bool = False     # spin instead of sleeping when idle (benchmarks)
    floor: bool = False         # swap MACs, decide nothing (the benchmark's floor)


def numa_cpus(interface: str) -> list[int]:
    """CPUs local to the NIC's NUMA node; every allowed CPU when it reports none
    (veth, or a single-node machine)."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        node = int(Path(f"/sys/class/net/{interface}/device/numa_node").read_text())
        cpulist = Path(f"/sys/devices/system/node/node{node}/cpulist").read_text().strip()
    except (OSError, ValueError):
        return allowed
    cpus: list[int] = []
    for part in cpulist.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    local = [c for c in cpus if c in allowed]
    return local or allowed


def worker_main(spec: WorkerSpec, blob: bytes, counters: object, conn: Connection) -> None:
    # The supervisor's asyncio signal plumbing was inherited: undo it first.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    name = f"pesigitgd worker q{spec.queue}"
    try:
        if spec.cpu is not None:
            psutil.Process().cpu_affinity([spec.cpu])
        xsk = XskSocket(spec.interface, spec.queue)
        register_xsk(spec.xsks, spec.queue, xsk.fd)
        engine = Engine(xsk, RouteTable(blob), counters, worker=spec.index, batch=spec.batch,
                        busy_poll=spec.busy_poll, floor=spec.floor)
    except Exception as exc:
        conn.send(("failed", f"{name}: {exc}"))
        os._exit(3)
    thread = threading.Thread(target=engine.run, name=name, daemon=True)
    thread.start()
    conn.send(("ready", xsk.mode, spec.cpu))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break           # the supervisor is gone: do not outlive it
            if message[0] == "table":
                try:
                    engine.swap_table(RouteTable(message[1]))
                    conn.send(("swapped",))
                except ValueError as exc:
                    conn.send(("rejected", str(exc)))
            elif message[0] == "stop":
                break
    finally:
        engine.stop()
        thread.join(timeout=5)
        xsk.close()
    os._exit(0)
