"""Analytic Fisher information of the target position vs brute-force Monte Carlo (seed 000 CRB)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from devices.bench import fisher_truth as ft
from devices.bench.bench import VirtualBench
from devices.bench.clock import SimClock
from devices.bench.config import BenchConfig

DMD = (768, 1024)


def _pic(x: int = 511, y: int = 383) -> np.ndarray:
    pic = np.zeros(DMD, np.uint8)
    pic[y - 2 : y + 3, x - 2 : x + 3] = 255
    return pic


def _bench(dx_mirror: float = 0.0, **medium) -> VirtualBench:
    """A bench whose DMD->camera map is shifted so the target image moves by dx_mirror (continuous).

    Rigid (vibration 0): these tests check the static-optics Fisher matrix J0 against frames drawn
    without the per-frame displacement; the vibration's (J0^-1 + s^2 I)^-1 is tested in
    tests/test_bench_vibration.py.
    """
    cfg = BenchConfig(
        seed=11,
        medium=medium,
        reflection={
            "dmd_center_px": (511.5 - dx_mirror, 383.5),
            "laser_power_w": 4e-5,
            "vibration_rms_um": 0.0,
        },
    )
    pic = _pic()
    return VirtualBench(cfg, SimClock(), pattern_source=lambda t: pic)


def test_shot_noise_fisher_matches_poisson_monte_carlo() -> None:
    """b = 0: J = sum (dlam)^2/lam vs <score^2> with the score from finite differences of the
    Poisson log-likelihood of frames drawn from the bench (independent of the analytic derivative)."""
    binning, exposure, delta = 4, 200e-6, 0.02  # delta in mirrors
    um_per_mirror = 13.7 * 0.18
    lam = {
        d: ft.bin_image(_bench(d, optical_thickness=0.0).expected_photons(0, exposure), binning)
        for d in (-delta, 0.0, delta)
    }
    rng = np.random.default_rng(0)
    counts = rng.poisson(lam[0.0], size=(3000, *lam[0.0].shape))
    score = (
        stats.poisson.logpmf(counts, lam[delta]).sum(axis=(1, 2))
        - stats.poisson.logpmf(counts, lam[-delta]).sum(axis=(1, 2))
    ) / (2 * delta * um_per_mirror)
    j_mc = np.mean(score**2)
    j_an = _bench(0.0, optical_thickness=0.0).analytic_fisher((511.0, 383.0), binning)[0, 0]
    assert j_mc == pytest.approx(j_an, rel=0.08)
    # the low laser power makes this a photon-starved case: a few thousand photons per target
    assert 1e3 < lam[0.0].sum() < 1e5


def test_read_noise_and_binning_reduce_information() -> None:
    bench = _bench(0.0, optical_thickness=0.0)
    j1 = bench.analytic_fisher((511.0, 383.0), 1)[0, 0]
    jr = bench.analytic_fisher((511.0, 383.0), 1, read_noise_e=2.0)[0, 0]
    jq = bench.analytic_fisher((511.0, 383.0), 1, qe=0.5)[0, 0]
    j4 = bench.analytic_fisher((511.0, 383.0), 4)[0, 0]
    assert jr < j1 and j4 < j1
    assert jq == pytest.approx(0.5 * j1, rel=1e-9)  # Poisson information is linear in the photon count
    crb = bench.analytic_crb_um(target_px=(511.0, 383.0))
    assert crb[0] == pytest.approx(1 / np.sqrt(j1), rel=0.05)  # x and y nearly decoupled


def test_rician_table_matches_monte_carlo() -> None:
    """The quadrature Fisher matrix of the M-mode non-central chi-square intensity vs MC scores."""
    rng = np.random.default_rng(1)
    for m, lam, d in [(1, 0.7, 1.3), (4, 5.0, 0.8)]:
        n = 200_000
        z = (rng.standard_normal((n, m)) + 1j * rng.standard_normal((n, m))) * np.sqrt(d / 2)
        s = np.abs(np.sqrt(lam / m) + z) ** 2  # coherent power lam spread over the m modes
        s = s.sum(axis=1)

        def logp(lam_: float, d_: float, s: np.ndarray = s, m: int = m) -> np.ndarray:
            return stats.ncx2.logpdf(2 * s / d_, 2 * m, 2 * lam_ / d_) + np.log(2 / d_)

        h = 1e-4
        s_l = (logp(lam + h, d) - logp(lam - h, d)) / (2 * h)
        s_d = (logp(lam, d + h) - logp(lam, d - h)) / (2 * h)
        mc = np.array([[np.mean(s_l * s_l), np.mean(s_l * s_d)], [np.mean(s_l * s_d), np.mean(s_d * s_d)]])
        fll, fld, fdd = ft.rician_fisher(np.array([lam]), np.array([d]), m)
        an = np.array([[fll[0], fld[0]], [fld[0], fdd[0]]])
        assert np.allclose(an, mc, rtol=0.03), (m, an, mc)


def test_speckle_fisher_matches_monte_carlo_on_bench_frames() -> None:
    """b > 0, independent-pixel speckle: analytic J vs <score^2> from non-central chi-square
    likelihoods evaluated on intensity frames drawn by the bench itself."""
    binning, delta, um_per_mirror = 4, 0.05, 13.7 * 0.18
    kw = {"optical_thickness": 2.5, "speckle_model": "independent", "wall_fraction": 0.0}
    bench = _bench(0.0, **kw)
    m_modes = binning**2
    terms = {}
    for d in (-delta, 0.0, delta):
        b = _bench(d, **kw)
        ec, a_flow, _ = b._model.picture_terms(_pic())
        terms[d] = (
            ft.bin_image(np.abs(ec.astype(complex)) ** 2, binning),
            ft.bin_image(a_flow.astype(float) ** 2, binning),
        )
    frames = np.stack([ft.bin_image(bench.expected_photons(1.0 * i, 1.0), binning) for i in range(1500)])

    def loglik(lam: np.ndarray, diff: np.ndarray) -> np.ndarray:
        dm = diff / m_modes
        return (stats.ncx2.logpdf(2 * frames / dm, 2 * m_modes, 2 * lam / dm) + np.log(2 / dm)).sum(
            axis=(1, 2)
        )

    score = (loglik(*terms[delta]) - loglik(*terms[-delta])) / (2 * delta * um_per_mirror)
    j_mc = np.mean(score**2)
    j_an = bench.analytic_fisher((511.0, 383.0), binning)[0, 0]
    assert j_mc == pytest.approx(j_an, rel=0.1)


def test_crb_calibration_and_trend() -> None:
    """CRB ~ 5 um at b = 4.2 on 32x32 binned frames (seed 000 Fig. 3) and growing with b.

    The total CRB of the default bench: static optics (kappa = 0.021: 4.32 um) and the 2 um vibration
    in quadrature, 4.76 um; at b = 0 the vibration alone (2.0 um)."""
    bench = VirtualBench(BenchConfig(), SimClock())
    crbs = [bench.analytic_crb_um(b=b, binning=4)[0] for b in (0.0, 1.7, 2.5, 4.2, 5.0)]
    assert crbs[3] == pytest.approx(5.0, rel=0.1)
    assert crbs[0] == pytest.approx(2.0, rel=0.01)
    assert all(a < b for a, b in zip(crbs, crbs[1:], strict=False))
    with pytest.raises(ValueError, match="b > 0"):
        bench.analytic_fisher(b=0.0, method="speckle")


def test_linear_fisher_is_the_exact_value_for_independent_speckle() -> None:
    """J_lin <= J for any distribution; with 16 independent modes per bin the bins are nearly Gaussian
    and the exact covariance's linear information is within 2 % of the non-central chi-square value."""
    bench = VirtualBench(BenchConfig(medium={"speckle_model": "independent"}), SimClock())
    exact = bench.analytic_fisher(binning=4, b=2.5, vibration_um=0)
    linear = bench.analytic_fisher(binning=4, b=2.5, vibration_um=0, method="linear")
    assert np.all(np.diag(linear) <= np.diag(exact) * 1.001)
    assert np.all(np.diag(linear) >= np.diag(exact) * 0.98)


def test_locally_linear_estimator_attains_the_pupil_speckle_crb() -> None:
    """Pupil speckle (correlated pixels and bins), b = 2.5: theta0 + W (S - mean), built from the analytic
    moments alone, applied to frames the bench draws (Poisson photo-electrons, 4x4 bins) has the
    analytic CRB as its standard deviation and no bias. No wall speckle: its minutes-long drift would
    leave one realisation in the test (the ensemble is what the bound counts)."""
    cfg = BenchConfig(
        seed=5,
        medium={"optical_thickness": 2.5, "wall_fraction": 0.0},
        reflection={"vibration_rms_um": 0.0},
    )
    clock = SimClock()
    bench = VirtualBench(cfg, clock, pattern_source=lambda t: _pic())
    model = bench._reflection()
    exposure = cfg.reflection.exposure_s
    moments = model.speckle_moments((511.0, 383.0), 4, exposure_s=exposure)
    crb = np.sqrt(np.diag(np.linalg.inv(moments.fisher())))
    assert np.allclose(crb, bench.analytic_crb_um(target_px=(511.0, 383.0), binning=4, exposure_s=exposure))
    weights, (rows, cols) = moments.estimator_weights(), moments.bins.T
    rng = np.random.default_rng(3)
    n = 2000
    estimates = np.empty((n, 2))
    for k in range(n):
        counts = rng.poisson(bench.expected_photons(clock.now(), exposure)).astype(float)
        estimates[k] = weights @ (ft.bin_image(counts, 4)[rows, cols] - moments.mean)
        clock.advance(0.0333)  # the bsbd frame interval: the flowing speckle has decorrelated
    sigma = estimates.std(axis=0, ddof=1)
    assert np.allclose(sigma / crb, 1.0, atol=0.06), (sigma, crb)  # 4 standard errors
    assert np.all(np.abs(estimates.mean(axis=0)) < 4 * crb / np.sqrt(n))


def test_pair_distances_rise_with_the_crb_slope_then_saturate() -> None:
    """The Ziv-Zakai and Barankin inputs at b = 2.5: d(h) -> sqrt(J) h and G_ii -> J h^2 for small h (the
    analytic CRB's model); far apart, the two images no longer overlap and d stops growing (what makes the
    threshold regime)."""
    sensor = {"qe": 0.6, "read_noise_e": 1.38}
    bench = VirtualBench(
        BenchConfig(seed=4, medium={"optical_thickness": 2.5}, reflection={"vibration_rms_um": 0.0}),
        SimClock(),
    )
    target = (511.0, 383.0)
    j = bench.analytic_fisher(target, 4, **sensor)
    near, far = bench.pair_distances(np.array([0.05, 16.0]), 0, target, 4, **sensor)
    assert near / 0.05 == pytest.approx(np.sqrt(j[0, 0]), rel=0.02)
    assert far < 0.5 * 16.0 * np.sqrt(j[0, 0])
    gram = bench.mean_difference_gram(np.array([0.05, -9.86]), 0, target, 4, **sensor)  # the Barankin input
    assert gram[0, 0] / 0.05**2 == pytest.approx(j[0, 0], rel=0.02)
    assert np.all(np.linalg.eigvalsh(gram) > 0)
    assert gram[1, 1] < 0.5 * 9.86**2 * j[0, 0]
    with pytest.raises(ValueError, match="axis"):
        bench.pair_distances(np.array([1.0]), 2)


def test_informative_bins_are_the_moments_bins_and_dilate_by_the_reach() -> None:
    """informative_bins without a reach is what speckle_moments keeps; with one, every bin within the reach
    (rows, cols) of an informative bin is added and nothing else, and none falls outside the frame."""
    bench = VirtualBench(BenchConfig(seed=4, medium={"optical_thickness": 2.5}), SimClock())
    model = bench._reflection()
    target, sensor = (511.0, 383.0), {"qe": 0.6, "read_noise_e": 1.38}
    nominal = model.informative_bins(target, 4, **sensor)
    assert np.array_equal(nominal, model.speckle_moments(target, 4, **sensor).bins)
    widened = model.informative_bins(target, 4, **sensor, reach_bins=(1, 3))
    chebyshev = np.abs(widened[:, None, :] - nominal[None, :, :])  # (widened, nominal, row/col)
    within = np.any((chebyshev[..., 0] <= 1) & (chebyshev[..., 1] <= 3), axis=1)
    assert within.all()
    limit = np.array(model.shape) // 4
    assert np.all((widened >= 0) & (widened < limit))
    rows, cols = np.indices(tuple(limit))
    candidates = np.stack([rows.ravel(), cols.ravel()], axis=1)
    gap = np.abs(candidates[:, None, :] - nominal[None, :, :])
    reached = np.any((gap[..., 0] <= 1) & (gap[..., 1] <= 3), axis=1)
    assert len(widened) == int(reached.sum())  # every reachable bin is in, no other


@pytest.mark.parametrize("b", [0.0, 2.5])
def test_analytic_mean_and_derivative_are_what_the_bench_draws(b: float) -> None:
    """The analytic model's mean image (the square target's spectrum and erf envelope) equals the bench's own
    mean image of the same 5x5 picture, in the FOV and in the 64 px guard around it, and its position
    derivative equals the central difference of the bench's images; a target beyond the guard (which the
    bench clips away, but the periodic analytic spectrum would wrap into the FOV) is refused."""

    def model(dx: float = 0.0, dy: float = 0.0):
        refl = {"vibration_rms_um": 0.0, "dmd_center_px": (511.5 - dx, 383.5 - dy)}
        return VirtualBench(BenchConfig(medium={"optical_thickness": b}, reflection=refl), SimClock())._model

    m = model()
    for target in ((511, 383), (520, 390), (530, 383)):  # centred, off-centre, outside the FOV (guard)
        drawn = m.picture_terms(_pic(*target))[2]
        assert np.abs(m.mean_counts(target, 1, 1.0, 1.0) - drawn).max() < 1e-6 * drawn.max(), target
    h = 1e-3  # mirrors
    _, dic, _, dit = m.target_images((520.0, 390.0))
    for axis, (dx, dy) in enumerate(((h, 0.0), (0.0, h))):
        plus, minus = (model(s * dx, s * dy).picture_terms(_pic(520, 390))[2] for s in (1, -1))
        difference = (plus - minus) / (2 * h * m.px_per_mirror)
        analytic = dic[axis] + dit[axis]
        assert np.abs(difference - analytic).max() < 1e-3 * np.abs(analytic).max(), axis
    assert np.array_equal(m.picture_terms(_pic(560, 383))[2], m.picture_terms(None)[2])  # bench: no target
    with pytest.raises(ValueError, match="field of view"):
        m.mean_counts((560, 383))
    bench = VirtualBench(BenchConfig(medium={"optical_thickness": b}), SimClock())
    with pytest.raises(ValueError, match="field of view"):
        bench.analytic_crb_um(target_px=(100.0, 100.0), binning=4)


def test_analytic_model_refuses_bad_arguments() -> None:
    """Negative or NaN b, a non-positive exposure and a binning with no whole bin on the sensor are refused
    with a message, not answered with a wrong bound or an arithmetic error."""
    bench = VirtualBench(BenchConfig(), SimClock())
    for b in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="optical thickness"):
            bench.analytic_crb_um(b=b, binning=4)
    for exposure in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="exposure_s"):
            bench.analytic_fisher(binning=4, b=0.0, exposure_s=exposure)
    for binning in (0, 129, 2.5):
        with pytest.raises(ValueError, match="binning"):
            bench.analytic_fisher(binning=binning, b=0.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="binning"):
            bench.pair_distances(np.array([1.0]), 0, binning=binning)  # type: ignore[arg-type]
    assert bench._reflection().b == bench.config.medium.optical_thickness  # a refused b leaves b alone
