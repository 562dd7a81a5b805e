"""Virtual bench, configuration 3: DMD targets through a static ground-glass diffuser (seed 003)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from devices.bench.bench import VirtualBench
from devices.bench.clock import SimClock
from devices.bench.config import BenchConfig

DMD = (768, 1024)


def _on_dmd(target: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
    """A 64x64 uint8 target in the centre of the DMD (seed 003: 64x64 arrays), optionally shifted."""
    pic = np.zeros(DMD, np.uint8)
    r0, c0 = DMD[0] // 2 - 32 + dy, DMD[1] // 2 - 32 + dx
    pic[r0 : r0 + 64, c0 : c0 + 64] = target
    return pic


def _digit_like(kind: int) -> np.ndarray:
    """Binary stroke targets (a bar, a ring) standing in for MNIST digits (not bundled)."""
    y, x = np.mgrid[0:64, 0:64]
    if kind == 0:
        t = (abs(x - 32) < 5) & (abs(y - 32) < 24)
    else:
        r = np.hypot(x - 32, y - 32)
        t = (r > 14) & (r < 22)
    return t.astype(np.uint8) * 255


def _bench(seed: int = 0, **diffuser) -> tuple[VirtualBench, dict]:
    shown: dict = {"pic": None}
    cfg = BenchConfig(configuration="diffuser", seed=seed, diffuser=diffuser)
    return VirtualBench(cfg, SimClock(), pattern_source=lambda t: shown["pic"]), shown


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _speckle_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the speckle (I / local mean - 1) in the central region: the common halo
    envelope of both targets (their light lands in the same ~1 mm area) is taken out."""
    from scipy import ndimage

    na, nb = (x / ndimage.gaussian_filter(x, 8) - 1 for x in (a, b))
    core = (slice(128, 384), slice(128, 384))
    return _corr(na[core], nb[core])


def test_fixed_mapping_and_decorrelation_between_targets() -> None:
    bench, shown = _bench()
    shown["pic"] = _on_dmd(_digit_like(0))
    a1 = bench.expected_photons(0.0, 1e-3)
    shown["pic"] = _on_dmd(_digit_like(1))
    b1 = bench.expected_photons(0.1, 1e-3)
    shown["pic"] = _on_dmd(_digit_like(0))
    bench._model._cache.clear()  # recompute, do not just hit the cache
    a2 = bench.expected_photons(100.0, 1e-3)
    assert a1.shape == (512, 512)
    assert np.allclose(a1, a2)  # a static diffuser: same target, same speckle
    assert abs(_speckle_corr(a1, b1)) < 0.15
    assert _corr(a1, b1) < 0.6  # full frame: the shared halo envelope only
    # a different diffuser (seed) gives a different speckle for the same target
    other, shown2 = _bench(seed=1)
    shown2["pic"] = _on_dmd(_digit_like(0))
    assert abs(_speckle_corr(a1, other.expected_photons(0.0, 1e-3))) < 0.15


def test_speckle_is_developed_and_budget_holds() -> None:
    bench, shown = _bench()
    shown["pic"] = np.zeros(DMD, np.uint8)
    n = bench.config.diffuser.illuminated_px
    r0, c0 = DMD[0] // 2 - n // 2, DMD[1] // 2 - n // 2
    shown["pic"][r0 : r0 + n, c0 : c0 + n] = 255
    img = bench.expected_photons(0.0, 1e-3)
    # energy: the whole illuminated region on -> mean photons_per_s * exposure (minus the iris cut)
    assert img.mean() == pytest.approx(bench.config.diffuser.photons_per_s * 1e-3, rel=0.1)
    core = img[128:384, 128:384]
    assert core.std() / core.mean() == pytest.approx(1.0, abs=0.15)  # speckle, not an image


def test_gray_targets_use_bitplanes() -> None:
    face = (resize(data.camera().astype(float), (64, 64), anti_aliasing=True)).astype(np.uint8)
    bench, shown = _bench()
    shown["pic"] = _on_dmd(face)
    gray = bench.expected_photons(0.0, 1e-3)
    amp_bench, shown_a = _bench(gray_model="amplitude")
    shown_a["pic"] = _on_dmd(face)
    amp = amp_bench.expected_photons(0.0, 1e-3)
    # same total energy (bit-plane weights sum to the grey level), different speckle contrast
    assert gray.sum() == pytest.approx(amp.sum(), rel=0.1)
    assert gray.std() / gray.mean() < amp.std() / amp.mean()
    shown["pic"] = None
    assert np.all(bench.expected_photons(1.0, 1e-3) == 0.0)
