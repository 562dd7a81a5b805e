"""A tiny synthetic bsbd run (a Gaussian blob on a noisy background) for tests, demos and benchmarks.

Why: the localisation pipeline must be checkable without the simulated bench and without a GPU.  The
blob stands for the ballistic image of the target: S frames have it at the centre, D frames at the
5x5 grid of ``step_px`` camera pixels, B frames have none.  µm columns follow the bsbd convention
(relative to the S target, sample plane); the camera calibration is stored where simulated-bench runs
store it, ``ground_truth["bench"]["um_per_camera_px"]``, so the data pipeline reads it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.data import ArraySource

TABLE_DTYPE = [
    ("index", "i8"), ("role", "U1"), ("pattern_id", "i8"), ("target_x_px", "f8"), ("target_y_px", "f8"),
    ("target_x_um", "f8"), ("target_y_um", "f8"), ("timestamp_s", "f8"), ("exposure_s", "f8"),
    ("frame_number", "i8"),
]  # fmt: skip


def blob_run(
    n_cycles: int = 400,
    *,
    size: int = 64,
    sigma_px: float = 3.0,
    step_px: int = 4,
    camera_um_per_px: float = 0.5,
    amplitude: float = 1000.0,
    offset: float = 100.0,
    noise: float = 30.0,
    drift: float = 0.0,
    seed: int = 0,
) -> ArraySource:
    """``4 * n_cycles`` frames in the B,S,B,D order; D cycles through a 5x5 snake-free grid.

    ``drift`` adds a slowly varying background pattern (all frames) that background subtraction should
    remove.  Returns an in-memory source with the RunReader attribute names.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(float)
    c = size // 2
    grid = [(dx, dy) for dy in np.arange(-2, 3) * step_px for dx in np.arange(-2, 3) * step_px]
    n = 4 * n_cycles
    frames = np.empty((n, size, size), np.uint16)
    table = np.zeros(n, dtype=TABLE_DTYPE)
    pattern = rng.random((size, size))
    for i in range(n):
        role = "BSBD"[i % 4]
        img = offset + drift * pattern * (1 + 0.5 * np.sin(i / max(n, 1) * np.pi))
        if role == "B":
            dx = dy = np.nan
        else:
            dx, dy = (0.0, 0.0) if role == "S" else grid[(i // 4) % len(grid)]
            img = img + amplitude * np.exp(-((xx - c - dx) ** 2 + (yy - c - dy) ** 2) / (2 * sigma_px**2))
        img = img + noise * rng.standard_normal((size, size))
        frames[i] = np.clip(img, 0, 65535)
        table[i] = (i, role, 0 if role == "B" else 1, np.nan, np.nan, dx * camera_um_per_px,
                    dy * camera_um_per_px, i * 0.0333, 2e-4, i)  # fmt: skip
    return ArraySource(
        frames,
        table,
        attrs={"protocol": "bsbd"},
        ground_truth={"bench": {"um_per_camera_px": np.asarray(camera_um_per_px)}},
    )


def write_run(source: ArraySource, path: str | Path) -> Path:
    """Write ``source`` as a run file through the real writer, so :class:`RunReader` reads it back."""
    from acquisition.events import Event
    from acquisition.hdf5_writer import Hdf5RunWriter
    from acquisition.sinks import STATUS_COMPLETE, RunInfo
    from devices.base import Frame

    t = source.table
    events = [
        Event(
            index=int(r["index"]), role=str(r["role"]), pattern_id=int(r["pattern_id"]), exposure_s=2e-4,
            interval_s=0.0333,
            extra={"target_x_um": float(r["target_x_um"]), "target_y_um": float(r["target_y_um"])},
        )
        for r in t
    ]  # fmt: skip
    extra: dict[str, Any] = {k: v for k, v in source.attrs.items() if k not in ("protocol",)}
    info = RunInfo(
        protocol="bsbd", events=events, frame_shape=source.frames.shape[1:], extra=extra, simulated=True,
        ground_truth=dict(source.ground_truth),
    )  # fmt: skip
    writer = Hdf5RunWriter(path)
    writer.setup(info)
    for r, img in zip(t, source.frames, strict=True):
        writer.frame(
            Frame(img, int(r["frame_number"]), float(r["timestamp_s"]), 2e-4), events[int(r["index"])]
        )
    writer.finish(STATUS_COMPLETE)
    return Path(path)
