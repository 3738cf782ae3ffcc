"""QUIC-LB CID decode throughput: reference (pure Python) vs the Cython/AES-NI fast path.

Runs in one process pinned to one CPU and prints a table of decodes per second per
mode. The fast path is measured through its batch entry point (``decode_batch``).

    python benchmarks/cid_decode.py [--cpu N] [--seconds S] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from pesigitg._fastpath import SERVER_ID_MAX, CidDecoder
from pesigitg.routing.quiclb import CidConfig

KEY = bytes.fromhex("8f95f09245765f80256934e50c66207f")

# (label, server_id_len, nonce_len, keyed): one row per mode the draft distinguishes.
CASES = [
    ("plaintext 3+4", 3, 4, False),
    ("single-pass 8+8", 8, 8, True),
    ("four-pass odd 3+4", 3, 4, True),
    ("four-pass even 6+6", 6, 6, True),
    ("four-pass odd 10+5 (4 rounds)", 10, 5, True),
    ("four-pass even 12+6 (4 rounds)", 12, 6, True),
]

SINGLE_PASS_TARGET = 20e6
FOUR_PASS_TARGET = 8e6


def make_cids(config: CidConfig, count: int) -> np.ndarray:
    rows = np.zeros((count, config.cid_len), dtype=np.uint8)
    for i in range(count):
        sid = os.urandom(config.server_id_len)
        nonce = os.urandom(config.nonce_len)
        rows[i] = np.frombuffer(config.encode(sid, nonce), dtype=np.uint8)
    return rows


def rate(fn: Callable[[], object], items_per_call: int, seconds: float) -> float:
    fn()  # warm up caches and branch predictors
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls * items_per_call / (now - start)


def bench_case(label: str, sid_len: int, nonce_len: int, keyed: bool, seconds: float,
               batch: int) -> tuple[str, str, float, float]:
    config = CidConfig(0, sid_len, nonce_len, KEY if keyed else None, encode_length=True)
    cids = make_cids(config, batch)
    decoder = CidDecoder([config])
    config_ids = np.empty(batch, dtype=np.int8)
    server_ids = np.empty((batch, SERVER_ID_MAX), dtype=np.uint8)

    def fast() -> None:
        decoder.decode_batch(cids, config_ids, server_ids)

    ref_cids = [bytes(row) for row in cids[:2000]]

    def reference() -> None:
        for cid in ref_cids:
            config.decode(cid)

    fast_rate = rate(fast, batch, seconds)
    if not (config_ids >= 0).all():
        raise SystemExit(f"{label}: the fast path failed to decode its own CIDs")
    ref_rate = rate(reference, len(ref_cids), min(seconds, 1.0))
    return label, config.mode, ref_rate, fast_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (default 0)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per fast-path case")
    parser.add_argument("--batch", type=int, default=4096, help="CIDs per decode_batch call")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})

    print(f"CID decode, one process pinned to CPU {args.cpu}, batch {args.batch}")
    print(f"{'case':32} {'mode':12} {'reference/s':>14} {'fast path/s':>14} {'speed-up':>9}")
    failures = []
    for case in CASES:
        label, mode, ref_rate, fast_rate = bench_case(*case, args.seconds, args.batch)
        print(f"{label:32} {mode:12} {ref_rate:14,.0f} {fast_rate:14,.0f} "
              f"{fast_rate / ref_rate:8.0f}x")
        target = {"single_pass": SINGLE_PASS_TARGET, "four_pass": FOUR_PASS_TARGET}.get(mode)
        if target and fast_rate < target:
            failures.append(f"{label}: {fast_rate / 1e6:.1f} M/s < target {target / 1e6:.0f} M/s")
    print("targets: single-pass >= 20 M/s, four-pass >= 8 M/s: "
          + ("met" if not failures else "MISSED: " + "; ".join(failures)))


if __name__ == "__main__":
    main()
