"""fisher-scan: symmetric displacements, round-robin interleaving, B frames and frame counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from acquisition.protocols import expand

DMD = (768, 1024)


def test_offsets_symmetric_about_reference() -> None:
    plan = expand("fisher-scan", {"offsets_px": [4, 1, 2], "frames_per_position": 3}, DMD)
    f = [e for e in plan.events if e.role == "F"]
    pairs = Counter((e.extra["axis"], e.extra["offset_px"]) for e in f)
    assert set(pairs) == {("ref", 0)} | {(a, s * k) for a in "xy" for k in (1, 2, 4) for s in (-1, 1)}
    assert set(pairs.values()) == {3}  # every position equally often
    cx, cy = DMD[1] // 2, DMD[0] // 2
    for e in f:
        dx = e.extra["offset_px"] if e.extra["axis"] == "x" else 0
        dy = e.extra["offset_px"] if e.extra["axis"] == "y" else 0
        assert (e.target_x_px, e.target_y_px) == (cx + dx, cy + dy)
        img = plan.patterns.pattern(e.pattern_id)
        rows, cols = np.nonzero(img)
        assert len(rows) == 25 and (cols.mean(), rows.mean()) == (cx + dx, cy + dy)
    offsets = plan.ground_truth["offsets_px"]
    assert offsets.sum() == 0


def test_round_robin_with_interleaved_background() -> None:
    plan = expand("fisher-scan", {"offsets_px": [1], "axes": ["x"], "frames_per_position": 2}, DMD)
    roles = [e.role for e in plan.events]
    assert roles == ["B", "F"] * 6
    assert [e.extra["offset_px"] for e in plan.events if e.role == "F"] == [0, -1, 1, 0, -1, 1]
    assert all(not plan.patterns.pattern(e.pattern_id).any() for e in plan.events if e.role == "B")


def test_background_ratio_and_no_background() -> None:
    plan = expand("fisher-scan", {"background_ratio": 3, "frames": 12}, DMD)
    assert "".join(e.role for e in plan.events) == "BFFF" * 3
    plan = expand("fisher-scan", {"background_ratio": 0, "frames": 5}, DMD)
    assert {e.role for e in plan.events} == {"F"}


def test_shuffled_cycles_are_permutations() -> None:
    plan = expand("fisher-scan", {"shuffle": True, "background_ratio": 0, "frames_per_position": 4}, DMD)
    ids = [e.pattern_id for e in plan.events]
    for c in range(4):
        assert sorted(ids[13 * c : 13 * (c + 1)]) == list(range(1, 14))
    assert ids[:13] != ids[13:26]  # order differs between cycles


def test_offsets_must_be_positive() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="positive"):
        expand("fisher-scan", {"offsets_px": [0, 1]}, DMD)
