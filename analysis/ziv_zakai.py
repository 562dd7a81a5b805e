"""Ziv-Zakai bound: the error no estimator can beat once single frames leave the local regime.

Why this exists: the Cramer-Rao bound is local. It is attained only where an estimator's errors are small
compared with the scale on which the mean image changes; one speckle frame at b >= 2.5 is not there, and
every estimator that has to *find* the target makes some large errors (the threshold regime of nonlinear
estimation, docs/precision.md). The Ziv-Zakai bound (ZZB; Ziv & Zakai 1969, Bellini & Tartara 1974, vector
form Bell, Steinberg, Ephraim & Van Trees 1997) counts those errors. It bounds the Bayesian mean-square
error over a prior by the error probability of binary tests between two positions h apart. For a uniform
prior of width A along the axis (a square prior for the 2-D position, the pair offset taken along the
axis) and a problem whose test difficulty depends on h alone::

    E[(theta_hat - theta)^2] >= integral_0^A  h  V{ (1 - h/A) P_min(h) }  dh

P_min(h) is the minimum error probability of deciding between theta and theta + h with equal priors, V
fills valleys (V f(h) = max over xi >= 0 of f(h + xi)). For two Gaussians with a common covariance at
Mahalanobis distance d, P_min = Q(d/2). Known answers (tests/test_ziv_zakai.py): d = sqrt(J) h with
A >> J^-1/2 gives the CRB 1/J; d = 0 (no information) gives the prior variance A^2/12.
"""

from __future__ import annotations

import numpy as np
from scipy import interpolate, special


def gaussian_min_error(distance: np.ndarray) -> np.ndarray:
    """Q(d/2): minimum error probability between two equally likely Gaussians at Mahalanobis distance d."""
    return special.ndtr(-0.5 * np.asarray(distance, dtype=float))


def ziv_zakai_mse(shift: np.ndarray, min_error: np.ndarray, prior_width: float) -> float:
    """ZZB on the mean-square error for a uniform prior of width ``prior_width``, P_min sampled on a grid.

    ``shift``: ascending pair offsets h from 0 to at least ``prior_width`` (fine enough for the trapezoid
    rule); ``min_error``: P_min(h) there. Valley filling makes the integrand non-increasing, so a P_min
    that rises again (a periodic target confused with its neighbour) still gives a valid, tighter bound.
    """
    h = np.asarray(shift, dtype=float)
    p = np.asarray(min_error, dtype=float)
    if h.ndim != 1 or h.shape != p.shape or h.size < 2:
        raise ValueError("shift and min_error must be 1-D arrays of the same length (>= 2)")
    if h[0] != 0.0 or np.any(np.diff(h) <= 0):
        raise ValueError("shift must start at 0 and increase")
    if not prior_width > 0 or h[-1] < prior_width:
        raise ValueError(f"shift must reach the prior width {prior_width} (ends at {h[-1]})")
    if np.any((p < 0) | (p > 0.5)):
        raise ValueError("min_error must lie in [0, 1/2]")
    inside = h <= prior_width
    h, p = np.r_[h[inside], prior_width], np.r_[p[inside], np.interp(prior_width, h, p)]
    f = (1.0 - h / prior_width) * p
    filled = np.maximum.accumulate(f[::-1])[::-1]  # V: the largest value at or beyond each h
    return float(np.trapezoid(h * filled, h))


def gaussian_zzb(shift: np.ndarray, distance: np.ndarray, prior_width: float, n_grid: int = 4001) -> float:
    """RMS ZZB (units of ``shift``) from Mahalanobis distances d(h) between Gaussian frame models.

    ``shift``, ``distance``: d sampled at h > 0, coarsely where it changes slowly (it is interpolated
    monotonically, through d(0) = 0, on ``n_grid`` points; beyond the last sample it is held at its last
    value, the saturation of two images that no longer overlap).
    """
    h = np.asarray(shift, dtype=float)
    d = np.asarray(distance, dtype=float)
    if h.ndim != 1 or h.shape != d.shape or np.any(h <= 0) or np.any(np.diff(h) <= 0):
        raise ValueError("shift must be positive and increasing, with one distance per shift")
    if np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError("distances must be finite and >= 0")
    if not prior_width > 0:
        raise ValueError(f"prior width must be > 0, got {prior_width}")
    curve = interpolate.PchipInterpolator(np.r_[0.0, h], np.r_[0.0, d])
    # the grid is geometric near 0 so that a steep local rise (high SNR, d ~ sqrt(J) h) is resolved
    fine = np.unique(
        np.r_[0.0, np.geomspace(h[0] / 100, prior_width, n_grid), np.linspace(0, prior_width, n_grid)]
    )
    dist = np.where(fine <= h[-1], curve(np.minimum(fine, h[-1])), d[-1])
    return float(np.sqrt(ziv_zakai_mse(fine, gaussian_min_error(dist), prior_width)))
