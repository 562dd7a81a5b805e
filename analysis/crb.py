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
from analysis.preprocessing import (
    SAVGOL_POLYORDER,
    SAVGOL_WINDOW,
    Preprocessor,
    bin_frames,
    fit_background,
)


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
        raise ValueError(f"no frames at the centre position {tuple(c.tolist())}")
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
    for name, axis in (("x", x_axis), ("y", y_axis)):
        if not axis:
            raise ValueError(
                f"no frames displaced along {name} from the centre {tuple(c.tolist())}: "
                "not a displacement scan (fisher-scan F or bsbd D frames)"
            )
    x_axis[0.0] = y_axis[0.0] = flat[on_c]
    return PositionSamples(x_axis, y_axis, flat[on_c], (float(c[0]), float(c[1])), "", used)


def load_run_samples(
    path: str | Path,
    *,
    role: str | None = None,
    bin_factor: int = 4,
    background: bool = True,
    normalise: bool = True,
    window: int = SAVGOL_WINDOW,
    polyorder: int = SAVGOL_POLYORDER,
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
        if not np.all(np.isfinite(pos_um)):  # J must be in 1/µm²: no silent fall-back to DMD px
            raise ValueError("target positions in µm missing from the run table")
        meta = {
            "protocol": r.protocol,
            "role": role,
            "background_frames": int(b_idx.size),
            "background_window": None if bg is None else bg.window,
            "frame_shape": list(frames.shape[1:]),
            "bin_factor": int(bin_factor),
            "normalise": bool(normalise),
        }
        truth = bench_truth_inputs(r)
    samples = split_axes(pos_um, frames)
    if truth is not None:
        meta["_truth"] = truth
    samples.role = role
    return samples, meta


def bench_truth_inputs(reader: Any) -> dict[str, Any] | None:
    """What :func:`analytic_reference` needs from a simulated reflection run, or None (real or other runs).

    The run stores the validated bench config (``/entry/config/bench``), the plan's reference position
    (``ground_truth/plan/reference_px``), the camera's sensor constants (``ground_truth/bench/sensor``)
    and the camera binning/ROI (``full_config``); the bench's analytic Fisher matrix is recomputed from them.
    """
    import json

    try:
        truth = reader.ground_truth
        if "bench" not in truth or "reference_px" not in truth.get("plan", {}):
            return None
        bench = reader.bench_config
        if bench.get("configuration", "reflection") != "reflection":
            return None
        sensor = truth["bench"]["sensor"]
        full = json.loads(reader.attrs.get("full_config", "{}") or "{}")
        ccfg = full.get("devices", {}).get("camera", {}) or {}
        return {
            "bench": bench,
            "reference_px": [float(v) for v in np.asarray(truth["plan"]["reference_px"]).ravel()],
            "qe": float(sensor["qe"]),
            "read_noise_e": float(sensor["read_noise_e"]),
            "exposure_s": float(reader.protocol_config.get("exposure_s", np.nan)),
            "camera_binning": int(ccfg.get("binning", 1) or 1),
            "camera_roi": ccfg.get("roi"),
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def analytic_reference(
    truth: Mapping[str, Any], *, bin_factor: int, normalise: bool
) -> dict[str, Any] | None:
    """The simulated bench's analytic Fisher matrix and CRB at the run's reference position.

    ``VirtualBench.analytic_fisher`` (``devices/bench/fisher_truth.py``) with the total binning (camera x
    analysis), the camera's QE and read noise and the protocol's exposure. What it assumes, so what the
    ratio means: independent (binned) pixels -- exact at b = 0 with zero read noise (Poisson), and at
    b > 0 with ``speckle_model="independent"`` (non-central chi-square); with pupil speckle (correlated
    pixels and bins) the exact *linear* Fisher information, a lower bound on J: that CRB is attained by
    a locally linear estimator and the true bound can only be lower; the bench's mechanical vibration adds
    in quadrature (J = J0 (I + s² J0)⁻¹: exact when J0 is far above or far below 1/s², and in between a
    bound for estimators unbiased over the field of view, docs/bench-model.md). Neither the
    per-frame max normalisation nor background subtraction is modelled (both can only lose information),
    and the CRB is that of unbinned-in-time single frames at the reference.
    Returns None when the run cannot be reproduced (a camera ROI, bench code that refuses the config).
    """
    if truth.get("camera_roi"):
        return None
    from devices.bench.bench import VirtualBench  # the bench model only: no device is opened
    from devices.bench.clock import SimClock
    from devices.bench.config import BenchConfig

    try:
        cfg = BenchConfig.model_validate(truth["bench"])
        bench = VirtualBench(cfg, SimClock())
        binning = int(truth["camera_binning"]) * int(bin_factor)
        ref = tuple(truth["reference_px"][:2])
        b = cfg.medium.optical_thickness
        exposure = truth["exposure_s"]
        kw: dict[str, Any] = {
            "qe": truth["qe"],
            "read_noise_e": truth["read_noise_e"],
            "exposure_s": None if not np.isfinite(exposure) else exposure,
        }
        j = np.asarray(bench.analytic_fisher(ref, binning, **kw), dtype=np.float64)  # type: ignore[arg-type]
        crb = np.sqrt(np.diag(np.linalg.inv(j)))
    except (ValueError, np.linalg.LinAlgError):
        return None
    if b == 0:
        exact = truth["read_noise_e"] == 0
        model = "poisson (exact)" if exact else "poisson + gaussian read noise (approximation)"
    elif cfg.medium.speckle_model == "independent":
        model = "speckle: non-central chi-square, independent pixels"
    else:
        model = "speckle: linear Fisher information, pupil speckle, exact covariance (CRB upper bound)"
    vibration = cfg.reflection.vibration_rms_um
    if vibration > 0:
        model += f" + {vibration:g} um rms vibration in quadrature (bound for field-wide unbiased estimators)"
    notes = []
    if normalise:
        notes.append("frames were max-normalised: the analytic value ignores that (it loses information)")
    if b > 0 and cfg.medium.wall_fraction > 0:
        notes.append("wall speckle counted as part of the fast diffuse field")
    return {
        "crb_um": crb.tolist(),
        "fisher": j.tolist(),
        "model": model,
        "optical_thickness": float(b),
        "binning": binning,
        "reference_px": list(ref),
        "qe": truth["qe"],
        "read_noise_e": truth["read_noise_e"],
        "notes": notes,
    }


def sample_size_warnings(n_features: int, frames_used: int, bin_factor: int) -> list[str]:
    """Why a result should not be trusted, in words; empty when the sample size is adequate.

    The decorrelation is fitted on the pooled frames; with fewer than about two frames per feature it
    fits noise, and the Fisher information comes out inflated with a small error bar: on a 900-frame
    bsbd subset, 1,024 features (4x4 binning) gave a CRB 8x too small, 256 features (8x8) a CRB
    within its error of the analytic one (docs/fisher.md). The threshold is that observation, not a theorem.
    """
    if 2 * n_features <= frames_used:
        return []
    return [
        f"{n_features} features from only {frames_used} frames: the Fisher information is likely "
        f"over-estimated (CRB too small). Bin more (--bin-factor {2 * bin_factor}) or record more frames."
    ]


@dataclass
class CrbResult:
    """What ``specklab crb`` prints."""

    fisher: FisherMatrixResult
    samples_meta: dict[str, Any]
    frames_used: int
    analytic: dict[str, Any] | None = None  # the simulated bench's analytic CRB (``analytic_reference``)

    def as_dict(self) -> dict[str, Any]:
        f = self.fisher
        out = {
            "crb_um": f.crb.tolist(),
            "crb_stderr_um": f.crb_stderr.tolist(),
            "fisher": f.matrix.tolist(),
            "fisher_stderr": f.stderr.tolist(),
            "fisher_units": "1/um^2",
            "step_um": f.steps.tolist(),
            "frames_used": self.frames_used,
            "method": f.method,
            "step_rule": f.method,
            "step_rules": list(f.step_rules),
            "step_notes": [
                a.robust.note if rule == "robust" else ""
                for a, rule in zip(f.axes, f.step_rules, strict=True)
            ],
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
        a = self.analytic
        out["analytic_crb_um"] = None if a is None else a["crb_um"]
        out["crb_ratio"] = out["analytic_fisher"] = out["analytic"] = None  # real runs: null
        if a is not None:
            out["analytic_fisher"] = a["fisher"]
            out["analytic"] = {k: v for k, v in a.items() if k not in ("crb_um", "fisher")}
            out["crb_ratio"] = [float(c / t) for c, t in zip(f.crb, a["crb_um"], strict=True)]
        return out


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
    window: int = SAVGOL_WINDOW,
    polyorder: int = SAVGOL_POLYORDER,
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
    truth = meta.pop("_truth", None)
    n_features = int(np.asarray(samples.center).reshape(len(samples.center), -1).shape[1])
    meta = {
        **meta,
        "center_um": list(samples.center_um),
        "warnings": sample_size_warnings(n_features, samples.frames_used, bin_factor),
    }
    analytic = None
    if truth is not None:
        analytic = analytic_reference(truth, bin_factor=bin_factor, normalise=normalise)
    return CrbResult(fisher=res, samples_meta=meta, frames_used=samples.frames_used, analytic=analytic)
