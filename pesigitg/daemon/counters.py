"""The workers' counters in shared memory that outlives processes.

A memfd: forked workers write their blocks, a restarted daemon is handed the fd and
maps the same counts, so ``/stats`` totals carry on across a worker restart and a
daemon restart. A header records the counter names the blocks were written with, so
a daemon whose contract has other counters (an upgrade) carries the values over by
name instead of misreading them. After the counter blocks, each worker has a block of
per-backend counts (frames forwarded, frames CID-routed) indexed by the slot the
supervisor gives each backend in the route table.

The workers map all of it, header included, so a successor trusts the header no more
than a worker: the names and the worker count come from its predecessor (the
hand-over's facts); the header, when it is all there is, is checked octet by octet
(:func:`read_header`), and a damaged one means counting from zero, said in the log.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct

from pesigitg._fastpath import (
    BACKEND_COUNTS_SIZE,
    BACKEND_SLOTS,
    COUNTER_NAMES,
    counters_size,
    read_counters,
)

__all__ = ["CountersDamaged", "SharedCounters", "read_header"]

log = logging.getLogger("pesigitg.counters")

MAGIC = b"PESCNT02"                 # 01: no per-backend blocks (adopted, by name)
OLD_MAGICS = (b"PESCNT01", MAGIC)
HEADER = 4096                       # magic, workers, names; blocks start a page in
_HEAD = struct.Struct("<8sII")      # magic, workers, length of the names text
PAGE = 4096
_COUNTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
MAX_WORKERS = 256                   # XSK_SLOTS


class CountersDamaged(ValueError):
    """The counters' header is not one pesigitg wrote; the text says what is wrong."""


def read_header(head: bytes) -> tuple[bytes, int, tuple[str, ...]]:
    """(magic, workers, counter names) of a header page, each checked: a known magic,
    1..MAX_WORKERS workers, names that are distinct lower-case identifiers filling the
    stated length exactly."""
    if len(head) < HEADER:
        raise CountersDamaged(f"a header of {len(head)} octets, not {HEADER}")
    magic, workers, length = _HEAD.unpack_from(head)
    if magic not in OLD_MAGICS:
        raise CountersDamaged("another magic: not pesigitg's counters")
    if not 1 <= workers <= MAX_WORKERS:
        raise CountersDamaged(f"{workers} workers")
    if not 0 < length <= HEADER - _HEAD.size:
        raise CountersDamaged(f"names of {length} octets")
    try:
        names = tuple(head[_HEAD.size:_HEAD.size + length].decode("ascii").split("\n"))
    except UnicodeDecodeError:
        raise CountersDamaged("names that are not ASCII") from None
    if len(set(names)) != len(names) or not all(_COUNTER_NAME.match(n) for n in names):
        raise CountersDamaged("names that are not distinct counter names")
    return magic, workers, names


def _backends_at(workers: int) -> int:
    return HEADER + (counters_size(workers) + PAGE - 1) // PAGE * PAGE


def _size(workers: int) -> int:
    return _backends_at(workers) + workers * BACKEND_COUNTS_SIZE


class SharedCounters:
    """Counter blocks of ``workers`` engines in a memfd (``fd``, ``buffer``)."""

    def __init__(self, fd: int, workers: int) -> None:
        self.fd, self.workers = fd, workers
        self._map = mmap.mmap(fd, _size(workers))
        view = memoryview(self._map)
        self.buffer = view[HEADER:HEADER + counters_size(workers)]
        self._backends = view[_backends_at(workers):]

    def backend_block(self, worker: int) -> memoryview:
        """Worker ``worker``'s per-backend counts, for its engine."""
        return self._backends[worker * BACKEND_COUNTS_SIZE:(worker + 1) * BACKEND_COUNTS_SIZE]

    def backend_counts(self) -> dict[int, tuple[int, int]]:
        """(frames forwarded, frames CID-routed) per backend slot, every worker summed;
        slots never used are left out."""
        counts = self._backends.cast("Q")
        out = {}
        for slot in range(BACKEND_SLOTS):
            forwarded = sum(counts[w * 2 * BACKEND_SLOTS + slot] for w in range(self.workers))
            if forwarded:
                cid = sum(counts[w * 2 * BACKEND_SLOTS + BACKEND_SLOTS + slot]
                          for w in range(self.workers))
                out[slot] = (forwarded, cid)
        counts.release()
        return out

    def clear_backend(self, slot: int) -> None:
        """Zero a slot before another backend takes it."""
        counts = self._backends.cast("Q")
        for w in range(self.workers):
            counts[w * 2 * BACKEND_SLOTS + slot] = 0
            counts[w * 2 * BACKEND_SLOTS + BACKEND_SLOTS + slot] = 0
        counts.release()

    @classmethod
    def create(cls, workers: int) -> SharedCounters:
        fd = os.memfd_create("pesigitg-counters", os.MFD_CLOEXEC)
        os.ftruncate(fd, _size(workers))
        names = "\n".join(COUNTER_NAMES).encode()
        if _HEAD.size + len(names) > HEADER:
            raise ValueError("the counter names do not fit the counters' header page")
        os.pwrite(fd, _HEAD.pack(MAGIC, workers, len(names)) + names, 0)
        return cls(fd, workers)

    @classmethod
    def adopt(cls, fd: int, workers: int, names: list[str] | None = None) -> SharedCounters:
        """Another process's counters (``fd`` is duplicated): the same memory when the
        layout is this version's, else a fresh copy carrying every known name over.
        ``workers`` and ``names`` are the predecessor's (``names`` None: it did not
        say, so the header's, checked)."""
        fd = os.dup(fd)
        try:
            size = os.fstat(fd).st_size
            magic, old_workers, header_names = read_header(os.pread(fd, HEADER, 0))
        except (CountersDamaged, OSError) as exc:
            os.close(fd)
            log.warning("the counters handed over are damaged (%s): counting from zero", exc)
            return cls.create(workers)
        old = tuple(names) if names is not None else header_names
        if old != header_names or old_workers != workers:
            log.warning("the counters' header disagrees with the previous daemon (a worker "
                        "wrote it): using what the daemon said")
        if magic == MAGIC and old == COUNTER_NAMES and size >= _size(workers):
            return cls(fd, workers)
        fresh = cls.create(workers)
        old_block = (len(old) * 8 + 63) // 64 * 64     # blocks are cache-line aligned
        stride = counters_size(1) // 8
        try:
            if size < HEADER + old_block * workers:
                raise CountersDamaged(f"{size} octets for {workers} blocks of {len(old)}")
            with mmap.mmap(fd, HEADER + old_block * workers) as old_map:
                values = memoryview(old_map)[HEADER:].cast("Q")
                new = fresh.buffer.cast("Q")
                for worker in range(workers):
                    for i, name in enumerate(old):
                        if name in COUNTER_NAMES:
                            new[worker * stride + COUNTER_NAMES.index(name)] = \
                                values[worker * old_block // 8 + i]
                values.release()
                new.release()
        except CountersDamaged as exc:
            log.warning("the counters handed over are damaged (%s): counting from zero", exc)
            return fresh
        finally:
            os.close(fd)
        log.warning("the counters handed over were written with another layout; %d known "
                    "names carried over", len(set(old) & set(COUNTER_NAMES)))
        return fresh

    def read(self, worker: int) -> dict[str, int]:
        return read_counters(self.buffer, worker)

    def close(self) -> None:
        if self.fd < 0:
            return
        self.buffer.release()
        self._backends.release()
        self._map.close()
        os.close(self.fd)
        self.fd = -1


def assign_slots(current: dict[str, int], addresses: list[str] | tuple[str, ...]
                 ) -> dict[str, int]:
    """Each backend's counter slot: a backend keeps its slot while it is configured; a
    new one takes the lowest free slot (one a removed backend left, which the caller
    clears first). Beyond BACKEND_SLOTS backends, the rest are not counted one by one."""
    kept = {a: s for a, s in current.items() if a in addresses}
    used = set(kept.values())
    free = (s for s in range(BACKEND_SLOTS) if s not in used)
    for address in addresses:
        if address not in kept:
            slot = next(free, None)
            if slot is None:
                break
            kept[address] = slot
    return kept
