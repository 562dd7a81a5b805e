"""Bias-corrected linear Fisher information (Kanitscheider et al. 2015, PLoS Comput Biol 11:e1004218).

``I_lin = f'ᵀ Σ⁻¹ f'`` is the information available to the best *linear* unbiased readout; it equals the full
Fisher information for Gaussian data with θ-independent covariance and is a lower bound otherwise, which makes
it a cheap cross-check of the model-free histogram estimator.

Estimator for datasets of n₊, n₋ samples at θ0 ± Δ/2 in N dimensions:
``f̂' = (μ̂₊ - μ̂₋)/Δ``, ``Σ̂`` = pooled covariance with ν = n₊ + n₋ - 2 degrees of freedom, and
``Î₀ = f̂'ᵀ Σ̂⁻¹ f̂'``. Because ``νΣ̂`` is Wishart(Σ, ν) and independent of the means,
``E[Σ̂⁻¹] = ν/(ν - N - 1) Σ⁻¹`` and ``E[f̂' f̂'ᵀ] = f'f'ᵀ + (1/n₊ + 1/n₋) Σ/Δ²``, hence

    Î_bc = Î₀ (ν - N - 1)/ν - N (1/n₊ + 1/n₋)/Δ²

is unbiased. For n₊ = n₋ = n this is Kanitscheider's ``Î₀ (2n - N - 3)/(2n - 2) - 2N/(n Δ²)``; its variance
(their eq. for equal n) is ``2 Î²/(2n - N - 5) [1 + 4(2n - 3)/(n Î Δ²) + 4N(2n - 3)/(n² Î² Δ⁴)]``, used here
with n = harmonic-mean group size.

Directions of zero pooled variance (rank deficiency, e.g. the paper's singular tridiagonal mixing) are
projected out first (relative tolerance ``rtol``); N is then the retained rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearFisherResult:
    """Bias-corrected linear Fisher information for one (θ0 - Δ/2, θ0 + Δ/2) pair."""

    value: float
    stderr: float
    raw: float
    step: float
    n_features: int
    n_minus: int
    n_plus: int


def linear_fisher(
    samples_minus: np.ndarray, samples_plus: np.ndarray, step: float, *, rtol: float = 1e-10
) -> LinearFisherResult:
    """Bias-corrected linear Fisher information from samples at θ0 - step/2 and θ0 + step/2."""
    xm = np.asarray(samples_minus, dtype=np.float64).reshape(len(samples_minus), -1)
    xp = np.asarray(samples_plus, dtype=np.float64).reshape(len(samples_plus), -1)
    nm, npl = xm.shape[0], xp.shape[0]
    if nm < 2 or npl < 2:
        raise ValueError(f"need >= 2 samples on each side, got n₋={nm}, n₊={npl}")
    if not (np.isfinite(xm).all() and np.isfinite(xp).all()):
        raise ValueError("data contain NaN or inf: remove or repair those samples first")
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    mm, mp = xm.mean(axis=0), xp.mean(axis=0)
    nu = nm + npl - 2
    cov = ((xm - mm).T @ (xm - mm) + (xp - mp).T @ (xp - mp)) / nu
    w, v = np.linalg.eigh(cov)
    if not w.max() > 0:
        raise ValueError("data have no variance: nothing to invert")
    keep = w > rtol * w.max()
    n_dim = int(keep.sum())
    if nu - n_dim - 1 <= 0:
        raise ValueError(f"need n₊ + n₋ > N + 3 (N={n_dim}, n₊+n₋={nm + npl})")
    df = (v[:, keep].T @ (mp - mm)) / step
    raw = float(np.sum(df**2 / w[keep]))
    c = 1.0 / nm + 1.0 / npl
    value = raw * (nu - n_dim - 1) / nu - n_dim * c / step**2
    n = 2.0 / c  # harmonic-mean group size: equals n when n₊ = n₋ = n
    # Kanitscheider's 2I²/(2n-N-5)[1 + 4(2n-3)/(nIΔ²) + 4N(2n-3)/(n²I²Δ⁴)] multiplied out, so that an
    # estimate <= 0 (pure noise) gives the noise-only variance instead of a division by zero
    i_pos = max(value, 0.0)
    var = (
        2.0
        / max(2 * n - n_dim - 5, 1)
        * (
            i_pos**2
            + 4.0 * (2 * n - 3) * i_pos / (n * step**2)
            + 4.0 * n_dim * (2 * n - 3) / (n**2 * step**4)
        )
    )
    return LinearFisherResult(
        value=float(value),
        stderr=float(math.sqrt(var)),
        raw=raw,
        step=float(step),
        n_features=n_dim,
        n_minus=nm,
        n_plus=npl,
    )


def linear_fisher_scan(
    samples: Mapping[float, np.ndarray], *, theta0: float | None = None, rtol: float = 1e-10
) -> list[LinearFisherResult]:
    """:func:`linear_fisher` for every pair of keys symmetric about ``theta0`` (default: key midpoint)."""
    from analysis.fisher import _pairs  # local import: fisher imports torch, keep this module light

    _, pairs, _ = _pairs(list(samples.keys()), theta0)
    lookup = {float(k): v for k, v in samples.items()}
    return [linear_fisher(lookup[a], lookup[b], b - a, rtol=rtol) for a, b in pairs]
