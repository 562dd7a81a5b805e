"""Fixed, invertible, θ-independent decorrelating transforms for the Fisher-information estimator.

The model-free estimator (``analysis/fisher.py``) sums one-dimensional Fisher informations of the
components of ``Y = T(X)``. That sum equals the Fisher information of ``X`` only if

* ``T`` is invertible on the data's support (an invertible map preserves Fisher information), and
* ``T`` does not depend on θ (otherwise ∂p/∂θ picks up the θ-dependence of the map itself), and
* the components of ``Y`` are (close to) statistically independent (then the joint information is the
  sum of the marginal ones).

So the transform is fitted **once** on data pooled over all parameter values and then applied, unchanged,
to every dataset. Methods:

``"pca"``
    whitening PCA (scikit-learn, covariance eigen-solver: fast for ``n_samples >> n_features``).
    Independence is exact for Gaussian data (paper, Fig. 2b).
``"ica"``
    whitening PCA, then scikit-learn ``FastICA`` (``whiten=False``) on the leading ``ica_components``
    whitened components, fitted on at most ``ica_max_samples`` rows. The remaining whitened components pass
    through unrotated, so the composite is still invertible; this is what keeps FastICA at minutes rather
    than hours on 1024-pixel frames. Convergence (iterations, converged flag) and fit time are recorded.
``"gaussianize"``
    every feature is mapped through its pooled empirical CDF (piecewise-linear between stored quantile
    knots, mid-rank on ties) and then through the standard normal quantile, then whitening PCA. The
    per-feature map is monotone, hence information preserving, and turns heavy-tailed marginals (speckle
    intensity, the x³ test) into Gaussian ones, where PCA is the right decorrelator.
``"none"``
    identity (only drops exactly constant features).

Rank deficiency: principal components whose variance is below ``rtol`` times the largest one are dropped
(they carry no fluctuation, and whitening them would amplify round-off into spurious information; the
paper's tridiagonal-ones 50x50 mixing matrix is itself singular).

All transforms are stored as plain arrays and applied with torch, so the same fitted transform runs on the
CPU or on a CUDA device (``device="auto"`` picks CUDA when available).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import ndtri
from sklearn.decomposition import PCA, FastICA
from sklearn.exceptions import ConvergenceWarning

Method = Literal["pca", "ica", "gaussianize", "none"]
METHODS: tuple[str, ...] = ("pca", "ica", "gaussianize", "none")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` or None -> CUDA when available, else CPU; anything else must be usable here.

    The one device choice of specklab (analysis, training, evaluation, benchmarks); ValueError for a
    name torch does not know, CUDA on a machine without it, or a CUDA index it does not have.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return dev


def as_tensor(x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """2-D (n_samples, n_features) tensor on ``device``; frames (n, H, W) are flattened."""
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if t.ndim > 2:
        t = t.reshape(t.shape[0], -1)
    if t.ndim != 2:
        raise ValueError(f"expected (n_samples, n_features) data, got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


@dataclass
class Decorrelation:
    """A fitted transform ``y = R · W · (g(x) - mean)``.

    ``g`` is the optional per-feature gaussianising map (quantile ``knots``), ``W`` the whitening PCA
    matrix (rows = kept components), ``R`` an optional orthogonal rotation (FastICA unmixing) acting on the
    first ``R.shape[0]`` whitened components. ``info`` records what the fit did (timings, dropped
    components, ICA convergence).
    """

    method: str
    mean: np.ndarray  # (n_features,)
    whitening: np.ndarray  # (n_components, n_features)
    rotation: np.ndarray | None = None  # (m, m), acts on the first m whitened components
    knots: np.ndarray | None = None  # (n_features, n_knots) sorted pooled quantiles (gaussianize)
    levels: np.ndarray | None = None  # (n_features, n_knots) mid-rank CDF level of each knot
    n_fit: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.whitening.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.whitening.shape[0])

    def transform(
        self,
        x: np.ndarray | torch.Tensor,
        *,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float64,
        batch_size: int = 65536,
    ) -> torch.Tensor:
        """Apply the fitted transform to ``x`` (n_samples, n_features) or frames (n, H, W).

        Returns a tensor on ``device``. Works in batches so that huge inputs (memory-mapped HDF5 reads)
        never need a second full-size temporary.
        """
        dev = resolve_device(device)
        n = x.shape[0]
        w = torch.as_tensor(self.whitening, device=dev, dtype=dtype)
        mean = torch.as_tensor(self.mean, device=dev, dtype=dtype)
        rot = None if self.rotation is None else torch.as_tensor(self.rotation, device=dev, dtype=dtype)
        gauss = self.knots is not None and self.levels is not None
        eps = 0.5 / max(self.n_fit, 2)
        if gauss and dev.type != "cpu":
            knots = torch.as_tensor(self.knots, device=dev, dtype=dtype)
            levels = torch.as_tensor(self.levels, device=dev, dtype=dtype)
        out = torch.empty((n, self.n_components), device=dev, dtype=dtype)
        for start in range(0, n, batch_size):
            chunk = x[start : start + batch_size]
            if gauss and dev.type == "cpu":
                xn = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
                xn = xn.reshape(xn.shape[0], -1)
                self._check(xn.shape[1])
                _require_finite(np.isfinite(xn).all())
                xb = as_tensor(_gaussianize_numpy(xn, self.knots, self.levels, eps), dev, dtype)
            else:
                xb = as_tensor(chunk, dev, dtype)
                self._check(xb.shape[1])
                _require_finite(bool(torch.isfinite(xb).all()))
                if gauss:
                    xb = _gaussianize_torch(xb, knots, levels, eps)
            yb = (xb - mean) @ w.T
            if rot is not None:
                m = rot.shape[0]
                yb[:, :m] = yb[:, :m] @ rot.T
            out[start : start + xb.shape[0]] = yb
        return out

    def _check(self, n_features: int) -> None:
        if n_features != self.n_features:
            raise ValueError(f"transform fitted on {self.n_features} features, got {n_features}")

    def transform_numpy(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Convenience wrapper returning a NumPy array (on the CPU)."""
        return self.transform(x, **kwargs).cpu().numpy()


def _require_finite(ok: bool) -> None:
    """NaN or inf would be dropped as 'constant' by the fit or binned as extreme values: refuse them."""
    if not ok:
        raise ValueError("data contain NaN or inf: remove or repair those samples first")


def knot_levels(knots: np.ndarray) -> np.ndarray:
    """CDF level of every knot, with each run of tied knots given the mid level of the run (mid-rank ECDF).

    ``knots`` (features, m) are sorted pooled quantiles at levels j/(m-1). Discrete camera values produce
    runs of equal knots; giving the whole run its centre level maps a tied value to the middle of its
    probability mass, which keeps the map monotone and symmetric.
    """
    m = knots.shape[1]
    lev = np.empty_like(knots, dtype=np.float64)
    base = np.arange(m, dtype=np.float64)
    for f in range(knots.shape[0]):
        _, first, counts = np.unique(knots[f], return_index=True, return_counts=True)
        mid = first + 0.5 * (counts - 1)
        lev[f] = np.repeat(mid, counts) if counts.size < m else base
    return lev / (m - 1)


def _gaussianize_torch(
    x: torch.Tensor, knots: torch.Tensor, levels: torch.Tensor, eps: float
) -> torch.Tensor:
    """Piecewise-linear pooled ECDF (through the mid levels) then the normal quantile; x is (n, features)."""
    xt = x.T.contiguous()
    m = knots.shape[1]
    j = (torch.searchsorted(knots, xt, right=True) - 1).clamp(0, m - 2)  # last knot <= x
    lo, hi = torch.gather(knots, 1, j), torch.gather(knots, 1, j + 1)
    l_lo, l_hi = torch.gather(levels, 1, j), torch.gather(levels, 1, j + 1)
    width = hi - lo
    t = torch.where(width > 0, (xt - lo) / torch.where(width > 0, width, torch.ones_like(width)), 0.0)
    u = l_lo + t.clamp(0.0, 1.0) * (l_hi - l_lo)
    return torch.special.ndtri(u.clamp(eps, 1.0 - eps)).T


def _gaussianize_numpy(x: np.ndarray, knots: np.ndarray, levels: np.ndarray, eps: float) -> np.ndarray:
    """Same map as :func:`_gaussianize_torch` with ``np.interp`` per feature (much faster on the CPU)."""
    out = np.empty(x.shape, dtype=np.float64)
    for f in range(x.shape[1]):
        kf, lf = knots[f], levels[f]
        keep = np.ones(kf.size, dtype=bool)
        keep[1:] = kf[1:] != kf[:-1]  # one point per tied run (its mid level): same piecewise-linear map
        out[:, f] = np.interp(x[:, f], kf[keep], lf[keep])
    np.clip(out, eps, 1.0 - eps, out=out)
    return ndtri(out)


def _whitening_pca(
    x: np.ndarray, rtol: float, n_components: int | None, random_state: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Whitening matrix from scikit-learn PCA, dropping (near-)zero-variance components."""
    solver = "covariance_eigh" if x.shape[0] >= 5 * x.shape[1] else "full"
    pca = PCA(svd_solver=solver, random_state=random_state).fit(x)
    var = pca.explained_variance_
    keep = var > rtol * var[0] if var[0] > 0 else np.zeros_like(var, dtype=bool)
    if n_components is not None:
        keep &= np.arange(var.size) < n_components
    if not keep.any():
        raise ValueError("pooled data have no variance: nothing to decorrelate")
    w = pca.components_[keep] / np.sqrt(var[keep])[:, None]
    info = {
        "pca_solver": solver,
        "n_dropped_rank": int(np.sum(var <= rtol * var[0])),
        "explained_variance_min_kept": float(var[keep][-1]),
        "explained_variance_max": float(var[0]),
    }
    return pca.mean_.copy(), w, info


def fit_decorrelation(
    pooled: np.ndarray | torch.Tensor,
    method: Method = "pca",
    *,
    rtol: float = 1e-10,
    n_components: int | None = None,
    ica_components: int = 128,
    ica_max_samples: int = 30_000,
    ica_max_iter: int = 400,
    ica_tol: float = 1e-4,
    ica_fun: str = "logcosh",
    gauss_knots: int = 2049,
    gauss_max_samples: int = 500_000,
    random_state: int = 0,
) -> Decorrelation:
    """Fit a decorrelating transform on data pooled over **all** parameter values.

    Parameters
    ----------
    pooled:
        (n_samples, n_features) or frames (n, H, W); rows from every θ, so the map is θ-independent.
    method:
        ``"pca" | "ica" | "gaussianize" | "none"`` (see module docstring).
    rtol:
        components with variance <= ``rtol`` x the largest are dropped (rank deficiency, round-off).
    n_components:
        optional cap on the number of kept principal components (discarding components *loses*
        information; use only when you know they are pure noise).
    ica_components, ica_max_samples, ica_max_iter, ica_tol, ica_fun:
        FastICA runs on the leading ``ica_components`` whitened components, on a random subset of at
        most ``ica_max_samples`` rows, with at most ``ica_max_iter`` iterations. Cost per iteration is
        O(samples x components²), so these caps bound the fit time; non-convergence is recorded (the
        result is still an orthogonal, invertible rotation, just a less independent one).
    gauss_knots, gauss_max_samples:
        number of stored quantile knots per feature and the maximum number of rows used to place them.
    """
    if method not in METHODS:
        raise ValueError(f"unknown decorrelation {method!r}; choose one of {METHODS}")
    x = pooled.detach().cpu().numpy() if isinstance(pooled, torch.Tensor) else np.asarray(pooled)
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    x = np.asarray(x, dtype=np.float64)
    _require_finite(bool(np.isfinite(x).all()))
    rng = np.random.default_rng(random_state)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"n_fit": int(x.shape[0]), "n_features": int(x.shape[1])}
    knots = None
    levels = None
    rotation = None

    if method == "none":
        std = x.std(axis=0)
        keep = std > rtol * max(float(std.max()), np.finfo(float).tiny)
        mean = x.mean(axis=0)
        if not keep.any():
            raise ValueError("pooled data have no variance: nothing to decorrelate")
        w = np.eye(x.shape[1])[keep]
        info["n_dropped_rank"] = int((~keep).sum())
    else:
        if method == "gaussianize":
            tg = time.perf_counter()
            rows = (
                x if x.shape[0] <= gauss_max_samples else x[rng.choice(x.shape[0], gauss_max_samples, False)]
            )
            m = int(min(gauss_knots, rows.shape[0]))
            srt = np.sort(rows, axis=0)
            pos = np.round(np.linspace(0, rows.shape[0] - 1, m)).astype(np.int64)
            knots = np.ascontiguousarray(srt[pos].T)  # (features, m), includes min and max
            del srt
            levels = knot_levels(knots)
            xt = _gaussianize_numpy(x, knots, levels, 0.5 / max(rows.shape[0], 2))
            info["gaussianize_s"] = time.perf_counter() - tg
            info["n_knots"] = m
        else:
            xt = x
        tp = time.perf_counter()
        mean, w, pinfo = _whitening_pca(xt, rtol, n_components, random_state)
        info.update(pinfo)
        info["pca_s"] = time.perf_counter() - tp
        if method == "ica":
            ti = time.perf_counter()
            m = min(ica_components, w.shape[0])
            rows = (
                xt if xt.shape[0] <= ica_max_samples else xt[rng.choice(xt.shape[0], ica_max_samples, False)]
            )
            z = (rows - mean) @ w[:m].T
            ica = FastICA(
                whiten=False, fun=ica_fun, max_iter=ica_max_iter, tol=ica_tol, random_state=random_state
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                ica.fit(z)
            converged = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
            # whiten=False -> the unmixing is the symmetric-decorrelated (orthogonal) W; re-orthogonalise
            # to machine precision so that whitened components stay exactly uncorrelated and invertible
            u, _, vt = np.linalg.svd(ica.components_)
            rotation = u @ vt
            info.update(
                ica_components=int(m),
                ica_samples=int(rows.shape[0]),
                ica_n_iter=int(ica.n_iter_),
                ica_max_iter=int(ica_max_iter),
                ica_converged=bool(converged),
                ica_s=time.perf_counter() - ti,
            )
    info["fit_s"] = time.perf_counter() - t0
    n_fit = int(min(x.shape[0], gauss_max_samples)) if method == "gaussianize" else int(x.shape[0])
    return Decorrelation(
        method=method,
        mean=mean,
        whitening=w,
        rotation=rotation,
        knots=knots,
        levels=levels,
        n_fit=n_fit,
        info=info,
    )
