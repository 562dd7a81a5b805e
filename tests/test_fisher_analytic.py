"""Analytic known-answer tests of the model-free estimator, its bias correction and its error bars.

Tolerances: every comparison allows 4 reported standard errors (the estimator's own delta-method error,
validated against replicate scatter in ``test_stderr_matches_replicate_scatter``) plus the known
discretisation loss of equal-frequency binning (Gaussian: 1 - Σ_b (Δφ_b)² B <= 1 % for B >= 32;
we allow 2 %).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.decorrelation import fit_decorrelation, resolve_device
from analysis.fisher import (
    choose_step_paper,
    choose_step_robust,
    default_bins,
    fisher_information,
    fisher_matrix,
    plateau_end,
    richardson,
)
from analysis.linear_fisher import linear_fisher, linear_fisher_scan


def _close(r, truth, extra=0.02):
    assert abs(r.value - truth) < 4 * r.stderr + extra * truth, (r.value, r.stderr, truth)


def test_shifted_gaussian_arbitrary_covariance():
    rng = np.random.default_rng(1)
    d, n = 6, 40_000
    a = rng.standard_normal((d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    mu1 = rng.standard_normal(d) * 0.5
    truth = mu1 @ np.linalg.solve(cov, mu1)
    chol = np.linalg.cholesky(cov)
    samples = {t: rng.standard_normal((n, d)) @ chol.T + t * mu1 for t in (-0.2, -0.1, 0.0, 0.1, 0.2)}
    r = fisher_information(samples, decorrelation="pca", device="cpu")
    _close(r, truth)


def test_poisson_pixels():
    rng = np.random.default_rng(2)
    lam0 = np.array([5.0, 12.0, 30.0, 50.0])
    slope = np.array([2.0, -3.0, 6.0, 4.0])  # dλ/dθ
    truth = float(np.sum(slope**2 / lam0))
    n = 30_000
    samples = {t: rng.poisson(lam0 + slope * t, size=(n, 4)).astype(float) for t in (-0.4, -0.2, 0, 0.2, 0.4)}
    r = fisher_information(samples, decorrelation="none", device="cpu")
    _close(r, truth, extra=0.05)  # discrete data: bins merge on ties, some information is lost


def test_exponential_speckle_intensity():
    rng = np.random.default_rng(3)
    n, k = 30_000, 5
    mean0, dmean = 1.0, 0.8  # Ī(θ) = 1 + 0.8 θ: J = k (Ī'/Ī)²
    truth = k * (dmean / mean0) ** 2
    samples = {t: rng.exponential(mean0 + dmean * t, size=(n, k)) for t in (-0.2, -0.1, 0.0, 0.1, 0.2)}
    r = fisher_information(samples, decorrelation="none", device="cpu")
    _close(r, truth)


def test_bias_correction_zero_on_theta_independent_data():
    """Raw estimate is inflated by (B-1)(1/n₊+1/n₋)/Δ² per component; the corrected one averages to 0."""
    rng = np.random.default_rng(4)
    vals = []
    for _ in range(12):
        samples = {t: rng.standard_normal((3000, 8)) for t in (-0.5, -0.25, 0.25, 0.5)}
        r = fisher_information(samples, decorrelation="pca", device="cpu", use_center=False)
        # the raw sum is dominated by the bias (> 5x the corrected value's scatter)
        assert np.all(r.curve.raw > 0) and np.all(r.curve.bias > 0)
        vals.append(r.curve.values)
        b = r.curve.bins[0]
        expected_bias = 8 * (b - 1) * (2 / 3000) / r.curve.steps**2 * 6000 / 5999
        assert r.curve.bias == pytest.approx(expected_bias, rel=1e-9)
    vals = np.array(vals)
    se = vals.std(axis=0, ddof=1) / np.sqrt(len(vals))
    assert np.all(np.abs(vals.mean(axis=0)) < 4 * se)
    assert np.all(np.abs(vals.mean(axis=0)) < 0.1 * r.curve.bias)


def test_stderr_matches_replicate_scatter():
    rng = np.random.default_rng(5)
    mu1 = np.array([1.0, 0.5, 0.0, -0.5])
    vals, ses = [], []
    for _ in range(16):
        samples = {t: rng.standard_normal((4000, 4)) + t * mu1 for t in (-0.25, 0.0, 0.25)}
        r = fisher_information(samples, decorrelation="none", device="cpu")
        vals.append(r.value)
        ses.append(r.stderr)
    ratio = np.std(vals, ddof=1) / np.mean(ses)
    # with 16 replicates the sample sd itself is uncertain by ~18 %: accept a factor 1.6 either way
    assert 1 / 1.6 < ratio < 1.6
    assert abs(np.mean(vals) - 1.5) < 4 * np.std(vals, ddof=1) / 4 + 0.02 * 1.5  # J = |mu1|² = 1.5


def test_bootstrap_stderr_agrees_with_analytic():
    rng = np.random.default_rng(6)
    mu1 = np.array([1.0, -1.0, 0.5])
    samples = {t: rng.standard_normal((3000, 3)) + t * mu1 for t in (-0.2, 0.0, 0.2)}
    a = fisher_information(samples, decorrelation="none", device="cpu")
    b = fisher_information(samples, decorrelation="none", device="cpu", stderr_method="bootstrap", n_boot=60)
    assert a.value == pytest.approx(b.value)
    assert b.stderr == pytest.approx(a.stderr, rel=0.4)


def test_two_parameter_matrix_with_off_diagonal():
    rng = np.random.default_rng(7)
    d, n = 5, 30_000
    a = rng.standard_normal((d, d))
    cov = a @ a.T / d + 0.5 * np.eye(d)
    ax = np.array([1.0, 0.5, 0.0, 0.2, -0.3])
    ay = np.array([0.8, 0.1, 0.5, 0.2, -0.5])
    ci = np.linalg.inv(cov)
    truth = np.array([[ax @ ci @ ax, ax @ ci @ ay], [ay @ ci @ ax, ay @ ci @ ay]])
    chol = np.linalg.cholesky(cov)

    def draw(tx: float, ty: float) -> np.ndarray:
        return rng.standard_normal((n, d)) @ chol.T + tx * ax + ty * ay

    centre = draw(0, 0)
    steps = (0.1, 0.2, 0.3)
    sx = {0.0: centre, **{s * h: draw(s * h, 0) for h in (0.5, -0.5) for s in steps}}
    sy = {0.0: centre, **{s * h: draw(0, s * h) for h in (0.5, -0.5) for s in steps}}
    r = fisher_matrix(sx, sy, decorrelation="pca", device="cpu")
    assert r.matrix.shape == (2, 2) and r.matrix[0, 1] == r.matrix[1, 0]
    assert abs(truth[0, 1]) > 0.3 * np.sqrt(truth[0, 0] * truth[1, 1])  # a real off-diagonal
    assert np.all(
        np.abs(r.matrix - truth) < 4 * r.stderr + 0.03 * np.sqrt(np.outer(np.diag(truth), np.diag(truth)))
    )
    crb_true = np.sqrt(np.diag(np.linalg.inv(truth)))
    assert np.all(np.abs(r.crb - crb_true) < 4 * r.crb_stderr + 0.03 * crb_true)
    assert r.denominator == "center" and len(r.axes) == 2


def test_linear_fisher_gaussian():
    rng = np.random.default_rng(8)
    d, n, step = 20, 2000, 0.5
    a = rng.standard_normal((d, d))
    cov = a @ a.T / d + np.eye(d)
    mu1 = rng.standard_normal(d) * 0.3
    truth = mu1 @ np.linalg.solve(cov, mu1)
    chol = np.linalg.cholesky(cov)
    vals, ses, raws = [], [], []
    for _ in range(10):
        xm = rng.standard_normal((n, d)) @ chol.T - step / 2 * mu1
        xp = rng.standard_normal((n, d)) @ chol.T + step / 2 * mu1
        r = linear_fisher(xm, xp, step)
        vals.append(r.value)
        ses.append(r.stderr)
        raws.append(r.raw)
    vals = np.array(vals)
    # unbiased on average (the raw estimator is inflated by 2N/(nΔ²) = 0.08 and by the Σ⁻¹ bias)
    assert abs(vals.mean() - truth) < 4 * np.mean(ses) / np.sqrt(len(vals))
    # Kanitscheider et al.: Î_bc = Î₀ (2n - N - 3)/(2n - 2) - 2N/(n Δ²)
    assert r.value == pytest.approx(r.raw * (2 * n - d - 3) / (2 * n - 2) - 2 * d / (n * step**2), rel=1e-12)
    assert 0.6 < vals.std(ddof=1) / np.mean(ses) < 1.6  # Kanitscheider's variance formula


def test_linear_fisher_rank_deficient_scan():
    rng = np.random.default_rng(9)
    m = np.eye(10) + np.eye(10, k=1) + np.eye(10, k=-1)
    m[:, -1] = m[:, 0]  # exactly rank-deficient mixing
    samples = {t: (rng.standard_normal((3000, 10)) + t) @ m.T for t in (-0.25, 0.25, -0.5, 0.5)}
    res = linear_fisher_scan(samples)
    mu = m @ np.ones(10)
    truth = mu @ np.linalg.pinv(m @ m.T) @ mu
    assert [r.step for r in res] == [0.5, 1.0]
    assert res[0].n_features == np.linalg.matrix_rank(m)
    for r in res:
        assert abs(r.value - truth) < 4 * r.stderr


def test_step_criteria_on_synthetic_curve():
    steps = np.linspace(0.02, 0.6, 30)
    truth = 50 * (1 - 0.4 * steps**2)
    noise_sd = 0.02 * 50 * (0.1 / steps) ** 2  # noise grows like 1/Δ² (the χ² term)
    rng = np.random.default_rng(10)
    values = truth + rng.standard_normal(steps.size) * noise_sd
    i_paper, note = choose_step_paper(steps, values)
    assert i_paper is not None and 0 < i_paper < steps.size - 1, note
    # the paper's step sits where the noise overtakes the smooth curvature: not the tiny, noisy steps
    assert noise_sd[i_paper] < 0.5 * noise_sd[0]
    i_rob, _ = choose_step_robust(values, noise_sd, rel_tol=0.02)
    rel = noise_sd / values
    end = plateau_end(values, noise_sd)
    assert 0 < i_rob <= end < steps.size - 1  # the strong Δ² fall-off at large steps ends the plateau
    assert np.all(rel[i_rob : end + 1] <= 0.02) and rel[i_rob - 1] > 0.02
    # a curve that falls with Δ beyond its noise and is never precise: the largest *plateau* step, not
    # the least noisy one (which would be the most truncated)
    falling = np.array([0.040, 0.030, 0.0106])
    i_f, note = choose_step_robust(falling, np.array([0.0099, 0.003, 0.0008]))
    assert i_f == 1 and "never" in note
    j, se = richardson(steps, truth, np.full(steps.size, 0.01), 0)
    assert j == pytest.approx(50.0, rel=1e-9)
    assert choose_step_paper(steps[:4], values[:4])[0] is None


def test_default_bins_rule():
    assert default_bins(1000) == 20
    assert default_bins(100_000) == 93
    assert default_bins(10) == 5 and default_bins(10**9) == 128


def test_decorrelation_drops_null_space_and_whitens():
    rng = np.random.default_rng(11)
    m = np.eye(50) + np.eye(50, k=1) + np.eye(50, k=-1)
    x = rng.standard_normal((20_000, 50)) @ m.T
    for method in ("pca", "ica"):
        t = fit_decorrelation(x, method, ica_components=16)
        assert t.n_components == 49 and t.info["n_dropped_rank"] == 1
        y = t.transform_numpy(x, device="cpu")
        assert np.allclose(np.cov(y.T), np.eye(49), atol=0.05)
    assert "ica_converged" in t.info and t.info["ica_components"] == 16


def test_gaussianize_is_monotone_and_handles_ties():
    rng = np.random.default_rng(12)
    x = np.stack([rng.exponential(size=20_000) ** 3, rng.poisson(3.0, size=20_000).astype(float)], axis=1)
    t = fit_decorrelation(x, "gaussianize")
    grid = np.stack([np.linspace(0, 50, 500), np.linspace(0, 12, 500)], axis=1)
    from analysis.decorrelation import _gaussianize_numpy, _gaussianize_torch

    eps = 0.5 / t.n_fit
    g_np = _gaussianize_numpy(grid, t.knots, t.levels, eps)
    g_t = _gaussianize_torch(
        torch.from_numpy(grid), torch.from_numpy(t.knots), torch.from_numpy(t.levels), eps
    )
    assert np.allclose(g_np, g_t.numpy(), atol=1e-9)  # CPU (np.interp) and device (torch) maps agree
    assert np.all(np.diff(g_np[:, 0]) >= 0) and np.all(np.diff(g_np[:, 1]) >= 0)
    # ties: a Poisson value maps to the normal quantile of the middle of its probability mass
    for v in (0.0, 3.0):
        p_below, p_at = np.mean(x[:, 1] < v), np.mean(x[:, 1] == v)
        z = _gaussianize_numpy(np.array([[1.0, v]]), t.knots, t.levels, eps)[0, 1]
        from scipy.stats import norm

        assert norm.cdf(z) == pytest.approx(p_below + p_at / 2, abs=2e-3)


def test_device_sort_path_matches_numpy_path():
    """The CUDA branch (torch sort on the device) gives the same bins as the CPU (NumPy) branch."""
    from analysis.fisher import _equal_frequency_bins

    rng = np.random.default_rng(13)
    groups = [
        torch.from_numpy(rng.standard_normal((500, 3))),
        torch.from_numpy(rng.poisson(2.0, (400, 3)) * 1.0),
    ]
    a = _equal_frequency_bins(groups, 12, torch_sort=False)
    b = _equal_frequency_bins(groups, 12, torch_sort=True)
    for x, y in zip(a.index + a.counts, b.index + b.counts, strict=True):
        assert torch.equal(x, y)


def test_device_selection():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN case, before it is refused
def test_bad_inputs_give_clear_errors():
    """Input that cannot give an estimate is refused by name, not turned into Ĵ = 0 ± 0 or a torch error."""
    rng = np.random.default_rng(14)

    def draw(n: int = 200) -> dict[float, np.ndarray]:
        return {t: rng.standard_normal((n, 3)) + t for t in (-0.5, 0.0, 0.5)}

    for bad in (np.nan, np.inf):
        s = draw()
        s[0.5][3, 1] = bad
        for method in ("none", "pca", "gaussianize"):
            with pytest.raises(ValueError, match="NaN or inf"):
                fisher_information(s, decorrelation=method, device="cpu")
    fitted = fit_decorrelation(np.concatenate(list(draw().values())), "none")
    s = draw()
    s[0.0][0, 0] = np.nan  # not in the fit: caught where the transform is applied
    with pytest.raises(ValueError, match="NaN or inf"):
        fisher_information(s, decorrelation=fitted, device="cpu")
    for nb in (-3, 0, 1):
        with pytest.raises(ValueError, match="bins must be >= 2"):
            fisher_information(draw(), bins=nb, device="cpu")
    with pytest.raises(ValueError, match="unknown step_rule"):
        fisher_information(draw(), step_rule="bogus", device="cpu")  # type: ignore[arg-type]
    for n in (0, 1):
        with pytest.raises(ValueError, match=">= 2 per parameter value"):
            fisher_information(draw(n), device="cpu")
        with pytest.raises(ValueError, match=">= 2 per parameter value"):
            fisher_matrix(draw(n), draw(), device="cpu")
    const = {t: np.ones((100, 3)) for t in (-0.5, 0.5)}
    for method in ("none", "pca"):
        with pytest.raises(ValueError, match="no variance"):
            fisher_information(const, decorrelation=method, device="cpu")


def test_matrix_reports_the_rule_behind_its_steps():
    """``step_rule="richardson"``: the matrix is computed at the robust steps, so its rule is "robust"."""
    rng = np.random.default_rng(15)
    mu = np.array([3.0, 1.5, -1.5])

    def draw(tx: float, ty: float) -> np.ndarray:
        return rng.standard_normal((4000, 3)) + tx * mu + ty * mu[::-1]

    c = draw(0, 0)
    sx = {0.0: c, **{h * s: draw(h * s, 0) for s in (0.1, 0.2, 0.3) for h in (-0.5, 0.5)}}
    sy = {0.0: c, **{h * s: draw(0, h * s) for s in (0.1, 0.2, 0.3) for h in (-0.5, 0.5)}}
    # rel_tol=1: the robust rule takes the smallest step, so the Richardson fit has three steps to use
    r = fisher_matrix(sx, sy, decorrelation="none", step_rule="richardson", rel_tol=1.0, device="cpu")
    assert [a.method for a in r.axes] == ["richardson", "richardson"]  # the per-axis scans extrapolate
    assert r.method == "robust" and r.step_rules == ["robust", "robust"]
    assert np.allclose(r.steps, [a.robust.step for a in r.axes])


def test_linear_fisher_on_pure_noise_and_bad_input():
    """θ-independent data: the bias-corrected value is <= 0 about half the time; that must give the
    noise-only error 2·4N(2n-3)/((2n-N-5) n² Δ⁴) (it was a ZeroDivisionError), and the values average to 0."""
    rng = np.random.default_rng(16)
    n, d = 200, 5
    vals = []
    for _ in range(20):
        r = linear_fisher(rng.standard_normal((n, d)), rng.standard_normal((n, d)), 1.0)
        vals.append(r.value)
        if r.value <= 0:
            assert r.stderr == pytest.approx(np.sqrt(8 * d * (2 * n - 3) / ((2 * n - d - 5) * n**2)))
    vals = np.array(vals)
    assert np.sum(vals <= 0) >= 3 and abs(vals.mean()) < 4 * vals.std(ddof=1) / np.sqrt(vals.size)
    x = rng.standard_normal((50, 3))
    for bad, said in (
        ((x[:1], x[:1], 1.0), ">= 2 samples"),
        ((np.where(x == x[0, 0], np.nan, x), x, 1.0), "NaN or inf"),
        ((x, x, 0.0), "step must be > 0"),
        ((np.ones((50, 3)), np.ones((50, 3)), 1.0), "no variance"),
    ):
        with pytest.raises(ValueError, match=said):
            linear_fisher(*bad)
