"""The supervisor: XDP program, sockets, workers, backends, reloads, restarts, status.

One asyncio loop in one process. It creates the XDP program and one AF_XDP socket per
RX queue and keeps them; the workers that run the loop on them are forked processes
(daemon/workers.py). Everything here reacts to events: a signal, a worker message or
exit, a health result, a neighbour-table change, a request on the status socket.
Every change of what the packet path needs becomes a new compiled route table sent
to every worker.

A restart (``POST /restart``, ``pesigitg-ctl restart``) starts the installed code as a
new process that takes everything over (daemon/handover.py); this process then exits
without detaching anything, or, when the new one fails, carries on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pyroute2 import Ethtool

from pesigitg import __version__
from pesigitg._fastpath import CNT_RETRY_SENT, COUNTER_NAMES, XskSocket
from pesigitg.daemon.counters import SharedCounters, assign_slots
from pesigitg.daemon.daemonize import PidFile
from pesigitg.daemon.drains import Drains, DrainWatch
from pesigitg.daemon.faults import fault
from pesigitg.daemon.handover import Channel, HandoverError, Inheritance
from pesigitg.daemon.health import HealthChecker, HealthState
from pesigitg.daemon.keyages import check_key_ages, key_ages
from pesigitg.daemon.logs import set_log_format
from pesigitg.daemon.neighbours import NeighbourTable, interface_mac
from pesigitg.daemon.operations import ENDPOINTS as OPS_ENDPOINTS
from pesigitg.daemon.operations import Operations
from pesigitg.daemon.privileges import resolve_group
from pesigitg.daemon.report import BackendView, Report, Snapshot, WorkerView
from pesigitg.daemon.sdnotify import Notifier
from pesigitg.daemon.settings import SETTINGS, DaemonConfig, load_daemon_config, merge
from pesigitg.daemon.sources import Sources, choose_sources, interface_candidates
from pesigitg.daemon.state import RuntimeState, state_path
from pesigitg.daemon.status import Refused, Request, Response, StatusServer
from pesigitg.daemon.steering import Steering
from pesigitg.daemon.tokens_sealed import SealedTokens
from pesigitg.daemon.worker import WorkerSpec, numa_cpus
from pesigitg.daemon.workers import WorkerHandle, WorkerPool
from pesigitg.errors import ConfigError
from pesigitg.routing.route_config import RouteConfig, load_route_config
from pesigitg.routing.routes import (
    Backend,
    CompiledRoutes,
    check_runnable,
    compile_route_config,
)

__all__ = ["StartupError", "Supervisor", "rx_queue_count"]

log = logging.getLogger("pesigitg")

WORKER_START_TIMEOUT = 15.0
NEIGHBOUR_INTERVAL = 1.0
START_RESOLVE_WAIT = 1.0       # seconds to wait for backend MACs before attaching
RESTART_NEEDED = tuple(s.field for s in SETTINGS if s.restart)
ENDPOINTS = {
    "/": "this list",
    "/health": "ok, degraded or down and why, uptime, workers alive/expected, how XDP is "
               "attached",
    "/stats": "counters: summed, per worker, and the XDP program's verdicts",
    "/config": "daemon settings, QUIC-LB configs (no keys), servers with health, fallback "
               "pool, steered ports and VIPs, probe source addresses",
    "/metrics": "Prometheus text exposition",
    "/restart": "POST: replace this daemon by a new process running the installed code, "
                "without losing traffic; answers once the new one runs, or why not",
}


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


def choose_probe_sources(config: DaemonConfig, routes: RouteConfig) -> Sources:
    """Where probes and solicitations leave from, for the families of the backends that
    are probed (health checks on) or resolved (no static MAC); SourceError if a
    family has no address that is not a VIP."""
    assert config.interface is not None
    needing = [a for a in routes.addresses
               if routes.health.enabled or routes.backend_mac(a) is None]
    return choose_sources(config.interface, interface_candidates(config.interface),
                          routes.vips, needing, config.source_addresses)


@dataclass
class Supervisor:
    config: DaemonConfig
    routes: RouteConfig
    cli: dict[str, object]
    argv: list[str] = field(default_factory=list)   # to start a successor with
    notifier: Notifier = field(default_factory=Notifier)
    pidfile: PidFile | None = None
    log_setup: dict[str, Any] = field(default_factory=dict)   # how to log, for a successor
    xdp: Steering | None = None
    compiled: CompiledRoutes | None = None
    macs: dict[str, bytes | None] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    xdp_mode: str | None = None

    def __post_init__(self) -> None:
        self.health = HealthChecker(self._health_changed)
        self.report = Report(self.snapshot)
        self.status = StatusServer(self.config.effective_status_socket, {
            ("GET", "/"): self._endpoints, ("GET", "/health"): self._json(self.report.health),
            ("GET", "/stats"): self._json(self.report.stats),
            ("GET", "/config"): self._json(self.report.config),
            ("GET", "/metrics"): self._metrics, ("POST", "/restart"): self.restart,
        }, ENDPOINTS, resolve_group(self.config.status_group) if self.config.status_group
            else None)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._restart_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: SharedCounters | None = None
        self.xsks: list[XskSocket] = []
        self.pool: WorkerPool | None = None
        self.if_mac = b"\0" * 6
        self.neighbours: NeighbourTable | None = None
        self.sources = Sources({}, {})
        self.successor: int | None = None       # pid of the daemon that took over
        self.handing_over = False               # our workers stopped for a successor's
        self.stop_requested = False             # an operator's stop (not a hand-over's)
        self.state = RuntimeState.load(state_path(self.config.effective_pidfile))
        self.drains = Drains(self.state)
        self.sealed = SealedTokens(self.state)
        self.drain_watch = DrainWatch(self.config.drain_quiet_s)
        self.slots: dict[str, int] = {}         # backend -> its counter slot
        self.ops = Operations(self)
        self.status.routes.update(self.ops.routes())
        self.status.docs.update(OPS_ENDPOINTS)

    @property
    def workers(self) -> list[WorkerHandle]:
        return self.pool.handles if self.pool is not None else []

    # -- start and stop -------------------------------------------------------------------

    async def run(self, started: Callable[[str | None], None],
                  takeover: tuple[Channel, Inheritance] | None = None) -> int:
        """Start (or take over from a previous daemon), report through ``started``
        (None = up), and run until stopped or replaced."""
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGHUP, self.reload), (signal.SIGUSR1, self.log_stats),
                             (signal.SIGUSR2, self.log_config), (signal.SIGTERM, self.stop),
                             (signal.SIGINT, self.stop)):
            loop.add_signal_handler(sig, handler)
        # Blocked since the process started (daemon/entry.py): a stop may come now; a
        # reload or a dump only once there is something to reload or dump.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            if takeover is None:
                await self._start()
            else:
                await self._take_over(*takeover)
        except Exception as exc:
            message = str(exc) if isinstance(exc, (StartupError, OSError, ConfigError,
                                                   ValueError, HandoverError, RuntimeError)) \
                else repr(exc)
            log.error("cannot %s: %s", "take over" if takeover else "start", message)
            if takeover is None:
                await self._shutdown()
            else:
                with contextlib.suppress(Exception):
                    takeover[0].send("failed", {"reason": message})
                await self._release()
            started(f"pesigitgd: cannot start: {message}")
            return 1
        status = self.report.status_line()
        log.info("%s: %s", "took over" if takeover else "started", status)
        self.notifier.ready(status)
        started(None)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGUSR1,
                                                    signal.SIGUSR2})
        await self._stop.wait()
        # A restart under way ends first (stop and restart never overlap): once it has
        # handed over, nothing here is ours to detach or remove.
        async with self._restart_lock:
            pass
        if self.successor is not None:
            if self.stop_requested:
                log.info("stop asked during the restart: passing it on to pid %d",
                         self.successor)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.successor, signal.SIGTERM)
            await self._release()
            log.info("handed over to pid %d", self.successor)
            return 0
        log.info("stopping")
        self.notifier.stopping()
        await self._shutdown()
        log.info("stopped")
        return 0

    async def _queue_count(self) -> int:
        cfg = self.config
        assert cfg.interface is not None
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
        return queues

    def _pool(self, counters: SharedCounters, restarts: list[int] | None = None
              ) -> WorkerPool:
        assert self.config.interface is not None
        cpus = numa_cpus(self.config.interface)
        handles = [WorkerHandle(WorkerSpec(i, self.config.interface, xsk.queue,
                                           cpus[i % len(cpus)]), xsk,
                                restarts=restarts[i] if restarts else 0)
                   for i, xsk in enumerate(self.xsks)]
        return WorkerPool(handles, counters, self._blob)

    def _blob(self) -> bytes:
        assert self.compiled is not None
        return self.compiled.blob

    async def _start(self) -> None:
        cfg = self.config
        assert cfg.interface is not None
        queues = await self._queue_count()
        self.neighbours = await asyncio.to_thread(NeighbourTable, cfg.interface)
        self.if_mac = await asyncio.to_thread(interface_mac, cfg.interface)
        self.sources = await asyncio.to_thread(choose_probe_sources, cfg, self.routes)
        self.xdp = Steering.load()
        self.xdp.set_ports(cfg.effective_ports)
        self.xdp.set_vips(self.routes.vips)
        await self._resolve_at_start()
        # The first probe of every backend, before a table uses any of them.
        await self._configure_health()
        self.compiled = self._compile()
        # Before anything touches the interface: a socket in use is a reason to stop.
        self.status.bind()
        self._record_socket()
        self.counters = SharedCounters.create(queues)
        self.count_tokens()                     # counting starts here
        for queue in range(queues):
            xsk = XskSocket(cfg.interface, queue)
            self.xsks.append(xsk)
            self.xdp.register_socket(queue, xsk.fd)
        self.pool = self._pool(self.counters)
        await self.pool.start_all(WORKER_START_TIMEOUT)
        # Attach only now: every queue has its socket and its worker.
        self.xdp_mode = await asyncio.to_thread(self.xdp.attach, cfg.interface, cfg.xdp_mode)
        log.info("XDP attached to %s in %s mode through %s", cfg.interface, self.xdp_mode,
                 "a BPF link" if self.xdp.attach_kind == "link" else "netlink")
        await self._serve()

    async def _serve(self) -> None:
        """Everything that runs once the packet path does."""
        await self.status.serve()
        await asyncio.to_thread(check_key_ages, self.routes, self.state)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._neighbour_loop(), name="neighbours"))
        self._tasks.append(loop.create_task(self.ops.housekeeping(), name="housekeeping"))
        if self.notifier.watchdog_interval:
            self._tasks.append(loop.create_task(self._watchdog_loop(), name="watchdog"))

    def count_tokens(self, save: bool = False) -> None:
        """Add the Retries sent since the last call to the newest Retry key's count."""
        assert self.counters is not None
        sent = sum(self.counters.read(w)[CNT_RETRY_SENT] for w in range(self.counters.workers))
        self.sealed.update(self.routes.retry, sent, time.time())
        if save:
            self.sealed.save(self.routes.retry, time.time())

    def _record_socket(self) -> None:
        """Say where the status socket is in the state file (pesigitg-ctl finds it there
        when it is not in the runtime directory), readable by the socket's group."""
        self.state.status_socket = str(self.config.effective_status_socket.absolute())
        self.state.group = self.status.group
        self.state.save()

    def stop(self) -> None:
        """SIGTERM, SIGINT, ``POST /stop``: stop for good (after a restart under way)."""
        self.stop_requested = True
        self._stop.set()

    async def _shutdown(self) -> None:
        """Stop for good: XDP detached, workers stopped, the socket file removed."""
        for task in self._tasks:
            task.cancel()
        if self.counters is not None:
            self.count_tokens(save=True)
        self.health.stop()
        await self.status.close()
        if self.xdp is not None and self.xdp.ifindex is not None:
            try:
                await asyncio.to_thread(self.xdp.detach)
            except OSError as exc:
                log.error("detaching XDP: %s", exc)
        if self.pool is not None:
            await self.pool.stop_all()
        self._close_kernel_objects()

    async def _release(self) -> None:
        """Let go without undoing anything: another daemon holds the same objects."""
        for task in self._tasks:
            task.cancel()
        if self.counters is not None:
            self.count_tokens(save=True)
        self.health.stop()
        await self.status.close(unlink=False)
        if self.pool is not None:
            await self.pool.stop_all()
        if self.xdp is not None:
            self.xdp.release()
        if self.pidfile is not None:
            self.pidfile.forget()
        self._close_kernel_objects()

    def _close_kernel_objects(self) -> None:
        for xsk in self.xsks:
            xsk.close()
        self.xsks = []
        if self.counters is not None:
            self.counters.close()
            self.counters = None
        if self.xdp is not None:
            self.xdp.close()
            self.xdp = None

    # -- restart: this daemon hands over ------------------------------------------------

    async def restart(self, request: Request) -> Response:
        """``POST /restart``: start the installed code, hand everything over, exit."""
        if self._restart_lock.locked():
            raise Refused(409, "a restart is already under way")
        if self._stop.is_set():
            raise Refused(409, "the daemon is stopping")
        async with self._restart_lock, self._reload_lock:
            log.info("restarting: starting the installed pesigitgd to take over")
            try:
                pid = await self._hand_over()
            except HandoverError as exc:
                log.error("restart failed, still running as pid %d: %s", os.getpid(), exc)
                raise Refused(500, f"restart failed, still running as pid {os.getpid()}: "
                                   f"{exc}") from None
        log.info("pid %d has taken over", pid)
        return Response({"restarted": True, "pid": pid, "previous_pid": os.getpid()},
                        after=self._handed_over)

    def _handed_over(self) -> None:
        self._stop.set()

    async def after_restart(self) -> int | None:
        """Once no restart is under way: the successor's pid if one took over."""
        async with self._restart_lock:
            return self.successor

    async def _hand_over(self) -> int:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        stderr_r, stderr_w = os.pipe()
        # Isolated (-I: no working directory, user site or PYTHON* variables on the
        # path) and from "/": the installed code, whatever directory we were started in.
        argv = [sys.executable, "-I", "-m", "pesigitg.daemon", *self.argv,
                "--takeover-fd", str(child.fileno())]
        try:
            proc = subprocess.Popen(argv, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                    stderr=stderr_w, cwd="/")
        except OSError as exc:
            parent.close()
            raise HandoverError(f"cannot start {argv[0]}: {exc.strerror}") from None
        finally:
            child.close()
            os.close(stderr_w)
        # Its stderr, until it has ours: what it says if it dies before it can tell us.
        said: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=_collect, args=(stderr_r, said), daemon=True).start()
        channel = Channel(parent)
        # From here systemd hears the successor only: it names itself the main process
        # before it commits, and we say nothing more unless the hand-over fails.
        self.notifier.muted = True
        try:
            await asyncio.to_thread(channel.recv, expect=("hello",))
            inheritance = self._inheritance()
            await asyncio.to_thread(inheritance.send, channel)
            await asyncio.to_thread(channel.recv, expect=("ready",))
            # From here the new process waits for our workers to be gone.
            assert self.pool is not None
            self.handing_over = True
            await self.pool.stop_all()
            await asyncio.to_thread(channel.send, "quiesced")
            await asyncio.to_thread(channel.recv, expect=("committed",))
        except (HandoverError, OSError) as exc:
            if proc.poll() is None:
                proc.kill()
            status = await asyncio.to_thread(proc.wait)
            tail = "; ".join(line for line in said if line.strip())[-600:]
            reason = str(exc) if status in (0, -signal.SIGKILL) else \
                f"{exc} (exit status {status}{': ' + tail if tail else ''})"
            await self._take_back()
            raise HandoverError(reason) from None
        finally:
            channel.close()
        self.successor = proc.pid
        return proc.pid

    async def _take_back(self) -> None:
        """A hand-over failed: whatever the successor got to (a new program on the
        link, its pid in the pidfile, its ports and VIPs, our workers stopped) is put
        back, and systemd hears from us again."""
        assert self.xdp is not None and self.pidfile is not None
        if self.handing_over:
            self.xdp.restore()
            self.xdp.set_ports(self.config.effective_ports)
            self.xdp.set_vips(self.routes.vips)
            self.pidfile.write()
            if self.pool is not None:
                log.warning("the new process failed after our workers stopped; restarting "
                            "them")
                await self.pool.start_all(WORKER_START_TIMEOUT)
        self.handing_over = False
        self.notifier.muted = False

    def _inheritance(self) -> Inheritance:
        assert self.xdp is not None and self.counters is not None and self.pool is not None
        assert self.pidfile is not None and self.status.listener is not None
        facts = {
            "version": __version__, "object": self.xdp.digest,
            "interface": self.config.interface, "ifindex": self.xdp.ifindex,
            "xdp_mode": self.xdp_mode, "attach": self.xdp.attach_kind,
            "status_socket": str(self.config.effective_status_socket),
            "pidfile": str(self.pidfile.path),
            "workers": [{"queue": h.spec.queue, "restarts": h.restarts,
                         "geometry": h.xsk.geometry} for h in self.pool.handles],
            "counter_names": list(COUNTER_NAMES),
            "macs": {a: m.hex() if m else None for a, m in self.macs.items()},
            "health": {a: dataclasses.asdict(s) for a, s in self.health.states.items()},
            "started": self.started, "log": self.log_setup, "slots": self.slots,
            "watchdog_usec": self.notifier.watchdog_usec,
        }
        fds = {"program": self.xdp.fd, "counters": self.counters.fd,
               "pidfile": self.pidfile.fd, "status": self.status.listener.fileno(),
               "stderr": 2}
        if self.xdp.link_fd >= 0:
            fds["link"] = self.xdp.link_fd
        for name, m in self.xdp.maps.items():
            fds[f"map:{name}"] = m.fd
        for i, xsk in enumerate(self.xsks):
            fds[f"xsk:{i}"], fds[f"umem:{i}"] = xsk.fd, xsk.umem_fd
        return Inheritance(facts, fds)

    # -- restart: this daemon takes over -------------------------------------------------

    async def _take_over(self, channel: Channel, inheritance: Inheritance) -> None:
        facts, fds = inheritance.facts, inheritance.fds
        cfg = self.config
        assert cfg.interface is not None
        changed = [f"{what} ({old} -> {new})" for what, old, new in (
            ("interface", facts["interface"], cfg.interface),
            ("status_socket", facts["status_socket"], str(cfg.effective_status_socket)),
            ("pidfile", facts["pidfile"], str(cfg.effective_pidfile)),
            ("xdp_mode", facts["xdp_mode"], cfg.xdp_mode),
            ("queues", len(facts["workers"]), cfg.queues or len(facts["workers"])))
            if old != new and not (what == "xdp_mode" and old == "generic")]
        if changed:
            raise StartupError(f"{', '.join(changed)} changed: a restart keeps those; stop "
                               "and start the daemon to change them")
        self.started = facts["started"]
        self.notifier.watchdog_usec = facts["watchdog_usec"] or self.notifier.watchdog_usec
        self.neighbours = await asyncio.to_thread(NeighbourTable, cfg.interface)
        self.if_mac = await asyncio.to_thread(interface_mac, cfg.interface)
        self.sources = await asyncio.to_thread(choose_probe_sources, cfg, self.routes)
        maps = {name[4:]: fd for name, fd in fds.items() if name.startswith("map:")}
        # The running program is kept only if the object installed now is the one it
        # was loaded from (its digest then, not the file's now: an upgrade in place
        # replaces that file).
        self.xdp = Steering.load(reuse=maps, programs={"xdp": fds["program"]},
                                   programs_digest=facts["object"])
        same = self.xdp.digest == facts["object"]
        self.xdp_mode = facts["xdp_mode"]
        self.macs = {a: bytes.fromhex(m) if m else None for a, m in facts["macs"].items()}
        self.slots = dict(facts.get("slots", {}))
        self.health.adopt({a: HealthState(**{"probed": s.get("checks", 0) > 0, **s})
                           for a, s in facts["health"].items()}, self.routes.health)
        self.compiled = self._compile()
        self.status.adopt(fds["status"])
        self._record_socket()
        self.counters = SharedCounters.adopt(fds["counters"], len(facts["workers"]),
                                             facts.get("counter_names"))
        self.count_tokens()                     # the predecessor counted up to here
        self.xsks = [XskSocket.adopt(fds[f"xsk:{i}"], fds[f"umem:{i}"], w.get("geometry"))
                     for i, w in enumerate(facts["workers"])]
        os.dup2(fds["stderr"], 2)       # the old daemon's stderr is ours from now on
        self.pool = self._pool(self.counters, [w["restarts"] for w in facts["workers"]])
        await asyncio.to_thread(channel.send, "ready")
        try:
            await asyncio.to_thread(channel.recv, expect=("quiesced",))
        except HandoverError as exc:
            if "went away" not in str(exc):
                raise
            # It died meanwhile, and its workers with it: the queues are ours to take.
            log.warning("the previous daemon went away during the hand-over; taking over")
        try:
            fault("before-workers")
            await self.pool.start_all(WORKER_START_TIMEOUT)
            self.xdp.adopt_attachment(facts["ifindex"], facts["xdp_mode"], facts["attach"],
                                      fds.get("link", -1), fds["program"])
        except BaseException:
            await self.pool.stop_all()      # before the old daemon restarts its own
            raise
        fault("after-link-update")
        if not same:
            log.info("the installed XDP object differs from the running one: replaced the "
                     "program on %s", cfg.interface)
        self.xdp.set_ports(cfg.effective_ports)
        self.xdp.set_vips(self.routes.vips)
        assert self.pidfile is not None
        self.pidfile.write()
        fault("after-pidfile")
        # systemd must know the main process before the old one exits (Type=notify).
        self.notifier.main_pid()
        if self.notifier.enabled:
            log.info("told systemd the main process is now pid %d", os.getpid())
        await asyncio.to_thread(channel.send, "committed", {"pid": os.getpid()})
        channel.close()
        inheritance.close()
        await self._configure_health()
        await self._serve()

    # -- backends and routes -----------------------------------------------------------

    async def _configure_health(self) -> None:
        await self.health.configure(self.routes.addresses, self.routes.health,
                                    self.routes.health.port or self.config.effective_ports[0],
                                    self.sources.for_backend)

    def mac(self, address: str) -> bytes | None:
        """A backend's MAC: the static one from lb.toml, else the neighbour table's."""
        return self.routes.backend_mac(address) or self.macs.get(address)

    def _backend_fn(self, routes: RouteConfig) -> Callable[[str], Backend]:
        """A backend's state under ``routes`` (its static MAC and draining flag) and
        what the daemon knows (neighbour table, health)."""
        def backend(address: str) -> Backend:
            mac = routes.backend_mac(address) or self.macs.get(address)
            return Backend(address, mac, self.health.is_up(address),
                           self.drains.draining(address, routes.backend_draining(address)))
        return backend

    def _compile(self) -> CompiledRoutes:
        slots = assign_slots(self.slots, self.routes.addresses)
        if self.counters is not None:
            taken = set(self.slots.values())
            for address, slot in slots.items():
                if self.slots.get(address) != slot and slot in taken:
                    self.counters.clear_backend(slot)       # another backend's before
        self.slots = slots
        return compile_route_config(self.routes, self.if_mac, self._backend_fn(self.routes),
                                    slots)

    def rebuild(self, why: str, compiled: CompiledRoutes | None = None) -> None:
        """Compile the table again (unless given) and send it to every worker if it
        changed."""
        compiled = compiled or self._compile()
        if self.compiled is not None and compiled.blob == self.compiled.blob:
            return
        self.compiled = compiled
        pool = [compiled.backends[i].name for i in compiled.pool]
        log.info("route table rebuilt (%s): fallback pool %s", why, ", ".join(pool) or "EMPTY")
        if self.pool is not None:
            self.pool.send_table()

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
                self.neighbours.solicit(address, self.sources.for_backend(address))
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
        self._tasks.append(asyncio.get_running_loop().create_task(self._reload_quietly(),
                                                                  name="reload"))

    async def _reload_quietly(self) -> None:
        await self._reload()        # the outcome is in the log (and systemd's status)

    async def _reload(self) -> str | None:
        """All or nothing: read and check everything (off the event loop: a large file
        must not starve the watchdog), then apply; any failure keeps what runs. None
        when applied, else why not."""
        async with self._reload_lock:
            if self.successor is not None:
                # It waited out a restart: the files are the successor's to read now.
                log.info("a reload asked during the restart goes to pid %d", self.successor)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.successor, signal.SIGHUP)
                return f"the daemon was replaced by pid {self.successor} meanwhile, which " \
                    "was asked to reload"
            self.notifier.reloading()
            log.info("reloading configuration")
            try:
                await self._reload_now()
            except Exception as exc:      # whatever it is, the old configuration stays
                log.error("reload failed, still running the previous configuration: %s",
                          _reason(exc))
                return _reason(exc)
            else:
                log.info("reloaded: %s", self.report.status_line())
                return None
            finally:
                self.notifier.ready(self.report.status_line())

    def _read_configuration(self) -> tuple[DaemonConfig, RouteConfig, CompiledRoutes,
                                           Sources]:
        """Both files, validated, the table they give and the probes' source addresses
        (in a thread)."""
        file_cfg = load_daemon_config(self.config.config_file) if self.config.config_file \
            else None
        new = merge(file_cfg, self.cli)
        assert new.route_config is not None
        routes = load_route_config(new.route_config)
        compiled = check_runnable(routes, self.if_mac, self._backend_fn(routes))
        return new, routes, compiled, choose_probe_sources(replace(
            new, interface=self.config.interface), routes)

    async def _reload_now(self) -> None:
        new, routes, compiled, sources = await asyncio.to_thread(self._read_configuration)
        for key in RESTART_NEEDED:
            if getattr(new, key) != getattr(self.config, key):
                log.warning("%s changed from %s to %s: that needs a restart; keeping %s",
                            key, getattr(self.config, key), getattr(new, key),
                            getattr(self.config, key))
                new = replace(new, **{key: getattr(self.config, key)})
        assert self.xdp is not None
        # Capacities were checked with the files; should the kernel still refuse, put
        # the maps back as they were.
        old_ports, old_vips = self.config.effective_ports, self.routes.vips
        try:
            self.xdp.set_ports(new.effective_ports)
            self.xdp.set_vips(routes.vips)
        except BaseException:
            self.xdp.set_ports(old_ports)
            self.xdp.set_vips(old_vips)
            raise
        self.count_tokens(save=True)           # what the old newest key sealed
        self.config, self.routes, self.sources = new, routes, sources
        set_log_format(new.log_format)
        self.drain_watch.quiet_s = new.drain_quiet_s
        for address in self.drains.forget_but(set(routes.addresses)):
            log.info("forgot the run-time drain of %s: it is no longer configured", address)
        await asyncio.to_thread(check_key_ages, routes, self.state)
        # New backends are probed once before the table may send them anything.
        await self._configure_health()
        compiled = self._compile()
        try:
            if await self._refresh_macs():
                compiled = self._compile()      # a new backend's MAC: compile with it
        except OSError as exc:
            log.error("neighbour refresh: %s", exc)
        self.rebuild("reload", compiled)
        await self.tables_applied()

    async def tables_applied(self) -> None:
        """Once every worker forwards with the current table (what "reloaded" and a
        drain's answer promise); a worker that takes longer than a few seconds is said."""
        if self.pool is not None and not await self.pool.tables_answered():
            log.warning("a worker has not taken the new route table yet")

    def log_stats(self) -> None:
        for line in self.report.stats_lines():
            log.info("%s", line)

    def log_config(self) -> None:
        for line in self.report.config_lines():
            log.info("%s", line)

    # -- state for the report ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The state every report is built from (see pesigitg.daemon.report)."""
        counters = self.counters
        workers = [WorkerView(h.spec.index, h.spec.queue, h.spec.cpu, h.alive, h.pid, h.mode,
                              h.restarts, counters.read(h.spec.index) if counters else {},
                              _census(h.xsk), h.refused, h.repairs)
                   for h in self.workers]
        c = self.compiled
        pool = {c.backends[i].name for i in c.pool} if c is not None else set()
        frames = counters.backend_counts() if counters is not None else {}
        ops = self.ops.describe()
        backends = []
        for address in self.routes.addresses:
            mac = self.mac(address)
            state = self.health.states.get(address)
            source = ("static" if self.routes.backend_mac(address)
                      else "neighbour" if mac else "unresolved")
            forwarded, cid = frames.get(self.slots.get(address, -1), (0, 0))
            backends.append(BackendView(
                address, mac, source, self.health.is_up(address),
                self.health.describe(address), state.last_result if state else None,
                self.drains.draining(address, self.routes.backend_draining(address)),
                address in pool, ops[address]["draining_source"],
                ops[address]["drained_since"], forwarded, cid))
        servers = [{"config_id": s.config_id, "server_id": s.server_id.hex(),
                    "address": s.address} for s in self.routes.servers]
        assert self.config.interface is not None
        xdp = self.xdp
        return Snapshot(__version__, self.config.interface, time.monotonic() - self.started,
                        self.config.effective_ports, workers,
                        xdp is not None and xdp.ifindex is not None, self.xdp_mode,
                        xdp.attach_kind if xdp is not None else None,
                        xdp.counters() if xdp is not None else {},
                        self.config.describe(), self.routes.describe(), servers, backends,
                        self.if_mac,
                        {"ports": sorted(xdp.ports()),
                         "vips": sorted(str(v) for v in xdp.vips())} if xdp is not None else {},
                        self.sources.describe(),
                        {a.what: a.age_days for a in key_ages(self.routes, self.state)},
                        c.digest if c is not None else "", handing_over=self.handing_over,
                        retry_keys=[u.describe() for u in self.sealed.uses(self.routes.retry)],
                        key_warnings=[w for u in self.sealed.uses(self.routes.retry)
                                      if (w := u.warning())])

    # -- the status socket's answers ----------------------------------------------------

    async def _endpoints(self, request: Request) -> Response:
        return Response({"endpoints": ENDPOINTS})

    @staticmethod
    def _json(view: Callable[[], dict[str, Any]]) -> Callable[[Request], Any]:
        async def answer(request: Request) -> Response:
            return Response(view())
        return answer

    async def _metrics(self, request: Request) -> Response:
        return Response(self.report.metrics(), content_type="text/plain; version=0.0.4")


def _reason(exc: BaseException) -> str:
    """What a failure says: its own words for the errors we raise on purpose; for
    anything else only its kind (its text might quote configuration values)."""
    if isinstance(exc, (ConfigError, OSError, ValueError, RuntimeError)):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"internal error ({type(exc).__name__}{place}), a bug: please report it"


def _census(xsk: XskSocket) -> dict[str, Any]:
    """Where a queue's frames are, each checked to be in one place only."""
    try:
        return xsk.census(distinct=True)
    except ValueError as exc:
        return {"error": str(exc)}


def _collect(fd: int, lines: collections.deque[str]) -> None:
    with open(fd, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            lines.append(line.rstrip("\n"))
