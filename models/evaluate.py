"""Precision and bias of a trained localiser against the Cramér–Rao bound (seed 000, Figs. 3-4).

* Predictions are the softmax expectations converted to µm at the sample plane (:class:`ClassGrid`).
* Per test position p: ``σ_x,p, σ_y,p`` (sample standard deviation, ddof=1) and the bias
  ``B_p = mean(pred) - true``.  Summaries: ``sigma_um`` = mean over positions of σ_p (what Fig. 3b's
  thick line and Fig. 4b's comparison with the CRB use), ``bias_um`` = mean over positions of |B_p| (a
  signed mean would let a bias towards the centre cancel between opposite positions); quartiles over
  positions are kept for the shaded bands.
* Bias correction (paper, Methods and Supplementary 4.4: predictions on a split of the training set
  are compared with the ground truth and a 2-D spline of the bias covers the field of view): every
  held-out S frame (never trained on) is predicted at every point of a regular lattice of integer
  shifts around the D positions (:func:`models.data.build_calibration_lattice`); the per-point mean
  bias is fitted per axis with a smoothing bicubic spline whose smoothing is set by the points'
  standard errors, and a test prediction ``p`` is corrected by solving ``θ + b(θ) = p``
  (:class:`LatticeBiasCorrector`).  One random shift per held-out frame (the previous scheme) left
  ~150 noisy points for a 36-coefficient spline at 6,000 frames and made the D-frame σ 3x worse.
* Repeated trainings (paper: 25 initialisations) are aggregated by :func:`aggregate_evaluations`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.interpolate import RectBivariateSpline
from torch.utils.data import DataLoader, Dataset, TensorDataset

from models import LATTICE_MAX_FRAMES, LATTICE_SIDE
from models.architectures import expected_class, localisation_loss
from models.data import ClassGrid, build_calibration_lattice

__all__ = [
    "LatticeBiasCorrector",
    "Predictions",
    "aggregate_evaluations",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_predictions",
    "load_crb",
    "position_stats",
    "predict",
    "response_slope",
    "summarise",
]

MAX_CLIPPED_FRACTION = 0.02
"""Above this share of test predictions stopped at the calibration lattice's edge, σ is only a lower bound.

Why: a corrected estimate cannot leave the lattice box (no extrapolation of the bias field), so the tail of
a wide, shrunk estimator is cut off there and its σ comes out too small (CoordConv at b = 5: 91 % clipped,
corrected σ 8.2 µm against 22 µm from its response slope).  Why 2 %: Gaussian errors clipped on one side
lose about as much of σ as the share clipped (1 % -> 1.1 %, 5 % -> 4.4 %, 10 % -> 8.5 %), and beyond 2 %
that exceeds twice the ~1 % statistical error of σ at the benchmark's run sizes.
"""


@dataclass
class Predictions:
    """Model outputs on a dataset, in µm at the sample plane."""

    pred_um: np.ndarray  # (N, 2)
    true_um: np.ndarray  # (N, 2)
    pos_id: np.ndarray  # (N,)
    loss: float


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: Dataset,
    grid: ClassGrid,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
) -> Predictions:
    """Run ``model`` over ``dataset`` (items ``(x, class, true_um, pos_id)``) in eval mode."""
    was_training = model.training
    model.eval()
    preds, trues, pids = [], [], []
    loss_sum, n = 0.0, 0
    n_classes = grid.n_classes
    if isinstance(dataset, TensorDataset):  # in-memory (possibly on the GPU): slice, no per-item collate
        t = dataset.tensors
        batches: Any = (tuple(a[s : s + batch_size] for a in t) for s in range(0, len(dataset), batch_size))
    else:
        batches = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, c, um, pid in batches:
        logits = model(x.to(device, non_blocking=True))
        c = c.to(device)
        loss_sum += float(localisation_loss(logits, c, n_classes)) * x.shape[0]
        n += x.shape[0]
        preds.append(expected_class(logits.float(), n_classes).cpu().numpy())
        trues.append(um.cpu().numpy())
        pids.append(pid.cpu().numpy())
    model.train(was_training)
    if not preds:
        empty = np.empty((0, 2))
        return Predictions(empty, empty, np.empty(0, np.int64), float("nan"))
    k = np.concatenate(preds).astype(np.float64)
    return Predictions(
        grid.class_to_um(k), np.concatenate(trues).astype(np.float64), np.concatenate(pids), loss_sum / n
    )


def position_stats(pred_um: np.ndarray, true_um: np.ndarray, pos_id: np.ndarray) -> list[dict[str, Any]]:
    """σ and bias per position (positions in ``pos_id`` order); positions with < 2 samples are skipped."""
    out = []
    for p in np.unique(pos_id):
        sel = pos_id == p
        if sel.sum() < 2:
            continue
        pr, tr = pred_um[sel], true_um[sel]
        out.append(
            {
                "pos_id": int(p),
                "true_um": tr.mean(axis=0).tolist(),
                "n": int(sel.sum()),
                "mean_um": pr.mean(axis=0).tolist(),
                "sigma_um": pr.std(axis=0, ddof=1).tolist(),
                "bias_um": (pr.mean(axis=0) - tr.mean(axis=0)).tolist(),
            }
        )
    return out


def response_slope(per_position: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per axis, the least-squares slope m' of the mean prediction against the true position.

    σ / m' is what any bias correction makes of σ where the mean response is linear, and unlike the
    corrected σ it needs no calibration lattice, so it stays meaningful where the correction cannot
    follow the estimates (:data:`MAX_CLIPPED_FRACTION`).  NaN for an axis along which the positions do
    not vary.
    """
    t = np.array([p["true_um"] for p in per_position], float).reshape(-1, 2)
    m = np.array([p["mean_um"] for p in per_position], float).reshape(-1, 2)
    tc = t - t.mean(axis=0)
    var = (tc**2).sum(axis=0)
    cov = (tc * (m - m.mean(axis=0))).sum(axis=0)
    return [float(c / v) if v > 0 else float("nan") for c, v in zip(cov, var, strict=True)]


def summarise(per_position: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Averages over positions: mean σ, mean |bias|, signed mean bias and quartiles (for IQR bands).

    Also the response slope m' (:func:`response_slope`) and σ / m'.
    """
    if not per_position:
        nan2 = [float("nan")] * 2
        return {"sigma_um": nan2, "bias_um": nan2, "bias_signed_um": nan2, "n_positions": 0}
    s = np.array([p["sigma_um"] for p in per_position])
    b = np.array([p["bias_um"] for p in per_position])
    slope = np.array(response_slope(per_position))
    return {
        "response_slope": slope.tolist(),
        "sigma_over_slope_um": (s.mean(axis=0) / slope).tolist(),
        "sigma_um": s.mean(axis=0).tolist(),
        "bias_um": np.abs(b).mean(axis=0).tolist(),
        "bias_signed_um": b.mean(axis=0).tolist(),
        "sigma_q25_q75_um": np.percentile(s, [25, 75], axis=0).T.tolist(),
        "bias_q25_q75_um": np.percentile(b, [25, 75], axis=0).T.tolist(),
        "rms_error_um": np.sqrt((s**2 + b**2).mean(axis=0)).tolist(),
        "n_positions": len(per_position),
    }


class LatticeBiasCorrector:
    """Bias field ``b(θ) = E[pred | θ] - θ`` on a regular lattice of true positions, and its inversion.

    **Fit** (:meth:`fit`): predictions are grouped by true position, which must form a full rectangular
    lattice (:func:`models.data.build_calibration_lattice`).  Per lattice point and axis: the mean bias
    ``b̄ = mean(pred) - θ`` and its standard error ``SE = std(pred, ddof=1) / sqrt(n)``.  Per axis, a
    smoothing bicubic spline ``scipy.interpolate.RectBivariateSpline(xs, ys, b̄, s=s)`` with
    ``s = smoothing × Σ SE²`` over the lattice.  Why this ``s``: FITPACK picks the smoothest spline
    (fewest knots) whose residual sum of squares ``Σ (b̄ - spline)²`` is ≤ ``s``; if the spline were the
    true field, the expected residual sum would be exactly ``Σ SE²`` (Dierckx's rule ``s = m σ²`` for a
    weight-1 fit), so the spline follows the field down to the noise of the point means and no further.
    ``RectBivariateSpline`` takes no weights, which is harmless here: every lattice point averages the
    same frames, so the SEs are nearly uniform and the unweighted fit with ``s = Σ SE²`` is the weighted
    one (weights ``1/SE``, ``s = m``) up to that spread.  With a deterministic network (SE → 0) the fit
    becomes interpolation.  Compared with a least-squares spline through scattered single-shift
    predictions, each lattice mean is ``sqrt(frames per point)`` times less noisy, and the smoothing
    follows the measured noise instead of a fixed knot count.

    **Correction** (:meth:`apply`): the corrected estimate is the θ that solves ``θ + b(θ) = p``
    (fitting ``b`` against the *true* θ and inverting, rather than regressing θ on p, does not shrink
    estimates towards the training prior).  Solved by Newton's method on the 2x2 Jacobian
    ``J = I + ∇b`` (exact spline derivatives) with step halving, so ``|θ + b(θ) - p|`` decreases at
    every accepted step; θ is clipped to the lattice box throughout (no extrapolation).  Newton converges
    quadratically wherever ``θ ↦ θ + b(θ)`` is locally invertible (``det J > 0``: the mean response is
    monotone, true of any usable localiser; a plain fixed-point iteration ``θ ← p - b(θ)`` would need
    ``‖∇b‖ < 1`` and converge linearly).  A prediction outside the image of the box (e.g. beyond the
    saturated response near the training range's ends) stops at the box edge with a non-zero residual,
    as would one at a fold of the field; :attr:`inversion` counts those (``n_unsolved``).  The corrected
    estimate is unbiased to first order in the noise; the second-order remainder per axis is
    ``-m''σ²/(2m'³)`` for a mean response ``m = θ + b``, negligible while the field's curvature over one
    σ is small.  Its σ is that of ``J⁻¹ε``: the raw σ inflated by the inverse slope of ``m``.
    """

    def __init__(
        self, degree: int = 3, smoothing: float = 1.0, max_iter: int = 30, tol_um: float = 1e-7
    ) -> None:
        if smoothing < 0:
            raise ValueError("smoothing must be >= 0")
        self.degree = degree
        self.smoothing = smoothing
        self.max_iter = max_iter
        self.tol_um = tol_um
        self._splines: list[RectBivariateSpline] = []
        self.xs_um = np.empty(0)
        self.ys_um = np.empty(0)
        self.inversion: dict[str, Any] = {}

    def fit(self, true_um: np.ndarray, pred_um: np.ndarray) -> LatticeBiasCorrector:
        """Fit from per-frame (true, predicted) pairs (N, 2) in µm whose true positions form a lattice."""
        true_um, pred_um = np.asarray(true_um, float), np.asarray(pred_um, float)
        points, inv, counts = np.unique(np.round(true_um, 6), axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        xs, ys = np.unique(points[:, 0]), np.unique(points[:, 1])
        if points.shape[0] != xs.size * ys.size:
            raise ValueError(
                f"{points.shape[0]} distinct true positions do not form a full {xs.size} x {ys.size} lattice"
            )
        if min(xs.size, ys.size) <= self.degree:
            raise ValueError(f"a degree-{self.degree} spline needs > {self.degree} lattice points per axis")
        if counts.min() < 2:
            raise ValueError("every lattice point needs >= 2 predictions (for its standard error)")
        ix, iy = np.searchsorted(xs, points[:, 0]), np.searchsorted(ys, points[:, 1])
        n = counts.astype(float)[:, None]
        total = np.zeros((points.shape[0], 2))
        np.add.at(total, inv, pred_um)
        mean = total / n
        sq = np.zeros((points.shape[0], 2))
        np.add.at(sq, inv, (pred_um - mean[inv]) ** 2)
        se = np.sqrt(sq / (n - 1) / n)
        bias = np.zeros((xs.size, ys.size, 2))
        err = np.zeros((xs.size, ys.size, 2))
        bias[ix, iy] = mean - points
        err[ix, iy] = se
        self.xs_um, self.ys_um = xs, ys
        self.mean_bias_um, self.se_um = bias, err
        self.counts = counts
        self.s = [float(self.smoothing * (err[..., a] ** 2).sum()) for a in range(2)]
        k = self.degree
        self._splines = [RectBivariateSpline(xs, ys, bias[..., a], kx=k, ky=k, s=self.s[a]) for a in range(2)]
        return self

    @property
    def lo(self) -> np.ndarray:
        return np.array([self.xs_um[0], self.ys_um[0]])

    @property
    def hi(self) -> np.ndarray:
        return np.array([self.xs_um[-1], self.ys_um[-1]])

    def _check(self) -> None:
        if not self._splines:
            raise RuntimeError("fit() first")

    def bias_at(self, theta_um: np.ndarray) -> np.ndarray:
        """Fitted bias (N, 2) at positions θ (clipped to the lattice box: no extrapolation)."""
        self._check()
        t = np.clip(np.asarray(theta_um, float).reshape(-1, 2), self.lo, self.hi)
        return np.column_stack([s.ev(t[:, 0], t[:, 1]) for s in self._splines])

    def _jacobian(self, t: np.ndarray) -> np.ndarray:
        """(N, 2, 2) Jacobian of θ ↦ θ + b(θ): ``J[:, a, c] = δ_ac + ∂b_a/∂θ_c``."""
        j = np.empty((t.shape[0], 2, 2))
        for a, s in enumerate(self._splines):
            j[:, a, 0] = s.ev(t[:, 0], t[:, 1], dx=1)
            j[:, a, 1] = s.ev(t[:, 0], t[:, 1], dy=1)
        j[:, 0, 0] += 1.0
        j[:, 1, 1] += 1.0
        return j

    def apply(self, pred_um: np.ndarray) -> np.ndarray:
        """Corrected estimates θ (N, 2) solving θ + b(θ) = pred (damped Newton, clipped to the box)."""
        self._check()
        p = np.asarray(pred_um, float).reshape(-1, 2)
        lo, hi = self.lo, self.hi

        def residual(t: np.ndarray, target: np.ndarray) -> np.ndarray:
            return t + self.bias_at(t) - target

        theta = np.clip(p, lo, hi)
        r = residual(theta, p)
        norm = np.hypot(r[:, 0], r[:, 1])
        active = norm > self.tol_um
        it = 0
        while active.any() and it < self.max_iter:
            it += 1
            idx = np.flatnonzero(active)
            t, ri, ni = theta[idx], r[idx], norm[idx]
            j = self._jacobian(t)
            det = j[:, 0, 0] * j[:, 1, 1] - j[:, 0, 1] * j[:, 1, 0]
            ok = np.abs(det) > 1e-12
            step = -ri  # fixed-point step where J is singular
            step[ok, 0] = -(j[ok, 1, 1] * ri[ok, 0] - j[ok, 0, 1] * ri[ok, 1]) / det[ok]
            step[ok, 1] = -(-j[ok, 1, 0] * ri[ok, 0] + j[ok, 0, 0] * ri[ok, 1]) / det[ok]
            pending = np.ones(idx.size, bool)
            lam = 1.0
            for _ in range(20):  # step halving: accept the first step that lowers |residual|
                sel = np.flatnonzero(pending)
                if sel.size == 0:
                    break
                cand = np.clip(t[sel] + lam * step[sel], lo, hi)
                rc = residual(cand, p[idx[sel]])
                nc = np.hypot(rc[:, 0], rc[:, 1])
                better = nc < ni[sel]
                good = idx[sel[better]]
                theta[good], r[good], norm[good] = cand[better], rc[better], nc[better]
                pending[sel[better]] = False
                lam /= 2
            active[idx[pending]] = False  # no descent left: a box edge (or a fold of the field)
            active &= norm > self.tol_um
        self.inversion = {
            "iterations": it,
            "n_unsolved": int((norm > max(self.tol_um, 1e-6)).sum()),
            "max_residual_um": float(norm.max()) if norm.size else 0.0,
        }
        return theta

    def summary(self) -> dict[str, Any]:
        """Lattice and fit figures for the evaluation JSON (per axis where a pair is given)."""
        self._check()
        fitted = np.stack([s(self.xs_um, self.ys_um) for s in self._splines], axis=-1)  # (nx, ny, 2)
        resid = self.mean_bias_um - fitted

        def rms(a: np.ndarray) -> list[float]:
            return np.sqrt((a**2).mean(axis=(0, 1))).tolist()

        return {
            "shape": [int(self.xs_um.size), int(self.ys_um.size)],
            "n_points": int(self.xs_um.size * self.ys_um.size),
            "frames_per_point": int(self.counts.min()),
            "range_um": [
                [float(self.xs_um[0]), float(self.xs_um[-1])],
                [float(self.ys_um[0]), float(self.ys_um[-1])],
            ],
            "bias_rms_um": rms(fitted),
            "bias_max_um": np.abs(fitted).max(axis=(0, 1)).tolist(),
            "mean_bias_rms_um": rms(self.mean_bias_um),
            "residual_rms_um": rms(resid),
            "se_rms_um": rms(self.se_um),
            "smoothing_s_um2": list(self.s),
            "degree": self.degree,
        }


def load_crb(path: str | Path | None) -> list[float] | None:
    """``crb_um: [cx, cy]`` from a CRB JSON (as written by the analysis CLI); ValueError unless two
    positive finite numbers (σ / CRB divides by them)."""
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    crb = data.get("crb_um") if isinstance(data, dict) else None
    if isinstance(crb, list) and len(crb) == 2 and None in crb:  # what specklab crb writes when J is not > 0
        raise ValueError(
            f"{path}: the CRB is undefined there (crb_um {crb}: the estimated Fisher matrix was not positive"
            " definite; record more frames per position)"
        )
    ok = isinstance(crb, list) and len(crb) == 2
    ok = ok and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in crb)
    if not ok or not all(math.isfinite(c) and c > 0 for c in crb):
        raise ValueError(f"{path}: expected a 'crb_um': [cx, cy] entry of two positive numbers (µm)")
    return [float(c) for c in crb]


def _clipped_warning(fraction: float) -> str:
    return (
        f"{fraction:.1%} of the corrected predictions stopped at the calibration lattice's edge: their errors"
        " are cut off there, so sigma_um is a lower bound, not the estimator's precision"
    )


def _with_crb(result: dict[str, Any], crb: Sequence[float] | None) -> dict[str, Any]:
    if crb is not None:
        result["crb_um"] = list(crb)
        result["sigma_over_crb"] = [s / c for s, c in zip(result["sigma_um"], crb, strict=True)]
    return result


def evaluate_predictions(
    test: Predictions,
    lattice: Predictions | None = None,
    *,
    crb: Sequence[float] | None = None,
    lattice_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Full evaluation dict: corrected (if lattice predictions are given) and uncorrected statistics.

    ``lattice`` are the predictions on the calibration lattice (:func:`models.data.build_calibration_lattice`:
    true positions on a regular lattice, several frames per point).  Top-level ``sigma_um`` /
    ``bias_um`` / ``per_position`` are then the bias-corrected values (what is compared with the
    unbiased CRB), ``uncorrected`` keeps the raw ones and ``lattice`` describes the fit
    (:meth:`LatticeBiasCorrector.summary`, merged with ``lattice_meta``).  Without ``lattice`` the raw
    values are the top-level ones.
    """
    raw_pp = position_stats(test.pred_um, test.true_um, test.pos_id)
    raw = {**summarise(raw_pp), "per_position": raw_pp}
    result: dict[str, Any] = {
        "bias_corrected": False,
        "test_loss": test.loss,
        "n_test": int(test.pos_id.size),
    }
    if lattice is not None and lattice.pred_um.shape[0] > 0:
        corr = LatticeBiasCorrector().fit(lattice.true_um, lattice.pred_um)
        fixed = corr.apply(test.pred_um)
        pp = position_stats(fixed, test.true_um, test.pos_id)
        result.update(summarise(pp))
        result["per_position"] = pp
        result["bias_corrected"] = True
        result["uncorrected"] = raw
        result["lattice"] = {**dict(lattice_meta or {}), **corr.summary(), "inversion": corr.inversion}
        clipped = corr.inversion["n_unsolved"] / max(1, test.pos_id.size)
        result["clipped_fraction"] = clipped
        if clipped > MAX_CLIPPED_FRACTION:
            result["warnings"] = [_clipped_warning(clipped)]
    else:
        result.update(raw)
    return _with_crb(result, crb)


def evaluate_model(
    model: torch.nn.Module,
    data: Any,
    *,
    device: torch.device | str = "cpu",
    crb: Sequence[float] | None = None,
    correct_bias: bool = True,
    lattice_side: int = LATTICE_SIDE,
    lattice_frames: int | None = LATTICE_MAX_FRAMES,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Evaluate ``model`` on the D frames of ``data`` (a :class:`models.data.BsbdData`).

    With ``correct_bias`` the calibration lattice (``lattice_side`` points per axis, at most
    ``lattice_frames`` held-out frames per point) is predicted too and corrects the D predictions
    (:func:`evaluate_predictions`).  Returns the evaluation dict.
    """
    test = predict(model, data.test, data.grid, device=device, batch_size=batch_size)
    lat_pred, lat_meta = None, None
    if correct_bias:
        lat = build_calibration_lattice(data, n_side=lattice_side, max_frames=lattice_frames)
        lat_pred = predict(model, lat.dataset, data.grid, device=device, batch_size=batch_size)
        lat_meta = lat.meta
    return evaluate_predictions(test, lat_pred, crb=crb, lattice_meta=lat_meta)


def evaluate_checkpoint(
    model_path: str | Path,
    run_path: str | Path,
    *,
    crb: Sequence[float] | None = None,
    device: str | None = None,
    correct_bias: bool = True,
    lattice_side: int = LATTICE_SIDE,
    lattice_frames: int | None = LATTICE_MAX_FRAMES,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Evaluate a checkpoint on the D frames of ``run_path`` (with the checkpoint's data settings).

    The held-out split is rebuilt from the checkpoint's data seed, so the calibration lattice is built
    from frames the training never saw (``lattice_side`` points per axis, at most ``lattice_frames``
    frames per point).
    """
    from analysis.decorrelation import resolve_device
    from models.train import build_run_data, evaluation_state, load_model

    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    data, source = build_run_data(run_path, ckpt["config"])
    try:
        result = evaluate_model(
            model, data, device=dev, crb=crb, correct_bias=correct_bias, lattice_side=lattice_side,
            lattice_frames=lattice_frames, batch_size=batch_size,
        )  # fmt: skip
        b = _optical_thickness(source)
    finally:
        source.close()
    result.update(
        {
            "model": str(model_path),
            "run": str(run_path),
            "arch": ckpt["config"]["arch"],
            "epoch": evaluation_state(ckpt)[1],  # the evaluated weights' epoch (best held-out by default)
            "last_epoch": int(ckpt["epoch"]),
            "seed": int(ckpt["config"]["seed"]),
        }
    )
    if b is not None:
        result["b"] = b
    return result


def _optical_thickness(source: Any) -> float | None:
    """Optical thickness b = L/ℓ of a simulated run (``ground_truth["bench"]["optical_thickness"]``)."""
    bench = getattr(source, "ground_truth", {}).get("bench", {})
    if "optical_thickness" not in bench:
        return None  # a real run: label it with ``specklab evaluate --b``
    return float(np.asarray(bench["optical_thickness"]))


_LATTICE_FREE_KEYS = ("sigma_um", "response_slope", "sigma_over_slope_um")
"""Raw (uncorrected) statistics whose median over repeats :func:`aggregate_evaluations` reports."""


def _repeat_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """One repeat's line in :func:`aggregate_evaluations`' ``per_repeat``."""
    summary = {"sigma_um": list(result["sigma_um"]), "bias_um": list(result["bias_um"])}
    if "lattice" in result:
        summary["lattice_bias_rms_um"] = result["lattice"]["bias_rms_um"]
    if "uncorrected" in result:
        summary["uncorrected_sigma_over_slope_um"] = result["uncorrected"]["sigma_over_slope_um"]
    return summary


def aggregate_evaluations(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine evaluations of repeated trainings (different initialisations) of one configuration.

    Returns the per-repeat summaries, their median / quartiles / mean, and ``sigma_samples_um``: every
    per-position σ of every repeat (what Fig. 4b's violins show).  Bias-corrected evaluations also give
    ``uncorrected``: the medians of the raw σ, the response slope m′ and the lattice-free σ / m′, the
    figure of merit that stays meaningful where the corrected σ is clipped (b = 5).
    """
    results = list(results)
    if not results:
        raise ValueError("no evaluations to aggregate")
    sig = np.array([r["sigma_um"] for r in results], dtype=float)
    bias = np.array([r["bias_um"] for r in results], dtype=float)
    samples = np.array([p["sigma_um"] for r in results for p in r["per_position"]], dtype=float)
    out: dict[str, Any] = {
        "n_repeats": len(results),
        "sigma_um": np.median(sig, axis=0).tolist(),
        "sigma_mean_um": sig.mean(axis=0).tolist(),
        "sigma_q25_q75_um": np.percentile(sig, [25, 75], axis=0).T.tolist(),
        "bias_um": np.median(bias, axis=0).tolist(),
        "per_repeat": [_repeat_summary(r) for r in results],
        "sigma_samples_um": samples.T.tolist(),
        "per_position": [p for r in results for p in r["per_position"]],
        "bias_corrected": all(bool(r.get("bias_corrected")) for r in results),
        "clipped_fraction": max((float(r.get("clipped_fraction", 0.0)) for r in results), default=0.0),
    }
    if out["clipped_fraction"] > MAX_CLIPPED_FRACTION:
        out["warnings"] = [_clipped_warning(out["clipped_fraction"])]
    if all("uncorrected" in r for r in results):
        raw = {k: np.array([r["uncorrected"][k] for r in results], dtype=float) for k in _LATTICE_FREE_KEYS}
        out["uncorrected"] = {k: np.median(v, axis=0).tolist() for k, v in raw.items()}
        out["uncorrected"]["sigma_over_slope_q25_q75_um"] = np.percentile(
            raw["sigma_over_slope_um"], [25, 75], axis=0
        ).T.tolist()
    for key in ("crb_um", "b", "arch", "run"):
        if key in results[0]:
            out[key] = results[0][key]
    if "crb_um" in out:
        out["sigma_over_crb"] = [s / c for s, c in zip(out["sigma_um"], out["crb_um"], strict=True)]
    return out
