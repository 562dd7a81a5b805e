"""Ziv-Zakai bound of the seed-000 bench against its analytic CRB: what the threshold regime costs.

The analytic CRB (``VirtualBench.analytic_crb_um``) is local: it assumes errors small against the image.
One frame at b >= 2.5 is not there (docs/precision.md, bench_oracle.py), so this script follows the CRB's
own Gaussian frame model (exact mean image, exact binned covariance) to pairs of target positions h apart
(``VirtualBench.pair_distances``) and integrates the Ziv-Zakai bound (``analysis.ziv_zakai``) over a
uniform prior of width A along x:

* A = 2 x 7 um: the oracles' grid in bench_oracle.py;
* A = 2 x 40 camera px: the networks' training shifts (models/data.py), i.e. the range they search.

With the vibration (s per axis, a fresh displacement per frame) the bound on the nominal position is
sqrt(ZZB0^2 + s^2): the frame informs only on the displaced target, and for a prior much wider than s the
displacement's variance adds (as it does to the CRB). One frame per position, static optics otherwise; 4x4
binning, QE 0.6, 1.38 e- read noise (the simulated sCMOS). Prints a table and one JSON line.
usage: python benchmarks/bench_zzb.py [--b 0 2.5 5] [--shifts 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.ziv_zakai import gaussian_zzb  # noqa: E402
from devices.bench.bench import VirtualBench  # noqa: E402
from devices.bench.clock import SimClock  # noqa: E402
from devices.bench.config import BenchConfig  # noqa: E402
from models.data import SHIFT_MAX_PX  # noqa: E402

CENTRE = (511.0, 383.0)  # DMD mirror (x, y) imaged on the camera centre
SENSOR = {"qe": 0.6, "read_noise_e": 1.38}
BINNING = 4
ORACLE_HALF_UM = 7.0  # bench_oracle.py --grid-half-um


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=float, nargs="+", default=[0.0, 2.5, 5.0])
    ap.add_argument("--shifts", type=int, default=16, help="pair offsets h, geometric from 0.1 CRB0 to A")
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for b in args.b:
        bench = VirtualBench(BenchConfig(seed=args.seed, medium={"optical_thickness": b}), SimClock())
        um_per_px = bench._reflection().um_per_px
        priors = {"oracle": 2 * ORACLE_HALF_UM, "network": 2 * SHIFT_MAX_PX * um_per_px}
        s = bench.config.reflection.vibration_rms_um
        crb0 = bench.analytic_crb_um(target_px=CENTRE, binning=BINNING, vibration_um=0.0, **SENSOR)[0]
        crb = bench.analytic_crb_um(target_px=CENTRE, binning=BINNING, **SENSOR)[0]
        shifts = np.geomspace(0.1 * crb0, max(priors.values()), args.shifts)
        distances = bench.pair_distances(shifts, 0, CENTRE, BINNING, **SENSOR)
        row: dict = {"b": b, "crb0_um": crb0, "crb_um": crb, "vibration_um": s, "d_max": float(distances[-1])}
        for name, width in priors.items():
            zzb0 = gaussian_zzb(shifts, distances, width)
            row[name] = {
                "prior_width_um": width,
                "zzb0_um": zzb0,
                "zzb0_over_crb0": zzb0 / crb0,
                "zzb_um": float(np.hypot(zzb0, s)),
                "zzb_over_crb": float(np.hypot(zzb0, s) / crb),
            }
        rows.append(row)
        print(
            f"b = {b}: CRB0 {crb0:.4g} um, CRB {crb:.3f} um (s = {s} um), d saturates at {distances[-1]:.2f}"
        )
        for name in priors:
            r = row[name]
            print(
                f"  prior {name} (A = {r['prior_width_um']:.1f} um): ZZB0 {r['zzb0_um']:.3f} um"
                f" = {r['zzb0_over_crb0']:.2f} CRB0; with the vibration {r['zzb_um']:.3f} um"
                f" = {r['zzb_over_crb']:.2f} CRB",
                flush=True,
            )
    print(json.dumps({"rows": rows, "time_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
