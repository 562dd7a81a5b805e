"""Evaluation: per-position σ and bias, spline bias correction, aggregation over repeats."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluate import (
    Predictions,
    SplineBiasCorrector,
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
    assert pp[0]["true_um"] == pytest.approx(list(pos[0]))


def test_spline_correction_removes_a_known_bias() -> None:
    rng = np.random.default_rng(1)
    hold_true = rng.uniform(-16, 16, size=(4000, 2))
    hold_pred = hold_true + _bias(hold_true) + rng.normal(0, 1.0, hold_true.shape)
    corr = SplineBiasCorrector().fit(hold_true, hold_pred)
    pos = _grid_positions()
    pid = np.repeat(np.arange(25), 300)
    true = pos[pid]
    pred = true + _bias(true) + rng.normal(0, 1.0, true.shape)
    before = summarise(position_stats(pred, true, pid))["bias_um"]
    after = summarise(position_stats(corr.apply(pred), true, pid))["bias_um"]
    assert min(before) > 0.3
    assert max(after) < 0.12, (before, after)  # ~0.05 is the noise floor of 300 samples per position
    np.testing.assert_allclose(corr.bias_at(pos), _bias(pos), atol=0.25)


def test_spline_falls_back_to_fewer_knots_with_few_points() -> None:
    rng = np.random.default_rng(2)
    t = rng.uniform(-5, 5, size=(30, 2))
    corr = SplineBiasCorrector(n_knots=3).fit(t, t + 1.0)
    assert corr.degree_used == 1 and corr.knots_used == 0
    np.testing.assert_allclose(corr.apply(np.zeros((1, 2))), [[-1.0, -1.0]], atol=1e-6)
    with pytest.raises(ValueError):
        SplineBiasCorrector().fit(np.zeros((50, 2)), np.zeros((50, 2)))


def test_evaluate_predictions_reports_corrected_values_and_crb_ratio() -> None:
    rng = np.random.default_rng(3)
    pos = _grid_positions()
    pid = np.repeat(np.arange(25), 400)
    true = pos[pid]
    test = Predictions(true + _bias(true) + rng.normal(0, 2.0, true.shape), true, pid, 1.0)
    ht = rng.uniform(-16, 16, size=(10000, 2))
    hold = Predictions(ht + _bias(ht) + rng.normal(0, 2.0, ht.shape), ht, np.full(10000, -1), 1.0)
    res = evaluate_predictions(test, hold, crb=[2.0, 4.0])
    assert res["bias_corrected"] and len(res["per_position"]) == 25
    assert sum(res["bias_um"]) < 0.5 * sum(res["uncorrected"]["bias_um"])
    assert res["sigma_over_crb"] == pytest.approx([res["sigma_um"][0] / 2.0, res["sigma_um"][1] / 4.0])
    assert res["sigma_over_crb"][0] == pytest.approx(1.0, abs=0.15)
    raw = evaluate_predictions(test, None)
    assert not raw["bias_corrected"] and "sigma_over_crb" not in raw


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
    with pytest.raises(ValueError):
        aggregate_evaluations([])
