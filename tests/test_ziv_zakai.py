"""Known answers of the Ziv-Zakai bound, and a Monte Carlo check that it bounds the best estimator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special

from analysis.ziv_zakai import gaussian_min_error, gaussian_zzb, ziv_zakai_mse


def test_local_limit_is_the_crb() -> None:
    """d = sqrt(J) h: the quadrature of the closed form, and 1/J once the prior is wide."""
    j, width = 4.0, 20.0
    shifts = np.geomspace(0.01, width, 30)
    zzb = gaussian_zzb(shifts, np.sqrt(j) * shifts, width)
    exact, _ = integrate.quad(lambda h: h * (1 - h / width) * special.ndtr(-np.sqrt(j) * h / 2), 0, width)
    assert zzb**2 == pytest.approx(exact, rel=2e-3)
    wide = gaussian_zzb(shifts * 50, np.sqrt(j) * shifts * 50, 1000.0)
    assert wide**2 == pytest.approx(1 / j, rel=2e-3)


def test_no_information_gives_the_prior_variance() -> None:
    width = 12.0
    h = np.linspace(0, width, 101)
    assert ziv_zakai_mse(h, np.full_like(h, 0.5), width) == pytest.approx(width**2 / 12, rel=1e-3)
    assert gaussian_zzb(h[1:], np.zeros(100), width) == pytest.approx(width / np.sqrt(12), rel=1e-3)


def test_valley_filling_counts_a_confusable_far_position() -> None:
    """A periodic target: P_min vanishes between neighbours but is 1/2 again one period away."""
    width, period = 10.0, 4.0
    h = np.linspace(0, width, 2001)
    p = np.where(np.abs(h - period) < 0.5, 0.5, np.where(h < 0.5, 0.5, 0.0))
    bound = ziv_zakai_mse(h, p, width)
    near, far = period - 0.5, period + 0.5
    filled = np.where((h < 0.5) | ((h >= near) & (h < far)), (1 - h / width) * 0.5, 0.0)
    filled[(h >= 0.5) & (h < near)] = (1 - near / width) * 0.5  # the valley, filled from the far peak
    assert bound == pytest.approx(np.trapezoid(h * filled, h), rel=1e-3)
    assert bound > 2 * np.trapezoid(h * (1 - h / width) * p, h)  # without V it would miss the confusion


def test_bad_input_is_named() -> None:
    h = np.linspace(0, 5, 11)
    with pytest.raises(ValueError, match="prior width"):
        ziv_zakai_mse(h, np.zeros(11), 8.0)
    with pytest.raises(ValueError, match="start at 0"):
        ziv_zakai_mse(h + 1, np.zeros(11), 5.0)
    with pytest.raises(ValueError, match=r"\[0, 1/2\]"):
        ziv_zakai_mse(h, np.ones(11), 5.0)
    with pytest.raises(ValueError, match="positive and increasing"):
        gaussian_zzb(h, h, 5.0)
    assert gaussian_min_error(0.0) == 0.5


@pytest.mark.parametrize(("amplitude", "threshold"), [(1.3, True), (5.0, False)])
def test_bounds_the_mmse_of_a_pulse_in_white_noise(amplitude: float, threshold: bool) -> None:
    """1-D Gaussian pulse at a uniform position in white noise; the posterior mean is the MMSE estimator.

    At low SNR the ZZB is well above the CRB (the threshold regime) and still below the MMSE; at high SNR
    all three agree.
    """
    rng = np.random.default_rng(3)
    t = np.arange(128) - 64.0
    width, prior = 3.0, 60.0

    def pulse(theta: np.ndarray) -> np.ndarray:
        return amplitude * np.exp(-0.5 * ((t[None, :] - np.asarray(theta)[:, None]) / width) ** 2)

    crb = 1 / np.sqrt(np.sum((pulse(np.zeros(1))[0] * t / width**2) ** 2))
    shifts = np.geomspace(0.05, prior, 40)
    distance = np.linalg.norm(pulse(shifts / 2) - pulse(-shifts / 2), axis=1)
    zzb = gaussian_zzb(shifts, distance, prior)

    grid = np.linspace(-prior / 2, prior / 2, 601)
    means = pulse(grid)
    theta = rng.uniform(-prior / 2, prior / 2, 3000)
    frames = pulse(theta) + rng.standard_normal((theta.size, t.size))
    log_l = frames @ means.T - 0.5 * (means**2).sum(axis=1)
    post = np.exp(log_l - log_l.max(axis=1, keepdims=True))
    sq_err = (post @ grid / post.sum(axis=1) - theta) ** 2
    mmse, stderr = sq_err.mean(), sq_err.std() / np.sqrt(sq_err.size)
    assert zzb**2 < mmse + 3 * stderr
    if threshold:
        assert zzb > 2 * crb
    else:
        assert zzb == pytest.approx(crb, rel=0.02)
        assert np.sqrt(mmse) == pytest.approx(zzb, rel=0.1)


def test_non_positive_prior_width_is_named() -> None:
    h = np.array([1.0, 2.0])
    for width in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="prior width must be > 0"):
            gaussian_zzb(h, h, width)
