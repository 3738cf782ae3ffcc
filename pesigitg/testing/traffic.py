"""Traffic for tests and benchmarks: generators and a counting sink in XDP.

Two generators send a frame template with CIDs cycled from a table (and, for the flow
cases, the frame's number modulo a flow count written into it), as fast as they go:

* ``LiveFrames``: BPF_PROG_TEST_RUN in live-frames mode (through our own loader): each
  repetition writes the next CID into the frame and sends it out of the generator's
  veth (XDP_TX). The fastest, but some kernels refuse it (EPERM).
* ``PacketSender``: an AF_PACKET socket with PACKET_QDISC_BYPASS and sendmmsg(2),
  1024 prepared frames a call; every kernel allows it.

:func:`generator` picks the first that works here and says which. ``PacedStream``
sends at a fixed rate in small bursts. The sink, an XDP program, counts what arrives
by the destination MAC and drops it, so loss is counted exactly: frames sent against
frames counted at the sink. ``swap`` (an XDP program that swaps the MACs and sends
the frame back) is the in-kernel floor the benchmarks compare against.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

from pesigitg.ebpf import LoadedObject, load_object
from pesigitg.ebpf.attach import XDP_FLAGS_DRV_MODE, set_xdp
from pesigitg.ebpf.btf import Kind
from pesigitg.ebpf.program import BPF_F_TEST_XDP_LIVE_FRAMES
from pesigitg.testing.netns import inside

__all__ = ["Generator", "LiveFrames", "PacedStream", "PacketSender", "Traffic",
           "compile_traffic", "generator"]

SOURCE = Path(__file__).with_name("traffic.bpf.c")
BPF_INCLUDE = Path(__file__).resolve().parents[2] / "bpf" / "include"
LIVE_BATCH = 64
CID_SLOT = 20
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20


def compile_traffic(out: Path) -> Path:
    """Build the generator and sink (clang; ``make test`` and ``make bench`` install it)."""
    clang = shutil.which("clang-14") or shutil.which("clang")
    if clang is None:
        raise RuntimeError("clang is needed to build the traffic programs (apt-get install "
                           "clang-14)")
    obj = out / "traffic.bpf.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                    f"-I{BPF_INCLUDE}", f"-I/usr/include/{os.uname().machine}-linux-gnu",
                    "-c", str(SOURCE), "-o", str(obj)], check=True)
    return obj


class Traffic:
    """The generator and the sink of one veth (``dev`` in namespace ``ns``)."""

    def __init__(self, obj: Path, ns: str, ifindex: int) -> None:
        self.loaded: LoadedObject = load_object(obj)
        self.gen = self.loaded.programs["xdp/gen"]
        self.sink = self.loaded.programs["xdp/sink"]
        self.swap = self.loaded.programs["xdp/swap"]
        self.ns, self.ifindex = ns, ifindex
        with inside(ns):
            set_xdp(ifindex, self.sink.fd, XDP_FLAGS_DRV_MODE, "attaching the traffic sink")

    def close(self) -> None:
        with inside(self.ns):
            set_xdp(self.ifindex, -1, XDP_FLAGS_DRV_MODE, "detaching the traffic sink")
        self.loaded.close()

    def _set(self, name: str, value: bytes) -> None:
        """Set a global of the programs' .bss, at the offset BTF gives (not an assumed
        declaration order: clang lays globals out as it likes)."""
        btf = self.loaded.obj.btf
        assert btf is not None
        bss = btf.find(Kind.DATASEC, ".bss")
        assert bss is not None
        offset = next(off for _, var, off in bss.members if btf.type(var).name == name)
        table = self.loaded.maps[".bss"]
        data = bytearray(table.lookup(bytes(4)) or bytes(table.value_size))
        data[offset:offset + len(value)] = value
        table.update(bytes(4), bytes(data))

    def load_cids(self, cids: list[bytes], offset: int) -> None:
        """Frames carry ``cids`` in turn at octet ``offset``."""
        table = self.loaded.maps["cids"]
        for i, cid in enumerate(cids):
            table.update(struct.pack("<I", i), cid.ljust(CID_SLOT, b"\xaa"))
        self._set("cid_count", struct.pack("<I", len(cids)))
        self._set("cid_offset", struct.pack("<I", offset))

    def set_flows(self, count: int, offset: int) -> None:
        """Frames carry their number modulo ``count`` as 4 octets at ``offset`` (0: off)."""
        self._set("flow_count", struct.pack("<I", count))
        self._set("flow_offset", struct.pack("<I", offset))

    def sink_also(self, ns: str, ifindex: int, attach: bool = True) -> None:
        """Attach (or detach) the same sink to another interface (its counts are the
        same map): the generator's own ceiling is measured into it."""
        with inside(ns):
            set_xdp(ifindex, self.sink.fd if attach else -1, XDP_FLAGS_DRV_MODE,
                    "attaching the traffic sink" if attach else "detaching the traffic sink")

    def count_macs(self, prefix: bytes) -> None:
        """Count only frames to MACs starting with these 5 octets (by their last)."""
        self._set("sink_prefix", prefix[:5])

    def sink_count(self, last_octets: set[int]) -> int:
        seen = self.loaded.maps["seen"]
        return sum(seen.sum_per_cpu(struct.pack("<I", o)) for o in last_octets)

    def send(self, frame: bytes, count: int) -> None:
        """Transmit ``count`` copies of ``frame`` (with the CIDs) as fast as possible."""
        ctx = struct.pack("<IIIIII", 0, len(frame), 0, self.ifindex, 0, 0)
        with inside(self.ns):
            left = count
            while left:
                n = min(left, 1_000_000)
                self.gen.test_run(frame, repeat=n, ctx=ctx, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                                  batch_size=LIVE_BATCH)
                left -= n


class Generator(Protocol):
    name: str

    def load(self, template: bytes, cids: list[bytes], cid_offset: int, flows: int = 0,
             flow_offset: int = 0) -> None: ...
    def send(self, count: int) -> None: ...
    def close(self) -> None: ...


class LiveFrames:
    """The live-frames generator of ``traffic`` (its veth)."""

    name = "BPF_PROG_TEST_RUN live frames"

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.template = b""

    def load(self, template: bytes, cids: list[bytes], cid_offset: int, flows: int = 0,
             flow_offset: int = 0) -> None:
        self.template = template
        self.traffic.load_cids(cids, cid_offset)
        self.traffic.set_flows(flows, flow_offset)

    def send(self, count: int) -> None:
        self.traffic.send(self.template, count)

    def close(self) -> None:
        self.traffic.set_flows(0, 0)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
SENDMMSG_BATCH = 1024


class PacketSender:
    """AF_PACKET with PACKET_QDISC_BYPASS on ``dev`` in ``ns``: every frame prepared in
    memory (one per CID, or per flow), sent by sendmmsg(2) SENDMMSG_BATCH at a time."""

    name = "AF_PACKET sendmmsg"

    def __init__(self, ns: str, dev: str) -> None:
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind((dev, 0))
        self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._buffer: ctypes.Array[ctypes.c_char] | None = None
        self._msgs: ctypes.Array[_Mmsghdr] | None = None
        self._next = 0

    def load(self, template: bytes, cids: list[bytes], cid_offset: int, flows: int = 0,
             flow_offset: int = 0) -> None:
        """Frame i carries cids[i % len(cids)] at ``cid_offset`` and, with ``flows``,
        i as 4 octets (native order, as the live-frames generator writes it) at
        ``flow_offset``; max(len(cids), flows) frames are prepared."""
        import numpy as np

        size, count = len(template), max(len(cids), flows or 1)
        frames = np.tile(np.frombuffer(template, np.uint8), (count, 1))
        table = np.frombuffer(b"".join(c[:20].ljust(20, b"\xaa") for c in cids),
                              np.uint8).reshape(len(cids), 20)
        width = min(20, size - cid_offset)
        frames[:, cid_offset:cid_offset + width] = table[np.arange(count) % len(cids), :width]
        if flows:
            number = (np.arange(count) % flows).astype("<u4").view(np.uint8).reshape(count, 4)
            frames[:, flow_offset:flow_offset + 4] = number
        self._buffer = ctypes.create_string_buffer(frames.tobytes(), count * size)
        base = ctypes.addressof(self._buffer)
        iovecs = (_Iovec * count)()
        msgs = (_Mmsghdr * count)()
        for i in range(count):
            iovecs[i].base, iovecs[i].len = base + i * size, size
            msgs[i].hdr.iov, msgs[i].hdr.iovlen = ctypes.addressof(iovecs[i]), 1
        self._iovecs, self._msgs, self._next = iovecs, msgs, 0

    def send(self, count: int) -> None:
        assert self._msgs is not None, "load() first"
        msgs, total, fd = self._msgs, len(self._msgs), self.sock.fileno()
        size = ctypes.sizeof(_Mmsghdr)
        left = count
        while left:
            n = min(left, SENDMMSG_BATCH, total - self._next)
            sent = _libc.sendmmsg(fd, ctypes.byref(msgs, self._next * size), n, 0)
            if sent < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                    continue
                raise OSError(err, f"sendmmsg: {os.strerror(err)}")
            left -= sent
            self._next = (self._next + sent) % total

    def close(self) -> None:
        self.sock.close()


def generator(traffic: Traffic, ns: str, dev: str) -> Generator:
    """The fastest generator this kernel allows: live frames, else AF_PACKET."""
    probe = bytes(60)
    ctx = struct.pack("<IIIIII", 0, len(probe), 0, traffic.ifindex, 0, 0)
    try:
        with inside(traffic.ns):
            traffic.gen.test_run(probe, repeat=1, ctx=ctx, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                                 batch_size=1)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return PacketSender(ns, dev)
    return LiveFrames(traffic)


class PacedStream:
    """``rate`` frames per second in bursts every millisecond, from a thread, through a
    raw socket on ``dev`` in namespace ``ns`` (cycling through ``frames``), until
    stopped or, with ``limit``, that many frames are sent (:meth:`wait`); ``sent``
    counts every frame the kernel took.

    A raw socket, not the live-frames generator: each BPF_PROG_TEST_RUN call costs tens
    of milliseconds of set-up, which only a long run amortises."""

    def __init__(self, ns: str, dev: str, frames: list[bytes], rate: int,
                 period: float = 0.001, limit: int | None = None) -> None:
        self.ns, self.dev, self.frames, self.period = ns, dev, frames, period
        self.burst = max(1, round(rate * period))
        self.limit = limit
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced stream", daemon=True)

    def start(self) -> PacedStream:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.sent

    def wait(self, timeout: float) -> int:
        """Until ``limit`` frames are sent (or ``timeout`` seconds); the frames sent."""
        self._thread.join(timeout)
        return self.stop()

    def _run(self) -> None:
        with inside(self.ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with sock:
            sock.bind((self.dev, 0))
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            frames, n, i = self.frames, len(self.frames), 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                for _ in range(self.burst):
                    if i == self.limit:
                        self.sent = i
                        return
                    sock.send(frames[i % n])
                    i += 1
                self.sent = i
                next_at += self.period
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
