"""speckle-sim (seed 001): deterministic, distinct random masks per sample, one frame each."""

from __future__ import annotations

import numpy as np
from test_run_helpers import record_simulated

from acquisition.protocols import expand

DMD = (96, 128)


def test_events_per_sample_and_defaults() -> None:
    plan = expand("speckle-sim", {"samples": ["a", "b"]}, DMD)
    assert len(plan) == 2 * 600
    assert [e.sample for e in plan.events[599:601]] == ["a", "b"]
    assert {e.role for e in plan.events} == {"M"}
    assert plan.events[0].exposure_s == 0.2
    assert len({e.pattern_id for e in plan.events}) == 1200  # fresh masks per sample by default


def test_masks_deterministic_binary_and_distinct() -> None:
    cfg = {"n_masks": 20, "macro_pixel_px": 4, "seed": 7}
    a = expand("speckle-sim", cfg, DMD).patterns
    b = expand("speckle-sim", cfg, DMD).patterns
    masks = [a.pattern(i) for i in range(20)]
    for i, m in enumerate(masks):
        np.testing.assert_array_equal(m, b.pattern(i))
        assert set(np.unique(m)) == {0, 255}
        assert (m > 0).mean() == 0.5  # exact fill fraction (whole macro-pixels fit this DMD)
        # constant over each 4x4 macro-pixel
        assert (m.reshape(24, 4, 32, 4).std(axis=(1, 3)) == 0).all()
    flat = np.array([m.ravel() for m in masks])
    assert len({m.tobytes() for m in flat}) == 20
    overlap = (flat[:, None, :] & flat[None, :, :]).astype(bool).mean(axis=2)
    np.fill_diagonal(overlap, 0.25)
    assert abs(overlap - 0.25).max() < 0.06  # independent masks overlap ~ fill^2
    other = expand("speckle-sim", {**cfg, "seed": 8}, DMD).patterns
    assert not np.array_equal(other.pattern(0), masks[0])


def test_shared_masks_and_region() -> None:
    plan = expand(
        "speckle-sim",
        {
            "samples": ["a", "b"],
            "n_masks": 3,
            "shared_masks": True,
            "region_px": [32, 40],
            "fill_fraction": 0.25,
        },
        DMD,
    )
    assert [e.pattern_id for e in plan.events] == [0, 1, 2, 0, 1, 2]
    m = plan.patterns.pattern(1)
    rows, cols = np.nonzero(m)
    # centred to within a macro-pixel (8), on the DMD's macro-pixel grid: rows 32..63, cols 40..79
    assert rows.min() >= 32 and rows.max() < 64 and cols.min() >= 40 and cols.max() < 80
    assert np.all(m[32:64, 40:80].reshape(4, 8, 5, 8).std(axis=(1, 3)) == 0)  # whole macro-pixels


def test_frames_wraps_or_truncates() -> None:
    plan = expand("speckle-sim", {"samples": ["a", "b"], "n_masks": 3, "frames": 8}, DMD)
    assert [(e.sample, e.extra["mask_index"]) for e in plan.events] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2), ("a", 0), ("a", 1),
    ]  # fmt: skip
    assert plan.events[7].extra["repeat"] == 1


def test_recorded_blocks_average_to_each_samples_blurred_density(tmp_path) -> None:
    """End to end on the speckle-SIM bench (the protocol's own physics when bench.configuration is left
    out): each sample's block of frames averages to its stored rho_blurred up to scale (the speckles of
    independent masks average to uniform illumination), its masks give decorrelated frames, and the
    sample switches with the block."""
    from acquisition.config import load_config
    from acquisition.reader import RunReader

    cfg = load_config(
        None,
        [
            "run.protocol=speckle-sim",
            'protocols.speckle-sim.samples=["cells", "coins"]',
            "protocols.speckle-sim.n_masks=100",
        ],
    )
    assert cfg.bench_config().configuration == "speckle_sim"
    out = tmp_path / "ss.h5"
    record_simulated(cfg, out)
    with RunReader(out) as r:
        truth = r.ground_truth["bench"]
        names = np.asarray(r.table["sample"]).astype(str)
        frames = np.asarray(r.frames[:], float) - float(truth["sensor"]["offset_adu"])
    assert names.tolist() == ["cells"] * 100 + ["coins"] * 100
    corr = {
        (s, t): float(
            np.corrcoef(frames[names == s].mean(0).ravel(), truth["samples"][t]["rho_blurred"].ravel())[0, 1]
        )
        for s in ("cells", "coins")
        for t in ("cells", "coins")
    }
    assert corr["cells", "cells"] > 0.99 and corr["coins", "coins"] > 0.95
    assert abs(corr["cells", "coins"]) < 0.3 and abs(corr["coins", "cells"]) < 0.3
    for s in ("cells", "coins"):
        block = frames[names == s]
        fluct = block - block.mean(0)
        c = [np.corrcoef(fluct[i].ravel(), fluct[i + 1].ravel())[0, 1] for i in range(len(block) - 1)]
        assert abs(np.mean(c)) < 0.05  # a fresh speckle for every mask
