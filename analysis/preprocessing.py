"""Frame preprocessing shared by the CRB analysis and model training (Starshynov et al. 2025, Methods).

Order, as in the paper: background subtraction (Savitzky–Golay-smoothed B frames) -> pixel binning
(128 -> 32, factor 4) -> per-frame max normalisation.

* **Background**: every pixel's time series over the B (background) frames is smoothed with
  ``scipy.signal.savgol_filter`` (default window 5,000 B samples, polyorder 2) to follow the slow drift of
  light scattered by particles stuck to the cuvette walls, while fast speckle decorrelation (one frame) is
  averaged out. The smooth background is then linearly interpolated to the frame index (or time) of each
  non-B frame and subtracted. Window rule for short runs: the largest odd length <= min(window, number of B
  frames); if that is <= polyorder the background degenerates to the per-pixel mean of the B frames.
* The smoothed series is stored only every ``decimate`` B samples (default window // 50): the filter output
  varies on the scale of the window, so linear interpolation between those knots is exact to ~(1/50)² of the
  drift curvature, and a 125,000-frame run needs megabytes instead of gigabytes. Applying the model to a
  batch needs only the batch and its indices (streaming friendly).
* Binning is linear, so ``bin(frame - bg) = bin(frame) - bin(bg)``: the background may be fitted on binned
  B frames (what :mod:`analysis.crb` does, 16x less memory) with identical results.
* ``bin_frames`` sums by default: sums keep photon-count (Poisson) statistics and integer-valued data; the
  mean differs by the constant factor² and the result after max normalisation is identical.
* ``normalise_max`` divides each frame by its maximum (paper: "normalized from 0 to 1 by dividing each image
  by its maximum intensity value"). For non-negative frames the result is in [0, 1]; after background
  subtraction values can be negative, so the result is in [min/max, 1] unless ``clip_negative=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import savgol_coeffs

#: Savitzky–Golay background defaults: a 5,000-sample window (≈170 s of B frames, seed 000 Methods) and
#: a quadratic, the one place every caller (``specklab crb``, training) takes them from.
SAVGOL_WINDOW = 5000
SAVGOL_POLYORDER = 2


def savgol_window(n_samples: int, window: int = SAVGOL_WINDOW, polyorder: int = SAVGOL_POLYORDER) -> int:
    """Window actually used: the largest odd length <= min(window, n_samples); 0 if it is <= polyorder."""
    w = min(int(window), int(n_samples))
    if w % 2 == 0:
        w -= 1
    return w if w > polyorder else 0


@dataclass
class BackgroundModel:
    """Smooth per-pixel background at a few knots (frame index or time) with linear interpolation."""

    positions: np.ndarray  # (m,) increasing frame indices (or times) of the knots
    values: np.ndarray  # (m, *frame_shape) float32 smoothed background at the knots
    window: int  # Savitzky–Golay window actually used (0: constant mean background)
    polyorder: int

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    def at(self, positions: np.ndarray) -> np.ndarray:
        """Background at ``positions`` (n,), linearly interpolated; held constant beyond the ends."""
        pos = np.asarray(positions, dtype=np.float64).reshape(-1)
        if self.positions.size == 1:
            return np.broadcast_to(self.values[0], (pos.size, *self.frame_shape)).astype(np.float32)
        j = np.clip(np.searchsorted(self.positions, pos, side="right") - 1, 0, self.positions.size - 2)
        p0, p1 = self.positions[j], self.positions[j + 1]
        t = np.clip((pos - p0) / (p1 - p0), 0.0, 1.0).astype(np.float32)
        t = t.reshape(-1, *([1] * len(self.frame_shape)))
        return (1.0 - t) * self.values[j] + t * self.values[j + 1]

    def subtract(self, frames: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``frames - background(positions)`` as float32; ``frames`` is (n, *frame_shape)."""
        f = np.asarray(frames, dtype=np.float32)
        if f.shape[1:] != self.frame_shape:
            raise ValueError(f"frames {f.shape[1:]} do not match background {self.frame_shape}")
        return f - self.at(positions)


def fit_background(
    b_frames: np.ndarray,
    b_positions: np.ndarray,
    *,
    window: int = SAVGOL_WINDOW,
    polyorder: int = SAVGOL_POLYORDER,
    decimate: int | None = None,
    pixel_block: int = 4096,
) -> BackgroundModel:
    """Savitzky–Golay background from the B frames.

    Parameters
    ----------
    b_frames:
        (n_B, H, W) (or (n_B, n_pixels)) background frames in acquisition order.
    b_positions:
        (n_B,) their frame indices (or timestamps), increasing. The filter assumes the B frames are evenly
        spaced in acquisition order (true for the B,S,B,D sequence); positions are used for interpolation.
    window, polyorder:
        Savitzky–Golay window (in B samples; shortened for short runs, see :func:`savgol_window`) and order.
    decimate:
        keep every ``decimate``-th smoothed sample (plus the last) as interpolation knots; default
        ``max(1, window_used // 50)``.
    pixel_block:
        pixels filtered at a time, to bound the float64 temporaries.
    """
    b = np.asarray(b_frames)
    pos = np.asarray(b_positions, dtype=np.float64).reshape(-1)
    if b.shape[0] != pos.size or pos.size == 0:
        raise ValueError("need one position per B frame and at least one B frame")
    if np.any(np.diff(pos) <= 0):
        raise ValueError("B frame positions must be strictly increasing")
    shape = b.shape[1:]
    flat = b.reshape(b.shape[0], -1)
    w = savgol_window(pos.size, window, polyorder)
    step = max(1, w // 50) if decimate is None else max(1, int(decimate))
    keep = np.unique(np.r_[np.arange(0, pos.size, step), pos.size - 1])
    out = np.empty((keep.size, flat.shape[1]), dtype=np.float32)
    for s in range(0, flat.shape[1], pixel_block):
        block = flat[:, s : s + pixel_block].astype(np.float64)
        if w == 0:
            out[:, s : s + pixel_block] = block.mean(axis=0)
        else:
            out[:, s : s + pixel_block] = _savgol_at(block, keep, w, polyorder)
    return BackgroundModel(
        positions=pos[keep], values=out.reshape(keep.size, *shape), window=w, polyorder=polyorder
    )


def _savgol_at(x: np.ndarray, at: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    """``savgol_filter(x, window, polyorder, axis=0, mode="interp")[at]``, computed only at ``at``.

    Why: the full filter costs n x window per pixel (hours for the paper's 2.5x10^5 B frames with a
    5,000 window), while the background model keeps only every window/50-th sample. Interior samples
    are one dot product of the Savitzky–Golay coefficients with their window; samples within half a
    window of either end come from the polynomial fitted to the first/last window, exactly as
    scipy's ``interp`` mode does.
    """
    n, half = x.shape[0], window // 2
    coeffs = savgol_coeffs(window, polyorder, use="dot")
    out = np.empty((at.size, x.shape[1]))
    interior = (at >= half) & (at < n - half)
    for row, j in zip(np.flatnonzero(interior), at[interior], strict=True):
        out[row] = coeffs @ x[j - half : j + half + 1]
    for edge, first in ((at < half, 0), (at >= n - half, n - window)):
        if edge.any():
            local = np.arange(window, dtype=np.float64)
            poly = np.polynomial.polynomial.polyfit(local, x[first : first + window], polyorder)
            out[edge] = np.polynomial.polynomial.polyval(at[edge] - first, poly).T
    return out


def bin_frames(frames: np.ndarray, factor: int, *, reduce: str = "sum") -> np.ndarray:
    """Bin the last two axes by ``factor`` (e.g. 128x128 -> 32x32 with factor 4) by ``"sum"`` or ``"mean"``.

    Sum is the default (photon counts stay counts). The height and width must be divisible by ``factor``.
    """
    f = np.asarray(frames)
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"bin factor must be a positive integer, got {factor}")
    if factor == 1:
        return f
    h, w = f.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"frame {h}x{w} not divisible by bin factor {factor}")
    r = f.reshape(*f.shape[:-2], h // factor, factor, w // factor, factor)
    dtype = np.float64 if np.issubdtype(f.dtype, np.floating) and f.dtype == np.float64 else np.float32
    if reduce == "sum":
        return r.sum(axis=(-3, -1), dtype=dtype)
    if reduce == "mean":
        return r.mean(axis=(-3, -1), dtype=dtype)
    raise ValueError("reduce must be 'sum' or 'mean'")


def normalise_max(frames: np.ndarray, *, clip_negative: bool = False) -> np.ndarray:
    """Divide every frame (last two axes) by its maximum; frames whose maximum is <= 0 become zeros."""
    f = np.asarray(frames, dtype=np.float32)
    if clip_negative:
        f = np.clip(f, 0.0, None)
    mx = f.max(axis=(-2, -1), keepdims=True)
    safe = np.where(mx > 0, mx, 1.0)
    return np.where(mx > 0, f / safe, 0.0).astype(np.float32)


@dataclass
class Preprocessor:
    """Background subtraction -> binning -> normalisation for batches (streaming)."""

    background: BackgroundModel | None = None
    bin_factor: int = 4
    normalise: bool = True
    background_binned: bool = False  # True when ``background`` was fitted on already-binned B frames
    clip_negative: bool = False

    def __call__(self, frames: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        f = np.asarray(frames, dtype=np.float32)
        if self.background is not None and not self.background_binned:
            f = self.background.subtract(f, _require(positions))
        f = bin_frames(f, self.bin_factor)
        if self.background is not None and self.background_binned:
            f = self.background.subtract(f, _require(positions))
        if self.normalise:
            f = normalise_max(f, clip_negative=self.clip_negative)
        return f


def _require(positions: np.ndarray | None) -> np.ndarray:
    if positions is None:
        raise ValueError("background subtraction needs the frame positions (indices or times)")
    return positions
