"""Figures in the style of seed 000: Fig. 3a (prediction histograms), Fig. 3b (σ and bias through
training with the CRB), Fig. 4b (violins of σ against optical thickness with the CRB).

Inputs are what the other modules write: checkpoints (history + prediction snapshots) for Fig. 3 and
evaluation JSONs (``specklab evaluate --json``) for Fig. 4b, so figures can be redrawn without a GPU
or the run file.  Matplotlib runs with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

__all__ = ["plot_histograms", "plot_training", "plot_violins", "load_evaluations"]


def _save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def _composite(
    pred_um: np.ndarray, pos_id: np.ndarray, extent: tuple[float, float, float, float], bins: int
) -> np.ndarray:
    """RGB image: each position's normalised 2-D histogram in its own hue, combined by maximum."""
    ids = np.unique(pos_id)
    cmap = plt.get_cmap("hsv")
    img = np.zeros((bins, bins, 3))
    for j, p in enumerate(ids):
        sel = pos_id == p
        h, _, _ = np.histogram2d(pred_um[sel, 1], pred_um[sel, 0], bins=bins, range=[extent[2:], extent[:2]])
        if h.max() > 0:
            h = h / h.max()
        rgb = np.asarray(mcolors.to_rgb(cmap(j / max(len(ids), 1))))
        img = np.maximum(img, h[..., None] * rgb)
    return img


def plot_histograms(
    snapshots: Mapping[str, np.ndarray],
    true_um: np.ndarray,
    pos_id: np.ndarray,
    out: str | Path,
    *,
    bins: int = 120,
    title: str = "",
) -> Path:
    """Fig. 3a: one panel per snapshot epoch; colour = true position, brightness = probability."""
    epochs = sorted(snapshots, key=lambda e: int(e))
    if not epochs:
        raise ValueError("no prediction snapshots to plot")
    lo, hi = true_um.min(axis=0), true_um.max(axis=0)
    pad = 0.6 * float(max(hi - lo)) / 4 + 1e-9
    extent = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
    fig, axes = plt.subplots(1, len(epochs), figsize=(3.2 * len(epochs), 3.4), squeeze=False)
    for ax, e in zip(axes[0], epochs, strict=True):
        img = _composite(np.asarray(snapshots[e]), pos_id, extent, bins)
        ax.imshow(img, origin="lower", extent=extent, interpolation="nearest")
        ax.scatter(true_um[:, 0], true_um[:, 1], s=4, c="w", marker="+", linewidths=0.5)
        ax.set_title(f"epoch {e}")
        ax.set_xlabel("x (µm)")
    axes[0, 0].set_ylabel("y (µm)")
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_training(
    history: Sequence[Mapping[str, Any]],
    out: str | Path,
    *,
    crb_um: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """Fig. 3b: σ_x, σ_y (left) and B_x, B_y (right) against epoch; IQR over positions shaded; CRB dashed.

    The bias panel shows the signed mean over positions with the interquartile range of the
    per-position signed biases, like the paper's right column.
    """
    rows = [h for h in history if "sigma_um" in h]
    if not rows:
        raise ValueError("history has no evaluated epochs")
    ep = np.array([h["epoch"] for h in rows])
    fig, (a_s, a_b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, name, colour in ((0, "x", "C0"), (1, "y", "C3")):
        s = np.array([h["sigma_um"][axis] for h in rows])
        a_s.plot(ep, s, color=colour, lw=2, label=f"σ{name}")
        if all("sigma_q25_q75_um" in h for h in rows):
            q = np.array([h["sigma_q25_q75_um"][axis] for h in rows])
            a_s.fill_between(ep, q[:, 0], q[:, 1], color=colour, alpha=0.25, lw=0)
        b = np.array([h.get("bias_signed_um", h["bias_um"])[axis] for h in rows])
        a_b.plot(ep, b, color=colour, lw=2, label=f"B{name}")
        if all("bias_q25_q75_um" in h for h in rows):
            q = np.array([h["bias_q25_q75_um"][axis] for h in rows])
            a_b.fill_between(ep, q[:, 0], q[:, 1], color=colour, alpha=0.25, lw=0)
        if crb_um is not None:
            a_s.axhline(crb_um[axis], color="k", ls="--", lw=1, label="CRB" if axis == 0 else None)
    a_b.axhline(0, color="0.5", lw=0.5)
    a_s.set(xlabel="epoch", ylabel="standard deviation (µm)")
    a_b.set(xlabel="epoch", ylabel="bias (µm)")
    a_s.legend(frameon=False)
    a_b.legend(frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def load_evaluations(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The evaluation JSONs (``specklab evaluate --json``); ValueError for a file that is not one."""
    out = []
    for p in paths:
        try:
            ev = json.loads(Path(p).read_text())
        except ValueError as exc:  # also UnicodeDecodeError: e.g. a checkpoint given by mistake
            raise ValueError(f"{p} is not an evaluation JSON ({exc})") from exc
        if not isinstance(ev, dict) or not ("sigma_samples_um" in ev or "per_position" in ev):
            raise ValueError(f"{p} is not an evaluation JSON (no per_position or sigma_samples_um)")
        out.append(ev)
    return out


def _sigma_samples(ev: Mapping[str, Any]) -> np.ndarray:
    if "sigma_samples_um" in ev:
        return np.asarray(ev["sigma_samples_um"], float).T
    return np.array([p["sigma_um"] for p in ev["per_position"]], float)


def plot_violins(
    evaluations: Sequence[Mapping[str, Any]],
    out: str | Path,
    *,
    labels: Sequence[float | str] | None = None,
    title: str = "",
) -> Path:
    """Fig. 4b: per evaluation (one optical thickness), violins of σ_x and σ_y with the CRB marked.

    The violins hold every per-position σ of every repeat (aggregated JSON) or of one training; the
    white dot is the median, the bar the quartiles, yellow circles the CRB when the JSON carries one.
    """
    if not evaluations:
        raise ValueError("no evaluations")
    if labels is None:
        labels = [ev.get("b", i) for i, ev in enumerate(evaluations)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(evaluations)), 3.6))
    width = 0.35
    for i, ev in enumerate(evaluations):
        s = _sigma_samples(ev)
        for axis, dx, colour in ((0, -width / 2, "C0"), (1, width / 2, "C3")):
            data = s[:, axis]
            data = data[np.isfinite(data)]
            if data.size == 0:
                continue
            pos = i + dx
            if data.size > 1 and np.ptp(data) > 0:
                parts = ax.violinplot([data], positions=[pos], widths=width, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(colour)
                    body.set_alpha(0.6)
            q1, med, q3 = np.percentile(data, [25, 50, 75])
            ax.vlines(pos, q1, q3, color="k", lw=3)
            ax.scatter([pos], [med], color="w", edgecolor="k", zorder=3, s=18)
            if "crb_um" in ev:
                ax.scatter(
                    [pos], [ev["crb_um"][axis]], facecolor="none", edgecolor="gold", s=60, lw=2, zorder=4
                )
    ax.set_xticks(range(len(evaluations)))
    ax.set_xticklabels([str(lab) for lab in labels])
    ax.set_xlabel("optical thickness b")
    ax.set_ylabel("σ (µm)  [blue: x, red: y]")
    if title:
        ax.set_title(title)
    return _save(fig, out)
