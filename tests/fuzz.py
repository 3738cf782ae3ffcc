"""The differential fuzzer: frames of every kind, mutated, through the fast path's
decision against the reference (pesigitg.routing.decision), and through the XDP
program under BPF_PROG_TEST_RUN against what the shared parser says its verdict must
be. Deterministic for a seed.

``make test`` runs a CI budget (tests/unit/test_fuzz.py); ``make fuzz`` the long form
against an AddressSanitizer build of the fast path:

    python -m tests.fuzz [--frames N] [--xdp N] [--seed S] [--fastpath ASAN_MODULE.so]

It prints the frames tried, crashes (a memory error aborts the run under ASan, which
then reports it) and mismatches, and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import ipaddress
import itertools
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


def _load_fastpath(path: str) -> None:
    """Use the fast path built at ``path`` (the ASan build) as pesigitg's."""
    name = "pesigitg._fastpath.fastpath"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)


@dataclass
class Tally:
    what: str
    tried: int = 0
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.tried / self.seconds if self.seconds else 0
        return (f"{self.what}: {self.tried} frames, {len(self.mismatches)} mismatches, "
                f"0 crashes ({self.seconds:.1f} s, {rate / 1000:.0f} k frames/s)")


def frames(count: int, seed: int) -> Iterator[bytes]:
    """``count`` frames: each seed whole and cut at every octet, then mutations of seeds
    picked at random (1-4 octets changed, a quarter of them cut short)."""
    from tests.corpus import mutations, seeds, truncations

    rng = random.Random(seed)
    pool = seeds()
    made = 0
    for frame in pool:
        for variant in (frame, *truncations(frame)):
            if made == count:
                return
            yield variant
            made += 1
    while made < count:
        for variant in mutations(rng.choice(pool), rng, min(256, count - made)):
            yield variant
            made += 1


def differential(count: int, seed: int, keep: int = 10) -> Tally:
    """Fast path against the reference decision, on every frame."""
    from pesigitg._fastpath import decide_frame
    from pesigitg.routing.decision import decide
    from tests.corpus import ROUTES

    tally = Tally("fast path vs reference decision")
    started = time.perf_counter()
    for frame in frames(count, seed):
        tally.tried += 1
        fast = decide_frame(ROUTES.table, frame)[:5]
        reference = decide(ROUTES, frame).as_tuple()
        if fast != reference:
            tally.mismatches.append(f"{frame.hex()}: fast {fast}, reference {reference}"
                                    if len(tally.mismatches) < keep else "")
    tally.seconds = time.perf_counter() - started
    return tally


def batched(count: int, seed: int, path: str, keep: int = 10) -> Tally:
    """The loop's batch function (keyed CIDs' AES together) on AES path ``path`` against
    the reference, in batches of 64 that mix every mode, key and kind of frame: the
    corpus shuffled, and a keyed CID of every config in each batch."""
    from pesigitg._fastpath import decide_frames_together, set_aes_path
    from pesigitg.routing.decision import decide
    from tests import frames as f
    from tests.corpus import CONFIGS, ROUTES, cid_for

    tally = Tally(f"batches on the {path} AES path vs reference decision")
    rng = random.Random(seed)
    keyed = [f.udp4_frame(f.quic_short(cid_for(c, 1 + n % 3, nonce=n)))
             for n, c in enumerate(CONFIGS * 2)]
    set_aes_path(path)
    started = time.perf_counter()
    corpus = frames(count, seed)
    try:
        while batch := list(itertools.islice(corpus, 64 - len(keyed))):
            batch += keyed
            rng.shuffle(batch)
            for frame_, fast in zip(batch, decide_frames_together(ROUTES.table, batch),
                                    strict=True):
                tally.tried += 1
                reference = decide(ROUTES, frame_).as_tuple()
                if fast[:5] != reference:
                    tally.mismatches.append(f"{frame_.hex()}: fast {fast[:5]}, reference "
                                            f"{reference}" if len(tally.mismatches) < keep
                                            else "")
    finally:
        set_aes_path(None)
    tally.seconds = time.perf_counter() - started
    return tally


def xdp(count: int, seed: int, keep: int = 10) -> Tally:
    """The XDP program's verdicts against the shared parser's (root), half of them with
    the VIP filter on."""
    from pesigitg.daemon.steering import Steering
    from tests.corpus import PORTS, VIP4, VIP6, expected_verdict

    tally = Tally("XDP program under BPF_PROG_TEST_RUN vs shared parser")
    program = Steering.load()
    try:
        program.set_ports(PORTS)
        started = time.perf_counter()
        for vips in ([], [VIP4, VIP6]):
            program.set_vips(vips)
            wanted = {ipaddress.ip_address(v) for v in vips}
            for frame in frames(count // 2, seed + len(vips)):
                if len(frame) < 14:
                    continue            # BPF_PROG_TEST_RUN refuses runts
                tally.tried += 1
                before = program.counters()
                program.test_run(frame)
                after = program.counters()
                got = [k for k in after if after[k] != before[k]]
                want = expected_verdict(frame, wanted)
                if got != [want]:
                    tally.mismatches.append(f"{frame.hex()}: XDP {got}, expected {want}"
                                            if len(tally.mismatches) < keep else "")
        tally.seconds = time.perf_counter() - started
    finally:
        program.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--frames", type=int, default=20_000_000,
                        help="frames through both decisions (default 20 000 000)")
    parser.add_argument("--xdp", type=int, default=1_000_000,
                        help="frames through the XDP program, 0 to skip (needs root)")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--fastpath", help="a fast path module to test instead of the "
                                           "installed one (make fuzz: the ASan build)")
    args = parser.parse_args(argv)
    if args.fastpath:
        _load_fastpath(args.fastpath)
    from pesigitg._fastpath import aes_paths_available, fastpath

    print(f"fuzzing the fast path in {fastpath.__file__}, seed {args.seed}", flush=True)
    tallies = [differential(args.frames, args.seed)]
    print(tallies[-1].line(), flush=True)
    for path in aes_paths_available():
        tallies.append(batched(args.frames // 4, args.seed + 2, path))
        print(tallies[-1].line(), flush=True)
    if args.xdp:
        tallies.append(xdp(args.xdp, args.seed + 1))
        print(tallies[-1].line(), flush=True)
    failed = False
    for tally in tallies:
        for mismatch in (m for m in tally.mismatches if m):
            print(f"MISMATCH {tally.what}: {mismatch}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
