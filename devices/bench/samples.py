"""Fluorophore densities rho(r) for the speckle-SIM configuration (seed 001).

All samples are generated on the sensor grid, scaled to [0, 1] and deterministic for a
given seed: a random sample (``cells``) draws from :func:`sample_rng` (bench seed, sample name), so
its density is the same whichever samples were mounted before it (one run images several).
No download: the scikit-image pictures used are the ones bundled with the package
(``camera``, ``cell``, ``coins``, ``moon``); the seed's own training images (IDR, seed 001
ref. 25) are not redistributable here.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

SKIMAGE_NAMES = frozenset({"camera", "cell", "coins", "moon"})
SAMPLE_NAMES = frozenset({"siemens_star", "cells"}) | SKIMAGE_NAMES


def siemens_star(shape: tuple[int, int], spokes: int = 36) -> np.ndarray:
    """rho = (1 + cos(n*phi))/2: the seed's resolution target (seed 001 Fig. 2a, density 1 + cos)."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    phi = np.arctan2(y - (rows - 1) / 2, x - (cols - 1) / 2)
    return 0.5 * (1.0 + np.cos(spokes * phi))


def procedural_cells(shape: tuple[int, int], rng: np.random.Generator, n_cells: int = 12) -> np.ndarray:
    """Random elliptical cells with a brighter rim (membrane stain) and a nucleus, then smoothed.

    Why: fluorescence microscopy of cells (seed 001 training data) has sparse bright
    structures with sub-PSF detail; this gives such content without any download.
    """
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    rho = np.zeros(shape)
    for _ in range(n_cells):
        cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
        a = rng.uniform(0.06, 0.14) * min(shape)
        e = rng.uniform(0.6, 1.0)
        ang = rng.uniform(0, np.pi)
        xr = (x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)
        yr = -(x - cx) * np.sin(ang) + (y - cy) * np.cos(ang)
        r = np.sqrt((xr / a) ** 2 + (yr / (a * e)) ** 2)
        rho += 0.35 * (r < 1.0) + 0.65 * np.exp(-(((r - 1.0) / 0.08) ** 2))
        rho += 0.8 * (r < 0.3)
    rho = ndimage.gaussian_filter(rho, 0.7)
    return rho / rho.max()


def skimage_picture(name: str, shape: tuple[int, int]) -> np.ndarray:
    """A bundled scikit-image picture, grey, resized to ``shape`` and scaled to [0, 1]."""
    import skimage.data
    from skimage.transform import resize

    if name not in SKIMAGE_NAMES:
        raise ValueError(f"unknown scikit-image sample {name!r}; choose one of {sorted(SKIMAGE_NAMES)}")
    img = np.asarray(getattr(skimage.data, name)(), dtype=float)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    img = resize(img, shape, anti_aliasing=True)
    img -= img.min()
    return img / img.max()


def sample_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of sample ``name`` on a bench seeded ``seed`` (independent of every other draw)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def make_sample(name: str, shape: tuple[int, int], rng: np.random.Generator, spokes: int = 36) -> np.ndarray:
    """Dispatch on the sample name (one of :data:`SAMPLE_NAMES`); float64 in [0, 1]."""
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}; the virtual bench has {sorted(SAMPLE_NAMES)}")
    if name == "siemens_star":
        return siemens_star(shape, spokes)
    if name == "cells":
        return procedural_cells(shape, rng)
    return skimage_picture(name, shape)
