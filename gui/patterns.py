"""Manual DMD patterns for the control panel (Qt-free, so they are tested without a display).

Why here and not in ``acquisition/protocols``: these are alignment aids for a person at the
bench (switch everything off, put a target somewhere, throw a random mask, show a picture),
not steps of a recorded protocol, and nothing of them is stored in a run file.
Every function returns a ``(rows, cols)`` uint8 image with 0/255 values (or 8-bit gray for
an image file), the format :meth:`devices.base.Dmd.show` takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def all_off(shape: tuple[int, int]) -> np.ndarray:
    """Every mirror off (the B frame of bsbd)."""
    return np.zeros(shape, dtype=np.uint8)


def target_at(shape: tuple[int, int], x: float, y: float, size_px: int = 5) -> np.ndarray:
    """A ``size_px`` square of mirrors on, centred on column ``x`` / row ``y`` (clipped to the DMD).

    The same convention as the protocols: the centre of an odd square is its middle pixel,
    of an even square the corner shared by its four middle pixels.
    """
    if size_px < 1:
        raise ValueError(f"target size must be >= 1 pixel, got {size_px}")
    rows, cols = shape
    img = np.zeros(shape, dtype=np.uint8)
    x0 = int(round(x - (size_px - 1) / 2))
    y0 = int(round(y - (size_px - 1) / 2))
    r0, r1 = max(y0, 0), min(y0 + size_px, rows)
    c0, c1 = max(x0, 0), min(x0 + size_px, cols)
    if r0 < r1 and c0 < c1:
        img[r0:r1, c0:c1] = 255
    return img


def random_mask(
    shape: tuple[int, int], fill_fraction: float = 0.5, macro_pixel_px: int = 8, seed: int | None = None
) -> np.ndarray:
    """A binary random mask of ``macro_pixel_px`` blocks, a fraction ``fill_fraction`` of them on."""
    if not 0.0 <= fill_fraction <= 1.0:
        raise ValueError(f"fill fraction must be within [0, 1], got {fill_fraction}")
    if macro_pixel_px < 1:
        raise ValueError(f"macro pixel must be >= 1, got {macro_pixel_px}")
    rows, cols = shape
    rng = np.random.default_rng(seed)
    small = rng.random((-(-rows // macro_pixel_px), -(-cols // macro_pixel_px))) < fill_fraction
    big = np.kron(small, np.ones((macro_pixel_px, macro_pixel_px), dtype=bool))[:rows, :cols]
    return np.where(big, 255, 0).astype(np.uint8)


def from_image_file(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """An image file (anything Qt or numpy ``.npy`` reads) scaled to the DMD, as 8-bit gray.

    ``.npy`` arrays are taken as they are (numeric, must already match the DMD); other formats
    are decoded with Qt's image reader so no imaging library is needed. A file that cannot be
    used raises ValueError.
    """
    p = Path(path)
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p)
        except (EOFError, ValueError) as exc:  # empty, truncated, pickled, or not .npy at all
            raise ValueError(f"{p.name}: not a readable .npy array ({exc})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise ValueError(f"{p.name}: not a numeric array")
        if arr.shape != tuple(shape):
            raise ValueError(f"{p.name}: array is {arr.shape}, the DMD is {tuple(shape)}")
        return np.clip(arr, 0, 255).astype(np.uint8)
    from PyQt5.QtCore import Qt
    from PyQt5.QtGui import QImage

    img = QImage(str(p))
    if img.isNull():
        raise ValueError(f"{p}: not an image Qt can read")
    rows, cols = shape
    # scale first: smooth scaling may hand back 32-bit RGB, whatever the input format
    img = img.scaled(cols, rows, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
    img = img.convertToFormat(QImage.Format_Grayscale8)
    ptr = img.constBits()
    ptr.setsize(img.bytesPerLine() * img.height())
    buf = np.frombuffer(ptr, dtype=np.uint8).reshape(img.height(), img.bytesPerLine())
    return buf[:, :cols].copy()
