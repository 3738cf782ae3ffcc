"""The differential fuzz at a CI budget (``make fuzz`` runs the long form)."""

from __future__ import annotations

from tests.fuzz import differential


def test_the_fast_path_decides_every_fuzzed_frame_as_the_reference_does():
    tally = differential(200_000, seed=20261126)
    assert tally.tried == 200_000
    assert not tally.mismatches, [m for m in tally.mismatches if m]
