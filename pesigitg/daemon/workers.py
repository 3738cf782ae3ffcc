"""The supervisor's workers: one per RX queue, each on a socket the supervisor keeps.

A worker that dies is replaced at once, on the same socket, so one crash costs a few
milliseconds of that queue's time and no frame (they wait in the RX ring). Only a
worker that keeps dying soon after its start is replaced with a growing delay.
Route tables go to every live worker; replies come back on the same pipe and are
dispatched from a table. A worker is hostile to the supervisor (it parses hostile
frames): its messages are decoded with fixed layouts (daemon/worker_messages.py), the
pipe is never read or written in a way that could block the supervisor, and a worker
that sends anything out of turn or out of shape is counted, logged and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from pesigitg._fastpath import XskSocket
from pesigitg.daemon import worker_messages as wire
from pesigitg.daemon.counters import SharedCounters
from pesigitg.daemon.worker import WorkerProcess, WorkerSpec, start_worker

__all__ = ["WorkerHandle", "WorkerPool"]

log = logging.getLogger("pesigitg")

STOP_TIMEOUT = 5.0
QUICK_DEATH = 1.0           # a worker dying this soon after its start counts as a repeat
BACKOFF_FIRST = 0.05        # seconds, for the second quick death in a row
BACKOFF_MAX = 30.0
SEND_TIMEOUT = 5.0          # seconds a worker may leave a message to it unread
READ_CHUNK = 65536


@dataclass
class WorkerHandle:
    spec: WorkerSpec
    xsk: XskSocket
    process: WorkerProcess | None = None
    alive: bool = False
    ready: asyncio.Future[None] | None = None
    mode: str = ""
    restarts: int = 0
    started: float = 0.0
    backoff: float = 0.0        # delay before the next replacement
    pending: asyncio.TimerHandle | None = None
    blob: bytes = b""           # the table the worker has (or was started with)
    tables_adopted: int = 0     # SWAPPED replies
    refused: int = 0            # messages refused (each cost the worker its life)
    repairs: int = 0            # starts that refused what a predecessor left in the UMEM
    # This process's pipe: what it may say next, and the sends under way.
    reader: wire.MessageReader | None = None
    said_ready: bool = False
    tables_unanswered: int = 0
    sending: asyncio.Task[None] | None = None
    answered: asyncio.Future[None] | None = None    # resolved when no table is unanswered

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class WorkerPool:
    """Starts, watches and replaces the workers; ``table`` gives the current blob."""

    def __init__(self, handles: list[WorkerHandle], counters: SharedCounters,
                 table: Callable[[], bytes]) -> None:
        self.handles = handles
        self.counters = counters
        self.table = table
        self.replacing = True       # False while stopping: exits are then expected
        self.replies: dict[wire.Kind, Callable[[WorkerHandle, wire.Message], None]] = {
            wire.Kind.READY: self._ready, wire.Kind.FAILED: self._failed,
            wire.Kind.SWAPPED: self._swapped, wire.Kind.REJECTED: self._rejected}

    @property
    def alive(self) -> int:
        return sum(h.alive for h in self.handles)

    # -- starting ------------------------------------------------------------------------

    def start(self, handle: WorkerHandle, waited: bool = False) -> None:
        """Fork ``handle``'s worker; ``waited``: someone awaits ``handle.ready``."""
        loop = asyncio.get_running_loop()
        blob = self.table()
        handle.process = start_worker(handle.spec, handle.xsk, blob, self.counters)
        handle.blob, handle.started, handle.pending = blob, time.monotonic(), None
        handle.ready = loop.create_future() if waited else None
        handle.reader, handle.said_ready, handle.tables_unanswered = wire.MessageReader(), \
            False, 0
        handle.sending = None
        loop.add_reader(handle.process.conn.fileno(), self._on_message, handle)
        loop.add_reader(handle.process.pidfd, self._on_exit, handle)

    async def start_all(self, timeout: float) -> None:
        """Start every worker and wait until each has taken its queue over."""
        self.replacing = True
        for handle in self.handles:
            self.start(handle, waited=True)
        futures = [h.ready for h in self.handles if h.ready is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except TimeoutError:
            raise RuntimeError(f"workers did not come up within {timeout:.0f} s") from None

    # -- what workers say ----------------------------------------------------------------

    def _on_message(self, handle: WorkerHandle) -> None:
        process, reader = handle.process, handle.reader
        assert process is not None and reader is not None
        try:
            data = process.conn.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(process.conn.fileno())
            return
        self.receive(handle, data)

    def receive(self, handle: WorkerHandle, data: bytes) -> None:
        """What a worker wrote: each whole message in turn is carried out; the first
        octet that breaks the rules costs the worker its life (:meth:`_refuse`)."""
        assert handle.reader is not None
        try:
            for message in handle.reader.feed(data):
                self._turn(handle, message.kind)
                self.replies[message.kind](handle, message)
        except wire.WorkerMessageError as exc:
            self._refuse(handle, str(exc))

    def _turn(self, handle: WorkerHandle, kind: wire.Kind) -> None:
        """Check ``kind`` comes in its turn: READY or FAILED once, first; SWAPPED or
        REJECTED only for a table sent and not yet answered."""
        if kind in (wire.Kind.READY, wire.Kind.FAILED):
            if handle.said_ready:
                raise wire.WorkerMessageError(f"a second {kind.name} message")
            handle.said_ready = True
        elif not handle.said_ready or handle.tables_unanswered == 0:
            raise wire.WorkerMessageError(f"{kind.name} for no table sent")
        else:
            handle.tables_unanswered -= 1
            if handle.tables_unanswered == 0 and handle.answered is not None:
                if not handle.answered.done():
                    handle.answered.set_result(None)
                handle.answered = None

    def _refuse(self, handle: WorkerHandle, why: str) -> None:
        """A worker broke the pipe's rules: count it, stop listening, kill it (its exit
        starts the replacement)."""
        process = handle.process
        assert process is not None
        handle.refused += 1
        log.error("worker q%d (pid %d) sent a message it may not send (%s): replacing it",
                  handle.spec.queue, process.pid, why)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(process.conn.fileno())
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)

    def _ready(self, handle: WorkerHandle, message: wire.Message) -> None:
        mode, cpu, recovered, repaired = message.ready()
        handle.alive, handle.mode = True, mode
        log.info("worker q%d up (pid %s, CPU %s, %s mode%s)", handle.spec.queue, handle.pid,
                 cpu, mode, "; finished its predecessor's last batch" if recovered else "")
        if repaired:
            handle.repairs += 1
            log.error("worker q%d refused what its predecessor left in the UMEM's state "
                      "page and rings (%s): frames there may be lost", handle.spec.queue,
                      ", ".join(repaired))
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_result(None)
        self.send_table(handle)         # a table may have changed while it started

    def _failed(self, handle: WorkerHandle, message: wire.Message) -> None:
        reason = message.reason()
        log.error("worker q%d failed: %s", handle.spec.queue, reason)
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_exception(RuntimeError(reason))

    def _swapped(self, handle: WorkerHandle, message: wire.Message) -> None:
        handle.tables_adopted += 1

    def _rejected(self, handle: WorkerHandle, message: wire.Message) -> None:
        log.error("worker q%d rejected a route table: %s", handle.spec.queue, message.reason())

    def _on_exit(self, handle: WorkerHandle) -> None:
        status = self._reap(handle)
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_exception(RuntimeError(
                f"worker q{handle.spec.queue} {status} during start-up"))
            return
        if not self.replacing:
            return
        ran = time.monotonic() - handle.started
        if ran > QUICK_DEATH:
            handle.backoff = 0.0        # it had been running fine: not a crash loop
        delay = handle.backoff
        handle.backoff = min(max(delay * 2, BACKOFF_FIRST), BACKOFF_MAX)
        handle.restarts += 1
        log.error("worker q%d (pid %s) %s after %.1f s; %s",
                  handle.spec.queue, handle.pid, status, ran,
                  f"replacing it in {delay:.2f} s" if delay else "replacing it now")
        if delay:
            handle.pending = asyncio.get_running_loop().call_later(delay, self._replace,
                                                                   handle)
        else:
            self._replace(handle)

    def _replace(self, handle: WorkerHandle) -> None:
        if self.replacing:
            self.start(handle)

    def _reap(self, handle: WorkerHandle) -> str | None:
        """Forget the process: its readers, its pipe, its exit status."""
        process = handle.process
        handle.alive = False
        if process is None:
            return None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(process.conn.fileno())
        if process.pidfd >= 0:
            loop.remove_reader(process.pidfd)
        if handle.sending is not None:
            handle.sending.cancel()
            handle.sending = None
        if handle.answered is not None:
            if not handle.answered.done():
                handle.answered.set_result(None)    # it will never answer; its successor
            handle.answered = None                  # starts with the current table
        process.conn.close()
        return process.wait()

    # -- tables --------------------------------------------------------------------------

    def send_table(self, handle: WorkerHandle | None = None) -> None:
        """Send the current table to ``handle`` (or every worker) unless it has it."""
        blob = self.table()
        for h in [handle] if handle is not None else self.handles:
            if h.process is None or not h.alive or h.blob == blob:
                continue
            h.blob = blob
            h.tables_unanswered += 1
            if h.answered is None:
                h.answered = asyncio.get_running_loop().create_future()
            self._send(h, wire.encode(wire.Kind.TABLE, blob))

    async def tables_answered(self, timeout: float = SEND_TIMEOUT) -> bool:
        """Wait until every live worker has answered every table sent (taken it, or
        refused it and said why); False after ``timeout``."""
        waiting = [h.answered for h in self.handles if h.alive and h.answered is not None]
        if not waiting:
            return True
        done, _ = await asyncio.wait(waiting, timeout=timeout)
        return len(done) == len(waiting)

    def _send(self, handle: WorkerHandle, data: bytes) -> None:
        """Queue ``data`` on the worker's pipe behind what is being sent: never blocking
        the supervisor; a worker that leaves it unread for SEND_TIMEOUT is replaced."""
        process, previous = handle.process, handle.sending
        assert process is not None
        loop = asyncio.get_running_loop()

        async def send() -> None:
            if previous is not None:
                with contextlib.suppress(BaseException):
                    await previous
            try:
                await asyncio.wait_for(loop.sock_sendall(process.conn, data), SEND_TIMEOUT)
            except TimeoutError:
                if handle.process is process:
                    self._refuse(handle, f"its pipe was not read for {SEND_TIMEOUT:.0f} s")
            except OSError as exc:
                log.error("writing to worker q%d: %s", handle.spec.queue, exc.strerror or exc)

        handle.sending = loop.create_task(send(), name=f"to worker q{handle.spec.queue}")

    # -- stopping ------------------------------------------------------------------------

    async def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every worker and wait until each is gone (killed after ``timeout``):
        its loop publishes its last batch first, so the rings are left consistent."""
        self.replacing = False
        loop = asyncio.get_running_loop()
        running = []
        for handle in self.handles:
            if handle.pending is not None:
                handle.pending.cancel()
                handle.pending = None
            if handle.process is not None and handle.process.pidfd < 0:
                handle.process = None                       # exited and reaped already
            if handle.process is not None:
                loop.remove_reader(handle.process.pidfd)    # these exits are ours to see
                self._send(handle, wire.encode(wire.Kind.STOP))
                running.append(handle)
        deadline = time.monotonic() + timeout
        for handle in running:
            assert handle.process is not None
            while not _exited(handle.process.pidfd):
                if time.monotonic() > deadline:
                    log.warning("worker q%d did not stop, killing it", handle.spec.queue)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(handle.process.pid, signal.SIGKILL)
                    deadline = float("inf")
                await asyncio.sleep(0.002)
            self._reap(handle)
            handle.process = None


def _exited(pidfd: int) -> bool:
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)
