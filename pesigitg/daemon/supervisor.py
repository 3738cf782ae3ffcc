"""The supervisor: signals, tasks, and every event carried from the model to the kernel.

One asyncio loop in one process. The balancer's state and its transitions are the
model (daemon/model.py); the XDP program, sockets, counters and workers are the kernel
objects (daemon/kernel.py). An event (a signal, a request on the status socket, a
health result, a neighbour-table change) changes the model, and a changed route table
goes to every worker. A restart hands the kernel objects to a new process
(daemon/handover.py); this one then exits without detaching anything, or, when the
new one fails, carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pesigitg import __version__
from pesigitg.daemon import api
from pesigitg.daemon.configuration import choose_probe_sources, read_reload
from pesigitg.daemon.daemonize import PidFile
from pesigitg.daemon.handover import check_unchanged, commit, go_live, hand_over
from pesigitg.daemon.handover_wire import Channel, HandoverError, Inheritance, Message
from pesigitg.daemon.health import HealthChecker
from pesigitg.daemon.housekeeping import Housekeeping
from pesigitg.daemon.kernel import Kernel, StartupError, queue_count
from pesigitg.daemon.keyages import check_key_ages
from pesigitg.daemon.logs import set_log_format
from pesigitg.daemon.metrics_listen import MetricsListeners
from pesigitg.daemon.model import Balancer
from pesigitg.daemon.neighbours import NeighbourTable, interface_mac
from pesigitg.daemon.privileges import resolve_group
from pesigitg.daemon.report import KernelView, Report, Snapshot
from pesigitg.daemon.resolver import Resolver
from pesigitg.daemon.sdnotify import Notifier
from pesigitg.daemon.settings import DaemonConfig
from pesigitg.daemon.state import RuntimeState
from pesigitg.daemon.status import StatusServer
from pesigitg.errors import ConfigError, failure_reason
from pesigitg.paths import state_path
from pesigitg.routing.route_config import RouteConfig

__all__ = ["Invocation", "Supervisor"]

log = logging.getLogger("pesigitg")

EXPECTED = (StartupError, OSError, ConfigError, ValueError, HandoverError, RuntimeError)


@dataclass(frozen=True)
class Invocation:
    """How this process was started: what it holds, and how a successor is started."""
    cli: dict[str, object]              # the command line's settings
    argv: list[str]                     # the successor's command line
    pidfile: PidFile
    log_setup: dict[str, Any]           # how to log, for a successor
    notifier: Notifier


class Supervisor:
    def __init__(self, config: DaemonConfig, routes: RouteConfig, run_as: Invocation) -> None:
        self.run_as, self.pidfile, self.notifier = run_as, run_as.pidfile, run_as.notifier
        self.model = Balancer(config, routes, RuntimeState.load(
            state_path(config.effective_pidfile)), time.monotonic())
        self.health = HealthChecker(self.model, self._health_changed)
        self.report = Report(self.snapshot)
        self.status = StatusServer(config.effective_status_socket, api.ENDPOINTS, self,
                                   resolve_group(config.status_group)
                                   if config.status_group else None)
        self.metrics = MetricsListeners(self)
        self.kernel: Kernel | None = None
        self.resolver: Resolver | None = None
        self._stop = asyncio.Event()
        self._reload_lock, self._restart_lock = asyncio.Lock(), asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.successor: int | None = None       # pid of the daemon that took over
        self.stop_requested = False             # an operator's stop (not a hand-over's)

    # -- start, run, stop -----------------------------------------------------------------

    async def run(self, started: Callable[[str | None], None],
                  takeover: tuple[Channel, Inheritance] | None = None) -> int:
        """Start (or take over from a previous daemon), report through ``started``
        (None = up), and run until stopped or replaced."""
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGHUP, self.reload_in_background),
                             (signal.SIGUSR1, self.report.log_stats),
                             (signal.SIGUSR2, self.report.log_config),
                             (signal.SIGTERM, self.stop), (signal.SIGINT, self.stop)):
            loop.add_signal_handler(sig, handler)
        # Blocked since the process started (daemon/entry.py): a stop may come now; a
        # reload or a dump only once there is something to reload or dump.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            await (self._take_over(*takeover) if takeover else self._start())
        except Exception as exc:
            message = str(exc) if isinstance(exc, EXPECTED) else repr(exc)
            log.error("cannot %s: %s", "take over" if takeover else "start", message)
            if takeover is not None:
                with contextlib.suppress(Exception):
                    takeover[0].send(Message.FAILED, {"reason": message})
            await self._end(handed_over=takeover is not None)
            started(f"pesigitgd: cannot start: {message}")
            return 1
        log.info("%s: %s", "took over" if takeover else "started", self.report.status_line())
        self.notifier.ready(self.report.status_line())
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
            await self._end(handed_over=True)
            log.info("handed over to pid %d", self.successor)
            return 0
        log.info("stopping")
        self.notifier.stopping()
        await self._end(handed_over=False)
        log.info("stopped")
        return 0

    async def _learn_interface(self) -> None:
        interface = self.model.config.interface
        assert interface is not None
        self.resolver = Resolver(self.model, await asyncio.to_thread(NeighbourTable, interface))
        self.model.if_mac = await asyncio.to_thread(interface_mac, interface)
        self.model.sources = await asyncio.to_thread(choose_probe_sources, self.model.config,
                                                     self.model.routes)

    async def _start(self) -> None:
        cfg = self.model.config
        assert cfg.interface is not None
        queues = await asyncio.to_thread(queue_count, cfg.interface, cfg.queues)
        await self._learn_interface()
        assert self.resolver is not None
        await self.resolver.settle()
        await self.health.configure()      # the first probes, before a table uses them
        self._compile()
        # Before anything touches the interface: a socket in use is a reason to stop.
        self.status.bind()
        self.metrics.open(cfg.metrics_listen)
        self._record_socket()
        self.kernel = kernel = await asyncio.to_thread(Kernel.create, cfg.interface, queues,
                                                       self._blob)
        kernel.steer(cfg.effective_ports, self.model.routes.vips)
        kernel.install_tier(self.model.compiled, cfg.xdp_decode)
        self.model.count_tokens(kernel.retries_sent(), time.time())  # counting starts here
        await kernel.start_workers()
        await kernel.attach(cfg.xdp_mode)   # only now: every queue has its worker
        await self._serve()

    async def _take_over(self, channel: Channel, inheritance: Inheritance) -> None:
        facts, fds, cfg = inheritance.facts, inheritance.fds, self.model.config
        check_unchanged(facts, {
            "interface": cfg.interface, "status_socket": str(cfg.effective_status_socket),
            "pidfile": str(cfg.effective_pidfile), "xdp_mode": cfg.xdp_mode,
            "queues": cfg.queues})
        self.notifier.watchdog_usec = facts["watchdog_usec"] or self.notifier.watchdog_usec
        self.model.carry_on(facts)
        await self._learn_interface()
        self.model.expect_probes()
        self._compile()
        self.status.adopt(fds["status"])
        self.metrics.open(cfg.metrics_listen, fds)
        self._record_socket()
        assert cfg.interface is not None
        self.kernel = kernel = Kernel.adopt(cfg.interface, facts, fds, self._blob)
        self.model.count_tokens(kernel.retries_sent(), time.time())  # carried on from here
        os.dup2(fds["stderr"], 2)       # the old daemon's stderr is ours from now on
        await go_live(channel, kernel, inheritance)
        kernel.steer(cfg.effective_ports, self.model.routes.vips)
        kernel.install_tier(self.model.compiled, cfg.xdp_decode)
        await commit(channel, self.pidfile, self.notifier)
        inheritance.close()
        await self.health.configure()
        await self.rebuild("first probes")     # of backends new in this configuration
        await self._serve()

    async def _serve(self) -> None:
        """Everything that runs once the packet path does."""
        assert self.kernel is not None
        await self.status.serve()
        await self.metrics.serve()
        await asyncio.to_thread(check_key_ages, self.model.routes, self.model.state)
        assert self.resolver is not None
        tasks = [self.resolver.run(self._compile), Housekeeping(self.model, self.kernel,
                                                      self.report).run()]
        if self.notifier.watchdog_interval:
            tasks.append(self.notifier.keep_alive())
        self._tasks += [asyncio.get_running_loop().create_task(t) for t in tasks]

    def _record_socket(self) -> None:
        """Say where the status socket is in the state file (pesigitg-ctl finds it there
        when it is not in the runtime directory), readable by the socket's group."""
        state = self.model.state
        state.status_socket = str(self.model.config.effective_status_socket.absolute())
        state.group = self.status.group
        state.save()

    def stop(self) -> None:
        """SIGTERM, SIGINT, ``POST /stop``: stop for good (after a restart under way)."""
        self.stop_requested = True
        self._stop.set()

    async def _end(self, handed_over: bool) -> None:
        """Stop for good (XDP detached, the socket file removed), or, ``handed_over``, let
        go without undoing anything: another daemon holds the same objects."""
        for task in self._tasks:
            task.cancel()
        self._save_tokens()
        self.health.stop()
        await self.status.close(unlink=not handed_over)
        await self.metrics.close()
        if self.kernel is not None:
            await (self.kernel.release() if handed_over else self.kernel.shutdown())
            self.kernel = None
        if handed_over:
            self.pidfile.forget()

    def _save_tokens(self) -> None:
        if self.kernel is not None:
            self.model.count_tokens(self.kernel.retries_sent(), time.time(), force=True)
            self.model.state.save()

    # -- restart (api.Control) ----------------------------------------------------------

    async def restart(self) -> tuple[int, Callable[[], None]]:
        """Start the installed code, hand everything over, exit once answered."""
        if self._restart_lock.locked():
            raise api.Busy("a restart is already under way")
        if self._stop.is_set():
            raise api.Busy("the daemon is stopping")
        assert self.kernel is not None
        async with self._restart_lock, self._reload_lock:
            log.info("restarting: starting the installed pesigitgd to take over")
            # From here systemd hears the successor only: it names itself the main
            # process before it commits, and we say nothing more unless it fails.
            self.notifier.muted = True
            try:
                self.successor = await hand_over(self.run_as.argv, self._inheritance,
                                                 self.kernel.quiesce)
            except HandoverError as exc:
                await self._take_back()
                log.error("restart failed, still running as pid %d: %s", os.getpid(), exc)
                raise api.RestartFailed(f"restart failed, still running as pid "
                                        f"{os.getpid()}: {exc}") from None
        log.info("pid %d has taken over", self.successor)
        return self.successor, self._stop.set

    async def _take_back(self) -> None:
        """A hand-over failed: whatever the successor got to (a new program on the
        link, its pid in the pidfile, its ports and VIPs, our workers stopped) is put
        back, and systemd hears from us again."""
        assert self.kernel is not None
        if await self.kernel.take_back(self.model.config.effective_ports,
                                       self.model.routes.vips):
            self.pidfile.write()
        self.notifier.muted = False

    def _inheritance(self) -> Inheritance:
        kernel, cfg = self.kernel, self.model.config
        assert kernel is not None and self.status.listener is not None
        facts = {**kernel.facts(), **self.model.facts(), "version": __version__,
                 "status_socket": str(cfg.effective_status_socket),
                 "pidfile": str(self.pidfile.path), "log": self.run_as.log_setup,
                 "watchdog_usec": self.notifier.watchdog_usec}
        return Inheritance(facts, {**kernel.fds(), **self.metrics.fds(),
                                   "pidfile": self.pidfile.fd,
                                   "status": self.status.listener.fileno(), "stderr": 2})

    # -- reload and drain (api.Control) -------------------------------------------------

    def reload_in_background(self) -> None:
        """SIGHUP: the outcome is in the log (and systemd's status)."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.get_running_loop().create_task(self._reload()))

    async def _reload(self) -> None:
        with contextlib.suppress(api.Replaced):
            await self.reload()

    async def reload(self) -> str | None:
        """All or nothing: read and check everything (off the event loop: a large file
        must not starve the watchdog), then apply; any failure keeps what runs. None
        when applied, else why not."""
        async with self._reload_lock:
            self._not_replaced(signal.SIGHUP)
            self.notifier.reloading()
            log.info("reloading configuration")
            try:
                await self._reload_now()
            except Exception as exc:      # whatever it is, the old configuration stays
                log.error("reload failed, still running the previous configuration: %s",
                          failure_reason(exc))
                self.model.record_reload(failure_reason(exc), time.time())
                return failure_reason(exc)
            else:
                log.info("reloaded: %s", self.report.status_line())
                self.model.record_reload(None, time.time())
                return None
            finally:
                self.notifier.ready(self.report.status_line())

    def _not_replaced(self, sig: signal.Signals | None = None) -> None:
        """Raise api.Replaced if a restart replaced us while the caller waited (a
        signal waiting with it goes on to the successor)."""
        if self.successor is None:
            return
        if sig is not None:
            log.info("a reload asked during the restart goes to pid %d", self.successor)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.successor, sig)
        raise api.Replaced(self.successor)

    async def _reload_now(self) -> None:
        model, kernel = self.model, self.kernel
        new, routes, sources = await asyncio.to_thread(read_reload, model, self.run_as.cli)
        assert kernel is not None
        fresh = self.metrics.bind_new(new.metrics_listen)   # a port taken: no reload
        try:
            kernel.steer(new.effective_ports, routes.vips,
                         before=(model.config.effective_ports, model.routes.vips))
        except BaseException:
            self.metrics.discard(fresh)
            raise
        self._save_tokens()                     # what the old newest key sealed
        model.apply(new, routes, sources)
        await self.metrics.switch(new.metrics_listen, fresh)
        model.state.save()
        set_log_format(new.log_format)
        await asyncio.to_thread(check_key_ages, routes, model.state)
        await self.health.configure()          # new backends probed before use
        assert self.resolver is not None
        try:
            await self.resolver.refresh()
        except OSError as exc:
            log.error("neighbour refresh: %s", exc)
        await self.rebuild("reload")

    async def drain(self, address: str, draining: bool, by: str) -> tuple[bool, str | None]:
        # A drain accepted during a restart could be lost: wait for its outcome.
        async with self._restart_lock:
            self._not_replaced()
        if address not in self.model.routes.addresses:
            raise KeyError(f"no backend {address} in {self.model.routes.path}")
        changed = self.model.drain(address, draining)
        if changed:
            self.model.state.save()
            log.info("backend %s %s at run time (%s)", address,
                     "draining" if draining else "no longer draining", by)
            await self.rebuild(f"{'drain' if draining else 'undrain'} {address}")
        return changed, self.model.drain_source(address)

    # -- route tables and backends ----------------------------------------------------------

    def _blob(self) -> bytes:
        assert self.model.compiled is not None
        return self.model.compiled.blob

    def _compile(self, why: str = "start") -> bool:
        """Compile the model's table and, if it changed, send it to every worker; the
        kernel tier follows (daemon/tier.py). True when it changed."""
        compiled, reused = self.model.compile()
        if self.kernel is not None:
            self.kernel.clear_slots(reused)
        changed = self.model.adopt_table(compiled, why)
        if self.kernel is not None:
            if changed:
                self.kernel.pool.send_table()
            self.kernel.install_tier(self.model.compiled, self.model.config.xdp_decode)
        return changed

    async def rebuild(self, why: str) -> None:
        """:meth:`_compile`, then wait until every worker forwards with the table (what
        "reloaded" and a drain's answer promise)."""
        if self._compile(why) and self.kernel is not None:
            if not await self.kernel.pool.tables_answered():
                log.warning("a worker has not taken the new route table yet")

    def _health_changed(self, address: str) -> None:
        self._compile(f"backend {address} {'up' if self.model.is_up(address) else 'down'}")

    def snapshot(self) -> Snapshot:
        """The state every report is built from (see pesigitg.daemon.report)."""
        kernel = self.kernel.view() if self.kernel is not None else KernelView()
        return self.model.snapshot(kernel, time.monotonic(), time.time())
