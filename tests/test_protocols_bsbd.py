"""bsbd (seed 000): role order, snake grid, patterns, micrometre conversion and laziness."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from test_run_helpers import record_simulated

from acquisition.protocols import bsbd, expand

DMD = (768, 1024)


def test_roles_repeat_b_s_b_d_exactly() -> None:
    plan = expand("bsbd", {"frames": 103}, DMD)
    roles = [e.role for e in plan.events]
    assert len(roles) == 103
    assert roles == [("B", "S", "B", "D")[i % 4] for i in range(103)]
    assert [e.index for e in plan.events] == list(range(103))


def test_defaults_follow_seed_000() -> None:
    plan = expand("bsbd", {}, DMD)
    e = plan.events[1]
    assert e.exposure_s == pytest.approx(200e-6)
    assert e.interval_s == pytest.approx(0.0333)
    assert float(plan.ground_truth["um_per_px"]) == pytest.approx(13.7 * 0.18)


def test_d_positions_snake_with_two_pixel_spacing_and_cycle() -> None:
    plan = expand("bsbd", {"frames": 4 * 60}, DMD)
    d = [e for e in plan.events if e.role == "D"]
    xy = np.array([(e.target_x_px, e.target_y_px) for e in d])
    cx, cy = DMD[1] // 2, DMD[0] // 2
    # rows top to bottom, 2 px apart; even rows left->right, odd rows right->left
    expected = []
    for row in range(5):
        cols = range(5) if row % 2 == 0 else reversed(range(5))
        expected += [(cx + 2 * (c - 2), cy + 2 * (row - 2)) for c in cols]
    np.testing.assert_array_equal(xy[:25], expected)
    np.testing.assert_array_equal(xy[25:50], expected)  # cycles
    assert len({tuple(p) for p in xy[:25]}) == 25
    steps = np.abs(np.diff(xy[:25], axis=0)).sum(axis=1)
    assert set(steps) == {2.0}  # each snake step moves one grid cell (2 DMD px), never jumps a row back
    assert [e.extra["grid_index"] for e in d[:30]] == [*range(25), *range(5)]


def test_patterns_blank_static_dynamic() -> None:
    plan = expand("bsbd", {"frames": 8}, DMD)
    bank = plan.patterns
    b, s, d = plan.events[0], plan.events[1], plan.events[3]
    assert bank.pattern(b.pattern_id).shape == DMD
    assert bank.pattern(b.pattern_id).dtype == np.uint8
    assert not bank.pattern(b.pattern_id).any()
    assert math.isnan(b.target_x_px)
    img = bank.pattern(s.pattern_id)
    rows, cols = np.nonzero(img)
    assert len(rows) == 25 and set(np.unique(img)) == {0, 255}
    assert (cols.mean(), rows.mean()) == (DMD[1] // 2, DMD[0] // 2) == (s.target_x_px, s.target_y_px)
    assert cols.max() - cols.min() == 4 and rows.max() - rows.min() == 4
    img = bank.pattern(d.pattern_id)
    rows, cols = np.nonzero(img)
    assert len(rows) == 25
    assert (cols.mean(), rows.mean()) == (d.target_x_px, d.target_y_px) == (DMD[1] // 2 - 4, DMD[0] // 2 - 4)


def test_micrometres_relative_to_centre() -> None:
    plan = expand("bsbd", {"frames": 8, "magnification": 0.5, "dmd_pixel_um": 10.0}, DMD)
    d = plan.events[3]
    assert d.extra["target_x_um"] == pytest.approx(-4 * 5.0)
    assert d.extra["target_y_um"] == pytest.approx(-4 * 5.0)
    assert plan.events[1].extra["target_x_um"] == 0.0
    np.testing.assert_allclose(plan.ground_truth["grid_um"][0], [-20.0, -20.0])


def test_custom_centre_and_grid() -> None:
    plan = expand("bsbd", {"frames": 4 * 9, "grid_size": 3, "grid_step_px": 3, "centre_px": [100, 50]}, DMD)
    d = [(e.target_x_px, e.target_y_px) for e in plan.events if e.role == "D"]
    assert d == [
        (97, 47),
        (100, 47),
        (103, 47),
        (103, 50),
        (100, 50),
        (97, 50),
        (97, 53),
        (100, 53),
        (103, 53),
    ]


def test_target_off_the_dmd_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        expand("bsbd", {"centre_px": [2, 2]}, DMD)


def test_half_pixel_grid_refused() -> None:
    with pytest.raises(ValueError, match="between DMD pixels"):
        expand("bsbd", {"grid_size": 4, "grid_step_px": 1}, DMD)


def test_paper_sized_plan_is_lazy() -> None:
    """5x10^5 events: the plan must not materialise them (memory stays tiny, events computed on demand)."""
    tracemalloc.start()
    plan = expand("bsbd", {"frames": 500_000}, DMD)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(plan) == 500_000
    assert not isinstance(plan.events, (list, tuple))
    assert peak < 2_000_000  # a materialised list of 5e5 Events would need > 100 MB
    last = plan.events[-1]
    assert last.index == 499_999 and last.role == "D"
    assert last.extra["grid_index"] == (499_999 // 4) % 25
    assert plan.events[-4].role == "B"
    view = plan.events[10:20]
    assert len(view) == 10 and view[0].index == 10
    assert isinstance(plan.events, bsbd.BsbdEvents)
    with pytest.raises(IndexError):
        plan.events[500_000]


def _record(overrides: list[str], tmp_path):
    from acquisition.config import load_config
    from acquisition.reader import RunReader

    cfg = load_config(None, overrides)
    out = tmp_path / "run.h5"
    record_simulated(cfg, out)
    return cfg, RunReader(out)


def test_recorded_run_shows_the_target_where_the_plan_says(tmp_path) -> None:
    """End to end on the reflection bench (the protocol's own physics when bench.configuration is left
    out), free space, no vibration: B frames are the sensor offset, the S target's centroid sits where the
    stored DMD->camera map puts the reference, and each D frame's centroid moves by the stored grid_um."""
    cfg, reader = _record(
        [
            "run.protocol=bsbd",
            "bench.medium.optical_thickness=0",
            "bench.reflection.vibration_rms_um=0",
            "frames=100",  # 25 D frames: the whole snake once
        ],
        tmp_path,
    )
    assert cfg.bench_config().configuration == "reflection"
    with reader as r:
        bench, plan = r.ground_truth["bench"], r.ground_truth["plan"]
        roles = r.table["role"].astype(str)
        pid = np.asarray(r.table["pattern_id"])
        frames = np.asarray(r.frames[:], float) - float(bench["sensor"]["offset_adu"])
    assert "".join(roles[:8]) == "BSBDBSBD" and (roles == "D").sum() == 25
    dark, shown = frames[roles == "B"], frames[roles == "S"]
    read_adu = float(bench["sensor"]["read_noise_e"]) * float(bench["sensor"]["gain_adu_per_e"])
    assert abs(dark.mean()) < 0.1 and dark.std() == pytest.approx(read_adu, rel=0.1)  # offset + read noise
    assert shown.mean() > 100 * read_adu
    y, x = np.indices(frames.shape[1:])

    def centroid(img: np.ndarray) -> np.ndarray:
        img = np.clip(img - dark.mean(0), 0, None)
        return np.array([(x * img).sum(), (y * img).sum()]) / img.sum()

    to_cam = np.asarray(bench["dmd_to_camera"])
    ref_cam = to_cam[:, :2] @ np.asarray(plan["reference_px"]) + to_cam[:, 2]
    s = np.array([centroid(f) for f in shown])
    np.testing.assert_allclose(s, np.broadcast_to(ref_cam, s.shape), atol=0.05)
    d_um = np.array([centroid(f) - s[0] for f in frames[roles == "D"]]) * float(bench["um_per_camera_px"])
    np.testing.assert_allclose(d_um, np.asarray(plan["grid_um"])[pid[roles == "D"] - 2], atol=0.05)
