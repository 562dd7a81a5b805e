"""Cramér–Rao bound of the target position (x, y) in µm (sample plane) from a recorded run.

Works on any run whose target frames sit at positions symmetric about a centre along x and along y:

* **fisher-scan** (role ``F``): reference position plus ±k DMD px along each axis, several k -> a real
  step-size scan per axis (the paper's procedure, Fig. 2).
* **bsbd** (role ``D``): the 25 snake positions 2 DMD px apart. Around the central grid position the row
  through it gives x pairs at ±2 and ±4 px (steps 4 and 8 px) and the column gives y pairs; the central
  position's frames are the denominator. Only two steps exist, so the paper's stability criterion cannot
  run (it needs >= 5) and the robust rule picks the step; on a translation-invariant bench any other grid
  position could serve as centre too (not averaged here).

Pipeline: B frames -> binned (background fitted at the binned resolution, which is exact because binning
is linear) -> Savitzky–Golay background model; target frames -> background subtracted -> binned ->
max-normalised (``analysis/preprocessing.py``, as the models see them) -> ``fisher_matrix``
keyed by the table's ``target_x_um``/``target_y_um`` offsets, so J is in 1/µm² and the CRB in µm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.fisher import FisherMatrixResult, fisher_matrix
from analysis.preprocessing import Preprocessor, bin_frames, fit_background


@dataclass
class PositionSamples:
    """Preprocessed frames grouped by target position (µm offsets from the centre)."""

    x_axis: dict[float, np.ndarray]
    y_axis: dict[float, np.ndarray]
    center: np.ndarray
    center_um: tuple[float, float]
    role: str
    frames_used: int


def split_axes(
    positions_um: np.ndarray,
    frames: np.ndarray,
    *,
    center_um: tuple[float, float] | None = None,
    decimals: int = 6,
) -> PositionSamples:
    """Group ``frames`` (n, ...) by position (n, 2) into x- and y-axis scans through a centre position.

    The centre defaults to the recorded position nearest the median position (the reference of a
    fisher-scan, the middle of a bsbd grid). Positions off both axes are ignored.
    """
    pos = np.round(np.asarray(positions_um, dtype=np.float64), decimals)
    uniq = np.unique(pos, axis=0)
    if center_um is None:
        med = np.median(uniq, axis=0)
        c = uniq[np.argmin(np.sum((uniq - med) ** 2, axis=1))]
    else:
        c = np.round(np.asarray(center_um, dtype=np.float64), decimals)
    on_c = np.all(pos == c, axis=1)
    if not on_c.any():
        raise ValueError(f"no frames at the centre position {tuple(c)}")
    flat = frames.reshape(frames.shape[0], -1)
    x_axis: dict[float, np.ndarray] = {}
    y_axis: dict[float, np.ndarray] = {}
    used = int(on_c.sum())
    for p in uniq:
        if np.all(p == c):
            continue
        sel = np.all(pos == p, axis=1)
        if p[1] == c[1]:
            x_axis[float(p[0] - c[0])] = flat[sel]
            used += int(sel.sum())
        elif p[0] == c[0]:
            y_axis[float(p[1] - c[1])] = flat[sel]
            used += int(sel.sum())
    x_axis[0.0] = y_axis[0.0] = flat[on_c]
    return PositionSamples(x_axis, y_axis, flat[on_c], (float(c[0]), float(c[1])), "", used)


def load_run_samples(
    path: str | Path,
    *,
    role: str | None = None,
    bin_factor: int = 4,
    background: bool = True,
    normalise: bool = True,
    window: int = 5000,
    polyorder: int = 2,
    batch_size: int = 2048,
) -> tuple[PositionSamples, dict[str, Any]]:
    """Read a run through :class:`acquisition.reader.RunReader`, preprocess, and group by position."""
    from acquisition.reader import RunReader  # imported lazily: h5py only when a run is read

    with RunReader(path) as r:
        roles = r.roles()
        role = role or ("F" if roles.get("F") else "D")
        idx = r.indices(role)
        if idx.size == 0:
            raise ValueError(f"run has no {role!r} frames (roles: {roles})")
        table = r.table
        b_idx = r.indices("B") if background else np.empty(0, dtype=np.int64)
        want = np.zeros(r.n_frames, dtype=bool)
        want[idx] = True
        want[b_idx] = True
        # one contiguous pass (slab reads are far faster than fancy-indexed every-other-frame reads);
        # frames are binned straight away: background fitted and subtracted at the binned resolution
        # (exact, binning is linear), 16x less memory
        first, last = int(np.flatnonzero(want)[0]), int(np.flatnonzero(want)[-1])
        binned_b, binned_t = [], []
        for bi, f in r.iter_batches(np.arange(first, last + 1), batch_size):
            sel = want[bi]
            if not sel.any():
                continue
            fb = bin_frames(f[sel].astype(np.float32), bin_factor)
            roles_b = table["role"][bi[sel]]
            binned_b.append(fb[roles_b == "B"])
            binned_t.append(fb[roles_b == role])
        target = np.concatenate(binned_t)
        bg = None
        if background and b_idx.size:
            bg = fit_background(np.concatenate(binned_b), b_idx, window=window, polyorder=polyorder)
        pre = Preprocessor(background=bg, bin_factor=1, normalise=normalise, background_binned=True)
        frames = np.concatenate(
            [pre(target[s : s + batch_size], idx[s : s + batch_size]) for s in range(0, idx.size, batch_size)]
        )
        pos_um = np.stack([table["target_x_um"][idx], table["target_y_um"][idx]], axis=1)
        if not np.all(np.isfinite(pos_um)):  # fall back to DMD px (then J is per px², flagged in meta)
            raise ValueError("target positions in µm missing from the run table")
        meta = {
            "protocol": r.protocol,
            "role": role,
            "background_frames": int(b_idx.size),
            "background_window": None if bg is None else bg.window,
            "frame_shape": list(frames.shape[1:]),
        }
    samples = split_axes(pos_um, frames)
    samples.role = role
    return samples, meta


@dataclass
class CrbResult:
    """What ``specklab crb`` prints."""

    fisher: FisherMatrixResult
    samples_meta: dict[str, Any]
    frames_used: int

    def as_dict(self) -> dict[str, Any]:
        f = self.fisher
        return {
            "crb_um": f.crb.tolist(),
            "crb_stderr_um": f.crb_stderr.tolist(),
            "fisher": f.matrix.tolist(),
            "fisher_stderr": f.stderr.tolist(),
            "fisher_units": "1/um^2",
            "step_um": f.steps.tolist(),
            "frames_used": self.frames_used,
            "method": f.method,
            "denominator": f.denominator,
            "bins": f.bins,
            "decorrelation": f.decorrelation.method,
            "n_components": f.decorrelation.n_components,
            "decorrelation_info": {
                k: v for k, v in f.decorrelation.info.items() if isinstance(v, (int, float, bool, str))
            },
            "curves": [a.curve.as_dict() for a in f.axes],
            "paper_step_um": [None if a.paper is None else a.paper.step for a in f.axes],
            "timings_s": f.timings,
            **self.samples_meta,
        }


def crb_from_samples(samples: PositionSamples, **fisher_kwargs: Any) -> FisherMatrixResult:
    """Fisher matrix and CRB from grouped samples (no file involved: what the tests drive)."""
    return fisher_matrix(
        samples.x_axis, samples.y_axis, theta0=(0.0, 0.0), center=samples.center, **fisher_kwargs
    )


def crb_from_run(
    path: str | Path,
    *,
    role: str | None = None,
    bin_factor: int = 4,
    background: bool = True,
    normalise: bool = True,
    window: int = 5000,
    polyorder: int = 2,
    fisher_kwargs: Mapping[str, Any] | None = None,
) -> CrbResult:
    """CRB (µm) of the target position from a fisher-scan (``F``) or bsbd (``D``) run file."""
    samples, meta = load_run_samples(
        path,
        role=role,
        bin_factor=bin_factor,
        background=background,
        normalise=normalise,
        window=window,
        polyorder=polyorder,
    )
    res = crb_from_samples(samples, **dict(fisher_kwargs or {}))
    meta = {**meta, "center_um": list(samples.center_um)}
    return CrbResult(fisher=res, samples_meta=meta, frames_used=samples.frames_used)
