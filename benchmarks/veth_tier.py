"""Part two of veth_forward.py: the kernel tier against the XDP_TX MAC swap and the
workers' AF_XDP path, each on one forwarding core (veth_lab.one_forwarding_core), in
rounds; compared by what a frame costs that core."""

from __future__ import annotations

import argparse

from veth_cases import (
    FOUR_PASS,
    PLAINTEXT,
    SINGLE_PASS,
    XDP_SWAP,
    EngineCase,
    engine_case,
    swap_case,
)
from veth_lab import BOUND, Lab, Result

__all__ = ["report_tier", "tier_cases"]

TIER = "QUIC-LB plaintext, kernel tier (XDP_TX)"
PLAIN_AF_XDP = "QUIC-LB plaintext, workers (AF_XDP)"
TIER_SINGLE = "QUIC-LB single-pass, kernel tier (XDP_TX)"
SINGLE_AF_XDP = "QUIC-LB single-pass, workers (AF_XDP)"
TIER_FOUR = "QUIC-LB four-pass, kernel tier (XDP_TX)"
FOUR_AF_XDP = "QUIC-LB four-pass, workers (AF_XDP)"


def tier_cases(lab: Lab, args: argparse.Namespace) -> list[list[Result]]:
    """Part two (one forwarding core): the MAC swap, the kernel tier and the workers, in
    turn, ``args.rounds`` times (the generator's rate wanders from run to run)."""
    rounds = []
    for n in range(1, args.rounds + 1):
        print(f"one core, round {n}: {XDP_SWAP} ...", flush=True)
        results = [swap_case(lab, args.frames // 2)]
        for case in (EngineCase(TIER, PLAINTEXT, tier=True), EngineCase(PLAIN_AF_XDP, PLAINTEXT),
                     EngineCase(TIER_SINGLE, SINGLE_PASS, tier=True),
                     EngineCase(SINGLE_AF_XDP, SINGLE_PASS),
                     EngineCase(TIER_FOUR, FOUR_PASS, tier=True),
                     EngineCase(FOUR_AF_XDP, FOUR_PASS)):
            print(f"one core, round {n}: {case.name} ...", flush=True)
            results.append(engine_case(lab, case, args.frames // 2))
        rounds.append(results)
    return rounds


def report_tier(rounds: list[list[Result]], top: float) -> None:
    """Mpps as the generator allowed, and what each frame cost the forwarding core: its
    busy time (/proc/stat) over the frames forwarded. The second is the comparison when
    a case is generator-bound: 1000 / ns is what one core would forward, fully busy.
    A core forwarding fewer frames a second batches less and pays more per frame, and
    the generator's rate wanders: each case's best round counts, as xdp_cost.py takes
    the best of its rounds."""
    print(f"\nkernel tier, one forwarding core (the worker's CPU: l0's receive thread, the "
          f"XDP program, the worker, and the sink's receive of what comes back); generator "
          f"ceiling in this setting {top:.3f} Mpps; {len(rounds)} rounds, the cases in turn. "
          "Every frame taken at 0.9x that rate or more: generator-bound (*)")
    print(f"{'case':44} {'Mpps, each round':>26} {'core ns/frame, each round':>27} "
          f"{'Mpps/core (best)':>17}")
    best: dict[str, float] = {}
    for i, first in enumerate(rounds[0]):
        row = [r[i] for r in rounds]
        mpps = " ".join(f"{r.mpps:6.3f}" + ("*" if r.taken >= BOUND and r.mpps >= 0.9 * top
                                             else " ") for r in row)
        cost = " ".join(f"{r.core_ns:6.0f}" for r in row)
        best[first.case] = min(r.core_ns for r in row)
        print(f"{first.case:44} {mpps:>26} {cost:>27} {1000 / best[first.case]:17.3f}")
    for r in rounds[-1]:
        if r.note:
            print(f"  last round, {r.case}: {r.note}")

    def ratio(a: str, b: str) -> str:
        """Per core: b's core time per frame over a's, best rounds (and each round's)."""
        each = [by[b] / by[a] for by in ({r.case: r.core_ns for r in x} for x in rounds)
                if by[a]]
        return f"{best[b] / best[a]:.2f}x (round by round: " + \
            ", ".join(f"{v:.2f}" for v in each) + ")"
    print("per core (core ns per frame, each case's best round):")
    print(f"  single-pass in XDP (the kernel's AES): {ratio(TIER_SINGLE, SINGLE_AF_XDP)} the "
          "workers' AF_XDP path (target >= 1.3x)")
    print(f"  four-pass in XDP (3 kernel AES calls): {ratio(TIER_FOUR, FOUR_AF_XDP)} the "
          "workers' AF_XDP path")
    print(f"  plaintext in XDP: {ratio(TIER, XDP_SWAP)} the XDP_TX MAC swap (target >= 0.9x); "
          f"{ratio(TIER, PLAIN_AF_XDP)} the workers' AF_XDP path")
