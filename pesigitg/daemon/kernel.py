"""The daemon's kernel objects: the XDP program and its maps, one AF_XDP socket per RX
queue, the shared counters and the worker pool on those sockets.

Each is created (a start), adopted (a restart takes them over), released (handed to a
successor: nothing undone) or shut down (detached and closed) here, and nowhere else;
start-up and take-over share everything after creating or adopting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import Ethtool

from pesigitg._fastpath import CNT_RETRY_SENT, COUNTER_NAMES, XskSocket
from pesigitg.daemon.counters import SharedCounters
from pesigitg.daemon.report import KernelView, WorkerView
from pesigitg.daemon.steering import Steering
from pesigitg.daemon.tier import (
    TierChoice,
    Written,
    choose,
    clear_slots,
    install,
    kernel_aes_driver,
    tier_counts,
)
from pesigitg.daemon.worker import WorkerSpec, numa_cpus
from pesigitg.daemon.workers import WorkerHandle, WorkerPool
from pesigitg.routing.routes import CompiledRoutes

__all__ = ["WORKER_START_TIMEOUT", "Kernel", "StartupError", "queue_count", "rx_queue_count"]

log = logging.getLogger("pesigitg")

WORKER_START_TIMEOUT = 15.0


class StartupError(RuntimeError):
    """The daemon cannot start; the message says what to do."""


def rx_queue_count(interface: str) -> tuple[int, str]:
    """RX queues that can receive (combined + RX-only channels) and the ethtool channel
    kind that sets them; (1, "combined") when the driver reports no channels."""
    try:
        with contextlib.closing(Ethtool()) as ethtool:
            channels = ethtool.get_channels(interface)
    except Exception:   # drivers without ETHTOOL_GCHANNELS have one queue
        return 1, "combined"
    kind = "combined" if channels.combined_count or not channels.rx_count else "rx"
    return max(channels.combined_count + channels.rx_count, 1), kind


def queue_count(interface: str, configured: int | None) -> int:
    """The workers to run: one per RX queue, which ``configured`` (when set) must match:
    a queue without a worker would lose its traffic (StartupError says what to do)."""
    available, kind = rx_queue_count(interface)
    queues = configured or available
    if available > queues:
        raise StartupError(
            f"{interface} has {available} RX queues but only {queues} workers are "
            f"configured, so traffic on queues {queues}..{available - 1} would be lost: "
            f"run 'ethtool -L {interface} {kind} {queues}' or set queues = {available}")
    if queues > available:
        raise StartupError(f"queues = {queues}, but {interface} has only {available} RX "
                           f"queue(s): set queues = {available} or raise the channel count "
                           f"with 'ethtool -L {interface} {kind} {queues}'")
    return queues


def _census(xsk: XskSocket) -> dict[str, Any]:
    """Where a queue's frames are, each checked to be in one place only."""
    try:
        return xsk.census(distinct=True)
    except ValueError as exc:
        return {"error": str(exc)}


@dataclass
class Kernel:
    interface: str
    steering: Steering
    counters: SharedCounters
    xsks: list[XskSocket]
    pool: WorkerPool
    mode: str | None = None         # how XDP is attached, once it is
    handing_over: bool = False      # our workers stopped for a successor's
    tier: TierChoice | None = None  # what the kernel tier decodes (daemon/tier.py)
    _tier_table: CompiledRoutes | None = None   # the table it has
    _tier_written: Written = field(default_factory=Written)

    @classmethod
    def create(cls, interface: str, queues: int, table: Callable[[], bytes]) -> Kernel:
        """Load the program, create the counters and a socket per queue (in the
        program's XSKMAP); nothing runs or is attached yet."""
        steering = Steering.load()
        counters, xsks = None, []
        try:
            counters = SharedCounters.create(queues)
            for queue in range(queues):
                xsks.append(XskSocket(interface, queue))
                steering.register_socket(queue, xsks[-1].fd)
        except BaseException:
            _close(steering, counters, xsks)
            raise
        return cls(interface, steering, counters, xsks,
                   _pool(interface, xsks, counters, table, [0] * queues))

    @classmethod
    def adopt(cls, interface: str, facts: dict[str, Any], fds: dict[str, int],
              table: Callable[[], bytes]) -> Kernel:
        """What a predecessor handed over (daemon/handover.py): its program is kept only
        if the object installed now is the one it was loaded from (its digest then, not
        the file's now: an upgrade in place replaces that file)."""
        maps = {name[4:]: fd for name, fd in fds.items() if name.startswith("map:")}
        steering = Steering.load(reuse=maps, programs={"xdp": fds["program"]},
                                 programs_digest=facts["object"])
        workers: list[dict[str, Any]] = facts["workers"]
        counters, xsks = None, []
        try:
            counters = SharedCounters.adopt(fds["counters"], len(workers),
                                            facts.get("counter_names"))
            for i, w in enumerate(workers):
                xsks.append(XskSocket.adopt(fds[f"xsk:{i}"], fds[f"umem:{i}"],
                                            w.get("geometry")))
        except BaseException:
            _close(steering, counters, xsks)
            raise
        return cls(interface, steering, counters, xsks,
                   _pool(interface, xsks, counters, table, [w["restarts"] for w in workers]),
                   facts["xdp_mode"])

    # -- running --------------------------------------------------------------------------

    def steer(self, ports: Iterable[int], vips: Sequence[str],
              before: tuple[Iterable[int], Sequence[str]] | None = None) -> None:
        """Steer ``ports`` to ``vips``; should the kernel refuse, what was ``before`` is
        put back (capacities are checked with the files, so it should not)."""
        try:
            self.steering.set_ports(ports)
            self.steering.set_vips(vips)
        except BaseException:
            if before is not None:
                self.steering.set_ports(before[0])
                self.steering.set_vips(before[1])
            raise

    async def start_workers(self) -> None:
        await self.pool.start_all(WORKER_START_TIMEOUT)

    async def attach(self, mode: str) -> None:
        """Attach the program (every queue has its socket and its worker by now)."""
        self.mode = await asyncio.to_thread(self.steering.attach, self.interface, mode)
        log.info("XDP attached to %s in %s mode through %s", self.interface, self.mode,
                 "a BPF link" if self.steering.attach_kind == "link" else "netlink")

    def adopt_attachment(self, facts: dict[str, Any], fds: dict[str, int]) -> None:
        """The predecessor's attachment; a program of a new object replaces it."""
        self.steering.adopt_attachment(facts["ifindex"], facts["xdp_mode"], facts["attach"],
                                       fds.get("link", -1), fds["program"])

    def program_replaced(self, facts: dict[str, Any]) -> bool:
        return self.steering.digest != facts["object"]

    async def quiesce(self) -> None:
        """A successor takes the queues over: our workers stop (frames wait in the
        rings)."""
        self.handing_over = True
        await self.pool.stop_all()

    async def take_back(self, ports: Iterable[int], vips: Sequence[str]) -> bool:
        """A successor failed: if it had started to take over, our program back on the
        link, our ports and VIPs, our workers restarted; True then."""
        if not self.handing_over:
            return False
        self.steering.restore()
        self.steer(ports, vips)
        if self.tier is not None and self._tier_table is not None:
            self._tier_written = Written()      # the successor may have written either
            install(self.steering, self._tier_table, self.tier, self._tier_written)
        log.warning("the new process failed after our workers stopped; restarting them")
        await self.start_workers()
        self.handing_over = False
        return True

    def clear_slots(self, slots: Iterable[int]) -> None:
        """Counter slots another backend held before: zero before a table uses them."""
        slots = list(slots)
        for slot in slots:
            self.counters.clear_backend(slot)
        clear_slots(self.steering, slots)

    def install_tier(self, compiled: CompiledRoutes | None, decode: str) -> None:
        """The kernel tier gets ``compiled`` as ``decode`` (xdp_decode) says, unless it
        has it already; a new choice is logged."""
        if compiled is None:
            return
        choice = choose(decode, {c.config_id: c.mode for c in compiled.configs},
                        self.steering.crypto, all(x.mode != "zero-copy" for x in self.xsks),
                        kernel_aes_driver())
        if compiled is self._tier_table and choice == self.tier:
            return
        install(self.steering, compiled, choice, self._tier_written)
        if choice != self.tier:
            for config_id, (path, why) in sorted(choice.configs.items()):
                log.info("QUIC-LB config %d: decoded %s (%s)", config_id,
                         "in XDP by the kernel tier" if path == "xdp" else "by the workers",
                         why)
        self.tier, self._tier_table = choice, compiled

    def retries_sent(self) -> int:
        return sum(self.counters.read(w)[CNT_RETRY_SENT] for w in range(self.counters.workers))

    def tier_counts(self) -> tuple[dict[int, int], list[int]]:
        """What the kernel tier forwarded: per backend slot of the current table, and
        per config id."""
        table = self._tier_table
        if table is None:
            return {}, []
        slots = [table.table.backend(i)[3] for i in range(len(table.backends))]
        return tier_counts(self.steering, [c.config_id for c in table.configs], slots)

    def backend_counts(self, tier: dict[int, int] | None = None
                       ) -> dict[int, tuple[int, int]]:
        """(forwarded, CID-routed) frames per backend slot, both tiers together (the
        kernel tier forwards only CID-routed frames)."""
        counts = self.counters.backend_counts()
        for slot, n in (self.tier_counts()[0] if tier is None else tier).items():
            forwarded, cid = counts.get(slot, (0, 0))
            if n:
                counts[slot] = (forwarded + n, cid + n)
        return counts

    def view(self) -> KernelView:
        counters, steering = self.counters, self.steering
        per_slot, per_config = self.tier_counts()
        return KernelView(
            [WorkerView(h.spec.index, h.spec.queue, h.spec.cpu, h.alive, h.pid, h.mode,
                        h.restarts, counters.read(h.spec.index), _census(h.xsk), h.refused,
                        h.repairs) for h in self.pool.handles],
            steering.ifindex is not None, self.mode, steering.attach_kind,
            steering.counters(), {"ports": sorted(steering.ports()),
                                  "vips": sorted(str(v) for v in steering.vips())},
            self.backend_counts(per_slot), self.handing_over,
            self.tier.describe() if self.tier is not None else {}, per_slot, per_config)

    # -- a restart --------------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """What a successor needs to know of these objects (JSON)."""
        steering = self.steering
        return {"object": steering.digest, "interface": self.interface,
                "ifindex": steering.ifindex, "xdp_mode": self.mode,
                "attach": steering.attach_kind,
                "workers": [{"queue": h.spec.queue, "restarts": h.restarts,
                             "geometry": h.xsk.geometry} for h in self.pool.handles],
                "counter_names": list(COUNTER_NAMES)}

    def fds(self) -> dict[str, int]:
        """The objects themselves, by name (see :meth:`adopt`)."""
        steering = self.steering
        fds = {"program": steering.fd, "counters": self.counters.fd}
        if steering.link_fd >= 0:
            fds["link"] = steering.link_fd
        for name, m in steering.maps.items():
            fds[f"map:{name}"] = m.fd
        for i, xsk in enumerate(self.xsks):
            fds[f"xsk:{i}"], fds[f"umem:{i}"] = xsk.fd, xsk.umem_fd
        return fds

    # -- the end ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop for good: XDP detached, workers stopped, everything closed."""
        if self.steering.ifindex is not None:
            try:
                await asyncio.to_thread(self.steering.detach)
            except OSError as exc:
                log.error("detaching XDP: %s", exc)
        await self.pool.stop_all()
        _close(self.steering, self.counters, self.xsks)

    async def release(self) -> None:
        """Let go without undoing anything: a successor holds the same objects."""
        await self.pool.stop_all()
        self.steering.release()
        _close(self.steering, self.counters, self.xsks)


def _pool(interface: str, xsks: list[XskSocket], counters: SharedCounters,
          table: Callable[[], bytes], restarts: list[int]) -> WorkerPool:
    cpus = numa_cpus(interface)
    handles = [WorkerHandle(WorkerSpec(i, interface, xsk.queue, cpus[i % len(cpus)]), xsk,
                            restarts=restarts[i]) for i, xsk in enumerate(xsks)]
    return WorkerPool(handles, counters, table)


def _close(steering: Steering, counters: SharedCounters | None,
           xsks: list[XskSocket]) -> None:
    for xsk in xsks:
        xsk.close()
    xsks.clear()
    if counters is not None:
        counters.close()
    steering.close()
