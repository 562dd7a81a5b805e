"""SensorModel: the noise statistics the Fisher/CRB analyses rely on."""

from __future__ import annotations

import numpy as np
import pytest

from devices.bench.sensor import SensorModel

N_PIX = 200_000  # enough pixels that 5-sigma bounds on mean/variance are tight


def _sample(model: SensorModel, photons: float, n_summed: int = 1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return model.expose(np.full(N_PIX, photons), rng, n_summed=n_summed).astype(np.float64)


def test_defaults_are_zyla55_16bit() -> None:
    m = SensorModel()
    assert (m.qe, m.offset_adu, m.full_well_e, m.bit_depth) == (0.6, 100.0, 30000.0, 16)
    assert m.gain_adu_per_e == pytest.approx(1 / 0.45)
    assert m.read_noise_e == pytest.approx(1.38)
    assert m.adc_max == 65535
    # with these numbers the ADC clips before the well (documented)
    assert m.saturation_electrons() == pytest.approx((65535 - 100) * 0.45)


@pytest.mark.parametrize("photons", [0.0, 3.0, 1000.0])
def test_mean_and_variance_match_shot_plus_read_noise(photons: float) -> None:
    m = SensorModel()
    x = _sample(m, photons)
    var = m.variance_adu(photons)
    assert abs(x.mean() - m.mean_adu(photons)) < 5 * np.sqrt(var / N_PIX)
    # relative std of a sample variance is about sqrt(2/N) (Gaussian) plus a small Poisson excess term
    assert x.var(ddof=1) == pytest.approx(var, rel=5 * np.sqrt(2 / N_PIX) + 0.005)


def test_read_noise_only_at_zero_photons_is_centred_on_offset() -> None:
    m = SensorModel(read_noise_e=2.0)
    x = _sample(m, 0.0)
    assert x.mean() == pytest.approx(100.0, abs=0.05)
    assert x.std() == pytest.approx(np.sqrt((2.0 * m.gain_adu_per_e) ** 2 + 1 / 12), rel=0.01)


def test_digital_binning_adds_read_noise_per_pixel() -> None:
    """sCMOS: a 2x2 bin carries 4 read noises (sigma*2) and one offset."""
    m = SensorModel(read_noise_e=2.0)
    x = _sample(m, 0.0, n_summed=4)
    assert x.mean() == pytest.approx(100.0, abs=0.05)
    assert x.var() == pytest.approx(m.gain_adu_per_e**2 * 4 * 4.0 + 1 / 12, rel=0.02)


def test_adc_saturation_and_full_well() -> None:
    m = SensorModel()
    assert np.all(_sample(m, 1e6) == 65535)
    assert m.mean_adu(1e6) == 65535
    # a low-gain mode saturates in the well: offset + gain * full_well, exactly without read noise
    low_gain = SensorModel(gain_adu_per_e=1.0, read_noise_e=0.0)
    x = _sample(low_gain, 1e6)
    assert np.all(x == 30100)
    assert low_gain.mean_adu(1e6) == 30100
    assert low_gain.saturation_electrons() == 30000


def test_output_dtype_shape_and_determinism() -> None:
    m = SensorModel()
    photons = np.linspace(0, 500, 48).reshape(6, 8)
    a = m.expose(photons, np.random.default_rng(3))
    b = m.expose(photons, np.random.default_rng(3))
    c = m.expose(photons, np.random.default_rng(4))
    assert a.dtype == np.uint16 and a.shape == (6, 8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"qe": 0.0},
        {"qe": 1.5},
        {"gain_adu_per_e": 0},
        {"read_noise_e": -1},
        {"bit_depth": 17},
        {"offset_adu": 70000},
    ],
)
def test_invalid_constants_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SensorModel(**kwargs)


def test_negative_or_nan_photons_refused() -> None:
    m = SensorModel()
    with pytest.raises(ValueError):
        m.expose(np.array([1.0, -1.0]), np.random.default_rng(0))
    with pytest.raises(ValueError):
        m.expose(np.array([np.nan]), np.random.default_rng(0))
