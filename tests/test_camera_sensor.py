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


# ------------------------------------------------------------ normal approximation above normal_above_e


def _adu_pmf_and_derivative(m: SensorModel, lam_e: float, poisson: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact distribution of the output ADU (and its d/d lambda) for lam_e expected electrons.

    Poisson electrons (or the normal approximation N(lam, lam)) + N(0, sigma_r^2) read noise, x gain
    + offset, rounded: the pipeline of SensorModel.expose far from saturation.
    """
    from scipy import stats

    g, off, sr = m.gain_adu_per_e, m.offset_adu, m.read_noise_e
    s = np.sqrt(lam_e + sr**2)
    k = np.arange(np.floor(off + g * (lam_e - 12 * s)), np.ceil(off + g * (lam_e + 12 * s)) + 1)
    c_lo, c_hi = (k - 0.5 - off) / g, (k + 0.5 - off) / g  # electron interval of each ADU value
    if not poisson:
        u_lo, u_hi = (c_lo - lam_e) / s, (c_hi - lam_e) / s
        p = stats.norm.cdf(u_hi) - stats.norm.cdf(u_lo)
        # d/dlam Phi((c - lam)/s(lam)) = phi(u) * (-1/s - u / (2 s^2))
        dp = stats.norm.pdf(u_hi) * (-1 / s - u_hi / (2 * s * s)) - stats.norm.pdf(u_lo) * (
            -1 / s - u_lo / (2 * s * s)
        )
        return p, dp
    n = np.arange(max(0, np.floor(lam_e - 12 * np.sqrt(lam_e))), np.ceil(lam_e + 12 * np.sqrt(lam_e)) + 1)
    cdf = stats.norm.cdf
    kernel = cdf((c_hi[None, :] - n[:, None]) / sr) - cdf((c_lo[None, :] - n[:, None]) / sr)
    pn = stats.poisson.pmf(n, lam_e)
    dpn = stats.poisson.pmf(n - 1, lam_e) - pn  # d/dlam Poisson(n; lam)
    return pn @ kernel, dpn @ kernel


@pytest.mark.parametrize("factor", [1.0, 2.0, 10.0])
def test_normal_approximation_keeps_fisher_information_within_half_a_percent(factor: float) -> None:
    """At and above the threshold the counts carry the Poisson pipeline's Fisher information (< 0.5 %)."""
    m = SensorModel()
    lam_e = factor * m.normal_above_e
    fisher = {}
    for poisson in (True, False):
        p, dp = _adu_pmf_and_derivative(m, lam_e, poisson)
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        keep = p > 1e-300
        fisher[poisson] = float(np.sum(dp[keep] ** 2 / p[keep]))
    assert fisher[True] == pytest.approx(1 / (lam_e + m.read_noise_e**2), rel=0.01)  # sanity
    assert fisher[False] / fisher[True] == pytest.approx(1.0, abs=0.005)
    # and the documented bound 1 + 1/(2 lambda) holds
    assert fisher[False] / fisher[True] - 1 <= 1 / (2 * lam_e) + 1e-4


@pytest.mark.parametrize("photons", [1600.0, 1700.0, 5000.0, 20000.0])
def test_mean_and_variance_above_the_threshold(photons: float) -> None:
    """qe*photons = 960 (exact Poisson), 1020, 3000, 12000 electrons (normal approximation)."""
    m = SensorModel()
    x = _sample(m, photons)
    var = m.variance_adu(photons)
    assert abs(x.mean() - m.mean_adu(photons)) < 5 * np.sqrt(var / N_PIX)
    assert x.var(ddof=1) == pytest.approx(var, rel=5 * np.sqrt(2 / N_PIX))


def test_threshold_is_where_the_draw_changes_and_exact_poisson_is_available() -> None:
    """Below the threshold the counts are Poisson (integer electrons without read noise); above, not."""
    m = SensorModel(read_noise_e=0.0, gain_adu_per_e=1.0, offset_adu=0.0)
    below = _sample(m, 999.0 / m.qe)
    assert below.mean() == pytest.approx(999.0, abs=5 * np.sqrt(999.0 / N_PIX))
    exact = SensorModel(read_noise_e=0.0, gain_adu_per_e=1.0, offset_adu=0.0, normal_above_e=np.inf)
    x = _sample(exact, 3000.0 / exact.qe)
    assert x.var(ddof=1) == pytest.approx(3000.0, rel=5 * np.sqrt(2 / N_PIX))
    third = np.mean((x - x.mean()) ** 3)  # Poisson: third central moment = lambda
    assert third == pytest.approx(3000.0, rel=0.5)
    with pytest.raises(ValueError, match="normal_above_e"):
        SensorModel(normal_above_e=1.0)


def test_well_clip_comes_before_read_noise_near_saturation() -> None:
    """Near the well the normal pixels clip the shot noise first: read noise spreads the clip level."""
    m = SensorModel(gain_adu_per_e=1.0, read_noise_e=3.0, offset_adu=100.0, full_well_e=30000.0)
    x = _sample(m, 1e6)  # far above the well: every pixel is clipped at 30000 e-, then read noise
    assert x.mean() == pytest.approx(30100.0, abs=0.05)
    assert x.std() == pytest.approx(np.sqrt(9.0 + 1 / 12), rel=0.02)


def test_box_muller_normals() -> None:
    from scipy import stats

    from devices.bench.sensor import standard_normal_f32

    z = standard_normal_f32(np.random.default_rng(2), 1_000_001).astype(np.float64)
    assert z.shape == (1_000_001,)
    assert abs(z.mean()) < 5 / 1000
    assert z.var() == pytest.approx(1.0, abs=5 * np.sqrt(2 / z.size))
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / z.size)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert np.abs(z).max() <= 5.78
