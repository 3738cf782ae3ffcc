"""BPF maps: creation and the element operations, per-CPU values included."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from functools import cache

from pesigitg.ebpf import syscall as sc
from pesigitg.ebpf.btf import MapDefinition

__all__ = ["BPF_ANY", "BPF_EXIST", "BPF_NOEXIST", "Map", "MapType", "possible_cpus"]

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_OBJ_NAME_LEN = 16


class MapType:
    """``enum bpf_map_type`` values used here."""
    HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY, PERCPU_HASH, PERCPU_ARRAY = 1, 2, 3, 4, 5, 6
    LRU_HASH, LRU_PERCPU_HASH, DEVMAP, XSKMAP = 9, 10, 14, 17
    PER_CPU = frozenset({PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH})


@cache
def possible_cpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible", encoding="ascii") as f:
        count = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            count += int(hi or lo) - int(lo) + 1
        return count


def kernel_name(name: str) -> bytes:
    """Object names the kernel accepts: 15 characters of [A-Za-z0-9_.]."""
    clean = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in name)
    return clean[:BPF_OBJ_NAME_LEN - 1].encode()


class Map:
    """A BPF map owned by this process (the fd closes with :meth:`close`)."""

    def __init__(self, fd: int, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int, *, map_flags: int = 0) -> None:
        self.fd = fd
        self.name = name
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.map_flags = map_flags
        per_cpu = map_type in MapType.PER_CPU
        self._stride = (value_size + 7) & ~7 if per_cpu else value_size
        self._value_buf_size = self._stride * (possible_cpus() if per_cpu else 1)

    @classmethod
    def create(cls, definition: MapDefinition, btf_fd: int = 0) -> Map:
        attr = sc.MapCreateAttr(map_type=definition.map_type, key_size=definition.key_size,
                                value_size=definition.value_size,
                                max_entries=definition.max_entries,
                                map_flags=definition.map_flags,
                                map_name=kernel_name(definition.name))
        doing = f"creating BPF map {definition.name}"
        if btf_fd and definition.value_type_id:
            attr.btf_fd = btf_fd
            attr.btf_key_type_id = definition.key_type_id
            attr.btf_value_type_id = definition.value_type_id
            try:
                fd = sc.bpf(sc.BPF_MAP_CREATE, attr, doing)
            except OSError as exc:
                # Some map types (XSKMAP, ...) take no BTF key/value types: retry without.
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP, 524):
                    raise
                attr.btf_fd = attr.btf_key_type_id = attr.btf_value_type_id = 0
                fd = sc.bpf(sc.BPF_MAP_CREATE, attr, doing)
        else:
            fd = sc.bpf(sc.BPF_MAP_CREATE, attr, doing)
        return cls(fd, definition.name, definition.map_type, definition.key_size,
                   definition.value_size, definition.max_entries,
                   map_flags=definition.map_flags)

    @classmethod
    def adopt(cls, fd: int, name: str) -> Map:
        """A map another process created, by a duplicate of its fd (info from the kernel)."""
        info = sc.map_info(fd)
        return cls(os.dup(fd), name, info.type, info.key_size, info.value_size,
                   info.max_entries, map_flags=info.map_flags)

    def matches(self, definition: MapDefinition) -> bool:
        """Whether this map can stand in for ``definition`` (same type, sizes, flags)."""
        return (self.map_type, self.key_size, self.value_size, self.max_entries,
                self.map_flags) == (definition.map_type, definition.key_size,
                                    definition.value_size, definition.max_entries,
                                    definition.map_flags)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return (f"Map({self.name!r}, type={self.map_type}, key={self.key_size}, "
                f"value={self.value_size}, max_entries={self.max_entries}, fd={self.fd})")

    # -- element operations --------------------------------------------------------------

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} octets, "
                             f"the map's keys are {self.key_size}")
        return ctypes.create_string_buffer(bytes(key), self.key_size)

    def lookup_raw(self, key: bytes) -> bytes | None:
        """The value octets (all CPUs' slots for per-CPU maps), or None if absent."""
        kbuf = self._key(key)
        vbuf = ctypes.create_string_buffer(self._value_buf_size)
        attr = sc.MapElemAttr(map_fd=self.fd, key=sc.addr(kbuf), value=sc.addr(vbuf))
        try:
            sc.bpf(sc.BPF_MAP_LOOKUP_ELEM, attr, f"looking up a key in BPF map {self.name}")
        except FileNotFoundError:
            return None
        return vbuf.raw

    def lookup(self, key: bytes) -> bytes | None:
        value = self.lookup_raw(key)
        return None if value is None else value[:self.value_size]

    def lookup_per_cpu(self, key: bytes) -> list[bytes] | None:
        """One value per possible CPU (per-CPU maps)."""
        value = self.lookup_raw(key)
        if value is None:
            return None
        return [value[i:i + self.value_size] for i in range(0, len(value), self._stride)]

    def sum_per_cpu(self, key: bytes) -> int:
        """The sum over CPUs of an unsigned little-endian per-CPU counter (0 if absent)."""
        value = self.lookup_raw(key)
        return 0 if value is None else self._cpu_sum(value)

    def _cpu_sum(self, value: bytes) -> int:
        """One element's value octets (every CPU's slot) as the sum of its counters."""
        return sum(int.from_bytes(value[i:i + self.value_size], "little")
                   for i in range(0, len(value), self._stride))

    def sums_per_cpu(self, first: int, count: int) -> list[int]:
        """For a per-CPU array of unsigned little-endian counters: the sum over CPUs of
        each of the ``count`` elements from index ``first`` on, in one
        ``BPF_MAP_LOOKUP_BATCH`` (Linux 5.6) instead of a lookup each."""
        if self.map_type != MapType.PERCPU_ARRAY or self.key_size != 4:
            raise ValueError(f"map {self.name}: sums_per_cpu reads per-CPU arrays")
        if first < 0 or count < 0 or first + count > self.max_entries:
            raise ValueError(f"map {self.name}: elements {first}..{first + count - 1} are "
                             f"outside its {self.max_entries}")
        if count == 0:
            return []
        before = ctypes.c_uint32(first - 1)
        after = ctypes.c_uint32()
        keys = ctypes.create_string_buffer(4 * count)
        values = ctypes.create_string_buffer(self._value_buf_size * count)
        attr = sc.BatchAttr(in_batch=sc.addr(before) if first else 0, out_batch=sc.addr(after),
                            keys=sc.addr(keys), values=sc.addr(values), count=count,
                            map_fd=self.fd)
        try:
            sc.bpf(sc.BPF_MAP_LOOKUP_BATCH, attr, f"reading BPF map {self.name}")
        except FileNotFoundError:       # the last element reached: attr.count were read
            pass
        if attr.count != count:
            raise OSError(errno.EIO, f"BPF map {self.name}: {attr.count} of {count} "
                                     f"elements read")
        raw, size = values.raw, self._value_buf_size
        return [self._cpu_sum(raw[i:i + size]) for i in range(0, len(raw), size)]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if self.map_type in MapType.PER_CPU and len(value) == self.value_size:
            value = bytes(value).ljust(self._stride, b"\0") * possible_cpus()
        elif len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} octets, "
                             f"the map's values are {self.value_size}")
        kbuf = self._key(key)
        vbuf = ctypes.create_string_buffer(bytes(value), len(value))
        attr = sc.MapElemAttr(map_fd=self.fd, key=sc.addr(kbuf), value=sc.addr(vbuf),
                              flags=flags)
        sc.bpf(sc.BPF_MAP_UPDATE_ELEM, attr, f"updating BPF map {self.name}")

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False if it was not there."""
        kbuf = self._key(key)
        attr = sc.MapElemAttr(map_fd=self.fd, key=sc.addr(kbuf))
        try:
            sc.bpf(sc.BPF_MAP_DELETE_ELEM, attr, f"deleting from BPF map {self.name}")
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key, via BPF_MAP_GET_NEXT_KEY (starting from no key)."""
        current: ctypes.Array[ctypes.c_char] | None = None
        nbuf = ctypes.create_string_buffer(self.key_size)
        while True:
            attr = sc.MapElemAttr(map_fd=self.fd, key=sc.addr(current), value=sc.addr(nbuf))
            try:
                sc.bpf(sc.BPF_MAP_GET_NEXT_KEY, attr, f"iterating BPF map {self.name}")
            except FileNotFoundError:
                return
            key = nbuf.raw
            yield key
            current = ctypes.create_string_buffer(key, self.key_size)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def clear(self) -> None:
        for key in list(self.keys()):
            self.delete(key)

    def freeze(self) -> None:
        """Make the map read-only for user space (used for .rodata)."""
        sc.bpf(sc.BPF_MAP_FREEZE, sc.MapElemAttr(map_fd=self.fd), f"freezing BPF map {self.name}")
