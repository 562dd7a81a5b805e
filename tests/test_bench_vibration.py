"""Mechanical vibration of the reflection bench (seed 000): per-frame target displacement and its Fisher cost.

``reflection.vibration_rms_um`` = s moves the target's terms (coherent field and scattered envelope) by
delta ~ N(0, s^2) per axis in every frame; the medium's back-scatter stays put. The analytic Fisher matrix
becomes J = (J0^-1 + s^2 I)^-1 (docs/bench-model.md, "Mechanical vibration").
"""

from __future__ import annotations

import numpy as np
import pytest

from devices.bench.bench import VirtualBench
from devices.bench.clock import SimClock
from devices.bench.config import BenchConfig

DMD = (768, 1024)


def _pic(x: int = 511, y: int = 383) -> np.ndarray:
    pic = np.zeros(DMD, np.uint8)
    pic[y - 2 : y + 3, x - 2 : x + 3] = 255
    pic.setflags(write=False)  # as the simulated DMD serves its pictures
    return pic


def _bench(pic: np.ndarray | None, *, seed: int = 5, flow: float = 7.0, refl=None, **medium) -> VirtualBench:
    cfg = BenchConfig(seed=seed, medium=medium, reflection=refl or {})
    return VirtualBench(cfg, SimClock(), pattern_source=lambda t: pic, flow_source=lambda: flow)


def test_config_default_and_validation() -> None:
    assert BenchConfig().reflection.vibration_rms_um == 2.0
    with pytest.raises(ValueError):
        BenchConfig(reflection={"vibration_rms_um": -1.0})
    gt = _bench(None).ground_truth()
    assert gt["vibration_rms_um"] == 2.0
    assert _bench(None, refl={"vibration_rms_um": 0.0}).ground_truth()["vibration_rms_um"] == 0.0


def test_no_vibration_is_the_rigid_bench() -> None:
    """s = 0: no random draw, frames bit-identical between two benches of one seed, equal to the static
    |E_c|^2 at b = 0, and at b > 0 equal to |E_c + sqrt(I_w) u_wall + A_flow u_flow|^2 of the cached terms."""
    pic = _pic()
    rigid = {"vibration_rms_um": 0.0}
    b0 = _bench(pic, refl=rigid, optical_thickness=0.0)
    state = b0._model._rng.bit_generator.state
    frame = b0.expected_photons(0.0, 200e-6)
    assert b0._model._rng.bit_generator.state == state  # nothing drawn
    ec, _, mean = b0._model.picture_terms(pic)
    assert np.array_equal(frame, mean * 200e-6)
    assert np.allclose(frame, np.abs(ec.astype(complex)) ** 2 * 200e-6, rtol=1e-6, atol=0)

    def frames(bench: VirtualBench) -> np.ndarray:
        return np.stack([bench.expected_photons(0.0333 * i, 200e-6) for i in range(5)])

    a = frames(_bench(pic, refl=rigid, optical_thickness=4.2))
    assert np.array_equal(a, frames(_bench(pic, refl=rigid, optical_thickness=4.2)))
    # the frame is the rigid model's formula evaluated on the bench's own speckle fields
    bench = _bench(pic, refl=rigid, optical_thickness=4.2)
    last = frames(bench)[-1]
    m = bench._model
    ec, a_flow, _ = m.picture_terms(pic)
    e = ec + np.sqrt(m.i_wall) * m.wall_speckle.field + a_flow * m.flow_speckle.field
    assert np.allclose(last, np.abs(e.astype(complex)) ** 2 * 200e-6, rtol=1e-5)
    # with vibration the generator is also drawn from: other frames from the same seed
    assert not np.allclose(a, frames(_bench(pic, optical_thickness=4.2)))


@pytest.mark.parametrize("b", [0.0, 4.2])
def test_moved_terms_are_exact(b: float) -> None:
    """Moving the target by (dx, dy) camera px gives the terms of a bench whose DMD->camera map is
    shifted by the same amount: the phase ramp on the band-limited spectrum and the shifted erf edges
    are exact (to the float32 precision the terms are kept in)."""
    pic = _pic()
    bench = _bench(pic, optical_thickness=b)
    m = bench._model
    for dx, dy in ((1.7, -3.2), (0.0, 0.0), (-12.3, 7.9)):
        ec, a_flow = m.moved_terms(pic, dx, dy)
        cx, cy = m.dmd_center
        shifted = _bench(
            None,
            refl={"dmd_center_px": (cx - dx / m.px_per_mirror, cy - dy / m.px_per_mirror)},
            optical_thickness=b,
        )
        ec_ref, a_ref, _ = shifted._model.picture_terms(pic)
        assert np.abs(ec - ec_ref).max() < 2e-6 * np.abs(ec_ref).max(), (dx, dy)
        assert np.allclose(a_flow, a_ref, rtol=2e-6, atol=0), (dx, dy)
    # the medium's own back-scatter does not move: no target, frozen medium -> identical frames
    still = _bench(None, flow=0.0, optical_thickness=4.2)
    f = [still.expected_photons(0.01 * i, 200e-6) for i in range(3)]
    assert np.array_equal(f[0], f[1]) and np.array_equal(f[0], f[2])


def test_free_space_centroid_jitters_by_s_per_axis() -> None:
    """b = 0, default s = 2 um: the intensity centroid of |E_c|^2 follows the drawn displacement, so over
    1,000 frames its std is s / um_per_px = 4.96 camera px per axis (sample std: 2.2 % standard error,
    tolerance 10 %), its mean the nominal centre (standard error 0.16 px, tolerance 0.7 px), and x and y are
    uncorrelated (|r| < 4/sqrt(n))."""
    n = 1000
    bench = _bench(_pic(), seed=7, optical_thickness=0.0)
    m = bench._model
    frames = np.stack([bench.expected_photons(0.0333 * i, 200e-6) for i in range(n)])
    ys, xs = np.arange(128.0), np.arange(128.0)
    tot = frames.sum(axis=(1, 2))
    cx = (frames.sum(axis=1) @ xs) / tot
    cy = (frames.sum(axis=2) @ ys) / tot
    nominal = m.dmd_to_camera(511.0, 383.0)
    s_px = 2.0 / m.um_per_px
    assert s_px == pytest.approx(4.96, abs=0.01)
    for c, c0 in ((cx, nominal[0]), (cy, nominal[1])):
        assert np.std(c) == pytest.approx(s_px, rel=0.10)
        assert np.mean(c) == pytest.approx(float(c0), abs=0.7)
    assert abs(np.corrcoef(cx, cy)[0, 1]) < 4 / np.sqrt(n)
    # the total photon count does not change with the displacement (the target stays in the FOV)
    assert np.std(tot) < 1e-4 * np.mean(tot)


def test_analytic_fisher_adds_the_vibration_variance() -> None:
    """J = (J0^-1 + s^2 I)^-1: CRB^2 = CRB0^2 + s^2 per axis for a diagonal J0 (centred symmetric target);
    the b = 0 CRB of the default bench is the 2 um vibration (shot noise alone: ~0.5 nm)."""
    bench = VirtualBench(BenchConfig(), SimClock())
    j0 = bench.analytic_fisher(binning=4, b=2.5, vibration_um=0)
    assert abs(j0[0, 1]) < 1e-6 * j0[0, 0]  # x and y decoupled by symmetry
    crb0 = np.sqrt(np.diag(np.linalg.inv(j0)))
    assert 0.5 < crb0[0] < 3.0  # comparable to s: a non-trivial combination
    for s in (0.5, 2.0, 5.0):
        crb = bench.analytic_crb_um(b=2.5, binning=4, vibration_um=s)
        assert np.allclose(crb, np.hypot(crb0, s), rtol=1e-9)
    assert np.allclose(bench.analytic_crb_um(b=2.5, binning=4), np.hypot(crb0, 2.0), rtol=1e-9)  # configured
    # a non-diagonal J0 (target off the symmetry point, unequal axes): the matrix formula itself
    j0 = bench.analytic_fisher((513.3, 382.6), 4, b=1.0, vibration_um=0)  # in the frame, off-centre
    j = bench.analytic_fisher((513.3, 382.6), 4, b=1.0, vibration_um=1.5)
    assert np.allclose(j, np.linalg.inv(np.linalg.inv(j0) + 1.5**2 * np.eye(2)), rtol=1e-9)
    # b = 0 with the defaults
    static = bench.analytic_crb_um(b=0.0, binning=4, vibration_um=0)
    assert static[0] < 0.01
    assert bench.analytic_crb_um(b=0.0, binning=4) == pytest.approx((2.0, 2.0), rel=1e-4)
    with pytest.raises(ValueError, match="vibration"):
        bench.analytic_fisher(vibration_um=-1.0)
