"""Bounds beyond the local CRB on the seed-000 bench: what the threshold regime costs (Ziv-Zakai, Barankin).

The analytic CRB (``VirtualBench.analytic_crb_um``) is local: it assumes errors small against the image.
One frame at b >= 2.5 is not there (docs/precision.md, bench_oracle.py). Two bounds follow the CRB's own
Gaussian frame model (exact mean image, exact binned covariance) to distant target positions along x:

* **Ziv-Zakai** (``analysis.ziv_zakai``, from ``VirtualBench.pair_distances``): the mean-square error of
  *any* estimator over a uniform prior of width A, for A = 2 x 7 um (``bench_oracle.py --grid-half-um 7``,
  the grid of docs/precision.md's "Over +-7 um" oracle table) and A = 2 x 40 camera px (the networks'
  training shifts, models/data.py, and bench_oracle.py's default grid).
* **Barankin** (``analysis.barankin``, from ``VirtualBench.mean_difference_gram``): the variance of an
  estimator kept unbiased over the calibration lattice's x range (+-36 camera px, the range the bias
  correction makes it unbiased on; test points every ``--step-um``), at the D positions' x offsets
  0, 1, 2 D steps (two mirrors each) from the S target. This is the issue's metric: sigma after the
  bias correction.

With the vibration (s per axis, a fresh displacement per frame) each bound on the nominal position is
sqrt(bound0^2 + s^2): the frame informs only on the displaced target, and the displacement's variance adds
(as it does to the CRB). 4x4 binning, QE 0.6, 1.38 e- read noise (the simulated sCMOS). Prints a table and
one JSON line. usage: python benchmarks/bench_bounds.py [--b 0 2.5 5] [--shifts 16] [--step-um 0.25]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.barankin import gaussian_barankin_variance  # noqa: E402
from analysis.ziv_zakai import gaussian_zzb  # noqa: E402
from devices.bench.bench import VirtualBench  # noqa: E402
from devices.bench.clock import SimClock  # noqa: E402
from devices.bench.config import BenchConfig  # noqa: E402
from devices.bench.sensor import SensorModel  # noqa: E402
from models.data import SHIFT_MAX_PX  # noqa: E402

CENTRE = (511.0, 383.0)  # beside the optical axis (511.5, 383.5): bsbd's S target (512, 384) mirrored
SENSOR = {"qe": SensorModel.qe, "read_noise_e": SensorModel.read_noise_e}  # the simulated sCMOS
BINNING = 4
ORACLE_HALF_UM = 7.0  # bench_oracle.py --grid-half-um 7
LATTICE_HALF_PX = 36  # the calibration lattice's outer points (models.data.lattice_axis_px, 9 per axis)
D_STEP_MIRRORS = 2  # the bsbd D grid step


def ziv_zakai(bench: VirtualBench, crb0: float, crb: float, s: float, n_shifts: int) -> dict:
    """ZZB over the oracles' and the networks' priors (x axis), with and without the vibration."""
    um_per_px = bench._reflection().um_per_px
    priors = {"oracle": 2 * ORACLE_HALF_UM, "network": 2 * SHIFT_MAX_PX * um_per_px}
    shifts = np.geomspace(0.1 * crb0, max(priors.values()), n_shifts)
    distances = bench.pair_distances(shifts, 0, CENTRE, BINNING, **SENSOR)
    out: dict = {"d_max": float(distances[-1])}
    for name, width in priors.items():
        zzb0 = gaussian_zzb(shifts, distances, width)
        out[name] = {
            "prior_width_um": width,
            "zzb0_over_crb0": zzb0 / crb0,
            "zzb_over_crb": np.hypot(zzb0, s) / crb,
        }
    return out


def barankin(bench: VirtualBench, crb0: float, crb: float, s: float, step_um: float) -> dict:
    """Barankin bound at the D positions' x offsets for an estimator unbiased over the lattice's x range."""
    m = bench._reflection()
    half = LATTICE_HALF_PX * m.um_per_px
    grid = np.arange(-half, half + 1e-9, step_um)
    per_position = {}
    for k in range(3):
        x0 = k * D_STEP_MIRRORS * m.um_per_mirror
        offsets = np.r_[0.01 * crb0, grid[np.abs(grid - x0) > 1e-9] - x0]  # a tiny one for the CRB
        gram = bench.mean_difference_gram(
            offsets, 0, (CENTRE[0] + x0 / m.um_per_mirror, CENTRE[1]), BINNING, **SENSOR
        )
        b0 = np.sqrt(gaussian_barankin_variance(offsets, gram))
        per_position[f"{x0:.2f}"] = {
            "barankin0_over_crb0": b0 / crb0,
            "barankin_over_crb": np.hypot(b0, s) / crb,
        }
    ratios = [p["barankin_over_crb"] for p in per_position.values()]
    mean = (ratios[0] + 2 * ratios[1] + 2 * ratios[2]) / 5  # the five D columns (symmetric about the centre)
    return {"unbiased_half_um": half, "step_um": step_um, "per_position": per_position, "mean_over_crb": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=float, nargs="+", default=[0.0, 2.5, 5.0])
    ap.add_argument("--shifts", type=int, default=16, help="ZZB pair offsets h, geometric from 0.1 CRB0 to A")
    ap.add_argument("--step-um", type=float, default=0.25, help="Barankin test-point spacing")
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for b in args.b:
        bench = VirtualBench(BenchConfig(seed=args.seed, medium={"optical_thickness": b}), SimClock())
        s = bench.config.reflection.vibration_rms_um
        crb0 = bench.analytic_crb_um(target_px=CENTRE, binning=BINNING, vibration_um=0.0, **SENSOR)[0]
        crb = bench.analytic_crb_um(target_px=CENTRE, binning=BINNING, **SENSOR)[0]
        row = {"b": b, "crb0_um": crb0, "crb_um": crb, "vibration_um": s}
        row["barankin"] = barankin(bench, crb0, crb, s, args.step_um)
        row["ziv_zakai"] = ziv_zakai(bench, crb0, crb, s, args.shifts)
        rows.append(row)
        zz, br = row["ziv_zakai"], row["barankin"]
        print(
            f"b = {b}: CRB0 {crb0:.4g} um, CRB {crb:.3f} um (s = {s} um); ratios rigid / with the vibration"
        )
        for name in ("oracle", "network"):
            r = zz[name]
            print(
                f"  Ziv-Zakai, prior {name} (A = {r['prior_width_um']:.1f} um):"
                f" {r['zzb0_over_crb0']:.2f} CRB0 / {r['zzb_over_crb']:.2f} CRB"
                f" (d saturates at {zz['d_max']:.3g})"
            )
        for x0, r in br["per_position"].items():
            print(
                f"  Barankin, unbiased over +-{br['unbiased_half_um']:.1f} um, at x = {x0} um:"
                f" {r['barankin0_over_crb0']:.2f} CRB0 / {r['barankin_over_crb']:.2f} CRB"
            )
        print(
            f"  Barankin over the five D columns, with the vibration: {br['mean_over_crb']:.2f} CRB",
            flush=True,
        )
    print(json.dumps({"rows": rows, "time_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
