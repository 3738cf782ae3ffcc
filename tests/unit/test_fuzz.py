"""The differential fuzz at a CI budget (``make fuzz`` runs the long form)."""

from __future__ import annotations

import pytest

from tests.conftest import aes_paths
from tests.fuzz import batched, differential


def test_the_fast_path_decides_every_fuzzed_frame_as_the_reference_does():
    tally = differential(200_000, seed=20261126)
    assert tally.tried == 200_000
    assert not tally.mismatches, [m for m in tally.mismatches if m]


@pytest.mark.parametrize("path", aes_paths())
def test_batches_mixing_every_mode_decide_as_the_reference_does_on_every_aes_path(path):
    tally = batched(50_000, seed=20261208, path=path)
    assert tally.tried > 50_000
    assert not tally.mismatches, [m for m in tally.mismatches if m]


def test_every_hostile_worker_input_is_refused_and_counted_or_taken_as_the_format_says():
    from tests.fuzz_trust import FUZZERS

    for n, fuzzer in enumerate(FUZZERS):
        tally = fuzzer(20_000, seed=20261207 + n)
        assert tally.tried == 20_000 and 0 < tally.refused < tally.tried, tally.line()
        assert not tally.mismatches, tally.mismatches
