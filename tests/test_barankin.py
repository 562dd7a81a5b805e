"""Known answers of the Barankin bound, and the explicit estimator that attains it on a finite test set."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.barankin import gaussian_barankin_variance


def test_linear_mean_gives_the_crb() -> None:
    """A mean linear in theta has an efficient unbiased estimator: no test point can raise the bound."""
    j = 2.5
    h = np.r_[1e-3, np.arange(-10.0, 10.5, 0.5)]
    h = h[h != 0]
    assert gaussian_barankin_variance(h, j * np.outer(h, h)) == pytest.approx(1 / j, rel=1e-3)


def test_one_and_two_test_points_match_the_closed_form() -> None:
    d2 = 1.7
    assert gaussian_barankin_variance(np.array([6.0]), np.array([[d2]])) == pytest.approx(36 / np.expm1(d2))
    h, g = np.array([-4.0, 6.0]), np.array([[1.2, -0.3], [-0.3, 1.7]])
    assert gaussian_barankin_variance(h, g) == pytest.approx(h @ np.linalg.solve(np.expm1(g), h))


def test_the_locally_best_unbiased_estimator_attains_it() -> None:
    """Pulse position in white noise at low SNR, test points at a tiny and at four far offsets.

    theta0 + sum_i a_i (L_i - 1) with a = B^-1 h is unbiased at every test point and its variance at theta0
    is the bound (Monte Carlo); the bound is well above the CRB, the tiny offset's own value.
    """
    rng = np.random.default_rng(5)
    t = np.arange(64) - 32.0

    def pulse(theta: float) -> np.ndarray:
        return 0.25 * np.exp(-0.5 * ((t - theta) / 3.0) ** 2)

    h = np.array([1e-3, -16.0, -8.0, 8.0, 16.0])
    diff = np.array([pulse(x) - pulse(0.0) for x in h])  # unit white noise: already whitened
    gram = diff @ diff.T
    bound = gaussian_barankin_variance(h, gram)
    assert bound > 10 * h[0] ** 2 / gram[0, 0]  # > 10 CRB^2 (the tiny offset alone gives the CRB)
    a = np.linalg.solve(np.expm1(gram), h)

    def estimate(theta: float, n: int) -> np.ndarray:
        frames = pulse(theta) + rng.standard_normal((n, t.size))
        log_ratio = (frames - pulse(0.0)) @ diff.T - 0.5 * np.diag(gram)  # log L_i of every frame
        return np.expm1(log_ratio) @ a

    at_zero = estimate(0.0, 200_000)
    assert at_zero.var() == pytest.approx(bound, rel=0.05)
    far = estimate(8.0, 200_000)
    assert far.mean() == pytest.approx(8.0, abs=4 * far.std() / np.sqrt(far.size))


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="must be"):
        gaussian_barankin_variance(np.array([1.0, 2.0]), np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_barankin_variance(np.array([1.0, 2.0]), np.array([[1.0, 0.5], [0.0, 1.0]]))
    far = gaussian_barankin_variance(np.array([0.01, 50.0]), np.diag([1e-4, 1e6]))  # 50 is told apart surely
    assert far == pytest.approx(1.0, rel=1e-3)  # the CRB from the first point alone
    with pytest.raises(ValueError, match="G_ii > 0"):
        gaussian_barankin_variance(np.array([1.0]), np.zeros((1, 1)))


def test_invalid_gram_diagonal_is_refused() -> None:
    """A negative G_ii is not a Gram matrix: an error, not a NaN bound."""
    with pytest.raises(ValueError, match="G_ii > 0"):
        gaussian_barankin_variance(np.array([1.0]), np.array([[-1.0]]))
    with pytest.raises(ValueError, match="G_ii > 0"):
        gaussian_barankin_variance(np.array([1.0, 2.0]), np.array([[1.0, 0.0], [0.0, -0.5]]))
