"""A subverted worker against the supervisor: what it writes down its pipe.

The test plays the worker a hostile frame has taken over: it takes the worker's own
end of the pipe (pidfd_getfd(2), as root) and writes what such code could write. The
supervisor must run none of it, stay responsive, count the message and replace the
worker, which then forwards again.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import signal
import socket
import struct
from pathlib import Path

import pytest

from pesigitg.daemon import worker_messages as wire
from pesigitg.testing.netns import inside
from tests.netns.test_daemon import make

SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Touch:
    """Unpickling this runs ``touch`` (what the old pipe did for a worker)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def worker_pipe(ns: str, pid: int) -> socket.socket:
    """A duplicate of worker ``pid``'s end of its pipe: its one Unix socket."""
    with inside(ns), open(f"/proc/{pid}/net/unix") as table:
        unix = {line.split()[6] for line in list(table)[1:]}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{entry}")
        if target.startswith("socket:[") and target[8:-1] in unix:
            pidfd = os.pidfd_open(pid)
            try:
                fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(entry), 0)
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_getfd")
            finally:
                os.close(pidfd)
            return socket.socket(fileno=fd)
    raise AssertionError(f"worker {pid} holds no Unix socket")


def worker(daemon) -> dict:
    return daemon.get("/stats")["workers"][0]


ATTACKS = {
    # multiprocessing's framing of a pickle whose __reduce__ runs a command
    "pickle": lambda marker: struct.pack("!i", len(p := pickle.dumps(_Touch(marker)))) + p,
    "unknown kind": lambda marker: bytes([0x7F, 0, 0, 0, 0]),
    "a kind only the supervisor sends": lambda marker: wire.encode(wire.Kind.TABLE, b"x"),
    "READY of the wrong size": lambda marker: bytes([wire.Kind.READY, 2, 0, 0, 0, 1, 1]),
    "READY with a bad mode": lambda marker: bytes([wire.Kind.READY, 6, 0, 0, 0]) +
    struct.pack("<BiB", 7, 0, 0),
    "a second READY": lambda marker: wire.ready("copy", 0, False),
    "SWAPPED for no table": lambda marker: wire.encode(wire.Kind.SWAPPED),
    "a reason over the bound": lambda marker: bytes([wire.Kind.FAILED]) +
    struct.pack("<I", wire.MAX_REASON + 1),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_subverted_workers_message_is_refused_counted_and_the_worker_replaced(
        lab, daemons, tmp_path, attack):
    daemon = make(lab, daemons).start()
    before = worker(daemon)
    marker = tmp_path / "ran"
    with worker_pipe(lab.lb_ns, before["pid"]) as pipe:
        pipe.sendall(ATTACKS[attack](marker))
    daemon.wait_until(lambda: worker(daemon)["pid"] not in (None, before["pid"])
                      and worker(daemon)["alive"], what="a replacement worker")
    after = worker(daemon)
    assert after["messages_refused"] == 1 and after["restarts"] == 1
    assert not marker.exists(), "the supervisor ran what the worker sent"
    daemon.wait_log(f"worker q0 \\(pid {before['pid']}\\) sent a message it may not send")
    assert daemon.get("/health")["status"] == "ok"
    metrics = daemon.get("/metrics")
    assert 'pesigitg_worker_messages_refused_total{worker="0"} 1' in metrics


def test_a_worker_that_stalls_mid_message_never_blocks_the_supervisor(lab, daemons):
    daemon = make(lab, daemons).start()
    before = worker(daemon)
    with worker_pipe(lab.lb_ns, before["pid"]) as pipe:
        # A header announcing a reason, then nothing: the rest never comes.
        pipe.sendall(bytes([wire.Kind.FAILED]) + struct.pack("<I", 100) + b"partial")
        # The supervisor answers (a blocked one would not: the query has a deadline).
        for _ in range(5):
            assert daemon.get("/health")["status"] == "ok"
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded: ", after=mark)
    assert worker(daemon)["pid"] == before["pid"]


def test_a_state_page_poisoned_by_a_dying_worker_is_refused_by_its_replacement(lab, daemons):
    daemon = make(lab, daemons).start()
    before = worker(daemon)
    umem = next(f"/proc/{before['pid']}/fd/{e}" for e in os.listdir(f"/proc/{before['pid']}/fd")
                if "pesigitg-umem" in os.readlink(f"/proc/{before['pid']}/fd/{e}"))
    with open(umem, "r+b") as memfd, mmap.mmap(memfd.fileno(), 0) as umem_map:
        page = len(umem_map) - 4096
        seq = struct.unpack_from("<I", umem_map, page + 44)[0]
        # A journal "being published" with a stash of frames beyond the UMEM, and a
        # published stash that names one frame twice.
        struct.pack_into("<I", umem_map, page + 44, seq | 1)
        struct.pack_into("<5I", umem_map, page + 64, 256, 0, 2, 1, 3)
        struct.pack_into("<2I", umem_map, page + 84, 7, 7)
        struct.pack_into("<3I", umem_map, page + 84 + 1024, 1 << 30, 5, 6)
    os.kill(before["pid"], signal.SIGKILL)
    daemon.wait_until(lambda: worker(daemon)["pid"] not in (None, before["pid"])
                      and worker(daemon)["alive"], what="a replacement worker")
    after = worker(daemon)
    assert after["state_repairs"] == 1 and after["messages_refused"] == 0
    daemon.wait_log("worker q0 refused what its predecessor left in the UMEM's state page "
                    "and rings \\(journal, stash\\)")
    assert "error" not in after["frames"], after["frames"]
    assert after["frames"]["stash"] == 0
    assert daemon.get("/health")["status"] == "ok"
