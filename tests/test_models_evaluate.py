"""Evaluation: per-position σ and bias, lattice bias correction, aggregation over repeats."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluate import (
    MAX_CLIPPED_FRACTION,
    LatticeBiasCorrector,
    Predictions,
    aggregate_evaluations,
    evaluate_predictions,
    position_stats,
    summarise,
)


def _bias(theta: np.ndarray) -> np.ndarray:
    """A smooth, position-dependent bias like a CNN's pull towards the centre plus an offset."""
    x, y = theta[:, 0], theta[:, 1]
    return np.column_stack([0.5 - 0.08 * x + 0.01 * x * y, -0.3 - 0.05 * y + 0.002 * x**2])


def _grid_positions() -> np.ndarray:
    g = np.arange(-2, 3) * 5.0
    return np.array([(x, y) for y in g for x in g])


def test_position_stats_and_summary() -> None:
    rng = np.random.default_rng(0)
    pos = _grid_positions()
    pid = np.repeat(np.arange(25), 400)
    true = pos[pid]
    pred = true + np.array([0.5, -1.0]) + rng.normal(0, [2.0, 3.0], size=true.shape)
    pp = position_stats(pred, true, pid)
    assert len(pp) == 25
    s = summarise(pp)
    assert s["sigma_um"] == pytest.approx([2.0, 3.0], rel=0.08)
    assert s["bias_um"] == pytest.approx([0.5, 1.0], abs=0.3)
    assert s["bias_signed_um"] == pytest.approx([0.5, -1.0], abs=0.1)
    assert s["response_slope"] == pytest.approx([1.0, 1.0], abs=0.02)
    assert pp[0]["true_um"] == pytest.approx(list(pos[0]))


def _mean_response(theta: np.ndarray) -> np.ndarray:
    """A known smooth nonlinear mean prediction m(θ): slope 0.9 ± curvature, a cross term on each axis."""
    x, y = theta[:, 0], theta[:, 1]
    return np.column_stack([0.9 * x + 0.02 * x**2 + 0.004 * x * y, 0.95 * y - 0.015 * y**2 + 0.01 * x])


def _jacobian(theta: np.ndarray) -> np.ndarray:
    x, y = theta[:, 0], theta[:, 1]
    j = np.empty((theta.shape[0], 2, 2))
    j[:, 0, 0], j[:, 0, 1] = 0.9 + 0.04 * x + 0.004 * y, 0.004 * x
    j[:, 1, 0], j[:, 1, 1] = 0.01, 0.95 - 0.03 * y
    return j


def _lattice(side: int = 9, step: float = 2.7, frames: int = 300, noise: float = 0.3, seed: int = 0):
    """Per-frame (true, pred) pairs on a side x side lattice, ``frames`` noisy predictions per point."""
    rng = np.random.default_rng(seed)
    g = (np.arange(side) - (side - 1) / 2) * step
    pts = np.array([(x, y) for y in g for x in g])
    true = np.repeat(pts, frames, axis=0)
    return true, _mean_response(true) + rng.normal(0, noise, true.shape)


def test_lattice_correction_removes_a_known_nonlinear_bias_and_inflates_sigma_by_the_inverse_slope() -> None:
    """m(θ) = 0.9θ + 0.02θ² + …; corrected estimates unbiased within their statistical error.

    Noise 0.3 µm keeps the second-order inversion bias m''σ²/(2m'³) (≤ 0.01 µm here) below the
    statistical error of the per-position means (0.3/0.6/√2000 ≈ 0.01 µm at worst).
    """
    noise = 0.3
    corr = LatticeBiasCorrector().fit(*_lattice(noise=noise))
    rng = np.random.default_rng(1)
    pos = _grid_positions() * 0.8  # D positions ±8 µm, inside the lattice's ±10.8 µm
    n = 2000
    pid = np.repeat(np.arange(25), n)
    true = pos[pid]
    pred = _mean_response(true) + rng.normal(0, noise, true.shape)
    fixed = corr.apply(pred)
    assert corr.inversion["n_unsolved"] == 0 and corr.inversion["iterations"] <= 8
    raw_pp, pp = position_stats(pred, true, pid), position_stats(fixed, true, pid)
    raw_bias = np.array([p["bias_um"] for p in raw_pp])
    bias = np.array([p["bias_um"] for p in pp])
    sigma = np.array([p["sigma_um"] for p in pp])
    se = sigma / np.sqrt(n)
    assert np.abs(raw_bias).max() > 1.5  # the uncorrected pull is large
    # the field fit's own error (≈ one lattice SE, 0.3/√300 = 0.017 µm) also passes through J⁻¹
    tol = 4 * se + 2 * noise / np.sqrt(300) * sigma / noise
    assert np.all(np.abs(bias) < tol), (np.abs(bias) / tol).max()
    assert np.abs(bias).mean() < 0.015
    # σ of the corrected estimates = σ of J⁻¹ ε: inflated by the inverse slope of m, no more
    jinv = np.linalg.inv(_jacobian(pos))
    expected = noise * np.sqrt((jinv**2).sum(axis=2))
    np.testing.assert_allclose(sigma, expected, rtol=0.06)
    assert (sigma / noise).max() > 1.5  # the test covers slopes well away from 1 (m'_x = 0.55 at (-8, -8))
    # the fitted field follows the known one; the JSON summary reports it
    np.testing.assert_allclose(corr.bias_at(pos), _mean_response(pos) - pos, atol=0.03)
    summ = corr.summary()
    assert summ["shape"] == [9, 9] and summ["n_points"] == 81 and summ["frames_per_point"] == 300
    np.testing.assert_allclose(summ["range_um"], [[-10.8, 10.8], [-10.8, 10.8]])
    assert summ["residual_rms_um"][0] < 2 * summ["se_rms_um"][0]
    assert summ["se_rms_um"][0] == pytest.approx(noise / np.sqrt(300), rel=0.1)


def test_newton_inversion_converges_where_a_fixed_point_iteration_would_diverge() -> None:
    pts = np.array([(x, y) for y in np.arange(-3, 4.0) for x in np.arange(-3, 4.0)])
    true = np.repeat(pts, 3, axis=0)
    corr = LatticeBiasCorrector().fit(true, 2.5 * true)  # b(θ) = 1.5θ: |∇b| > 1, noise-free (s = 0)
    assert corr.s == [0.0, 0.0]
    theta = np.array([[1.3, -2.2], [0.0, 0.0], [2.9, 2.9]])
    np.testing.assert_allclose(corr.apply(2.5 * theta), theta, atol=1e-6)
    # beyond the image of the lattice box: clipped to the box edge (no extrapolation), and counted
    out = corr.apply(np.array([[20.0, 0.0]]))
    np.testing.assert_allclose(out, [[3.0, 0.0]], atol=1e-6)
    assert corr.inversion["n_unsolved"] == 1


def test_lattice_fit_rejects_what_is_not_a_lattice() -> None:
    true, pred = _lattice(side=5, frames=4)
    with pytest.raises(ValueError, match="lattice"):
        LatticeBiasCorrector().fit(true[4:], pred[4:])  # one lattice point missing
    with pytest.raises(ValueError, match=">= 2 predictions"):
        LatticeBiasCorrector().fit(true[::4], pred[::4])
    with pytest.raises(ValueError, match="lattice points per axis"):
        LatticeBiasCorrector().fit(*_lattice(side=3, frames=4))
    with pytest.raises(RuntimeError):
        LatticeBiasCorrector().apply(np.zeros((1, 2)))


def test_evaluate_predictions_reports_corrected_values_lattice_and_crb_ratio() -> None:
    rng = np.random.default_rng(3)
    pos = _grid_positions()
    pid = np.repeat(np.arange(25), 400)
    true = pos[pid]
    test = Predictions(_mean_response(true) + rng.normal(0, 2.0, true.shape), true, pid, 1.0)
    lt, lp = _lattice(step=3.0, frames=200, noise=2.0, seed=4)
    lattice = Predictions(lp, lt, np.zeros(len(lt), np.int64), 1.0)
    res = evaluate_predictions(test, lattice, crb=[2.0, 4.0], lattice_meta={"frames_sha1": "x"})
    assert res["bias_corrected"] and len(res["per_position"]) == 25
    assert sum(res["bias_um"]) < 0.3 * sum(res["uncorrected"]["bias_um"])
    assert res["sigma_over_crb"] == pytest.approx([res["sigma_um"][0] / 2.0, res["sigma_um"][1] / 4.0])
    lat = res["lattice"]
    assert lat["n_points"] == 81 and lat["frames_per_point"] == 200 and lat["frames_sha1"] == "x"
    assert len(lat["bias_rms_um"]) == 2 and lat["bias_rms_um"][0] > 0.5 and "inversion" in lat
    raw = evaluate_predictions(test, None)
    assert not raw["bias_corrected"] and "sigma_over_crb" not in raw and "lattice" not in raw


def test_errors_cut_off_at_the_lattice_edge_are_flagged_as_a_lower_bound() -> None:
    """A weak, shrunk estimator (slope 0.3, as CoordConv at b = 5): corrected σ ~ 7 µm near a ±12 µm box.

    The corrected estimates cannot leave the box, so the reported σ comes out below the estimator's
    true noise / slope and the evaluation must say so instead of passing it off as the precision.
    """
    rng = np.random.default_rng(5)
    pos = _grid_positions()  # ±10 µm, like the D grid
    pid = np.repeat(np.arange(25), 400)
    true = pos[pid]
    g = (np.arange(9) - 4) * 3.0  # lattice ±12 µm
    lt = np.repeat(np.array([(x, y) for y in g for x in g]), 200, axis=0)

    def evaluate(slope: float, noise: float) -> dict:
        test = Predictions(slope * true + rng.normal(0, noise, true.shape), true, pid, 1.0)
        lat_pred = slope * lt + rng.normal(0, noise, lt.shape)
        lattice = Predictions(lat_pred, lt, np.zeros(len(lt), np.int64), 1.0)
        return evaluate_predictions(test, lattice)

    sharp = evaluate(0.9, 0.5)  # 0.56 µm: nothing reaches the edge
    assert sharp["clipped_fraction"] <= MAX_CLIPPED_FRACTION and "warnings" not in sharp
    slope, noise = 0.3, 2.1  # the estimator's own precision: noise / slope = 7 µm
    res = evaluate(slope, noise)
    assert res["clipped_fraction"] > 0.05
    assert np.mean(res["sigma_um"]) < 0.9 * noise / slope  # what the flag is for: σ is truncated
    assert len(res["warnings"]) == 1 and "lower bound" in res["warnings"][0]
    # the lattice-free figure of merit is not cut off: uncorrected σ / slope = the estimator's 7 µm
    assert res["uncorrected"]["response_slope"] == pytest.approx([slope, slope], rel=0.05)
    assert res["uncorrected"]["sigma_over_slope_um"] == pytest.approx([noise / slope] * 2, rel=0.06)
    agg = aggregate_evaluations([res, {**res, "clipped_fraction": 0.0, "warnings": []}])
    assert agg["clipped_fraction"] == res["clipped_fraction"] and "lower bound" in agg["warnings"][0]
    # ... and it survives the aggregation over repeats, where the corrected σ does not mean anything
    assert agg["uncorrected"]["sigma_over_slope_um"] == pytest.approx([noise / slope] * 2, rel=0.06)


def test_aggregate_over_repeats() -> None:
    runs = [
        {"sigma_um": [s, 2 * s], "bias_um": [0.1, 0.2], "crb_um": [1.0, 2.0], "b": 2.5,
         "bias_corrected": True, "per_position": [{"sigma_um": [s, 2 * s]}] * 3}
        for s in (1.0, 1.2, 1.4)
    ]  # fmt: skip
    agg = aggregate_evaluations(runs)
    assert agg["n_repeats"] == 3 and agg["sigma_um"] == pytest.approx([1.2, 2.4])
    assert agg["sigma_over_crb"] == pytest.approx([1.2, 1.2])
    assert len(agg["sigma_samples_um"][0]) == 9 and agg["b"] == 2.5
    assert "uncorrected" not in agg  # these evaluations carry no raw block to aggregate
    raw = [
        {"sigma_um": [1.0, 1.0], "response_slope": [m, 0.5], "sigma_over_slope_um": [1.0 / m, 2.0]}
        for m in (0.2, 0.5, 0.25)
    ]
    agg = aggregate_evaluations([{**r, "uncorrected": u} for r, u in zip(runs, raw, strict=True)])
    assert agg["uncorrected"]["response_slope"] == pytest.approx([0.25, 0.5])  # medians, per axis
    assert agg["uncorrected"]["sigma_over_slope_um"] == pytest.approx([4.0, 2.0])
    assert agg["uncorrected"]["sigma_over_slope_q25_q75_um"][0] == pytest.approx([3.0, 4.5])
    assert [r["uncorrected_sigma_over_slope_um"][0] for r in agg["per_repeat"]] == pytest.approx([5, 2, 4])
    with pytest.raises(ValueError):
        aggregate_evaluations([])


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", '{"crb_um": 0.1}', '{"crb_um": [[1, 2], [3, 4]]}', '{"crb_um": [0, 0.1]}',
     '{"crb_um": [NaN, 0.1]}', '{"crb_um": [0.1, 0.2, 0.3]}', '{"crb_um": ["a", 0.1]}', '{"fisher": 1}',
     '{"crb_um": [null, null]}'],
)  # fmt: skip
def test_a_crb_json_of_the_wrong_shape_is_a_value_error(tmp_path, content: str) -> None:
    from models.evaluate import load_crb

    path = tmp_path / "crb.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="crb_um"):
        load_crb(path)


def test_an_undefined_crb_says_why(tmp_path) -> None:
    """specklab crb writes null when the estimated Fisher matrix is not positive definite (too few frames)."""
    from models.evaluate import load_crb

    path = tmp_path / "crb.json"
    path.write_text('{"crb_um": [null, null]}')
    with pytest.raises(ValueError, match="undefined.*not positive definite"):
        load_crb(path)


def test_load_crb_reads_the_analysis_cli_entry(tmp_path) -> None:
    from models.evaluate import load_crb

    path = tmp_path / "crb.json"
    path.write_text('{"crb_um": [0.5, 2], "fisher": [[1, 0], [0, 1]]}')
    assert load_crb(path) == [0.5, 2.0] and load_crb(None) is None
