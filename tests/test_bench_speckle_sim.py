"""Virtual bench, configuration 2: speckle illumination of a fluorescent sample (seed 001)."""

from __future__ import annotations

import numpy as np
import pytest

from devices.bench.bench import VirtualBench
from devices.bench.clock import SimClock
from devices.bench.config import BenchConfig

DMD = (768, 1024)


def _masks(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random(DMD) < 0.5).astype(np.uint8) * 255 for _ in range(n)]


def _bench(sample: str = "siemens_star", masks=None) -> VirtualBench:
    cfg = BenchConfig(configuration="speckle_sim", seed=5, speckle_sim={"sample": sample})
    masks = masks if masks is not None else _masks(1)
    return VirtualBench(cfg, SimClock(), pattern_source=lambda t: masks[int(round(t)) % len(masks)])


def test_illumination_is_fully_developed_speckle_of_grain_d_sp() -> None:
    bench = _bench()
    model = bench._model
    ill = np.stack([model.illumination(m) for m in _masks(24, seed=1)])
    assert ill.mean() == pytest.approx(1.0, rel=1e-9)  # power-stabilised, unit mean
    assert ill.std() / ill.mean() == pytest.approx(1.0, abs=0.04)
    # no twin image: the speckle is not centro-symmetric
    assert abs(np.corrcoef(ill[0].ravel(), np.roll(ill[0][::-1, ::-1], 1, axis=(0, 1)).ravel())[0, 1]) < 0.2
    # intensity autocorrelation FWHM ~ d_sp (Airy-shaped correlation of a circular pupil)
    f = np.fft.fft2(ill - ill.mean(axis=(1, 2), keepdims=True))
    ac = np.fft.ifft2(np.abs(f) ** 2).real.mean(axis=0)
    prof = ac[0, :40] / ac[0, 0]
    half = np.interp(0.5, prof[::-1][-10:], np.arange(10)[::-1].astype(float))
    assert 2 * half == pytest.approx(model.d_sp_px, rel=0.15)


def test_each_pupil_sample_is_one_macro_pixel_of_the_protocol_masks() -> None:
    """The speckle-sim protocol's masks (8-mirror macro-pixels from the DMD's corner) give binary pupil
    amplitudes: the bench reads whole macro-pixels, not means over four of them."""
    from acquisition.protocols.speckle_sim import RandomMaskBank, SpeckleSimParams

    bank = RandomMaskBank(SpeckleSimParams(), DMD, n_patterns=3)
    model = _bench()._model
    assert model.cfg.speckle_sim.macropixel_dmd_px == SpeckleSimParams().macro_pixel_px
    for k in range(3):
        amp = model.pupil_amplitudes(bank.pattern(k))
        assert set(np.unique(amp)) == {0.0, 1.0}
        assert 0.3 < amp.mean() < 0.7  # the masks' fill fraction 0.5, over ~500 samples


def test_mean_over_many_masks_is_uniform_illumination_times_blurred_rho() -> None:
    masks = _masks(300, seed=2)
    bench = _bench("cells", masks)
    exposure = 0.2  # seed 001 Methods
    mean = np.mean([bench.expected_photons(float(i), exposure) for i in range(300)], axis=0)
    gt = bench.ground_truth()
    expected = gt["rho_blurred"] * bench.config.speckle_sim.photons_per_s * exposure
    rel = np.sqrt(np.mean((mean - expected) ** 2)) / expected.mean()
    assert rel < 0.05
    # one frame alone is far from it (structured illumination)
    one = bench.expected_photons(0.0, exposure)
    assert np.sqrt(np.mean((one - expected) ** 2)) / expected.mean() > 0.3


def test_detection_psf_width_is_eta_times_d_sp() -> None:
    gt = _bench().ground_truth()
    assert gt["d_psf_um"] == pytest.approx(2.5 * gt["d_sp_um"])
    assert gt["d_psf_um"] == pytest.approx(2.37, abs=0.01)  # seed 001: 2.37 um low-resolution image
    psf = gt["psf"]
    c = np.unravel_index(np.argmax(psf), psf.shape)
    row = psf[c[0]] / psf.max()
    above = np.flatnonzero(row >= 0.5)
    fwhm_px = above[-1] - above[0] + 1
    assert fwhm_px * gt["pixel_um"] == pytest.approx(gt["d_psf_um"], abs=2 * gt["pixel_um"])
    assert psf.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("sample", ["siemens_star", "cells", "camera", "coins"])
def test_samples_are_normalised_and_deterministic(sample: str) -> None:
    a = _bench(sample).ground_truth()["rho"]
    b = _bench(sample).ground_truth()["rho"]
    assert a.shape == (128, 128)
    assert np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() == pytest.approx(1.0, abs=1e-6)


def test_nothing_projected_gives_dark_frame() -> None:
    cfg = BenchConfig(configuration="speckle_sim")
    bench = VirtualBench(cfg, SimClock(), pattern_source=lambda t: None)
    assert np.all(bench.expected_photons(0.0, 0.2) == 0.0)
    with pytest.raises(ValueError, match="reflection"):
        bench.analytic_fisher()


def test_mounting_a_sample_switches_rho_whatever_the_order() -> None:
    """seed 001: one sample per block of masks; rho of a sample depends on (seed, name) only."""
    masks = _masks(1)
    bench = _bench("siemens_star", masks)
    fresh = {name: _bench(name, masks).ground_truth() for name in ("cells", "moon", "siemens_star")}
    star = bench.expected_photons(0.0, 0.2)
    for name in ("cells", "moon", "cells", "siemens_star"):
        bench.mount_sample(name)
        gt = bench.ground_truth()
        assert bench.sample == name and str(gt["sample"]) == name
        np.testing.assert_array_equal(gt["rho"], fresh[name]["rho"])
        np.testing.assert_array_equal(gt["rho_blurred"], fresh[name]["rho_blurred"])
    np.testing.assert_array_equal(bench.expected_photons(0.0, 0.2), star)  # same mask, same sample
    bench.mount_sample("cells")
    assert not np.allclose(bench.expected_photons(0.0, 0.2), star)
    truth = bench.sample_ground_truth(["moon", "siemens_star"])
    assert sorted(truth) == ["moon", "siemens_star"]
    np.testing.assert_array_equal(truth["moon"]["rho"], fresh["moon"]["rho"])
    with pytest.raises(ValueError, match="'beads'"):
        bench.mount_sample("beads")
    assert bench.sample == "cells"


def test_other_configurations_record_the_sample_only() -> None:
    bench = VirtualBench(BenchConfig(configuration="reflection"), SimClock(), pattern_source=lambda t: None)
    before = bench.expected_photons(0.0, 2e-4)
    bench.mount_sample("cells")
    assert bench.sample == "cells" and bench.sample_ground_truth(["cells"]) == {}
    assert before.shape == bench.expected_photons(0.0, 2e-4).shape
