"""Precision and bias of a trained localiser against the Cramér–Rao bound (seed 000, Figs. 3-4).

* Predictions are the softmax expectations converted to µm at the sample plane (:class:`ClassGrid`).
* Per test position p: ``σ_x,p, σ_y,p`` (sample standard deviation, ddof=1) and the bias
  ``B_p = mean(pred) - true``.  Summaries: ``sigma_um`` = mean over positions of σ_p (what Fig. 3b's
  thick line and Fig. 4b's comparison with the CRB use), ``bias_um`` = mean over positions of |B_p| (a
  signed mean would let a bias towards the centre cancel between opposite positions); quartiles over
  positions are kept for the shaded bands.
* Bias correction (paper, Supplementary 4.4): a held-out split of the shifted S frames, never seen in
  training, is predicted; the bias field ``b(θ) = E[pred | θ] - θ`` is fitted per axis with a 2-D
  least-squares cubic spline over the true positions (``scipy.interpolate.LSQBivariateSpline`` on a
  regular interior-knot grid, so the smoothing is set by the knot count and not by noise level), and a
  test prediction ``p`` is corrected by solving ``θ + b(θ) = p`` with a few fixed-point iterations.
  Fitting ``b`` as a function of the *true* position (rather than regressing θ on p) avoids shrinking
  predictions towards the training prior.
* Repeated trainings (paper: 25 initialisations) are aggregated by :func:`aggregate_evaluations`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.interpolate import LSQBivariateSpline
from torch.utils.data import DataLoader, Dataset, TensorDataset

from models.architectures import expected_class, localisation_loss
from models.data import ClassGrid

__all__ = [
    "Predictions",
    "SplineBiasCorrector",
    "aggregate_evaluations",
    "evaluate_checkpoint",
    "load_crb",
    "position_stats",
    "predict",
    "summarise",
]


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


def summarise(per_position: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Averages over positions: mean σ, mean |bias|, signed mean bias and quartiles (for IQR bands)."""
    if not per_position:
        nan2 = [float("nan")] * 2
        return {"sigma_um": nan2, "bias_um": nan2, "bias_signed_um": nan2, "n_positions": 0}
    s = np.array([p["sigma_um"] for p in per_position])
    b = np.array([p["bias_um"] for p in per_position])
    return {
        "sigma_um": s.mean(axis=0).tolist(),
        "bias_um": np.abs(b).mean(axis=0).tolist(),
        "bias_signed_um": b.mean(axis=0).tolist(),
        "sigma_q25_q75_um": np.percentile(s, [25, 75], axis=0).T.tolist(),
        "bias_q25_q75_um": np.percentile(b, [25, 75], axis=0).T.tolist(),
        "rms_error_um": np.sqrt((s**2 + b**2).mean(axis=0)).tolist(),
        "n_positions": len(per_position),
    }


class SplineBiasCorrector:
    """Per-axis 2-D cubic regression spline of the bias ``b(θ) = pred - θ`` over true positions θ.

    ``n_knots`` interior knots per axis on a regular grid over the fitted range; reduced automatically
    (down to a bilinear fit) when there are too few points for the coefficients.
    """

    def __init__(self, n_knots: int = 2, degree: int = 3, iterations: int = 5) -> None:
        self.n_knots = n_knots
        self.degree = degree
        self.iterations = iterations
        self._splines: list[LSQBivariateSpline] = []
        self._lo = np.zeros(2)
        self._hi = np.zeros(2)

    def fit(self, true_um: np.ndarray, pred_um: np.ndarray) -> SplineBiasCorrector:
        """Fit the bias field from held-out (true, predicted) pairs (N, 2) in µm."""
        true_um, pred_um = np.asarray(true_um, float), np.asarray(pred_um, float)
        self._lo, self._hi = true_um.min(axis=0), true_um.max(axis=0)
        if np.any(self._hi - self._lo <= 0):
            raise ValueError("held-out positions must span both axes to fit a 2-D bias field")
        n = true_um.shape[0]
        k = self.degree
        nk = self.n_knots
        while nk > 0 and (k + 1 + nk) ** 2 * 4 > n:
            nk -= 1
        if (k + 1) ** 2 * 4 > n:
            k = 1
        self.degree_used, self.knots_used = k, nk
        tx = np.linspace(self._lo[0], self._hi[0], nk + 2)[1:-1]
        ty = np.linspace(self._lo[1], self._hi[1], nk + 2)[1:-1]
        bias = pred_um - true_um
        bbox = [self._lo[0], self._hi[0], self._lo[1], self._hi[1]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._splines = [
                LSQBivariateSpline(true_um[:, 0], true_um[:, 1], bias[:, a], tx, ty, kx=k, ky=k, bbox=bbox)
                for a in range(2)
            ]
        return self

    def bias_at(self, theta_um: np.ndarray) -> np.ndarray:
        """Fitted bias (N, 2) at positions θ (clipped to the fitted range: no extrapolation)."""
        if not self._splines:
            raise RuntimeError("fit() first")
        t = np.clip(np.asarray(theta_um, float), self._lo, self._hi)
        return np.column_stack([s.ev(t[:, 0], t[:, 1]) for s in self._splines])

    def apply(self, pred_um: np.ndarray) -> np.ndarray:
        """Corrected estimates: θ solving θ + b(θ) = pred (fixed-point iteration from θ = pred)."""
        pred_um = np.asarray(pred_um, float)
        theta = pred_um.copy()
        for _ in range(self.iterations):
            theta = pred_um - self.bias_at(theta)
        return theta


def load_crb(path: str | Path | None) -> list[float] | None:
    """``crb_um: [cx, cy]`` from a CRB JSON (as written by the analysis CLI)."""
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    crb = data.get("crb_um")
    if crb is None or len(crb) != 2:
        raise ValueError(f"{path}: expected a 'crb_um': [cx, cy] entry")
    return [float(c) for c in crb]


def _with_crb(result: dict[str, Any], crb: Sequence[float] | None) -> dict[str, Any]:
    if crb is not None:
        result["crb_um"] = list(crb)
        result["sigma_over_crb"] = [s / c for s, c in zip(result["sigma_um"], crb, strict=True)]
    return result


def evaluate_predictions(
    test: Predictions,
    holdout: Predictions | None = None,
    *,
    crb: Sequence[float] | None = None,
    n_knots: int = 2,
) -> dict[str, Any]:
    """Full evaluation dict: corrected (if a held-out set is given) and uncorrected statistics.

    Top-level ``sigma_um``/``bias_um``/``per_position`` are the bias-corrected values when
    ``holdout`` is given (what is compared with the unbiased CRB), else the raw ones.
    """
    raw_pp = position_stats(test.pred_um, test.true_um, test.pos_id)
    raw = {**summarise(raw_pp), "per_position": raw_pp}
    result: dict[str, Any] = {
        "bias_corrected": False,
        "test_loss": test.loss,
        "n_test": int(test.pos_id.size),
    }
    if holdout is not None and holdout.pred_um.shape[0] > 0:
        corr = SplineBiasCorrector(n_knots=n_knots).fit(holdout.true_um, holdout.pred_um)
        fixed = corr.apply(test.pred_um)
        pp = position_stats(fixed, test.true_um, test.pos_id)
        result.update(summarise(pp))
        result["per_position"] = pp
        result["bias_corrected"] = True
        result["uncorrected"] = raw
        result["n_holdout"] = int(holdout.pred_um.shape[0])
        result["spline"] = {"degree": corr.degree_used, "interior_knots": corr.knots_used}
    else:
        result.update(raw)
    return _with_crb(result, crb)


def evaluate_checkpoint(
    model_path: str | Path,
    run_path: str | Path,
    *,
    crb: Sequence[float] | None = None,
    device: str | None = None,
    correct_bias: bool = True,
    batch_size: int = 512,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on the D frames of ``run_path`` (with the checkpoint's data settings).

    The held-out split is rebuilt from the checkpoint's data seed, so it is exactly the split the
    training never saw.
    """
    from models.train import build_run_data, load_model, select_device

    dev = select_device(device)
    model, ckpt = load_model(model_path, dev)
    data, source = build_run_data(run_path, ckpt["config"])
    try:
        grid = data.grid
        test = predict(model, data.test, grid, device=dev, batch_size=batch_size)
        hold = predict(model, data.holdout, grid, device=dev, batch_size=batch_size) if correct_bias else None
        b = _optical_thickness(source)
    finally:
        source.close()
    result = evaluate_predictions(test, hold, crb=crb)
    result.update(
        {
            "model": str(model_path),
            "run": str(run_path),
            "arch": ckpt["config"]["arch"],
            "epoch": int(ckpt["epoch"]),
            "seed": int(ckpt["config"]["seed"]),
        }
    )
    if b is not None:
        result["b"] = b
    if return_predictions:
        result["_predictions"] = test
    return result


def _optical_thickness(source: Any) -> float | None:
    """Optical thickness b = L/ℓ of a simulated run (``ground_truth["bench"]["optical_thickness"]``)."""
    bench = getattr(source, "ground_truth", {}).get("bench", {})
    if "optical_thickness" not in bench:
        return None  # a real run: label it with ``specklab evaluate --b``
    return float(np.asarray(bench["optical_thickness"]))


def aggregate_evaluations(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine evaluations of repeated trainings (different initialisations) of one configuration.

    Returns the per-repeat summaries, their median / quartiles / mean, and ``sigma_samples_um``: every
    per-position σ of every repeat (what Fig. 4b's violins show).
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
        "per_repeat": [{"sigma_um": list(r["sigma_um"]), "bias_um": list(r["bias_um"])} for r in results],
        "sigma_samples_um": samples.T.tolist(),
        "per_position": [p for r in results for p in r["per_position"]],
        "bias_corrected": all(bool(r.get("bias_corrected")) for r in results),
    }
    for key in ("crb_um", "b", "arch", "run"):
        if key in results[0]:
            out[key] = results[0][key]
    if "crb_um" in out:
        out["sigma_over_crb"] = [s / c for s, c in zip(out["sigma_um"], out["crb_um"], strict=True)]
    return out
