"""How close a model-based estimator gets to the bench's analytic CRB (seed 000 bench, b > 0).

The analytic CRB at b > 0 is the exact linear Fisher information of the binned pupil speckle
(``devices/bench/fisher_truth.py``), so it comes with its own estimator: theta0 + W (S - mean), linear in
the frame around a known position. This script draws bench frames (Poisson photo-electrons, QE 0.6, read
noise 1.38 e-, 4x4 bins) at the S target and one DMD mirror either side along x, and reports per axis:

* ``rigid``: the bench without vibration, the estimator linearised at the true position: sigma / CRB0.
  The check that the static bound is attained (1.0 within the statistical error).
* ``fixed``: with the configured vibration, the same estimator linearised at the nominal position.
* ``iterated``: with vibration, re-linearised at its own estimate (nearest point of a precomputed grid
  of moments, 4 passes): the oracle a network has to match.

For the vibrating cases the error is sigma / m' (m' = response slope along x over +-1 mirror, applied to
both axes of the symmetric target), which is what the lattice bias correction makes of sigma, over the
total CRB. Prints one JSON line at the end.
usage: python benchmarks/bench_oracle.py [--b 2.5] [--frames 1500] [--grid-step-um 0.75]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.bench import fisher_truth as ft  # noqa: E402
from devices.bench.bench import VirtualBench  # noqa: E402
from devices.bench.clock import SimClock  # noqa: E402
from devices.bench.config import BenchConfig  # noqa: E402

DMD = (768, 1024)
CENTRE = (511, 383)  # DMD mirror (x, y) imaged on the camera centre
SENSOR = {"qe": 0.6, "read_noise_e": 1.38}  # the simulated sCMOS (devices/bench/sensor.py)
FRAME_INTERVAL_S = 0.0333  # bsbd: the flowing speckle decorrelates between frames


def square(x: int, y: int) -> np.ndarray:
    """The seed's 5x5-mirror target, read-only as the simulated DMD serves it."""
    pic = np.zeros(DMD, np.uint8)
    pic[y - 2 : y + 3, x - 2 : x + 3] = 255
    pic.setflags(write=False)
    return pic


def draw(bench: VirtualBench, clock: SimClock, shown: dict, x: int, n: int, rng: np.random.Generator):
    """n 4x4-binned frames of photo-electrons with the target at mirror column x."""
    shown["picture"] = square(x, CENTRE[1])
    exposure = bench.config.reflection.exposure_s
    for _ in range(n):
        photons = bench.expected_photons(clock.now(), exposure)
        yield ft.bin_image(rng.poisson(SENSOR["qe"] * photons).astype(float), 4)
        clock.advance(FRAME_INTERVAL_S)


def linear_estimator(bench: VirtualBench, offset_um: tuple[float, float]):
    """(bins, mean, W) of the locally linear estimator at the centre + offset (um)."""
    model = bench._reflection()
    um = model.um_per_mirror
    moments = model.speckle_moments(
        (CENTRE[0] + offset_um[0] / um, CENTRE[1] + offset_um[1] / um), 4, **SENSOR
    )
    return tuple(moments.bins.T), moments.mean, moments.estimator_weights()


def slope_corrected(estimates: dict[int, np.ndarray], um_per_mirror: float) -> dict:
    """sigma at the centre, x slope over +-1 mirror, sigma / slope."""
    sigma = estimates[0].std(axis=0, ddof=1)
    slope = (estimates[1][:, 0].mean() - estimates[-1][:, 0].mean()) / (2 * um_per_mirror)
    return {
        "sigma_um": sigma.tolist(),
        "slope_x": float(slope),
        "sigma_over_slope_um": (sigma / slope).tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=float, default=2.5)
    ap.add_argument("--frames", type=int, default=1500, help="per position")
    ap.add_argument("--grid-step-um", type=float, default=0.75, help="re-linearisation grid (+-6 um)")
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    out: dict = {"b": args.b, "frames": args.frames}
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    for rigid in (True, False):
        reflection = {"vibration_rms_um": 0.0} if rigid else {}
        cfg = BenchConfig(seed=args.seed, medium={"optical_thickness": args.b}, reflection=reflection)
        clock, shown = SimClock(), {"picture": square(*CENTRE)}
        bench = VirtualBench(cfg, clock, pattern_source=lambda t, shown=shown: shown["picture"])
        crb = np.array(bench.analytic_crb_um(target_px=CENTRE, binning=4, **SENSOR))
        (rows, cols), mean, weights = linear_estimator(bench, (0.0, 0.0))

        def fixed(frame: np.ndarray, rows=rows, cols=cols, mean=mean, weights=weights) -> np.ndarray:
            return weights @ (frame[rows, cols] - mean)

        if rigid:  # the static bound, at the true position only
            est = np.array([fixed(f) for f in draw(bench, clock, shown, CENTRE[0], args.frames, rng)])
            sigma = est.std(axis=0, ddof=1)
            out["crb0_um"] = crb.tolist()
            out["rigid"] = {"sigma_um": sigma.tolist(), "sigma_over_crb0": (sigma / crb).tolist()}
            continue
        out["crb_total_um"] = crb.tolist()
        out["vibration_rms_um"] = cfg.reflection.vibration_rms_um
        um = bench._reflection().um_per_mirror
        grid = np.arange(-6.0, 6.0 + 1e-9, args.grid_step_um)
        table = {
            (i, j): linear_estimator(bench, (gx, gy))
            for i, gy in enumerate(grid)
            for j, gx in enumerate(grid)
        }

        def iterated(frame: np.ndarray, grid=grid, table=table) -> np.ndarray:
            theta = np.zeros(2)
            for _ in range(4):
                j, i = np.clip(np.round((theta - grid[0]) / args.grid_step_um), 0, grid.size - 1).astype(int)
                (r, c), m, w = table[i, j]
                theta = np.array([grid[j], grid[i]]) + w @ (frame[r, c] - m)
            return theta

        estimates: dict[str, dict[int, np.ndarray]] = {"fixed": {}, "iterated": {}}
        for dx in (-1, 0, 1):
            frames = list(draw(bench, clock, shown, CENTRE[0] + dx, args.frames, rng))
            estimates["fixed"][dx] = np.array([fixed(f) for f in frames])
            estimates["iterated"][dx] = np.array([iterated(f) for f in frames])
        for name, est in estimates.items():
            res = slope_corrected(est, um)
            res["sigma_over_crb"] = (np.array(res["sigma_over_slope_um"]) / crb).tolist()
            out[name] = res
    out["time_s"] = round(time.perf_counter() - t0, 1)
    print(f"b = {args.b}: CRB0 {out['crb0_um'][0]:.3f} um, total {out['crb_total_um'][0]:.3f} um")
    rx, ry = out["rigid"]["sigma_over_crb0"]
    print(f"  rigid, linear at the truth: sigma/CRB0 {rx:.3f}, {ry:.3f}")
    for name in ("fixed", "iterated"):
        r = out[name]
        rx, ry = r["sigma_over_crb"]
        print(f"  vibrating, {name}: slope {r['slope_x']:.2f}, sigma/m'/CRB {rx:.2f}, {ry:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
