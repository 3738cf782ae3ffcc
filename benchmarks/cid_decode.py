"""QUIC-LB CID decode throughput: reference (pure Python) vs the Cython fast path, the
keyed modes on every AES path this CPU has (scalar: one CID at a time; aesni: 8
interleaved; vaes: 16, 4 per instruction).

Runs in one process pinned to one CPU and prints decodes per second per mode and path,
through the batch entry point (``decode_batch``). Targets are ratios measured in the
same run, since absolute rates change from machine to machine.

    python benchmarks/cid_decode.py [--cpu N] [--seconds S] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from pesigitg._fastpath import SERVER_ID_MAX, CidDecoder, aes_paths_available, set_aes_path
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

# Per CID on the fastest path, at most this many times plaintext's cost (a copy), and
# four-pass at least this many times faster than the scalar path.
KEYED_VS_PLAINTEXT = 8.0
FOUR_PASS_VS_SCALAR = 3.0


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
               batch: int) -> tuple[str, float, dict[str, float]]:
    """The case's reference rate and its fast-path rate on each AES path."""
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

    rates = {}
    for path in aes_paths_available() if keyed else ("scalar",):
        set_aes_path(path)
        rates[path] = rate(fast, batch, seconds)
        if not (config_ids >= 0).all():
            raise SystemExit(f"{label}: the {path} path failed to decode its own CIDs")
    set_aes_path(None)
    return config.mode, rate(reference, len(ref_cids), min(seconds, 1.0)), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (default 0)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per fast-path case")
    parser.add_argument("--batch", type=int, default=4096, help="CIDs per decode_batch call")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})

    paths = aes_paths_available()
    print(f"CID decode, one process pinned to CPU {args.cpu}, batch {args.batch}, "
          f"millions of CIDs per second per AES path")
    print(f"{'case':32} {'reference':>10} " + " ".join(f"{p:>8}" for p in paths)
          + f" {'x plaintext':>12}")
    failures = []
    plaintext = 0.0
    for case in CASES:
        mode, ref_rate, rates = bench_case(*case, args.seconds, args.batch)
        best = max(rates.values())
        plaintext = plaintext or best
        cost = plaintext / best
        print(f"{case[0]:32} {ref_rate / 1e6:10.2f} "
              + " ".join(f"{rates[p] / 1e6:8.1f}" if p in rates else f"{'':8}" for p in paths)
              + f" {cost:11.1f}x")
        if mode != "plaintext" and cost > KEYED_VS_PLAINTEXT:
            failures.append(f"{case[0]}: {cost:.1f}x plaintext > {KEYED_VS_PLAINTEXT:.0f}x")
        if mode == "four_pass" and best < FOUR_PASS_VS_SCALAR * rates["scalar"]:
            failures.append(f"{case[0]}: {best / rates['scalar']:.1f}x the scalar path "
                            f"< {FOUR_PASS_VS_SCALAR:.0f}x")
    print(f"targets: keyed <= {KEYED_VS_PLAINTEXT:.0f}x plaintext per CID, four-pass >= "
          f"{FOUR_PASS_VS_SCALAR:.0f}x the scalar path: "
          + ("met" if not failures else "MISSED: " + "; ".join(failures)))


if __name__ == "__main__":
    main()
