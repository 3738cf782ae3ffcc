"""Traffic for tests and benchmarks: generators and a counting sink in XDP.

``Traffic.send`` is BPF_PROG_TEST_RUN in live-frames mode (through our own loader):
each repetition writes the next CID of a table into the frame and sends it out of the
generator's veth (XDP_TX), as fast as it goes. ``PacedStream`` sends at a fixed rate
in small bursts. The sink, an XDP program on the same veth, counts what comes back by
the destination MAC and drops it, so loss is counted exactly: frames sent against
frames counted at the sink.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from pesigitg.ebpf import LoadedObject, load_object
from pesigitg.ebpf.attach import XDP_FLAGS_DRV_MODE, set_xdp
from pesigitg.ebpf.btf import Kind
from pesigitg.ebpf.program import BPF_F_TEST_XDP_LIVE_FRAMES
from pesigitg.testing.netns import inside

__all__ = ["PacedStream", "Traffic", "compile_traffic"]

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
