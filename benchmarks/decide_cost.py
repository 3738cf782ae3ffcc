"""Per-packet cost of the routing decision: ns per frame for parse + CID decode + decide +
rewrite, in process, over a batch of realistic frames, per mode, and its ratio to
plaintext's cost in the same run.

The frames sit one per 2048 octets like UMEM chunks; decide_batch runs them, in batches
of 64, through the forwarding loop's own batch function (batch.pxi: the keyed CIDs'
AES together), without the GIL, on one pinned CPU. The AES path is the fastest this
CPU has unless PESIGITG_AES_PATH forces one.

    python benchmarks/decide_cost.py [--cpu N] [--seconds S] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pesigitg._fastpath import FlowTable, aes_path, decide_batch  # noqa: E402
from pesigitg.routing.quiclb import CidConfig  # noqa: E402
from pesigitg.routing.route_config import TableOptions  # noqa: E402
from pesigitg.routing.routes import Backend, Server, compile_routes  # noqa: E402
from tests import frames as f  # noqa: E402

KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")
HASH_KEY = bytes.fromhex("5b0e6a1f9c2d48e7b3a4f6c8d0e1a2b3")
STRIDE = 2048
BACKENDS = 16

# (label, config or None, frame kind): kinds are "short" (1-RTT, CID-routed), "long"
# (Initial with a client-chosen DCID: Maglev on the DCID) and "unroutable" (short
# header whose config id is not configured: Maglev on the 4-tuple); "+keyed": with
# lb.toml's [fallback] hash_key (SipHash-2-4 instead of FNV-1a).
CASES = [
    ("plaintext 3+4, short header", CidConfig(0, 3, 4), "short"),
    ("single-pass 8+8, short header", CidConfig(0, 8, 8, KEY), "short"),
    ("four-pass 3+4 (3 rounds), short header", CidConfig(0, 3, 4, KEY), "short"),
    ("four-pass 10+5 (4 rounds), short header", CidConfig(0, 10, 5, KEY), "short"),
    ("four-pass 3+4, IPv6 short header", CidConfig(0, 3, 4, KEY), "short6"),
    ("Initial, client DCID (Maglev)", CidConfig(0, 3, 4, KEY), "long"),
    ("unroutable short header (Maglev)", CidConfig(0, 3, 4, KEY), "unroutable"),
    ("Initial, client DCID (Maglev, hash_key)", CidConfig(0, 3, 4, KEY), "long+keyed"),
    ("unroutable short header (Maglev, hash_key)", CidConfig(0, 3, 4, KEY), "unroutable+keyed"),
    # The flow table at its working set: 1 M client addresses, each frame another one.
    ("unroutable, 1M flows, no flow table", CidConfig(0, 3, 4, KEY), "flows"),
    ("unroutable, 1M flows, 1M-entry flow table", CidConfig(0, 3, 4, KEY), "flows+table"),
]
FLOWS = 1_000_000
# Keyed cases (labels starting so) cost at most this many times plaintext's ns/packet.
KEYED_VS_PLAINTEXT = 1.5
KEYED = ("single-pass 8+8, short", "four-pass 3+4 (3 rounds)", "four-pass 10+5 (4 rounds)")


def frames_for(config: CidConfig, kind: str, count: int) -> tuple[bytearray, array]:
    buf = bytearray(STRIDE * count)
    lengths = array("I")
    for i in range(count):
        sid = bytes([1 + i % BACKENDS]) * config.server_id_len
        cid = config.encode(sid, os.urandom(config.nonce_len))
        sport = 1024 + i
        if kind == "short":
            frame = f.udp4_frame(f.quic_short(cid, os.urandom(1100)), sport=sport)
        elif kind == "short6":
            frame = f.udp6_frame(f.quic_short(cid, os.urandom(1100)), sport=sport)
        elif kind == "long":
            frame = f.udp4_frame(f.quic_long(os.urandom(8), payload=os.urandom(1150)),
                                 sport=sport)
        else:       # unroutable, flows
            frame = f.udp4_frame(f.quic_short(bytes([0xE0]) + os.urandom(7),
                                              os.urandom(1100)), sport=sport)
        buf[i * STRIDE:i * STRIDE + len(frame)] = frame
        lengths.append(len(frame))
    return buf, lengths


def measure(label: str, config: CidConfig, kind: str, batch: int, seconds: float) -> float:
    backends = [Backend(f"10.1.0.{n}", bytes([2, 0, 0, 0, 0, n])) for n in range(1, BACKENDS + 1)]
    servers = [Server(0, bytes([n]) * config.server_id_len, f"10.1.0.{n}")
               for n in range(1, BACKENDS + 1)]
    keyed = kind.endswith("+keyed")
    kind = kind.removesuffix("+keyed")
    routes = compile_routes(bytes(6), [config], backends, servers,
                            TableOptions(hash_key=HASH_KEY if keyed else None))
    buf, lengths = frames_for(config, kind, batch)
    view = memoryview(buf)
    flows = FlowTable(FLOWS) if kind == "flows+table" else None
    distinct = FLOWS if kind.startswith("flows") else 0
    # Warm up (with flows: every flow seen once, so the table holds the working set).
    decide_batch(routes.table, view, lengths, STRIDE, max(20, FLOWS // batch + 1 if distinct
                                                         else 0), flows=flows,
                 distinct=distinct)
    repeat = 50
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        forwarded = decide_batch(routes.table, view, lengths, STRIDE, repeat, flows=flows,
                                 distinct=distinct)
        elapsed = time.perf_counter_ns() - start
        if forwarded != batch * repeat:
            raise SystemExit(f"{label}: {forwarded} of {batch * repeat} frames forwarded")
        best = min(best, elapsed / (batch * repeat))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.0, help="per case")
    parser.add_argument("--batch", type=int, default=1024, help="frames per batch")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    print(f"per-packet cost, {args.batch} frames of ~1150 octets, CPU {args.cpu}, "
          f"best of {args.seconds:.1f} s per case, AES path {aes_path()}")
    print(f"{'case':44} {'ns/packet':>10} {'x plaintext':>12}")
    plaintext = 0.0
    failures = []
    for label, config, kind in CASES:
        cost = measure(label, config, kind, args.batch, args.seconds)
        plaintext = plaintext or cost
        print(f"{label:44} {cost:10.1f} {cost / plaintext:11.2f}x")
        if label.startswith(KEYED) and cost > KEYED_VS_PLAINTEXT * plaintext:
            failures.append(f"{label}: {cost / plaintext:.2f}x")
    print(f"target: single-pass and four-pass <= {KEYED_VS_PLAINTEXT}x plaintext: "
          + ("met" if not failures else "MISSED: " + "; ".join(failures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
