"""Training and test data for the localisers, streamed from a bsbd run (seed 000, Methods "Data collection").

Pipeline, per frame (vectorised over a batch)::

    raw uint16 (128x128) ─► background subtraction (Savitzky–Golay over the B frames; shared module)
                        ─► S frames only: integer shift (dx, dy) ~ U{-40..40}² camera px
                        ─► bin 4x4 → 32x32 (shared ``bin_frames``)
                        ─► divide by the frame maximum (shared ``normalise_max``)

Choices (also in ``docs/models.md``):

* **Shift edges: roll (periodic), not zero padding.**  After background subtraction the frame is a
  zero-mean speckle residual plus the target signal; rolling keeps those statistics everywhere,
  whereas a zero band up to 40 px wide would tell the network the shift directly (the border position
  *is* the label) and that cue is absent from the physically moved D frames.  ``shift_mode="zero"`` is
  available for comparison.
* **Shift before binning**, so one camera pixel of shift is a quarter of a binned pixel: the training
  set covers sub-pixel positions of the 32x32 input, as in the paper.
* **Classes: N_h = 81**, one class per integer shift in [-40, 40]; a shift is then exactly a class and
  no label quantisation error is added.  Other N_h values bin the shift range uniformly
  (:class:`ClassGrid`).
* **Units: µm at the sample plane.**  D labels are the table's ``target_x_um``/``target_y_um`` (relative
  to the S target, i.e. the S target is at (0, 0)); S-frame labels are ``S position + shift ×
  camera_um_per_px``, where ``camera_um_per_px`` is the camera pixel (before binning) referred to the
  sample plane, read from the run (see :func:`resolve_camera_um_per_px`) or given explicitly.  x is the
  column axis, y the row axis, with ``axis_signs`` to flip an axis if the imaging inverts it.
* **Streaming**: :class:`LocalisationDataset` reads frames through an LRU cache of blocks of
  consecutive frames and implements ``__getitems__`` so a DataLoader batch is read and preprocessed
  in one vectorised call; :class:`BlockShuffleSampler` shuffles blocks then items inside a window of
  blocks so that batches touch few blocks.  :meth:`LocalisationDataset.materialise` makes one
  sequential pass into tensors when the preprocessed set fits in memory (1.25×10^5 × 32×32 float32 is
  0.5 GB), which is what the trainer does by default.
* **Seeds**: the S/held-out split and the shifts come from ``numpy.random.default_rng(seed)``; the seed
  and a digest of the shifts are stored with every checkpoint.
* **Calibration lattice** (:func:`build_calibration_lattice`, for the bias correction): the held-out S
  frames at every point of a regular lattice of integer shifts around the D positions, same pipeline
  and labels as training.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, TensorDataset

from analysis.preprocessing import (
    SAVGOL_POLYORDER,
    SAVGOL_WINDOW,
    BackgroundModel,
    bin_frames,
    fit_background,
    normalise_max,
)
from models import LATTICE_MAX_FRAMES, LATTICE_SIDE

SHIFT_MAX_PX = 40
BIN_FACTOR = 4
INPUT_SIDE = 32
_LATTICE_STREAM = 0x1A77  # second seed word: the lattice's frame draw never reuses the split's stream

__all__ = [
    "ArraySource",
    "BlockShuffleSampler",
    "BsbdData",
    "CalibrationLattice",
    "ClassGrid",
    "DataConfig",
    "FramePipeline",
    "LocalisationDataset",
    "build_calibration_lattice",
    "build_datasets",
    "draw_shifts",
    "fit_run_background",
    "lattice_axis_px",
    "open_source",
    "resolve_camera_um_per_px",
    "shift_frames",
]


# ---------------------------------------------------------------------------------------------------
# Label grid
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassGrid:
    """The N_h position classes per axis and their conversion to µm at the sample plane.

    Class ``k`` of an axis is the shift ``-shift_max_px + k * step_px`` (camera px, before binning),
    i.e. the position ``centre_um + axis_sign * shift * camera_um_per_px``.
    """

    n_classes: int = 2 * SHIFT_MAX_PX + 1
    shift_max_px: int = SHIFT_MAX_PX
    camera_um_per_px: float = 1.0
    centre_um: tuple[float, float] = (0.0, 0.0)
    axis_signs: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError("n_classes must be >= 2")
        if not np.isfinite(self.camera_um_per_px) or self.camera_um_per_px <= 0:
            raise ValueError(f"camera_um_per_px must be a positive number, got {self.camera_um_per_px}")

    @property
    def step_px(self) -> float:
        return 2.0 * self.shift_max_px / (self.n_classes - 1)

    def _scale(self) -> np.ndarray:
        return np.asarray(self.axis_signs, dtype=float) * self.camera_um_per_px

    def shift_to_class(self, shift_px: np.ndarray) -> np.ndarray:
        """Nearest class of integer/float shifts ``(..., 2)`` (px); clipped to the grid."""
        k = np.rint((np.asarray(shift_px, dtype=float) + self.shift_max_px) / self.step_px)
        return np.clip(k, 0, self.n_classes - 1).astype(np.int64)

    def class_to_shift(self, k: np.ndarray) -> np.ndarray:
        """Fractional class index → shift in camera px."""
        return np.asarray(k, dtype=float) * self.step_px - self.shift_max_px

    def shift_to_um(self, shift_px: np.ndarray) -> np.ndarray:
        return np.asarray(self.centre_um) + np.asarray(shift_px, dtype=float) * self._scale()

    def um_to_shift(self, um: np.ndarray) -> np.ndarray:
        return (np.asarray(um, dtype=float) - np.asarray(self.centre_um)) / self._scale()

    def class_to_um(self, k: np.ndarray) -> np.ndarray:
        """Fractional class index ``(..., 2)`` (the softmax expectation) → µm at the sample plane."""
        return self.shift_to_um(self.class_to_shift(k))

    def um_to_class(self, um: np.ndarray) -> np.ndarray:
        """µm → nearest class (used only for the test-set loss)."""
        return self.shift_to_class(self.um_to_shift(um))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["centre_um"] = list(self.centre_um)
        d["axis_signs"] = list(self.axis_signs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassGrid:
        return cls(
            n_classes=int(d["n_classes"]),
            shift_max_px=int(d["shift_max_px"]),
            camera_um_per_px=float(d["camera_um_per_px"]),
            centre_um=tuple(float(v) for v in d["centre_um"]),  # type: ignore[arg-type]
            axis_signs=tuple(int(v) for v in d.get("axis_signs", (1, 1))),  # type: ignore[arg-type]
        )


# ---------------------------------------------------------------------------------------------------
# Frame operations
# ---------------------------------------------------------------------------------------------------


def draw_shifts(n: int, rng: np.random.Generator, shift_max_px: int = SHIFT_MAX_PX) -> np.ndarray:
    """``(n, 2)`` integer (dx, dy) shifts uniform on [-shift_max_px, shift_max_px] (both ends included)."""
    return rng.integers(-shift_max_px, shift_max_px + 1, size=(n, 2)).astype(np.int64)


def shift_frames(frames: np.ndarray, shifts: np.ndarray, mode: str = "roll") -> np.ndarray:
    """Shift each frame by its integer ``(dx, dy)``: +dx moves content to larger columns, +dy down.

    ``mode="roll"`` wraps content around the edges (the default, see module doc); ``"zero"`` fills the
    uncovered band with zeros.  Returns a new array of the same dtype.
    """
    frames = np.asarray(frames)
    shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 2)
    if frames.ndim != 3 or shifts.shape[0] != frames.shape[0]:
        raise ValueError("frames must be (N, H, W) with one (dx, dy) per frame")
    if mode not in ("roll", "zero"):
        raise ValueError(f"unknown shift mode {mode!r}")
    n, h, w = frames.shape
    out = np.empty_like(frames) if mode == "roll" else np.zeros_like(frames)
    for i, (dx, dy) in enumerate(shifts):
        if mode == "roll":
            out[i] = np.roll(frames[i], (int(dy), int(dx)), axis=(0, 1))
        else:
            if abs(dx) >= w or abs(dy) >= h:
                continue
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            out[i, yd, xd] = frames[i, ys, xs]
    return out


_BACKGROUND_CACHE: OrderedDict[tuple[Any, ...], BackgroundModel] = OrderedDict()


def fit_run_background(
    source: Any, *, window: int = SAVGOL_WINDOW, polyorder: int = SAVGOL_POLYORDER, batch: int = 1024
) -> BackgroundModel:
    """Savitzky–Golay background of a run from its B frames, at full camera resolution.

    Same filter, window, order and knot rule as :func:`analysis.crb.load_run_samples` (which fits on
    4x4-binned B frames; binning is linear, so its background is the binned version of this one).  Full
    resolution is needed here because the S frames are shifted by whole camera pixels *after* the
    background is subtracted and *before* they are binned.  The B frames are read in contiguous slabs
    (fast for per-frame HDF5 chunks) and kept in their stored dtype (uint16) for the fit.  Cost: the
    filter is evaluated only at its interpolation knots, about 1 s per 2,000 B frames at 128x128 (2 CPU
    cores), 16x the CRB analysis's binned fit; at paper scale (2.5x10^5 B frames) that is minutes, so the
    last two fits are cached per run file and evaluating 25 repeats fits once.
    """
    b_idx = np.asarray(source.indices("B"))
    if b_idx.size == 0:
        raise ValueError("the run has no B frames to fit the background from (use --no-background)")
    key = _cache_key(source, window, polyorder)
    if key is not None and key in _BACKGROUND_CACHE:
        _BACKGROUND_CACHE.move_to_end(key)
        return _BACKGROUND_CACHE[key]
    frames = source.frames
    out = np.empty((b_idx.size, *frames.shape[1:]), dtype=frames.dtype)
    filled = 0
    for s in range(int(b_idx[0]), int(b_idx[-1]) + 1, batch):
        e = min(s + batch, int(b_idx[-1]) + 1)
        sel = b_idx[(b_idx >= s) & (b_idx < e)]
        if sel.size:
            out[filled : filled + sel.size] = np.asarray(frames[s:e])[sel - s]
            filled += sel.size
    model = fit_background(out, b_idx, window=window, polyorder=polyorder, pixel_block=1024)
    if key is not None:
        _BACKGROUND_CACHE[key] = model
        while len(_BACKGROUND_CACHE) > 2:
            _BACKGROUND_CACHE.popitem(last=False)
    return model


def _cache_key(source: Any, window: int, polyorder: int) -> tuple[Any, ...] | None:
    """Identity of a run file's B frames: evaluating 25 repeats must not refit the background 25 times."""
    path = getattr(source, "path", None)
    if path is None or not Path(path).exists():
        return None
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size, len(source.table), window, polyorder)


@dataclass
class FramePipeline:
    """Background subtraction → integer shift → binning → per-frame max normalisation (float32).

    Background, binning (sum) and normalisation are :mod:`analysis.preprocessing`'s, called with the
    same arguments as :mod:`analysis.crb`; only the shift is specific to training.
    """

    background: BackgroundModel | None = None
    bin_factor: int = BIN_FACTOR
    shift_mode: str = "roll"

    def __call__(self, raw: np.ndarray, indices: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float32)
        if self.background is not None:
            x = self.background.subtract(x, np.asarray(indices))
        if shifts is not None:
            x = shift_frames(x, shifts, self.shift_mode)
        return normalise_max(bin_frames(x, self.bin_factor))


# ---------------------------------------------------------------------------------------------------
# Sources: a run file (RunReader) or arrays in memory
# ---------------------------------------------------------------------------------------------------


@dataclass
class ArraySource:
    """In-memory stand-in for :class:`acquisition.reader.RunReader` (same attribute names)."""

    frames: np.ndarray
    table: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    bench_config: dict[str, Any] = field(default_factory=dict)
    ground_truth: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def indices(self, role: str) -> np.ndarray:
        return np.flatnonzero(_roles(self.table) == role)

    def close(self) -> None:
        """Nothing to release (mirrors RunReader)."""


def open_source(path_or_source: Any) -> Any:
    """Open a run file with the shared reader, or pass an already-open source through."""
    if isinstance(path_or_source, (str, os.PathLike)):
        from acquisition.reader import RunReader

        return RunReader(path_or_source)
    return path_or_source


def _roles(table: np.ndarray) -> np.ndarray:
    roles = table["role"]
    if roles.dtype.kind == "S":
        roles = roles.astype("U1")
    return roles.astype(str)


def _camera_binning(source: Any) -> int:
    """Camera (sensor) binning the run was recorded with: ``devices.camera.binning`` of the run's config."""
    import json

    text = getattr(source, "attrs", {}).get("full_config")
    if not text:
        return 1
    camera = json.loads(text).get("devices", {}).get("camera", {})
    return int(camera.get("binning") or 1)


def resolve_camera_um_per_px(source: Any, override: float | None = None) -> float:
    """One frame pixel (before the 4x4 software binning) in µm at the sample plane.

    Simulated runs record it: ``ground_truth["bench"]["um_per_camera_px"]`` (sensor pixel; times the
    camera binning of the run's config, 1 on the default bench: 0.403 µm).  Real runs do not: pass
    ``override`` (CLI ``--camera-um-per-px``).  Both given and different is an error, not a silent
    choice.  The run attribute ``um_per_px`` is the DMD pixel at the sample (2.466 µm), not this scale.
    """
    if override is not None and (not np.isfinite(override) or override <= 0):
        raise ValueError(f"--camera-um-per-px must be a positive number, got {override}")
    bench = getattr(source, "ground_truth", {}).get("bench", {})
    recorded = None
    if "um_per_camera_px" in bench:
        recorded = float(np.asarray(bench["um_per_camera_px"])) * _camera_binning(source)
    if recorded is not None and override is not None and not np.isclose(recorded, override, rtol=1e-6):
        raise ValueError(
            f"--camera-um-per-px {override} contradicts the run's ground_truth/bench/um_per_camera_px "
            f"({recorded} µm per frame pixel); drop the option"
        )
    value = recorded if recorded is not None else override
    if value is None:
        raise ValueError(
            "the run does not record the camera pixel size at the sample plane "
            "(ground_truth/bench/um_per_camera_px, simulated runs only); pass --camera-um-per-px"
        )
    return float(value)


# ---------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------


class _BlockCache:
    """LRU cache of blocks of ``block`` consecutive frames (HDF5 reads are fast for contiguous slabs)."""

    def __init__(self, frames: Any, block: int, max_blocks: int) -> None:
        self.frames = frames
        self.block = block
        self.max_blocks = max_blocks
        self.n = len(frames)
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reads = 0

    def _get_block(self, b: int) -> np.ndarray:
        if b in self._lru:
            self._lru.move_to_end(b)
            return self._lru[b]
        data = np.asarray(self.frames[b * self.block : min((b + 1) * self.block, self.n)])
        self.reads += 1
        self._lru[b] = data
        while len(self._lru) > self.max_blocks:
            self._lru.popitem(last=False)
        return data

    def get(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        blocks = indices // self.block
        first = self._get_block(int(blocks[0]))
        out = np.empty((indices.size, *first.shape[1:]), dtype=first.dtype)
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            out[sel] = self._get_block(int(b))[indices[sel] - b * self.block]
        return out


Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class LocalisationDataset(Dataset):
    """Frames of one role with labels; items are ``(x (1,32,32), class (2,) long, true_um (2,), pos_id)``.

    ``source`` is an open source (RunReader or in-memory) used in the creating process, and/or a run
    ``path`` that other processes (DataLoader workers) reopen, so each gets its own HDF5 handle; a
    second SWMR handle on the same file in one process is avoided.  ``shifts`` (n, 2) are applied to
    the frames (S frames); ``pos_id`` groups test frames by target position (-1 for S frames).
    """

    def __init__(
        self,
        source: Any,
        frame_indices: np.ndarray,
        pipeline: FramePipeline,
        class_idx: np.ndarray,
        true_um: np.ndarray,
        pos_id: np.ndarray | None = None,
        shifts: np.ndarray | None = None,
        block: int = 64,
        cache_blocks: int = 64,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(source, (str, os.PathLike)):
            source, path = None, source
        self._path = path
        self._source: Any = source
        self._pid = os.getpid()
        self.frame_indices = np.asarray(frame_indices, dtype=np.int64)
        self.pipeline = pipeline
        self.class_idx = np.asarray(class_idx, dtype=np.int64)
        self.true_um = np.asarray(true_um, dtype=np.float32)
        n = self.frame_indices.size
        self.pos_id = np.full(n, -1, dtype=np.int64) if pos_id is None else np.asarray(pos_id, dtype=np.int64)
        self.shifts = None if shifts is None else np.asarray(shifts, dtype=np.int64)
        self.block = block
        self.cache_blocks = cache_blocks
        self._cache: _BlockCache | None = None

    def __len__(self) -> int:
        return int(self.frame_indices.size)

    def _frames_cache(self) -> _BlockCache:
        if self._cache is None or self._pid != os.getpid():
            if self._path is not None and (self._source is None or self._pid != os.getpid()):
                self._source = open_source(self._path)  # a worker process: its own HDF5 handle
            elif self._source is None:
                raise RuntimeError("dataset has neither an open source nor a run path")
            # else: an in-memory source (no path), inherited by a worker process: nothing to reopen
            self._pid = os.getpid()
            self._cache = _BlockCache(self._source.frames, self.block, self.cache_blocks)
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._path is not None:
            state["_source"] = None  # h5py handles do not pickle; each worker reopens the path
        state["_cache"] = None
        return state

    def block_of_items(self) -> np.ndarray:
        """Block number of every item (for :class:`BlockShuffleSampler`)."""
        return self.frame_indices // self.block

    def load(self, items: Sequence[int] | np.ndarray) -> tuple[np.ndarray, ...]:
        """Preprocessed frames and labels of ``items`` as arrays (one vectorised read + pipeline)."""
        items = np.asarray(items, dtype=np.int64)
        fi = self.frame_indices[items]
        raw = self._frames_cache().get(fi)
        shifts = None if self.shifts is None else self.shifts[items]
        x = self.pipeline(raw, fi, shifts)
        return x, self.class_idx[items], self.true_um[items], self.pos_id[items]

    def __getitems__(self, items: list[int]) -> list[Sample]:
        x, c, um, pid = self.load(items)
        xt = torch.from_numpy(x).unsqueeze(1)
        ct, ut, pt = torch.from_numpy(c), torch.from_numpy(um), torch.from_numpy(pid)
        return [(xt[i], ct[i], ut[i], pt[i]) for i in range(len(items))]

    def __getitem__(self, item: int) -> Sample:
        return self.__getitems__([int(item)])[0]

    def iter_arrays(self, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, ...]]:
        """Sequential pass over the dataset in frame order (fast contiguous reads)."""
        order = np.argsort(self.frame_indices, kind="stable")
        for s in range(0, order.size, batch_size):
            sel = order[s : s + batch_size]
            yield (sel, *self.load(sel))

    def materialise(self, batch_size: int = 1024) -> TensorDataset:
        """All items as an in-memory TensorDataset (x, class, true_um, pos_id), in item order."""
        n = len(self)
        side = None
        xs: np.ndarray | None = None
        c = np.empty((n, 2), np.int64)
        um = np.empty((n, 2), np.float32)
        pid = np.empty(n, np.int64)
        for sel, x, ci, ui, pi in self.iter_arrays(batch_size):
            if xs is None:
                side = x.shape[1:]
                xs = np.empty((n, 1, *side), np.float32)
            xs[sel, 0] = x
            c[sel], um[sel], pid[sel] = ci, ui, pi
        if xs is None:
            xs = np.empty((0, 1, 32, 32), np.float32)
        return TensorDataset(
            torch.from_numpy(xs), torch.from_numpy(c), torch.from_numpy(um), torch.from_numpy(pid)
        )


class BlockShuffleSampler(Sampler[int]):
    """Shuffle blocks, then shuffle items within windows of ``window_blocks`` blocks.

    Reading a random S frame from HDF5 costs a block read; with this order a batch touches a few blocks
    that the LRU cache already holds.  ``set_epoch`` reseeds so each epoch (and a resumed epoch) has a
    reproducible order.
    """

    def __init__(self, item_blocks: np.ndarray, window_blocks: int = 16, seed: int = 0) -> None:
        self.item_blocks = np.asarray(item_blocks)
        self.window_blocks = window_blocks
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.item_blocks.size)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = np.unique(self.item_blocks)
        rng.shuffle(blocks)
        for w in range(0, blocks.size, self.window_blocks):
            items = np.flatnonzero(np.isin(self.item_blocks, blocks[w : w + self.window_blocks]))
            rng.shuffle(items)
            yield from (int(i) for i in items)


# ---------------------------------------------------------------------------------------------------
# From a run to train / held-out / test datasets
# ---------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Everything that decides which frames become which samples (stored in checkpoints)."""

    n_classes: int = 2 * SHIFT_MAX_PX + 1
    shift_max_px: int = SHIFT_MAX_PX
    shift_mode: str = "roll"
    bin_factor: int | None = None  # None: frame side // 32 (128 -> 32 by 4x4 binning, as in the paper)
    holdout_fraction: float = 0.1
    seed: int = 0
    camera_um_per_px: float | None = None
    axis_signs: tuple[int, int] = (1, 1)
    max_train: int | None = None
    max_test: int | None = None
    block: int = 64
    background: bool = True  # False only for diagnostics (like ``specklab crb --no-background``)

    def __post_init__(self) -> None:
        if self.shift_max_px < 1:
            raise ValueError(f"shift_max_px must be >= 1 camera px, got {self.shift_max_px}")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.max_test is not None and self.max_test < 1:
            raise ValueError(f"max_test must be >= 1 D frame, got {self.max_test}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["axis_signs"] = list(self.axis_signs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "axis_signs" in known:
            known["axis_signs"] = tuple(known["axis_signs"])
        return cls(**known)


@dataclass
class BsbdData:
    """The three datasets of a run plus what is needed to reproduce and convert them."""

    train: LocalisationDataset
    holdout: LocalisationDataset
    test: LocalisationDataset
    grid: ClassGrid
    positions_um: np.ndarray  # (P, 2) distinct D positions, index = pos_id
    meta: dict[str, Any]


def build_datasets(
    source: Any,
    config: DataConfig | None = None,
    *,
    run_path: str | os.PathLike[str] | None = None,
) -> BsbdData:
    """Split a bsbd run into shifted-S training / held-out sets and the D test set.

    ``source`` is an open RunReader or :class:`ArraySource`; the datasets read frames through it (it
    must stay open while they are used) and DataLoader workers reopen ``run_path`` when given.
    """
    cfg = config or DataConfig()
    table = source.table
    roles = _roles(table)
    s_idx = np.flatnonzero(roles == "S")
    d_idx = np.flatnonzero(roles == "D")
    if s_idx.size < 2 or d_idx.size < 1:
        raise ValueError(f"run has {s_idx.size} S and {d_idx.size} D frames; a bsbd run is needed")
    rng = np.random.default_rng(cfg.seed)
    shifts = draw_shifts(s_idx.size, rng, cfg.shift_max_px)
    perm = rng.permutation(s_idx.size)
    n_hold = max(1, int(round(cfg.holdout_fraction * s_idx.size)))
    hold_sel, train_sel = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    if cfg.max_train is not None:
        train_sel = train_sel[: cfg.max_train]
    if train_sel.size < 2:
        raise ValueError(
            f"{train_sel.size} S frames left for training ({s_idx.size} S frames, {hold_sel.size} held out,"
            f" max_train {cfg.max_train}); at least 2 are needed"
        )
    if cfg.max_test is not None:
        d_idx = d_idx[: cfg.max_test]

    s_xy = np.column_stack([table["target_x_um"][s_idx], table["target_y_um"][s_idx]]).astype(float)
    centre = np.nanmean(s_xy, axis=0) if np.isfinite(s_xy).any() else np.zeros(2)
    centre = np.where(np.isfinite(centre), centre, 0.0)
    grid = ClassGrid(
        n_classes=cfg.n_classes,
        shift_max_px=cfg.shift_max_px,
        camera_um_per_px=resolve_camera_um_per_px(source, cfg.camera_um_per_px),
        centre_um=(float(centre[0]), float(centre[1])),
        axis_signs=tuple(int(s) for s in cfg.axis_signs),  # type: ignore[arg-type]
    )
    side = int(source.frames.shape[-1])
    bin_factor = cfg.bin_factor if cfg.bin_factor is not None else max(1, side // INPUT_SIDE)
    if side % bin_factor or side // bin_factor != INPUT_SIDE:
        raise ValueError(
            f"{side}-px frames binned by {bin_factor} do not give the {INPUT_SIDE}x{INPUT_SIDE} input"
        )
    # everything the pipeline does follows from ``cfg`` (stored in checkpoints), so evaluation rebuilds it
    pipeline = FramePipeline(
        background=fit_run_background(source) if cfg.background else None,
        bin_factor=bin_factor,
        shift_mode=cfg.shift_mode,
    )

    def s_dataset(sel: np.ndarray) -> LocalisationDataset:
        return _shifted_s_dataset(source, run_path, pipeline, grid, s_idx[sel], shifts[sel], cfg.block)

    d_xy = np.column_stack([table["target_x_um"][d_idx], table["target_y_um"][d_idx]]).astype(float)
    if not np.isfinite(d_xy).all():
        raise ValueError("D frames without target_x_um/target_y_um: the run's µm scale is unknown")
    positions, pos_id = np.unique(np.round(d_xy, 6), axis=0, return_inverse=True)
    test = LocalisationDataset(
        source, d_idx, pipeline, grid.um_to_class(d_xy), d_xy, pos_id=pos_id.reshape(-1), block=cfg.block,
        path=run_path,
    )  # fmt: skip
    meta = {
        "seed": cfg.seed,
        "bin_factor": bin_factor,
        "n_train": int(train_sel.size),
        "n_holdout": int(hold_sel.size),
        "n_test": int(d_idx.size),
        "n_positions": int(positions.shape[0]),
        "shifts_sha1": hashlib.sha1(shifts.tobytes()).hexdigest(),
        "holdout_sha1": hashlib.sha1(hold_sel.tobytes()).hexdigest(),
    }
    return BsbdData(s_dataset(train_sel), s_dataset(hold_sel), test, grid, positions, meta)


def _shifted_s_dataset(
    source: Any,
    path: str | os.PathLike[str] | None,
    pipeline: FramePipeline,
    grid: ClassGrid,
    frame_indices: np.ndarray,
    shifts: np.ndarray,
    block: int,
    pos_id: np.ndarray | None = None,
) -> LocalisationDataset:
    """S frames shifted by ``shifts`` (n, 2) px, labelled by ``grid``'s rule (training, held-out, lattice)."""
    return LocalisationDataset(
        source, frame_indices, pipeline, grid.shift_to_class(shifts), grid.shift_to_um(shifts),
        pos_id=pos_id, shifts=shifts, block=block, path=path,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Calibration lattice for the bias correction
# ---------------------------------------------------------------------------------------------------


@dataclass
class CalibrationLattice:
    """Held-out S frames shifted to every point of a regular lattice of integer camera-pixel shifts.

    ``dataset`` items are frame-major (all lattice points of one frame, then the next frame: one block
    read per frame) with ``pos_id`` = lattice point ``iy * nx + ix`` and labels
    ``positions_um[pos_id]`` = ``S position + shift × camera_um_per_px`` (the training labels' rule).
    """

    dataset: LocalisationDataset
    shifts_x_px: np.ndarray  # (nx,) integer shifts of the lattice columns
    shifts_y_px: np.ndarray  # (ny,)
    positions_um: np.ndarray  # (nx * ny, 2), index = pos_id
    frame_indices: np.ndarray  # the held-out frames used (sorted run indices), the same at every point
    n_holdout: int

    @property
    def n_points(self) -> int:
        return int(self.positions_um.shape[0])

    @property
    def meta(self) -> dict[str, Any]:
        """What the evaluation JSON records about the lattice (enough to rebuild and audit it)."""
        lo, hi = self.positions_um.min(axis=0), self.positions_um.max(axis=0)
        return {
            "shape": [int(self.shifts_x_px.size), int(self.shifts_y_px.size)],
            "n_points": self.n_points,
            "frames_per_point": int(self.frame_indices.size),
            "n_holdout": self.n_holdout,
            "shifts_x_px": self.shifts_x_px.tolist(),
            "shifts_y_px": self.shifts_y_px.tolist(),
            "range_um": [[float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])]],
            "frames_sha1": hashlib.sha1(self.frame_indices.tobytes()).hexdigest(),
        }


def lattice_axis_px(d_shift_px: np.ndarray, n_side: int, shift_max_px: int) -> np.ndarray:
    """Integer lattice shifts of one axis covering the D positions ``d_shift_px`` plus one step each side.

    ``n_side`` equally spaced integer shifts, step ``ceil(span / (n_side - 3))`` px (≥ 1), centred on the
    D range: the D positions fill the inner ``n_side - 2`` points' range and one step of margin lies
    beyond each extreme D position (less ≤ 0.5 px of rounding), so the spline never has to extrapolate
    to a D position.  Points outside the training range ±``shift_max_px`` are dropped (the network was
    never taught them); at least 4 points must remain (a cubic spline needs them).
    """
    if n_side < 4:
        raise ValueError(f"the calibration lattice needs >= 4 points per axis, got {n_side}")
    d = np.asarray(d_shift_px, dtype=float)
    lo, hi = float(d.min()), float(d.max())
    step = max(1, int(np.ceil((hi - lo) / (n_side - 3) - 1e-9)))
    first = int(np.rint((lo + hi) / 2 - step * (n_side - 1) / 2))
    pts = first + step * np.arange(n_side, dtype=np.int64)
    pts = pts[np.abs(pts) <= shift_max_px]
    if pts.size < 4:
        raise ValueError(
            f"the D positions (shifts {lo:.1f}..{hi:.1f} px) leave fewer than 4 lattice points inside the "
            f"training range ±{shift_max_px} px"
        )
    return pts


def build_calibration_lattice(
    data: BsbdData, *, n_side: int = LATTICE_SIDE, max_frames: int | None = LATTICE_MAX_FRAMES
) -> CalibrationLattice:
    """The calibration lattice of a run's datasets: held-out S frames × a regular lattice of shifts.

    Why: the bias field ``b(θ) = E[pred | θ] - θ`` must be estimated from many (θ, pred) pairs per θ.
    The held-out frames (never trained on) at one random shift each give ~one noisy point per frame;
    here *every* chosen held-out frame is predicted at *every* lattice point, so each lattice point's
    mean prediction averages ``frames_per_point`` frames.  Everything follows from the run (its D
    positions) and the checkpoint's :class:`DataConfig` (seed, split, shift range, µm per px) plus
    ``n_side`` and ``max_frames``: the lattice is reproducible from a checkpoint.

    * Lattice: ``n_side`` × ``n_side`` integer shifts (:func:`lattice_axis_px`) around the D positions
      converted to shifts with the same :class:`ClassGrid` as the training labels.
    * Frames: all held-out frames, or ``max_frames`` of them drawn without replacement from
      ``default_rng([data seed, 0x1A77])`` (a stream separate from the split's), so a paper-scale
      hold-out (12,500 frames) costs 81 × 500 predictions, not 81 × 12,500.  The same frames sit at
      every lattice point: differences between points are then due to the position alone.
    * Pipeline: the run's :class:`FramePipeline` (background subtraction, roll shift, binning,
      normalisation), exactly as for the training frames.
    """
    hold = data.holdout
    frames = np.sort(np.asarray(hold.frame_indices, dtype=np.int64))
    n_holdout = int(frames.size)
    if n_holdout == 0:
        raise ValueError("no held-out S frames to build the calibration lattice from")
    if max_frames is not None and n_holdout > max_frames:
        if max_frames < 2:
            raise ValueError(f"max_frames must be >= 2 (standard errors per lattice point), got {max_frames}")
        rng = np.random.default_rng([int(data.meta["seed"]), _LATTICE_STREAM])
        frames = np.sort(rng.choice(frames, size=max_frames, replace=False))
    grid = data.grid
    d_shift = grid.um_to_shift(data.positions_um)
    xs = lattice_axis_px(d_shift[:, 0], n_side, grid.shift_max_px)
    ys = lattice_axis_px(d_shift[:, 1], n_side, grid.shift_max_px)
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx): point id = iy * nx + ix
    lattice_px = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.int64)
    n_points = lattice_px.shape[0]
    shifts = np.tile(lattice_px, (frames.size, 1))
    pos_id = np.tile(np.arange(n_points, dtype=np.int64), frames.size)
    dataset = _shifted_s_dataset(
        hold._source, hold._path, hold.pipeline, grid, np.repeat(frames, n_points), shifts, hold.block, pos_id
    )
    return CalibrationLattice(dataset, xs, ys, grid.shift_to_um(lattice_px), frames, n_holdout)
