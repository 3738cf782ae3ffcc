"""The workers' counters in shared memory that outlives processes.

A memfd: forked workers write their blocks, a restarted daemon is handed the fd and
maps the same counts, so ``/stats`` totals carry on across a worker restart and a
daemon restart. A header records the counter names the blocks were written with, so
a daemon whose contract has other counters (an upgrade) carries the values over by
name instead of misreading them.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct

from pesigitg._fastpath import COUNTER_NAMES, counters_size, read_counters

__all__ = ["SharedCounters"]

log = logging.getLogger("pesigitg.counters")

MAGIC = b"PESCNT01"
HEADER = 4096                       # magic, workers, names; blocks start a page in
_HEAD = struct.Struct("<8sII")      # magic, workers, length of the names text


class SharedCounters:
    """Counter blocks of ``workers`` engines in a memfd (``fd``, ``buffer``)."""

    def __init__(self, fd: int, workers: int) -> None:
        self.fd, self.workers = fd, workers
        self._map = mmap.mmap(fd, HEADER + counters_size(workers))
        self.buffer = memoryview(self._map)[HEADER:]

    @classmethod
    def create(cls, workers: int) -> SharedCounters:
        fd = os.memfd_create("pesigitg-counters", os.MFD_CLOEXEC)
        os.ftruncate(fd, HEADER + counters_size(workers))
        names = "\n".join(COUNTER_NAMES).encode()
        if _HEAD.size + len(names) > HEADER:
            raise ValueError("the counter names do not fit the counters' header page")
        os.pwrite(fd, _HEAD.pack(MAGIC, workers, len(names)) + names, 0)
        return cls(fd, workers)

    @classmethod
    def adopt(cls, fd: int, workers: int) -> SharedCounters:
        """Another process's counters (``fd`` is duplicated): the same memory when the
        layout is this version's, else a fresh copy carrying every known name over."""
        fd = os.dup(fd)
        head = os.pread(fd, HEADER, 0)
        magic, old_workers, length = _HEAD.unpack_from(head)
        if magic != MAGIC:
            os.close(fd)
            raise ValueError("the counters handed over are not pesigitg's")
        names = tuple(head[_HEAD.size:_HEAD.size + length].decode().split("\n"))
        if names == COUNTER_NAMES and old_workers == workers:
            return cls(fd, workers)
        fresh = cls.create(workers)
        old_block = (len(names) * 8 + 63) // 64 * 64     # blocks are cache-line aligned
        stride = counters_size(1) // 8
        try:
            with mmap.mmap(fd, HEADER + old_block * old_workers) as old_map:
                old = memoryview(old_map)[HEADER:].cast("Q")
                new = fresh.buffer.cast("Q")
                for worker in range(min(workers, old_workers)):
                    for i, name in enumerate(names):
                        if name in COUNTER_NAMES:
                            new[worker * stride + COUNTER_NAMES.index(name)] = \
                                old[worker * old_block // 8 + i]
                old.release()
                new.release()
        finally:
            os.close(fd)
        log.warning("the counters handed over were written with another layout; %d known "
                    "names carried over", len(set(names) & set(COUNTER_NAMES)))
        return fresh

    def read(self, worker: int) -> dict[str, int]:
        return read_counters(self.buffer, worker)

    def close(self) -> None:
        if self.fd < 0:
            return
        self.buffer.release()
        self._map.close()
        os.close(self.fd)
        self.fd = -1
