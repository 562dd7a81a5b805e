"""Preprocessing (seed 000, Methods "Data collection"): Savitzky–Golay background, binning, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.preprocessing import (
    Preprocessor,
    bin_frames,
    fit_background,
    normalise_max,
    savgol_window,
)


def test_bin_frames_exact():
    f = np.arange(2 * 4 * 8, dtype=np.uint16).reshape(2, 4, 8)
    s = bin_frames(f, 2)
    assert s.shape == (2, 2, 4)
    assert s[0, 0, 0] == 0 + 1 + 8 + 9 and s[1, 1, 3] == f[1, 2:4, 6:8].sum()
    m = bin_frames(f, 2, reduce="mean")
    assert np.allclose(m, s / 4)
    assert bin_frames(f, 1) is f
    big = np.ones((3, 128, 128))
    assert np.all(bin_frames(big, 4) == 16) and bin_frames(big, 4).shape == (3, 32, 32)
    with pytest.raises(ValueError):
        bin_frames(np.ones((1, 5, 4)), 2)
    for factor in (0, -2, 2.0):  # `specklab crb --bin-factor 0` used to end in a ZeroDivisionError
        with pytest.raises(ValueError, match="positive integer"):
            bin_frames(np.ones((1, 4, 4)), factor)  # type: ignore[arg-type]


def test_normalise_max_exact():
    f = np.array([[[1.0, 2.0], [4.0, 0.0]], [[-1.0, 0.5], [0.25, -2.0]], [[0.0, -1.0], [0.0, -3.0]]])
    n = normalise_max(f)
    assert np.allclose(n[0], [[0.25, 0.5], [1.0, 0.0]])
    assert np.allclose(n[1], [[-2.0, 1.0], [0.5, -4.0]])  # after background subtraction: [min/max, 1]
    assert np.all(n[2] == 0)  # no positive maximum: zeros rather than a sign flip or a division by zero
    c = normalise_max(f, clip_negative=True)
    assert c.min() >= 0 and np.allclose(c[1], [[0, 1], [0.5, 0]])


def test_savgol_window_rule():
    assert savgol_window(100_000) == 4999  # odd, <= 5000
    assert savgol_window(1200) == 1199  # short run: all B frames
    assert savgol_window(2, polyorder=2) == 0  # too short for the polynomial: constant mean


def test_background_removes_slow_drift_keeps_fast_fluctuations():
    rng = np.random.default_rng(0)
    n_frames = 20_000
    t = np.arange(n_frames)
    drift = 50 + 20 * np.sin(2 * np.pi * t / 15_000)[:, None, None] * np.ones((1, 4, 4))
    b_idx = t[::2]
    s_idx = t[1::2]
    b = drift[b_idx] + rng.normal(0, 5, size=(b_idx.size, 4, 4))  # speckle noise on the background
    fast = rng.normal(0, 3, size=(s_idx.size, 4, 4))  # fast frame-to-frame fluctuations (the signal)
    s = drift[s_idx] + 10 + fast
    model = fit_background(b, b_idx, window=2001)
    assert model.window == 2001 and model.positions.size < b_idx.size  # decimated knots
    out = model.subtract(s, s_idx)
    # the drift (amplitude 20) is gone: what remains is the offset 10 plus the fast part
    assert np.abs((out - 10 - fast).mean(axis=(1, 2))).max() < 1.0
    assert np.std(out - 10 - fast) < 0.5
    # and the fast fluctuations are untouched
    corr = np.corrcoef((out - 10).ravel(), fast.ravel())[0, 1]
    assert corr > 0.98


def test_background_interpolation_and_short_runs():
    b = np.stack([np.full((2, 2), v, dtype=float) for v in (1.0, 2.0, 3.0)])
    model = fit_background(b, np.array([0, 10, 20]), window=5000, polyorder=1)
    assert model.window == 3  # shortened automatically
    assert np.allclose(model.at(np.array([5, 15, -3, 40]))[:, 0, 0], [1.5, 2.5, 1.0, 3.0])
    const = fit_background(b[:1], np.array([7]))
    assert const.window == 0 and np.allclose(const.at(np.array([0, 100])), 1.0)


def test_preprocessor_streams_in_batches():
    rng = np.random.default_rng(1)
    frames = rng.poisson(100, size=(40, 8, 8)).astype(np.uint16)
    idx = np.arange(40) * 2 + 1
    b = rng.poisson(20, size=(41, 8, 8)).astype(float)
    b_idx = np.arange(41) * 2
    # background at full resolution vs fitted on binned B frames: identical (binning is linear)
    full = Preprocessor(fit_background(b, b_idx, window=11), bin_factor=2)
    binned = Preprocessor(
        fit_background(bin_frames(b, 2), b_idx, window=11), bin_factor=2, background_binned=True
    )
    whole = full(frames, idx)
    parts = np.concatenate([binned(frames[i : i + 7], idx[i : i + 7]) for i in range(0, 40, 7)])
    assert whole.shape == (40, 4, 4)
    assert np.allclose(whole, parts, atol=1e-5)
    assert np.allclose(whole.max(axis=(1, 2)), 1.0)
    with pytest.raises(ValueError):
        full(frames)


def test_background_knots_equal_scipy_savgol_filter_at_those_samples() -> None:
    """The knot-only evaluation is the full filter sampled, edges (``interp`` mode) included."""
    from scipy.signal import savgol_filter

    from analysis.preprocessing import fit_background

    rng = np.random.default_rng(7)
    b = rng.normal(size=(1500, 3, 4)).cumsum(axis=0)
    model = fit_background(b, np.arange(1500), window=301, polyorder=2, decimate=7)
    full = savgol_filter(b.reshape(1500, -1), 301, 2, axis=0, mode="interp")
    knots = model.positions.astype(int)
    assert knots[0] == 0 and knots[-1] == 1499  # both edge regions are sampled
    np.testing.assert_allclose(model.values.reshape(knots.size, -1), full[knots], rtol=1e-5, atol=1e-4)
