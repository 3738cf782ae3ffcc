"""Maglev consistent hashing (Eisenbud et al., NSDI 2016): backend permutations and the
lookup table, a deterministic function of the backend names and the table size, so
several load balancers behind ECMP fill identical tables without sharing state."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pesigitg._fastpath import maglev_fill

__all__ = ["DEFAULT_MAGLEV_SIZE", "is_prime", "maglev_params", "maglev_table"]

DEFAULT_MAGLEV_SIZE = 65537


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def maglev_params(name: str, size: int) -> tuple[int, int]:
    """(offset, skip) of a backend's permutation: keyed by name only, never by process."""
    def h(person: bytes) -> int:
        digest = hashlib.blake2b(name.encode(), digest_size=8, person=person).digest()
        return int.from_bytes(digest, "little")
    return h(b"pesigitg-offset") % size, h(b"pesigitg-skip") % (size - 1) + 1


def maglev_table(names: Sequence[str], size: int = DEFAULT_MAGLEV_SIZE) -> list[int]:
    """Maglev lookup table over ``names`` (indices into it; BACKEND_NONE if empty)."""
    if not is_prime(size):
        raise ValueError(f"Maglev table size {size} is not a prime")
    params = [maglev_params(name, size) for name in names]
    raw = maglev_fill([p[0] for p in params], [p[1] for p in params], size)
    return list(memoryview(raw).cast("H"))
