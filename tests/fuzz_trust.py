"""Fuzzing the supervisor's side of what a worker can write: its pipe, the UMEM's state
page (with the rings' indices) and the counters' header. Deterministic for a seed.

Each input is a mutation of something valid. The supervisor's own code decides it
(WorkerPool.receive, pes_xsk_sanitize through sanitize_state_page, check_geometry,
read_header) and an independent oracle here, written from the documented formats,
says what it must decide: accepted as it is, or refused (and counted). Any other
exception is a crash.

``make test`` runs a CI budget (tests/unit/test_fuzz.py); ``make fuzz`` a million of
each (``python -m tests.fuzz_trust --inputs N``), under AddressSanitizer for the
state page's C.
"""

from __future__ import annotations

import argparse
import logging
import random
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fuzz import _load_fastpath

MUTATIONS = ("flip", "set", "cut", "extend", "splice")


@dataclass
class Tally:
    what: str
    tried: int = 0
    refused: int = 0
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.what}: {self.tried} inputs, {self.refused} refused and counted, "
                f"{len(self.mismatches)} mismatches, 0 crashes ({self.seconds:.1f} s)")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flipped bits, set octets, a cut, an extension, a splice."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(MUTATIONS)
        at = rng.randrange(len(out) + 1)
        if kind == "flip" and out:
            at = min(at, len(out) - 1)
            out[at] ^= 1 << rng.randrange(8)
        elif kind == "set" and out:
            at = min(at, len(out) - 1)
            out[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif kind == "cut":
            del out[at:]
        elif kind == "extend":
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == "splice" and out:
            a = rng.randrange(len(out))
            out[at:at] = out[a:a + rng.randint(1, 8)]
    return bytes(out)


def _run(tally: Tally, count: int, one: Callable[[int], bool | None], keep: int) -> Tally:
    """``one(i)``: True refused, False accepted, None a mismatch already noted."""
    started = time.perf_counter()
    for i in range(count):
        tally.tried += 1
        tally.refused += bool(one(i))
    tally.seconds = time.perf_counter() - started
    del tally.mismatches[keep:]
    return tally


# -- the worker pipe -------------------------------------------------------------------

_HEAD = struct.Struct("<BI")


def pipe_oracle(stream: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """From the format alone (daemon/worker_messages.py, the pool's turn rules, one
    table sent): the messages a supervisor carries out, and whether it then refuses."""
    sizes = {3: (7, 7), 4: (0, 512), 5: (0, 0), 6: (0, 512)}       # READY FAILED ...
    done: list[tuple[int, bytes]] = []
    said_ready, tables = False, 1
    pos = 0
    while len(stream) - pos >= 5:
        kind, length = _HEAD.unpack_from(stream, pos)
        if kind not in sizes or not sizes[kind][0] <= length <= sizes[kind][1]:
            return done, True
        if len(stream) - pos - 5 < length:
            return done, False                              # waits for the rest
        body = stream[pos + 5:pos + 5 + length]
        if kind in (3, 4):
            if said_ready:
                return done, True
            said_ready = True
            if kind == 3:
                zero_copy, cpu, recovered, repaired = struct.unpack("<BiBB", body)
                if zero_copy > 1 or recovered > 1 or not -1 <= cpu <= 65535 or repaired > 7:
                    return done, True
        elif not said_ready or tables == 0:
            return done, True
        else:
            tables -= 1
        done.append((kind, body))
        pos += 5 + length
    return done, False


def pipe_streams(seed: int) -> Callable[[random.Random], bytes]:
    from pesigitg.daemon import worker_messages as wire

    def valid(rng: random.Random) -> bytes:
        first = rng.choice([wire.ready(rng.choice(("copy", "zero-copy")),
                                       rng.choice((None, 0, 1, 65535)), rng.random() < .5,
                                       rng.randrange(8)),
                            wire.failed(rng.choice(("", "no queue", "é\n\x00" * 40)))])
        rest = [rng.choice([wire.encode(wire.Kind.SWAPPED), wire.rejected("bad table")])
                for _ in range(rng.randint(0, 2))]
        return first + b"".join(rest)
    return valid


def pipe(count: int, seed: int, keep: int = 10) -> Tally:
    """WorkerPool.receive against the oracle, the stream fed in random chunks."""
    from pesigitg.daemon.worker import WorkerProcess, WorkerSpec
    from pesigitg.daemon.workers import WorkerHandle, WorkerPool

    class Pool(WorkerPool):
        def _refuse(self, handle: WorkerHandle, why: str) -> None:
            handle.refused += 1

    rng = random.Random(seed)
    valid = pipe_streams(seed)
    tally = Tally("worker pipe: WorkerPool.receive vs the format")
    logging.disable(logging.CRITICAL)
    from pesigitg.daemon import worker_messages as wire

    def one(i: int) -> bool | None:
        stream = valid(rng) if i % 8 == 0 else mutate(valid(rng), rng)
        pool = Pool([], None, lambda: b"table")  # type: ignore[arg-type]
        handle = WorkerHandle(WorkerSpec(0, "fuzz", 0, None), None)  # type: ignore[arg-type]
        handle.process = WorkerProcess(-1, -1, None)  # type: ignore[arg-type]
        handle.reader, handle.blob, handle.tables_unanswered = wire.MessageReader(), \
            b"table", 1
        got: list[tuple[int, bytes]] = []
        for kind in pool.replies:
            pool.replies[kind] = (lambda h, m: got.append((m.kind, m.body)))
        replies = pool.replies
        ready = replies[wire.Kind.READY]
        def ready_checked(h: WorkerHandle, m: wire.Message) -> None:
            m.ready()                   # the values are checked, then handled
            ready(h, m)

        replies[wire.Kind.READY] = ready_checked
        at = 0
        while at < len(stream) and not handle.refused:
            step = rng.randint(1, 16)
            pool.receive(handle, stream[at:at + step])
            at += step
        want, refuse = pipe_oracle(stream)
        if (got, bool(handle.refused)) != (want, refuse):
            tally.mismatches.append(f"{stream.hex()}: supervisor {got} refused="
                                    f"{bool(handle.refused)}, format {want} refused={refuse}")
            return None
        return refuse

    try:
        return _run(tally, count, one, keep)
    finally:
        logging.disable(logging.NOTSET)


# -- the state page and the rings ------------------------------------------------------

FRAMES = 4096
RINGS = {"fill": 4096, "tx": 2048, "rx": 4096, "comp": 4096}
_STATE = struct.Struct("<16I5I")       # the page's fields before the stash arrays
STASH_TARGET = min(FRAMES // 16, 256)


def _page(fields: list[int], stash: list[list[int]]) -> bytes:
    arrays = b"".join(struct.pack("<256I", *(s + [0] * (256 - len(s)))) for s in stash)
    return (_STATE.pack(*fields) + arrays).ljust(4096, b"\0")


def state_oracle(page: bytes, rings: dict[str, tuple[int, int, int]], target: bool = True
                 ) -> bool:
    """Whether a new owner may take page and rings as they are (the rules of
    includes/xskring.h, restated); ``target``: the stash target must be the owner's (a
    new owner writes it without counting a repair)."""
    f = struct.unpack_from("<21I", page)
    seq, fill_prod, tx_prod, rx_cons, comp_cons = f[11:16]
    stash_target, which, count, j_which, j_count = f[16:21]
    stash = [list(struct.unpack_from("<256I", page, _STATE.size + 1024 * a)) for a in (0, 1)]

    def fits(ahead: int, behind: int, size: int) -> bool:
        return (ahead - behind) % (1 << 32) <= size

    def stash_ok(frames: list[int]) -> bool:
        return all(n < FRAMES for n in frames) and len(set(frames)) == len(frames)

    ok = stash_target == STASH_TARGET or not target
    if seq & 1:
        ok = ok and fits(fill_prod, rings["fill"][1], RINGS["fill"]) and \
            fits(tx_prod, rings["tx"][1], RINGS["tx"]) and \
            fits(rings["rx"][0], rx_cons, RINGS["rx"]) and \
            fits(rings["comp"][0], comp_cons, RINGS["comp"]) and j_which <= 1 and \
            j_count <= STASH_TARGET and stash_ok(stash[j_which & 1][:j_count])
    else:
        ok = ok and which <= 1 and count <= STASH_TARGET and \
            stash_ok(stash[which & 1][:count])
    return ok and all(fits(p, c, s) for p, c, s in rings.values())


def state_inputs(rng: random.Random) -> tuple[bytes, dict[str, tuple[int, int, int]]]:
    """A page and rings as a worker leaves them, mostly sane."""
    start, step = rng.randrange(FRAMES), rng.randrange(1, FRAMES, 2)   # distinct frames
    frames = [(start + k * step) % FRAMES for k in range(2 * STASH_TARGET)]
    count = rng.randint(0, STASH_TARGET)
    base = rng.randrange(1 << 32)
    rings = {name: ((base + rng.randint(0, size)) % (1 << 32), base, size)
             for name, size in RINGS.items()}
    seq = rng.randrange(1 << 31) * 2 + (rng.random() < 0.3)
    fields = [0x53584550, 2, 2048, FRAMES, 4096, 2048, 4096, 4096, 3, 0, 0, seq,
              rings["fill"][0], rings["tx"][0], rings["rx"][1], rings["comp"][1],
              STASH_TARGET, rng.randrange(2), count, rng.randrange(2), count]
    return _page(fields, [frames[:STASH_TARGET], frames[STASH_TARGET:]]), rings


def state(count: int, seed: int, keep: int = 10) -> Tally:
    """pes_xsk_sanitize against the oracle; after it, every page and ring is sane."""
    from pesigitg._fastpath import (
        GEOMETRY,
        check_geometry,
        sanitize_state_page,
        state_page_geometry,
    )

    rng = random.Random(seed)
    tally = Tally("UMEM state page: pes_xsk_sanitize, check_geometry vs the layout")

    def one(i: int) -> bool | None:
        page, rings = state_inputs(rng)
        if i % 4:
            page = mutate(page, rng)[:4096].ljust(4096, b"\0")
        if i % 3 == 0:
            name = rng.choice(list(rings))
            producer, consumer, size = rings[name]
            rings[name] = (rng.choice((producer, rng.randrange(1 << 32))),
                           rng.choice((consumer, rng.randrange(1 << 32))), size)
        want_ok = state_oracle(page, rings, target=False)
        bits, after, rings_after = sanitize_state_page(page, FRAMES, rings)
        problems = []
        if (bits == 0) != want_ok:
            problems.append(f"repaired {bits}, oracle {'sane' if want_ok else 'insane'}")
        if not state_oracle(after, rings_after):
            problems.append("still insane after sanitizing")
        g = state_page_geometry(page)
        sane = g["frame_size"] in (2048, 4096) and all(
            0 < g[r] <= 1 << 20 and g[r] & (g[r] - 1) == 0
            for r in ("rx_size", "tx_size", "fill_size", "comp_size")) and \
            1 <= g["frame_count"] <= g["fill_size"] and \
            g["frame_count"] * g["frame_size"] == FRAMES * 2048 and \
            g["queue"] < 256 and 0 < g["ifindex"] < 1 << 31 and g["zero_copy"] in (0, 1)
        if (check_geometry(g, FRAMES * 2048) is None) != sane or set(g) != set(GEOMETRY):
            problems.append(f"geometry {g}: check_geometry disagrees")
        if problems:
            tally.mismatches.append(f"{page[:84].hex()} rings {rings}: {'; '.join(problems)}")
            return None
        return bits != 0 or not sane

    return _run(tally, count, one, keep)


# -- the counters' header --------------------------------------------------------------

def header_oracle(head: bytes) -> bool:
    magic, workers, length = struct.unpack_from("<8sII", head)
    if magic not in (b"PESCNT01", b"PESCNT02") or not 1 <= workers <= 256 \
            or not 0 < length <= 4096 - 16:
        return False
    raw = head[16:16 + length]
    if any(b > 0x7F for b in raw):
        return False
    names = raw.decode("ascii").split("\n")
    ident = all(n and n[0].islower() and n[0].isalpha() and len(n) <= 64 and
                all(c.isdigit() or c == "_" or (c.islower() and c.isalpha() and c.isascii())
                    for c in n) for n in names)
    return ident and len(set(names)) == len(names)


def header(count: int, seed: int, keep: int = 10) -> Tally:
    """read_header against the oracle."""
    from pesigitg._fastpath import COUNTER_NAMES
    from pesigitg.daemon.counters import CountersDamaged, read_header

    rng = random.Random(seed)
    names = "\n".join(COUNTER_NAMES).encode()
    valid = (struct.pack("<8sII", b"PESCNT02", 2, len(names)) + names).ljust(4096, b"\0")
    tally = Tally("counters header: read_header vs the layout")

    def one(i: int) -> bool | None:
        head = valid if i % 16 == 0 else mutate(valid[:16 + len(names) + 8], rng)
        head = head[:4096].ljust(4096, b"\0")
        want = header_oracle(head)
        try:
            read_header(head)
            got = True
        except CountersDamaged:
            got = False
        if got != want:
            tally.mismatches.append(f"{head[:64].hex()}: read_header {got}, oracle {want}")
            return None
        return not got

    return _run(tally, count, one, keep)


FUZZERS = (pipe, state, header)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_trust", description=__doc__)
    parser.add_argument("--inputs", type=int, default=1_000_000,
                        help="inputs per fuzzer (default 1 000 000)")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--fastpath", help="a fast path module to test instead of the "
                                           "installed one (make fuzz: the ASan build)")
    args = parser.parse_args(argv)
    if args.fastpath:
        _load_fastpath(args.fastpath)
    failed = False
    for n, fuzzer in enumerate(FUZZERS):
        tally = fuzzer(args.inputs, args.seed + n)
        print(tally.line(), flush=True)
        for mismatch in tally.mismatches:
            print(f"MISMATCH {tally.what}: {mismatch}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
