"""The supervisor: XDP program, workers, backends, reloads, signals, status socket.

One asyncio loop in one process. Workers are forked processes (one per RX queue)
talking over pipes; everything here reacts to events: a signal, a worker message or
exit, a health result, a neighbour-table change. Every change of what the packet
path needs becomes a new compiled route table sent to every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from pyroute2 import Ethtool

from pesigitg import __version__
from pesigitg._fastpath import aesni_supported, new_counters, read_counters
from pesigitg.daemon.health import HealthChecker
from pesigitg.daemon.neighbours import NeighbourTable, interface_mac
from pesigitg.daemon.report import BackendView, Report, Snapshot, WorkerView
from pesigitg.daemon.sdnotify import Notifier
from pesigitg.daemon.settings import DaemonConfig, load_daemon_config, merge
from pesigitg.daemon.status import StatusServer
from pesigitg.daemon.worker import WorkerSpec, numa_cpus, worker_main
from pesigitg.ebpf import XdpProgram
from pesigitg.errors import ConfigError
from pesigitg.routing.route_config import RouteConfig, load_route_config
from pesigitg.routing.routes import Backend, CompiledRoutes, Server, compile_routes

__all__ = ["StartupError", "Supervisor", "check_runnable", "compile_route_config",
           "rx_queue_count"]

log = logging.getLogger("pesigitg")

WORKER_START_TIMEOUT = 15.0
WORKER_STOP_TIMEOUT = 5.0
RESTART_BACKOFF_MAX = 30.0
RESTART_BACKOFF_RESET = 60.0   # a worker that ran this long restarts quickly again
NEIGHBOUR_INTERVAL = 1.0
START_RESOLVE_WAIT = 1.0       # seconds to wait for backend MACs before attaching
RESTART_NEEDED = ("interface", "queues", "status_socket", "pidfile", "xdp_mode")


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


def check_runnable(routes: RouteConfig, if_mac: bytes = bytes(6),
                   backend: Callable[[str], Backend] = lambda a: Backend(a, None)
                   ) -> CompiledRoutes:
    """What can be verified beyond syntax (``--check``, start, SIGHUP): the CPU has
    AES-NI when a config has a key, and the route table compiles; returns the table
    (compiled with the placeholders of ``--check`` when no MACs are given)."""
    if any(c.key is not None for c in routes.configs) and not aesni_supported():
        raise ConfigError("this CPU has no AES-NI instructions, which pesigitg needs to "
                          "decode encrypted QUIC-LB connection IDs", file=str(routes.path))
    return compile_route_config(routes, if_mac, backend)


def compile_route_config(routes: RouteConfig, if_mac: bytes,
                         backend: Callable[[str], Backend]) -> CompiledRoutes:
    servers = [Server(s.config_id, s.server_id, s.address) for s in routes.servers]
    return compile_routes(if_mac, routes.configs, [backend(a) for a in routes.addresses],
                          servers, routes.table_size)


@dataclass
class WorkerHandle:
    spec: WorkerSpec
    process: Any = None
    conn: Connection | None = None
    alive: bool = False
    ready: asyncio.Future[None] | None = None
    mode: str = ""
    restarts: int = 0
    started: float = 0.0
    backoff: float = 1.0
    pending_restart: asyncio.TimerHandle | None = None
    blob: bytes = b""           # the table the worker has (or was started with)
    tables_adopted: int = 0     # "swapped" replies: tables the worker took


@dataclass
class Supervisor:
    config: DaemonConfig
    routes: RouteConfig
    cli: dict[str, object]
    notifier: Notifier = field(default_factory=Notifier)
    xdp: XdpProgram | None = None
    workers: list[WorkerHandle] = field(default_factory=list)
    compiled: CompiledRoutes | None = None
    macs: dict[str, bytes | None] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    xdp_mode: str | None = None

    def __post_init__(self) -> None:
        self.health = HealthChecker(self._health_changed)
        self.report = Report(self.snapshot)
        self.status = StatusServer(self.config.effective_status_socket, self.report)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: Any = None
        self.if_mac = b"\0" * 6
        self.neighbours: NeighbourTable | None = None
        # Worker replies, by kind (worker.py sends them).
        self._replies: dict[str, Callable[..., None]] = {
            "ready": self._worker_ready, "failed": self._worker_failed,
            "swapped": self._worker_swapped, "rejected": self._worker_rejected}

    # -- start and stop -------------------------------------------------------------------

    async def run(self, started: Callable[[str | None], None]) -> int:
        """Start everything, report through ``started`` (None = up), run until stopped."""
        try:
            await self._start()
        except Exception as exc:
            message = str(exc) if isinstance(exc, (StartupError, OSError, ConfigError,
                                                   ValueError)) else repr(exc)
            log.error("cannot start: %s", message)
            await self._shutdown()
            started(f"pesigitgd: cannot start: {message}")
            return 1
        status = self.report.status_line()
        log.info("started: %s", status)
        self.notifier.ready(status)
        started(None)
        await self._stop.wait()
        log.info("stopping")
        self.notifier.stopping()
        await self._shutdown()
        log.info("stopped")
        return 0

    async def _start(self) -> None:
        cfg = self.config
        assert cfg.interface is not None
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGHUP, self.reload), (signal.SIGUSR1, self.log_stats),
                             (signal.SIGUSR2, self.log_config), (signal.SIGTERM, self.stop),
                             (signal.SIGINT, self.stop)):
            loop.add_signal_handler(sig, handler)
        # pyroute2's synchronous API runs an event loop of its own: call it off ours.
        available, kind = await asyncio.to_thread(rx_queue_count, cfg.interface)
        queues = cfg.queues or available
        if available > queues:
            raise StartupError(
                f"{cfg.interface} has {available} RX queues but only {queues} workers are "
                f"configured, so traffic on queues {queues}..{available - 1} would be lost: "
                f"run 'ethtool -L {cfg.interface} {kind} {queues}' or set queues = "
                f"{available}")
        if queues > available:
            raise StartupError(f"queues = {queues}, but {cfg.interface} has only "
                               f"{available} RX queue(s): set queues = {available} or raise "
                               f"the channel count with 'ethtool -L {cfg.interface} "
                               f"{kind} {queues}'")
        self.neighbours = await asyncio.to_thread(NeighbourTable, cfg.interface)
        self.if_mac = await asyncio.to_thread(interface_mac, cfg.interface)
        self.xdp = XdpProgram.load()
        self.xdp.set_ports(cfg.effective_ports)
        self.xdp.set_vips(self.routes.vips)
        await self._resolve_at_start()
        self.health.configure(self.routes.addresses, self.routes.health, self._health_port())
        self.compiled = self._compile()
        self.counters = new_counters(queues)
        # Before anything touches the interface: a socket in use is a reason to stop.
        await self.status.start()
        cpus = numa_cpus(cfg.interface)
        self.workers = [WorkerHandle(WorkerSpec(i, cfg.interface, i, cpus[i % len(cpus)],
                                                self.xdp.xsks))
                        for i in range(queues)]
        for handle in self.workers:
            self._spawn(handle)
        try:
            await asyncio.wait_for(asyncio.gather(*(h.ready for h in self.workers if h.ready)),
                                   WORKER_START_TIMEOUT)
        except TimeoutError:
            raise StartupError("workers did not come up within "
                               f"{WORKER_START_TIMEOUT:.0f} s") from None
        # Attach only now: every queue has its socket, nothing is dropped at start.
        self.xdp_mode = await asyncio.to_thread(self.xdp.attach, cfg.interface, cfg.xdp_mode)
        self._tasks.append(loop.create_task(self._neighbour_loop(), name="neighbours"))
        if self.notifier.watchdog_interval:
            self._tasks.append(loop.create_task(self._watchdog_loop(), name="watchdog"))

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.health.stop()
        await self.status.close()
        if self.xdp is not None and self.xdp.ifindex is not None:
            try:
                await asyncio.to_thread(self.xdp.detach)
            except OSError as exc:
                log.error("detaching XDP: %s", exc)
        for handle in self.workers:
            self._stop_worker(handle)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT
        for handle in self.workers:
            if handle.process is not None:
                handle.process.join(max(deadline - time.monotonic(), 0.1))
                if handle.process.is_alive():
                    log.warning("worker q%d did not stop, killing it", handle.spec.queue)
                    handle.process.kill()
                    handle.process.join(1)
        if self.xdp is not None:
            self.xdp.close()
            self.xdp = None

    # -- workers ----------------------------------------------------------------------

    def _spawn(self, handle: WorkerHandle) -> None:
        assert self.compiled is not None
        loop = asyncio.get_running_loop()
        parent, child = mp.Pipe()
        process = mp.get_context("fork").Process(
            target=worker_main, args=(handle.spec, self.compiled.blob, self.counters, child),
            name=f"pesigitgd worker q{handle.spec.queue}", daemon=False)
        process.start()
        child.close()
        handle.process, handle.conn, handle.blob = process, parent, self.compiled.blob
        # Only the daemon's start waits for readiness; a restart just logs it.
        handle.ready = loop.create_future() if self.xdp_mode is None else None
        handle.started = time.monotonic()
        handle.pending_restart = None
        loop.add_reader(parent.fileno(), self._on_message, handle)
        loop.add_reader(process.sentinel, self._on_exit, handle)

    def _on_message(self, handle: WorkerHandle) -> None:
        assert handle.conn is not None
        try:
            message = handle.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(handle.conn.fileno())
            return
        handler = self._replies.get(message[0])
        if handler is None:
            log.error("worker q%d sent an unknown message %r", handle.spec.queue, message[0])
            return
        handler(handle, *message[1:])

    def _worker_ready(self, handle: WorkerHandle, mode: str, cpu: int | None) -> None:
        handle.alive, handle.mode = True, mode
        log.info("worker q%d up (pid %d, CPU %s, %s mode)", handle.spec.queue,
                 handle.process.pid, cpu, mode)
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_result(None)
        # A table may have changed while it was starting.
        self._send_table(handle)

    def _worker_failed(self, handle: WorkerHandle, reason: str) -> None:
        log.error("%s", reason)
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_exception(StartupError(reason))

    def _worker_swapped(self, handle: WorkerHandle) -> None:
        handle.tables_adopted += 1

    def _worker_rejected(self, handle: WorkerHandle, reason: str) -> None:
        log.error("worker q%d rejected a route table: %s", handle.spec.queue, reason)

    def _on_exit(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        process = handle.process
        loop.remove_reader(process.sentinel)
        if handle.conn is not None:
            loop.remove_reader(handle.conn.fileno())
            handle.conn.close()
            handle.conn = None
        process.join(0)
        handle.alive = False
        if self._stop.is_set():
            return
        if handle.ready is not None and not handle.ready.done():
            # Died before it was ready, during the daemon's own start: that start fails.
            handle.ready.set_exception(StartupError(
                f"worker q{handle.spec.queue} exited with status {process.exitcode} "
                "during start-up"))
            return
        if self.xdp_mode is None:
            return      # the daemon's start is failing already
        ran = time.monotonic() - handle.started
        if ran > RESTART_BACKOFF_RESET:
            handle.backoff = 1.0
        log.error("worker q%d (pid %d) exited with status %s after %.1f s; restarting in "
                  "%.0f s", handle.spec.queue, process.pid, process.exitcode, ran,
                  handle.backoff)
        self._schedule_restart(handle)

    def _schedule_restart(self, handle: WorkerHandle) -> None:
        delay = handle.backoff
        handle.backoff = min(handle.backoff * 2, RESTART_BACKOFF_MAX)
        handle.restarts += 1
        handle.pending_restart = asyncio.get_running_loop().call_later(
            delay, self._restart, handle)

    def _restart(self, handle: WorkerHandle) -> None:
        if self._stop.is_set():
            return
        log.info("restarting worker q%d (restart %d)", handle.spec.queue, handle.restarts)
        self._spawn(handle)

    def _stop_worker(self, handle: WorkerHandle) -> None:
        if handle.pending_restart is not None:
            handle.pending_restart.cancel()
        loop = asyncio.get_running_loop()
        if handle.process is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(handle.process.sentinel)
        if handle.conn is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(handle.conn.fileno())
            with contextlib.suppress(OSError, ValueError):
                handle.conn.send(("stop",))
            handle.conn.close()
            handle.conn = None
        handle.alive = False

    def _send_table(self, handle: WorkerHandle) -> None:
        if handle.conn is None or not handle.alive or self.compiled is None \
                or handle.blob == self.compiled.blob:
            return
        handle.blob = self.compiled.blob
        try:
            handle.conn.send(("table", self.compiled.blob))
        except OSError as exc:
            log.error("sending the route table to worker q%d: %s", handle.spec.queue, exc)

    # -- backends and routes -----------------------------------------------------------

    def _health_port(self) -> int:
        return self.routes.health.port or self.config.effective_ports[0]

    def mac(self, address: str) -> bytes | None:
        """A backend's MAC: the static one from lb.toml, else the neighbour table's."""
        return self.routes.backend_mac(address) or self.macs.get(address)

    def _backend_fn(self, routes: RouteConfig) -> Callable[[str], Backend]:
        """A backend's state under ``routes`` (its static MAC and draining flag) and
        what the daemon knows (neighbour table, health)."""
        def backend(address: str) -> Backend:
            mac = routes.backend_mac(address) or self.macs.get(address)
            return Backend(address, mac, self.health.is_up(address),
                           routes.backend_draining(address))
        return backend

    def _compile(self) -> CompiledRoutes:
        return compile_route_config(self.routes, self.if_mac, self._backend_fn(self.routes))

    def rebuild(self, why: str, compiled: CompiledRoutes | None = None) -> None:
        """Compile the table again (unless given) and send it to every worker if it
        changed."""
        compiled = compiled or self._compile()
        if self.compiled is not None and compiled.blob == self.compiled.blob:
            return
        self.compiled = compiled
        pool = [compiled.backends[i].name for i in compiled.pool]
        log.info("route table rebuilt (%s): fallback pool %s", why, ", ".join(pool) or "EMPTY")
        for handle in self.workers:
            self._send_table(handle)

    def _health_changed(self, address: str, up: bool) -> None:
        self.rebuild(f"backend {address} {'up' if up else 'down'}")

    async def _refresh_macs(self) -> bool:
        """Read the neighbour table, solicit what is missing; True if a MAC changed."""
        assert self.neighbours is not None
        dynamic = [a for a in self.routes.addresses if self.routes.backend_mac(a) is None]
        found = await asyncio.to_thread(self.neighbours.lookup, dynamic) if dynamic else {}
        changed = False
        for address, mac in found.items():
            if self.macs.get(address) != mac:
                if mac is not None:
                    log.info("backend %s is at %s", address, mac.hex(":"))
                elif address in self.macs:
                    log.warning("backend %s lost its neighbour entry", address)
                changed = True
            self.macs[address] = mac
            if mac is None:
                self.neighbours.solicit(address)
        return changed

    async def _resolve_at_start(self) -> None:
        """Solicit every backend and give ARP/NDP a moment, so the fallback pool is not
        empty when traffic starts; backends still unresolved join when they resolve."""
        await self._refresh_macs()
        deadline = time.monotonic() + START_RESOLVE_WAIT
        while self._unresolved() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await self._refresh_macs()
        missing = self._unresolved()
        if missing:
            log.warning("no MAC yet for %s: not routable until ARP/NDP resolves them",
                        ", ".join(missing))

    def _unresolved(self) -> list[str]:
        return [a for a in self.routes.addresses if self.mac(a) is None]

    async def _neighbour_loop(self) -> None:
        while True:
            await asyncio.sleep(NEIGHBOUR_INTERVAL)
            try:
                if await self._refresh_macs():
                    self.rebuild("neighbour table changed")
            except OSError as exc:
                log.error("neighbour refresh: %s", exc)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval
        assert interval is not None
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- signals ------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read both files; apply if valid, keep running the old one if not."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.get_running_loop().create_task(self._reload(),
                                                                  name="reload"))

    async def _reload(self) -> None:
        async with self._reload_lock:
            compiled = self._reload_now()
            if compiled is None:
                return
            try:
                if await self._refresh_macs():
                    compiled = None     # a new backend's MAC: compile with it
            except OSError as exc:
                log.error("neighbour refresh: %s", exc)
            self.rebuild("reload", compiled)
            log.info("reloaded: %s", self.report.status_line())
            self.notifier.ready(self.report.status_line())

    def _reload_now(self) -> CompiledRoutes | None:
        """Validate and apply the files; returns the table compiled from them, or None
        (old config kept) when they are invalid."""
        self.notifier.reloading()
        log.info("reloading configuration")
        try:
            file_cfg = (load_daemon_config(self.config.config_file)
                        if self.config.config_file else None)
            new = merge(file_cfg, self.cli)
            assert new.route_config is not None
            routes = load_route_config(new.route_config)
            compiled = check_runnable(routes, self.if_mac, self._backend_fn(routes))
        except (ConfigError, ValueError, RuntimeError) as exc:
            log.error("reload failed, still running the previous configuration: %s", exc)
            self.notifier.ready(self.report.status_line())
            return None
        for key in RESTART_NEEDED:
            if getattr(new, key) != getattr(self.config, key):
                log.warning("%s changed from %s to %s: that needs a restart; keeping %s",
                            key, getattr(self.config, key), getattr(new, key),
                            getattr(self.config, key))
                new = replace(new, **{key: getattr(self.config, key)})
        assert self.xdp is not None
        self.xdp.set_ports(new.effective_ports)
        self.xdp.set_vips(routes.vips)
        self.config, self.routes = new, routes
        self.health.configure(routes.addresses, routes.health, self._health_port())
        return compiled

    def log_stats(self) -> None:
        for line in self.report.stats_lines():
            log.info("%s", line)

    def log_config(self) -> None:
        for line in self.report.config_lines():
            log.info("%s", line)

    # -- state for the report ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The state every report is built from (see pesigitg.daemon.report)."""
        workers = [WorkerView(h.spec.index, h.spec.queue, h.spec.cpu, h.alive,
                              h.process.pid if h.process else None, h.mode, h.restarts,
                              read_counters(self.counters, h.spec.index)
                              if self.counters is not None else {})
                   for h in self.workers]
        c = self.compiled
        pool = {c.backends[i].name for i in c.pool} if c is not None else set()
        backends = []
        for address in self.routes.addresses:
            mac = self.mac(address)
            state = self.health.states.get(address)
            source = ("static" if self.routes.backend_mac(address)
                      else "neighbour" if mac else "unresolved")
            backends.append(BackendView(address, mac, source, self.health.is_up(address),
                                        state.last_result if state else None,
                                        self.routes.backend_draining(address),
                                        address in pool))
        servers = [{"config_id": s.config_id, "server_id": s.server_id.hex(),
                    "address": s.address} for s in self.routes.servers]
        assert self.config.interface is not None
        return Snapshot(__version__, self.config.interface, time.monotonic() - self.started,
                        self.config.effective_ports, workers,
                        self.xdp is not None and self.xdp.ifindex is not None, self.xdp_mode,
                        self.xdp.counters() if self.xdp is not None else {},
                        self.config.describe(), self.routes.describe(), servers, backends,
                        self.if_mac)
