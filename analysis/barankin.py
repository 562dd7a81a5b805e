"""Barankin bound: the variance floor of estimators kept unbiased over a range, beyond the local regime.

Why this exists: the issue's precision is sigma *after* the bias correction, i.e. of an estimator made
unbiased over the calibration range. The CRB only asks for unbiasedness near the true position; asking it
over a range costs more once a frame can confuse the target with a distant position, and the Barankin bound
(Barankin 1949; with test points, McAulay & Hofstetter 1971) says how much. For an estimator unbiased at
theta0 and at test points theta0 + h_i, with L_i = p(x; theta0 + h_i) / p(x; theta0)::

    Var_theta0(theta_hat) >= (a^T h)^2 / (a^T B a)  for every a,   B_ij = E_theta0[L_i L_j] - 1

(Cauchy-Schwarz on the test function sum_i a_i (L_i - 1)); the best a gives h^T B^-1 h. For Gaussian
frames with a common covariance Sigma and means mu_i, E[L_i L_j] = exp(G_ij) with the Gram matrix
G_ij = (mu_i - mu_0)^T Sigma^-1 (mu_j - mu_0). A test point at a tiny offset gives the CRB, so the bound
is never below it; for a mean linear in theta it equals it (tests/test_barankin.py).
"""

from __future__ import annotations

import numpy as np


def gaussian_barankin_variance(offsets: np.ndarray, gram: np.ndarray, rcond: float = 1e-12) -> float:
    """Barankin bound on the variance for test points at ``offsets`` h_i, Gaussian frames (Gram G above).

    B = exp(G) - 1 spans many decades (exp of d^2 ~ 30 for well separated positions beside ~1e-6 for a tiny
    offset), so the best a is solved in the scaled coordinates of B's correlation matrix with eigenvalues
    below ``rcond`` dropped. The value returned is (a^T h)^2 / (a^T B a) for that explicit a, and the best
    single test point's h^2 / B_ii if larger: a valid bound whatever the conditioning, at worst not the
    tightest.
    """
    h = np.asarray(offsets, dtype=float)
    g = np.asarray(gram, dtype=float)
    if h.ndim != 1 or g.shape != (h.size, h.size):
        raise ValueError(f"gram must be ({h.size}, {h.size}) for {h.size} offsets, got {g.shape}")
    if not np.allclose(g, g.T, rtol=1e-8, atol=0.0):
        raise ValueError("gram must be symmetric")
    # a test point the frame tells apart with certainty (G_ii > 700: B_ii > e^700) adds nothing, and would
    # overflow; leaving test points out only loosens the bound
    if not np.all(np.diag(g) > 0):  # also catches NaN; a negative G_ii would give a NaN bound
        raise ValueError("every test point must change the frame distribution (G_ii > 0)")
    usable = np.diag(g) < 700.0
    h, g = h[usable], g[np.ix_(usable, usable)]
    if h.size == 0:
        raise ValueError("every test point has G_ii >= 700: put one at a smaller offset (the CRB's)")
    ratio_cov = np.expm1(0.5 * (g + g.T))
    scale = np.sqrt(np.diag(ratio_cov))
    corr = ratio_cov / np.outer(scale, scale)
    w, v = np.linalg.eigh(corr)
    keep = w > rcond * w.max()
    a = (v[:, keep] @ ((v[:, keep].T @ (h / scale)) / w[keep])) / scale
    best = float((a @ h) ** 2 / (a @ ratio_cov @ a))
    return max(best, float(np.max(h**2 / np.diag(ratio_cov))))
