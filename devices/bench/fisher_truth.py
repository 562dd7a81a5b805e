"""Analytic Fisher information of the target position, where closed forms exist.

Two statistical models of one (binned) camera pixel k, both with independent pixels:

1. Shot noise (b = 0, free space): counts ~ Poisson(lambda_k) with lambda_k the expected
   photo-electrons (QE x photons), plus Gaussian read noise of variance sigma_r^2 per
   *read* pixel, folded in as the usual Gaussian-Poisson approximation (the variance adds
   in the denominator)::

       J_ij = sum_k (d lambda_k/d theta_i)(d lambda_k/d theta_j) / (lambda_k + n_read sigma_r^2)

   with n_read = binning^2 for software binning (an sCMOS reads every pixel). Exact for a
   pure Poisson sensor (sigma_r = 0); saturation and ADC quantisation are neglected.

2. Speckle + coherent part: the pixel (or bin) sums M independent speckle modes, each the
   coherent field plus a circular Gaussian field. The intensity S is then a scaled
   non-central chi-square with 2M degrees of freedom (M = 1: the modified-Rician intensity
   PDF)::

       p(S) = (1/d) (S/lam)^((M-1)/2) exp(-(S+lam)/d) I_{M-1}(2 sqrt(lam S)/d)

   lam = coherent intensity I_c (summed over the bin), d = diffuse mean per mode
   (D = M d is the bin's diffuse mean I_d). The 2x2 Fisher matrix in (lam, d) is computed by
   quadrature; it scales as F(lam, d) = F~(k = lam/d; M) / d^2, so F~ is tabulated once
   per M on a log grid of k and interpolated. The position information is
   J = g^T F g with g = (d lam/d theta, d d/d theta). Shot noise is neglected here (valid
   when d >> 1 photon per mode, always the case on the bench for b > 0.05); it can only
   lower the true information (data processing inequality), so this is an upper bound
   that is tight in the speckle-limited regime.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special

_LOGK = np.linspace(-8.0, 5.0, 261)  # k = lam/d from 1e-8 to 1e5


def _rician_fisher_normalised(k: float, m: float, n_grid: int = 6000) -> np.ndarray:
    """F~(k; M): 2x2 Fisher matrix in (lam, d) at d = 1, by trapezoidal quadrature over S/d."""
    mean = k + m
    std = np.sqrt(m + 2.0 * k)
    lo = max(0.0, mean - 14.0 * std)
    hi = mean + 14.0 * std + 30.0
    x = np.linspace(lo, hi, n_grid)[1:]  # x = S/d > 0
    z = 2.0 * np.sqrt(k * x)
    i0 = special.ive(m - 1.0, z)
    ratio = special.ive(m, z) / np.maximum(i0, 1e-300)
    # log p (d = 1), with I_nu(z) = ive(nu, z) exp(z) and exp(z - x - k) = exp(-(sqrt x - sqrt k)^2)
    logp = 0.5 * (m - 1.0) * np.log(x / k) - (np.sqrt(x) - np.sqrt(k)) ** 2 + np.log(np.maximum(i0, 1e-300))
    p = np.exp(logp)
    s_lam = -1.0 + ratio * np.sqrt(x / k)
    s_d = -m + (x + k) - z * ratio
    w = p / np.trapezoid(p, x)  # renormalise the truncated grid
    f = np.empty((2, 2))
    f[0, 0] = np.trapezoid(w * s_lam * s_lam, x)
    f[0, 1] = f[1, 0] = np.trapezoid(w * s_lam * s_d, x)
    f[1, 1] = np.trapezoid(w * s_d * s_d, x)
    return f


@lru_cache(maxsize=32)
def rician_table(m: float) -> np.ndarray:
    """F~ on the log-k grid for M modes: array (len(_LOGK), 3) holding (F_ll, F_ld, F_dd)."""
    out = np.empty((_LOGK.size, 3))
    for i, lk in enumerate(_LOGK):
        f = _rician_fisher_normalised(10.0**lk, m)
        out[i] = (f[0, 0], f[0, 1], f[1, 1])
    return out


def rician_fisher(lam: np.ndarray, d: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel (F_ll, F_ld, F_dd) of the M-mode non-central-chi-square intensity, physical units.

    ``lam``: coherent intensity, ``d``: diffuse mean *per mode*; both > 0 where used.
    k outside [1e-8, 1e5] is clipped to the table (documented limitation).
    """
    table = rician_table(round(float(m), 3))
    lk = np.log10(np.clip(lam / d, 10.0 ** _LOGK[0], 10.0 ** _LOGK[-1]))
    inv_d2 = 1.0 / (d * d)
    return tuple(np.interp(lk, _LOGK, table[:, j]) * inv_d2 for j in range(3))  # type: ignore[return-value]


def poisson_fisher_matrix(
    lam: np.ndarray, dlam: tuple[np.ndarray, np.ndarray], read_var: float = 0.0
) -> np.ndarray:
    """2x2 J = sum_k dl_i dl_j / (lam_k + read_var): Poisson (+ Gaussian read noise) pixels."""
    denom = lam + read_var
    ok = denom > 0
    j = np.empty((2, 2))
    for a in range(2):
        for b in range(2):
            j[a, b] = np.sum(dlam[a][ok] * dlam[b][ok] / denom[ok])
    return j


def speckle_fisher_matrix(
    lam: np.ndarray,
    dlam: tuple[np.ndarray, np.ndarray],
    diff: np.ndarray,
    ddiff: tuple[np.ndarray, np.ndarray],
    m: float,
) -> np.ndarray:
    """2x2 J for pixels with coherent intensity ``lam`` and diffuse mean ``diff`` (= M d), M modes each."""
    ok = diff > 0
    lam_, dd = np.maximum(lam[ok], 0.0), diff[ok] / m
    fll, fld, fdd = rician_fisher(np.maximum(lam_, 1e-300), dd, m)
    g = [(dlam[a][ok], ddiff[a][ok] / m) for a in range(2)]
    j = np.empty((2, 2))
    for a in range(2):
        for b in range(2):
            la, da = g[a]
            lb, db = g[b]
            j[a, b] = np.sum(fll * la * lb + fld * (la * db + da * lb) + fdd * da * db)
    return j


def bin_image(img: np.ndarray, f: int) -> np.ndarray:
    """Sum f x f blocks (the edge remainder is dropped, as camera binning does)."""
    if f == 1:
        return img
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).sum(axis=(1, 3))
