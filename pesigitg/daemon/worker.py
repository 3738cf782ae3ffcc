"""A worker process: one NIC queue, the supervisor's AF_XDP socket for it, one engine.

The supervisor creates each queue's socket and keeps it, and forks a worker to run
the loop on it (:func:`start_worker`); a worker that dies is replaced in
milliseconds by another on the same socket, which takes the rings over as they are
(``XskSocket.recover``: nothing is lost in between, frames wait in the RX ring).

In the child: it dies with the supervisor (``PR_SET_PDEATHSIG``, and every inherited
fd it does not need is closed, the supervisor's ends of its pipes and the pidfile
included), pins itself, then takes the queue exclusively: ``flock`` on its own open
file description of the UMEM memfd, so a replacement, or the new daemon's worker
after a restart, waits until the previous owner is gone. Then it drops every
capability and confines itself to a seccomp allow-list. It runs the engine loop in
a thread and serves the pipe (daemon/worker_messages.py): TABLE swaps the route
table, STOP or end-of-file stops it. The loop itself never touches Python.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pesigitg._fastpath import Engine, RouteTable, XskSocket
from pesigitg.daemon import worker_messages as wire
from pesigitg.daemon.counters import SharedCounters
from pesigitg.daemon.privileges import confine_worker, lose_privileges

__all__ = ["WorkerProcess", "WorkerSpec", "numa_cpus", "start_worker"]

PR_SET_PDEATHSIG = 1
LOCK_WAIT = 10.0        # seconds a worker waits for the previous owner of its queue
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class WorkerSpec:
    index: int          # also its block in the shared counters
    interface: str
    queue: int
    cpu: int | None
    batch: int = 64
    busy_poll: bool = False     # spin instead of sleeping when idle (benchmarks)
    floor: bool = False         # swap MACs, decide nothing (the benchmark's floor)


@dataclass
class WorkerProcess:
    """The supervisor's side of one forked worker."""
    pid: int
    pidfd: int          # readable once the worker has exited (asyncio waits on it)
    conn: socket.socket     # the pipe (worker_messages), non-blocking on this side

    def wait(self) -> str:
        """Reap it; how it ended, in words ("exited with status 1", "was killed by
        SIGSYS (a system call outside its filter)")."""
        os.close(self.pidfd)
        self.pidfd = -1
        _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code >= 0:
            return f"exited with status {code}"
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"was killed by {name}" + (" (a system call outside its filter)"
                                          if -code == signal.SIGSYS else "")


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


def start_worker(spec: WorkerSpec, xsk: XskSocket, blob: bytes, counters: SharedCounters
                 ) -> WorkerProcess:
    """Fork a worker for ``xsk`` (already bound and registered), counting in its block
    of ``counters``; it reports READY or FAILED on its pipe."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:                                            # the worker
        status = 70
        try:
            parent.close()
            _worker(spec, xsk, blob, counters, child, supervisor)
            status = 0
        finally:
            os._exit(status)
    child.close()
    parent.setblocking(False)
    return WorkerProcess(pid, os.pidfd_open(pid), parent)


def _worker(spec: WorkerSpec, xsk: XskSocket, blob: bytes, counters: SharedCounters,
            conn: socket.socket, supervisor: int) -> None:
    # Die with the supervisor, even when it is killed; and it may already be gone.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != supervisor:
        os._exit(0)
    # The supervisor's asyncio signal plumbing and signal mask were inherited.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    gc.freeze()         # the supervisor's objects are never collected (or closed) here
    _close_all_but({0, 1, 2, xsk.fd, xsk.umem_fd, conn.fileno()})
    name = f"pesigitgd worker q{spec.queue}"
    try:
        if spec.cpu is not None:
            os.sched_setaffinity(0, {spec.cpu})
        _own_queue(xsk)
        engine = Engine(xsk, RouteTable(blob), counters=counters.buffer, worker=spec.index,
                        batch=spec.batch, busy_poll=spec.busy_poll, floor=spec.floor,
                        backend_counts=counters.backend_block(spec.index))
        # From here on it holds all it needs: no capability, no new privilege, and only
        # the system calls of its loop and its pipe (privileges.py).
        lose_privileges()
        thread = threading.Thread(target=engine.run, name=name, daemon=True)
        thread.start()
        confine_worker()
    except Exception as exc:
        conn.sendall(wire.failed(f"{name}: {exc}"))
        return
    conn.sendall(wire.ready(xsk.mode, spec.cpu, engine.recovered, xsk.repaired))
    try:
        while True:
            try:
                message = wire.read_message(conn, wire.TO_WORKER)
            except (OSError, wire.WorkerMessageError):
                break           # the supervisor is gone (or broken): do not outlive it
            if message is None or message.kind == wire.Kind.STOP:
                break
            try:
                engine.swap_table(RouteTable(message.body))
                conn.sendall(wire.encode(wire.Kind.SWAPPED))
            except ValueError as exc:
                conn.sendall(wire.rejected(str(exc)))
    finally:
        engine.stop()
        thread.join(timeout=5)


def _close_all_but(keep: set[int]) -> None:
    """Drop every inherited fd but ``keep``: each other one is pointed at /dev/null, which
    releases what it held (a pipe end, the pidfile's lock, a BPF link) yet keeps the
    number taken, so an inherited object finalized later closes nothing of ours."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd not in keep and fd != null:
            try:
                os.dup2(null, fd, inheritable=False)
            except OSError:
                pass            # the listing's own fd, gone already
    os.close(null)


def _own_queue(xsk: XskSocket) -> None:
    """Wait until no other process runs a loop on this socket, then hold it: flock on
    a new open file description of the UMEM memfd, released when this process dies."""
    lock = os.open(f"/proc/self/fd/{xsk.umem_fd}", os.O_RDWR | os.O_CLOEXEC)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError(f"queue {xsk.queue} is still held by another worker after "
                              f"{LOCK_WAIT:.0f} s") from None
            time.sleep(0.001)
