"""Virtual bench, configuration 1 (seed 000): budget, speckle statistics, time evolution, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devices.bench import medium as med
from devices.bench.bench import VirtualBench
from devices.bench.clock import SimClock
from devices.bench.config import BenchConfig

DMD = (768, 1024)


def target_picture(x: int = 511, y: int = 383, size: int = 5) -> np.ndarray:
    """A size x size block of 'on' mirrors centred on mirror (x = col, y = row)."""
    pic = np.zeros(DMD, np.uint8)
    h = size // 2
    pic[y - h : y + h + 1, x - h : x + h + 1] = 255
    return pic


def make_bench(pic=None, flow=7.0, vibration_um: float | None = None, **medium) -> VirtualBench:
    refl = {} if vibration_um is None else {"vibration_rms_um": vibration_um}
    cfg = BenchConfig(configuration="reflection", seed=3, medium=medium, reflection=refl)
    return VirtualBench(cfg, SimClock(), pattern_source=lambda t: pic, flow_source=lambda: flow)


def test_config_refuses_typos() -> None:
    with pytest.raises(ValueError, match="optical_thicknes"):
        BenchConfig(medium={"optical_thicknes": 2.0})
    with pytest.raises(ValueError, match="speckle_sim.sample"):
        BenchConfig(speckle_sim={"sample": "not_a_sample"})
    with pytest.raises(ValueError):
        BenchConfig(medium={"optical_thickness": 6.0})  # seed range is 0..5


def test_geometry_matches_seed() -> None:
    gt = make_bench().ground_truth()
    assert gt["um_per_dmd_px"] == pytest.approx(13.7 * 0.18)
    assert gt["um_per_camera_px"] == pytest.approx(6.5 * 0.18 / 2.9)
    # the 5x5 target (68.5 um on the DMD) is 30.6 camera px; the D grid step (2 mirrors) 12.2 px
    assert 5 * gt["camera_px_per_dmd_px"] == pytest.approx(30.56, abs=0.01)


def test_photon_budget_free_space() -> None:
    """b = 0, all mirrors on: every pixel gets N0 * R_dmd * exposure photons (uniform coherent field)."""
    pic = np.full(DMD, 255, np.uint8)
    bench = make_bench(pic, optical_thickness=0.0)
    r = bench.config.reflection
    n_photons = r.laser_power_w * r.wavelength_nm * 1e-9 / (6.62607015e-34 * 299792458.0)
    spot_area = math.pi * (0.5 * r.illumination_diameter_dmd_mm * 1e3 * 0.18) ** 2
    n0 = n_photons * (6.5 * 0.18 / 2.9) ** 2 / spot_area * r.optical_efficiency
    img = bench.expected_photons(0.0, 200e-6)
    expected = n0 * r.dmd_reflectance * 200e-6
    assert img.shape == (128, 128)
    assert np.allclose(img[16:-16, 16:-16], expected, rtol=0.01)
    assert 1e4 < expected < 3e4  # below a Zyla full well (30,000 e-), as the docs claim
    # nothing projected -> dark
    dark = make_bench(None, optical_thickness=0.0).expected_photons(0.0, 200e-6)
    assert np.all(dark == 0.0)


@pytest.mark.parametrize("b", [0.0, 1.0, 2.5, 5.0])
def test_ballistic_fraction_follows_double_pass(b: float) -> None:
    bench = make_bench(target_picture(), optical_thickness=b)
    gt = bench.ground_truth()
    assert gt["ballistic_fraction"] == pytest.approx(math.exp(-2 * b))
    ref = make_bench(target_picture(), optical_thickness=0.0)
    # the ballistic (coherent) image scales exactly as exp(-2b)
    ec_b = bench._model.picture_terms(target_picture())[0]
    ec_0 = ref._model.picture_terms(target_picture())[0]
    ratio = np.sum(np.abs(ec_b) ** 2) / np.sum(np.abs(ec_0) ** 2)
    assert ratio == pytest.approx(math.exp(-2 * b), rel=1e-5)
    assert 0.0 <= gt["scattered_target_fraction"] <= 1.0


def test_mean_over_flowing_frames_matches_model_mean() -> None:
    """Averaging decorrelated frames recovers I_c + I_t + background (the model's mean image).

    Rigid bench (vibration 0): with vibration the frame average is this mean blurred by the 2-D Gaussian
    of the per-frame target displacement (tests/test_bench_vibration.py checks the displacement)."""
    pic = target_picture()
    bench = make_bench(pic, optical_thickness=2.0, wall_fraction=0.0, vibration_um=0.0)
    frames = np.stack([bench.expected_photons(1.0 * i, 200e-6) for i in range(300)])  # 1 s >> tau
    mean_model = bench._model.picture_terms(pic)[2] * 200e-6
    box = (slice(44, 84), slice(44, 84))  # target region
    assert frames.mean(axis=0)[box].mean() == pytest.approx(mean_model[box].mean(), rel=0.02)
    bg = (slice(0, 20), slice(0, 128))
    assert frames.mean(axis=0)[bg].mean() == pytest.approx(mean_model[bg].mean(), rel=0.03)


def test_background_speckle_is_fully_developed() -> None:
    bench = make_bench(None, optical_thickness=4.2)
    frames = np.stack([bench.expected_photons(0.1 * i, 200e-6) for i in range(20)])
    contrast = frames.std() / frames.mean()
    assert contrast == pytest.approx(1.0, abs=0.03)
    # exponential intensity statistics: P(I > mean) = 1/e
    assert np.mean(frames > frames.mean()) == pytest.approx(math.exp(-1), abs=0.02)


def test_independent_pixel_speckle_is_fully_developed() -> None:
    bench = make_bench(None, optical_thickness=3.0, speckle_model="independent")
    img = bench.expected_photons(0.0, 200e-6)
    assert img.std() / img.mean() == pytest.approx(1.0, abs=0.03)
    # no correlation between neighbours
    c = np.corrcoef(img[:, :-1].ravel(), img[:, 1:].ravel())[0, 1]
    assert abs(c) < 0.03


def _pair_correlation(bench: VirtualBench, dt: float, n_pairs: int = 25) -> float:
    cs = []
    t = 0.0
    prev = bench.expected_photons(t, 200e-6)
    for _ in range(n_pairs):
        t += dt
        cur = bench.expected_photons(t, 200e-6)
        cs.append(np.corrcoef(prev.ravel(), cur.ravel())[0, 1])
        prev = cur
    return float(np.mean(cs))


def test_frame_to_frame_correlation_while_flowing() -> None:
    """Seed settings (7 ml/h, 33.3 ms): intensity correlation = rho^2, rho = exp(-33.3/30)."""
    rho = math.exp(-33.3 / 30.0)
    bench = make_bench(None, optical_thickness=4.2, wall_fraction=0.0)
    assert _pair_correlation(bench, 0.0333) == pytest.approx(rho**2, abs=0.03)
    # tau ~ 1/flow: at 14 ml/h the field correlation over 33.3 ms is rho^2
    fast = make_bench(None, flow=14.0, optical_thickness=4.2, wall_fraction=0.0)
    assert _pair_correlation(fast, 0.0333) == pytest.approx(rho**4, abs=0.03)
    # with the static-ish wall speckle (share w): |w + (1-w) rho|^2
    w = 0.2
    walled = make_bench(None, optical_thickness=4.2, wall_fraction=w)
    assert _pair_correlation(walled, 0.0333) == pytest.approx((w + (1 - w) * rho) ** 2, abs=0.03)


def test_frozen_when_flow_stops() -> None:
    bench = make_bench(None, flow=0.0, optical_thickness=4.2)
    assert _pair_correlation(bench, 0.0333, n_pairs=5) > 0.999
    assert med.correlation_time_s(bench.config.medium, 0.0) == math.inf


def test_wall_background_drifts_over_minutes() -> None:
    bench = make_bench(None, flow=0.0, optical_thickness=4.2, wall_fraction=1.0)
    a = bench.expected_photons(0.0, 200e-6)
    b = bench.expected_photons(1.0, 200e-6)
    c = bench.expected_photons(600.0, 200e-6)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # tau_wall = 120 s
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] < 0.1  # 5 tau later: a new background


def test_same_seed_same_frames_different_seed_different() -> None:
    pic = target_picture()

    def run(seed: int) -> np.ndarray:
        cfg = BenchConfig(seed=seed, medium={"optical_thickness": 3.0})
        bench = VirtualBench(cfg, SimClock(), pattern_source=lambda t: pic)
        return np.stack([bench.expected_photons(0.0333 * i, 200e-6) for i in range(4)])

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_moving_the_target_on_the_dmd_moves_it_in_the_image() -> None:
    # rigid bench: with vibration both frames would carry their own displacement (same seed: the same one)
    bench0 = make_bench(target_picture(511, 383), optical_thickness=0.0, vibration_um=0.0)
    bench1 = make_bench(target_picture(513, 383), optical_thickness=0.0, vibration_um=0.0)  # 2 mirrors right
    i0, i1 = bench0.expected_photons(0, 1e-4), bench1.expected_photons(0, 1e-4)
    cols = np.arange(128)
    cx0 = (i0.sum(axis=0) * cols).sum() / i0.sum()
    cx1 = (i1.sum(axis=0) * cols).sum() / i1.sum()
    assert cx1 - cx0 == pytest.approx(2 * bench0.ground_truth()["camera_px_per_dmd_px"], abs=0.05)


def test_bad_picture_shape_is_refused() -> None:
    bench = make_bench(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        bench.expected_photons(0.0, 1e-4)


def test_non_finite_time_or_exposure_is_refused() -> None:
    """A NaN exposure would give a NaN frame; a NaN time as the first request would become the medium's
    clock (every later interval compares as not positive), freezing the speckle for the rest of the run."""
    bench = make_bench(target_picture(), optical_thickness=4.2, wall_fraction=0.0)
    for t, exposure in ((float("nan"), 1e-4), (float("inf"), 1e-4), (0.0, float("nan")), (0.0, -1e-4)):
        with pytest.raises(ValueError, match="finite"):
            bench.expected_photons(t, exposure)
    assert _pair_correlation(bench, 0.0333, n_pairs=3) < 0.5  # the medium still flows afterwards
