"""What estimators that know the bench exactly reach against its analytic CRB (seed 000 bench, b > 0).

The analytic CRB at b > 0 is the exact linear Fisher information of the binned pupil speckle
(``devices/bench/fisher_truth.py``): mean image mu(theta) and covariance Sigma of the 4x4 bins. This
script draws bench frames (Poisson photo-electrons, QE 0.6, 4x4 bins) at the S target and at
+-``--slope-mirrors`` DMD mirrors along x and runs estimators built from those exact moments:

* ``at_truth``: theta0 + W (S - mu(theta0)), linearised at the *true* position (rigid bench only): the
  check that the static bound CRB0 is attained where the estimator is told where to look.
* ``linear``: the same estimator linearised at the nominal position, used everywhere.
* ``ml``: Gaussian maximum likelihood, argmin (S - mu(theta))^T Sigma^-1 (S - mu(theta)) over a grid of
  +-``--grid-half-um`` (exact mean image at every grid point, Sigma of the nominal position, parabolic
  refinement between grid points): what a global estimator can do with the whole likelihood.
* ``posterior_mean``: the expectation of the same likelihood over the grid (flat prior), the readout the
  networks use (softmax expectation).

The grid defaults to the networks' training range (+-40 camera px, ``models.data.SHIFT_MAX_PX``): the
prior a network trained on those shifts has learnt, so the fair reference for it. A narrower grid gives
the estimators prior knowledge the network does not have. ``--local-covariance-um CELL`` adds two
posterior means whose covariance follows the candidate position (Sigma(theta) of the nearest cell centre
on a CELL-um lattice; ~0.55 s per cell to set up): ``local_cov`` (the Gaussian likelihood, with log det
Sigma) and ``local_cov_quadratic`` (the quadratic form alone). The network's figure to compare with is
``centre_sigma_over_slope_over_crb`` of ``benchmarks/bench_precision.py`` (its D position on the S target).

For the global estimators the error is sigma / m' (m' = response slope along x between the outer
positions, by default one D step, two mirrors, either side; applied to both axes of the symmetric
target), which is what the lattice bias correction makes of sigma, over the CRB of that bench: CRB0 on
the rigid bench, the total with the vibration otherwise. ``--d-grid`` measures instead at the bsbd D
grid's positions (6 that stand for the 25 by symmetry) and reports what ``bench_precision`` reports for
the network: sigma over one slope m' fitted over the grid, per ring and averaged over the 25 positions.
``--wall-fraction 0`` removes the wall speckle, which stays frozen over a run's minutes and is therefore a
fixed clutter for these frames, not the per-frame noise the moments assume. Prints one JSON line at the
end. usage: python benchmarks/bench_oracle.py [--b 2.5] [--frames 1000] [--wall-fraction 0.2]
[--grid-half-um 16.1] [--local-covariance-um 2] [--d-grid] [--bins-reach 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.protocols.bsbd import BsbdParams, snake_offsets  # noqa: E402
from devices.bench import fisher_truth as ft  # noqa: E402
from devices.bench.bench import VirtualBench  # noqa: E402
from devices.bench.clock import SimClock  # noqa: E402
from devices.bench.config import BenchConfig  # noqa: E402
from devices.bench.sensor import SensorModel  # noqa: E402
from models.data import SHIFT_MAX_PX  # noqa: E402

DMD = (768, 1024)
CENTRE = (511, 383)  # beside the optical axis (511.5, 383.5): bsbd's S target (512, 384) mirrored
SENSOR = {"qe": SensorModel.qe, "read_noise_e": SensorModel.read_noise_e}  # the simulated sCMOS
FRAME_INTERVAL_S = 0.0333  # bsbd: the flowing speckle decorrelates between frames
BINNING = 4
Offset = tuple[int, int]  # (x, y) DMD mirrors off the S target


def square(x: int, y: int) -> np.ndarray:
    """The seed's 5x5-mirror target, read-only as the simulated DMD serves it."""
    pic = np.zeros(DMD, np.uint8)
    pic[y - 2 : y + 3, x - 2 : x + 3] = 255
    pic.setflags(write=False)
    return pic


def draw(bench: VirtualBench, clock: SimClock, shown: dict, offset: Offset, n: int, rng: np.random.Generator):
    """n 4x4-binned frames of photo-electrons with the target ``offset`` (x, y) mirrors off the S target."""
    shown["picture"] = square(CENTRE[0] + offset[0], CENTRE[1] + offset[1])
    exposure = bench.config.reflection.exposure_s
    for _ in range(n):
        photons = bench.expected_photons(clock.now(), exposure)
        yield ft.bin_image(rng.poisson(SENSOR["qe"] * photons).astype(float), BINNING)
        clock.advance(FRAME_INTERVAL_S)


class GridLikelihood:
    """The Gaussian likelihood of a frame's informative bins on a grid of target offsets (um).

    Exact mean image at every grid point. Covariance: that of the nominal position everywhere, and with
    ``cell_um`` also that of the nearest point of a ``cell_um`` lattice (Sigma changes with theta as the
    target light moves; at b = 2.5 log det falls by ~38 from the centre to the networks' +-16 um).
    Bins: the nominal position's informative ones, or with ``reach_bins`` those dilated by that many bins
    every way, which hold the light of targets far off centre (the D grid's outer ring) too.
    """

    def __init__(
        self,
        bench: VirtualBench,
        half_um: float,
        step_um: float,
        cell_um: float | None = None,
        reach_bins: int = 0,
    ) -> None:
        model = bench._reflection()
        um = model.um_per_mirror
        bins = model.informative_bins(CENTRE, BINNING, **SENSOR, reach_bins=(reach_bins, reach_bins))
        nominal = model.speckle_moments(CENTRE, BINNING, **SENSOR, bins=bins)
        self.moments = nominal
        self.rows, self.cols = nominal.bins.T
        self.grid = np.arange(-half_um, half_um + 1e-9, step_um)
        self.step = step_um
        gx, gy = (a.ravel() for a in np.meshgrid(self.grid, self.grid))  # row-major: index = iy * n + ix
        means = np.array(
            [
                model.mean_counts((CENTRE[0] + x / um, CENTRE[1] + y / um), BINNING, SENSOR["qe"])[
                    self.rows, self.cols
                ]
                for x, y in zip(gx, gy, strict=True)
            ]
        )
        self.fixed = [self._group(nominal.covariance, np.arange(gx.size), means)]
        self.local: list[tuple] = []
        if cell_um:
            centres = np.arange(-half_um, half_um + 1e-9, cell_um)
            nearest = [np.abs(g[:, None] - centres[None]).argmin(axis=1) for g in (gx, gy)]
            cell_of = nearest[1] * centres.size + nearest[0]
            for k, (cy, cx) in enumerate((cy, cx) for cy in centres for cx in centres):
                target = (CENTRE[0] + cx / um, CENTRE[1] + cy / um)
                cov = model.speckle_moments(target, BINNING, **SENSOR, bins=nominal.bins).covariance
                members = np.flatnonzero(cell_of == k)
                self.local.append(self._group(cov, members, means[members]))

    @staticmethod
    def _group(covariance: np.ndarray, members: np.ndarray, means: np.ndarray) -> tuple:
        """(Cholesky factor, grid indices, whitened means, their squared norms, log det) of grid points
        sharing one covariance."""
        chol = linalg.cholesky(covariance, lower=True)
        white = linalg.solve_triangular(chol, means.T, lower=True).T
        return chol, members, white, (white**2).sum(axis=1), 2.0 * np.log(np.diag(chol)).sum()

    def _quadratic(self, groups: list[tuple], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S - mu)^T Sigma^-1 (S - mu) and log det Sigma at every grid point, as (n, n) maps.

        |w - z|^2 = |w|^2 - 2 w.z + |z|^2 with the norms |w|^2 precomputed: one matrix-vector product
        per frame instead of a (grid points x bins) difference array.
        """
        n = self.grid.size
        quad, logdet = np.empty(n * n), np.empty(n * n)
        for chol, members, white, norms, ld in groups:
            z = linalg.solve_triangular(chol, counts, lower=True)
            quad[members] = norms - 2.0 * (white @ z) + z @ z
            logdet[members] = ld
        return quad.reshape(n, n), logdet.reshape(n, n)

    def _posterior_mean(self, d: np.ndarray) -> np.ndarray:
        p = np.exp(-0.5 * (d - d.min()))
        p /= p.sum()
        return np.array([p.sum(axis=0) @ self.grid, p.sum(axis=1) @ self.grid])

    def estimate(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """Offsets (x, y) in um of one binned frame, per estimator."""
        counts = frame[self.rows, self.cols]
        d, _ = self._quadratic(self.fixed, counts)  # -2 log L + const
        n = self.grid.size
        i, j = np.unravel_index(np.argmin(d), d.shape)
        ml = np.array([self.grid[j], self.grid[i]])
        for axis, (k, line) in enumerate(((j, d[i, :]), (i, d[:, j]))):
            if 0 < k < n - 1:
                curvature = line[k - 1] - 2 * line[k] + line[k + 1]
                if curvature > 0:
                    ml[axis] += 0.5 * self.step * (line[k - 1] - line[k + 1]) / curvature
        out = {"ml": ml, "posterior_mean": self._posterior_mean(d)}
        if self.local:
            quad, logdet = self._quadratic(self.local, counts)
            out["local_cov"] = self._posterior_mean(quad + logdet)
            out["local_cov_quadratic"] = self._posterior_mean(quad)
        return out


def slope_corrected(
    estimates: dict[Offset, np.ndarray], mirrors: int, um_per_mirror: float, crb: np.ndarray
) -> dict:
    """sigma at the centre, x slope between the outer positions (+-mirrors), sigma / slope / CRB."""
    sigma = estimates[(0, 0)].std(axis=0, ddof=1)
    right, left = (estimates[(sign * mirrors, 0)][:, 0].mean() for sign in (1, -1))
    slope = (right - left) / (2 * mirrors * um_per_mirror)
    return {
        "sigma_um": sigma.tolist(),
        "slope_x": float(slope),
        "sigma_over_slope_um": (sigma / slope).tolist(),
        "sigma_over_crb": (sigma / slope / crb).tolist(),
    }


def d_grid_types(params: BsbdParams) -> dict[Offset, int]:
    """The bsbd D grid up to its symmetry: offsets (x, y) in mirrors with x >= y >= 0, each with the number
    of grid positions it stands for. The target is a square and the medium isotropic, so sign flips and
    x <-> y leave a position's statistics unchanged: 6 positions stand for the seed's 25."""
    types: Counter[Offset] = Counter()
    for dx, dy in snake_offsets(params.grid_size, params.grid_step_px):
        far, near = sorted((abs(round(dx)), abs(round(dy))), reverse=True)
        types[(far, near)] += 1
    return dict(sorted(types.items()))


def d_grid_summary(
    estimates: dict[Offset, np.ndarray], types: dict[Offset, int], um_per_mirror: float, crb: np.ndarray
) -> dict:
    """sigma / m' / CRB per ring (Chebyshev distance in mirrors) and over the whole D grid, as
    ``bench_precision`` reports the network: one response slope m' fitted over the grid
    (``models.evaluate.response_slope``) and sigma averaged over the positions. The grid's mirror images
    make the fit with an intercept the same as this one through the origin; both axes are pooled."""
    tt = tm = 0.0
    for (far, near), count in types.items():
        mean = estimates[(far, near)].mean(axis=0)
        tt += count * (far**2 + near**2) * um_per_mirror**2
        tm += count * (far * mean[0] + near * mean[1]) * um_per_mirror
    slope = tm / tt
    offsets = list(types)
    weights = np.array([types[o] for o in offsets], float)
    sigma = np.array([estimates[o].std(axis=0, ddof=1).mean() for o in offsets])
    ring = np.array([o[0] for o in offsets])
    return {
        "slope": float(slope),
        "sigma_um": {str(o): float(s) for o, s in zip(offsets, sigma, strict=True)},
        "ring_sigma_over_crb": {
            str(r): float(np.average(sigma[ring == r], weights=weights[ring == r]) / slope / crb[0])
            for r in np.unique(ring)
        },
        "grid_sigma_over_crb": float(np.average(sigma, weights=weights) / slope / crb[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=float, default=2.5)
    ap.add_argument("--frames", type=int, default=1000, help="per position")
    ap.add_argument("--slope-mirrors", type=int, default=2, help="outer positions: mirrors off centre")
    ap.add_argument("--grid-half-um", type=float, default=None, help="default: the networks' +-40 px")
    ap.add_argument("--grid-step-um", type=float, default=0.4)
    ap.add_argument("--local-covariance-um", type=float, default=None, help="cell of Sigma(theta)")
    ap.add_argument("--bins-reach", type=int, default=0, help="dilate the informative bins by this many")
    ap.add_argument("--wall-fraction", type=float, default=None, help="default: the bench's")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--d-grid", action="store_true", help="at the bsbd D grid's positions, as the network")
    args = ap.parse_args()
    out: dict = {"b": args.b, "frames": args.frames}
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    medium: dict = {"optical_thickness": args.b}
    if args.wall_fraction is not None:
        medium["wall_fraction"] = args.wall_fraction
    types = d_grid_types(BsbdParams())
    offsets = list(types) if args.d_grid else [(dx * args.slope_mirrors, 0) for dx in (-1, 0, 1)]

    for name, reflection in (("rigid", {"vibration_rms_um": 0.0}), ("vibrating", {})):
        cfg = BenchConfig(seed=args.seed, medium=medium, reflection=reflection)
        clock, shown = SimClock(), {"picture": square(*CENTRE)}
        bench = VirtualBench(cfg, clock, pattern_source=lambda t, shown=shown: shown["picture"])
        crb = np.array(bench.analytic_crb_um(target_px=CENTRE, binning=BINNING, **SENSOR))
        model = bench._reflection()
        half_um = args.grid_half_um or SHIFT_MAX_PX * model.um_per_px
        likelihood = GridLikelihood(
            bench, half_um, args.grid_step_um, args.local_covariance_um, args.bins_reach
        )
        weights, nominal = likelihood.moments.estimator_weights(), likelihood.moments.mean
        rows, cols = likelihood.rows, likelihood.cols
        estimates: dict[str, dict[Offset, np.ndarray]] = {}
        result: dict = {
            "crb_um": crb.tolist(),
            "vibration_rms_um": cfg.reflection.vibration_rms_um,
            "grid_half_um": half_um,
        }
        for offset in offsets:
            frames = list(draw(bench, clock, shown, offset, args.frames, rng))
            estimates.setdefault("linear", {})[offset] = np.array(
                [weights @ (f[rows, cols] - nominal) for f in frames]
            )
            per_frame = [likelihood.estimate(f) for f in frames]
            for key in per_frame[0]:
                estimates.setdefault(key, {})[offset] = np.array([e[key] for e in per_frame])
            if offset == (0, 0) and name == "rigid":  # the linear estimator is at the truth only here
                sigma = estimates["linear"][offset].std(axis=0, ddof=1)
                result["at_truth"] = {"sigma_um": sigma.tolist(), "sigma_over_crb": (sigma / crb).tolist()}
        for key, est in estimates.items():
            result[key] = (
                d_grid_summary(est, types, model.um_per_mirror, crb)
                if args.d_grid
                else slope_corrected(est, args.slope_mirrors, model.um_per_mirror, crb)
            )
        out[name] = result
    out["time_s"] = round(time.perf_counter() - t0, 1)
    print(
        f"b = {args.b}, wall fraction {cfg.medium.wall_fraction}, grid +-{half_um:.1f} um: "
        "sigma / m' / CRB (x, y), slope m'"
    )
    for name in ("rigid", "vibrating"):
        res = out[name]
        print(f"  {name}: CRB {res['crb_um'][0]:.3f} um")
        if "at_truth" in res:
            rx, ry = res["at_truth"]["sigma_over_crb"]
            print(f"    linear at the truth: {rx:.3f}, {ry:.3f}")
        for key, val in res.items():
            if isinstance(val, dict) and "slope_x" in val:
                rx, ry = val["sigma_over_crb"]
                print(f"    {key}: {rx:.2f}, {ry:.2f}  (m' {val['slope_x']:.2f})")
            elif isinstance(val, dict) and "grid_sigma_over_crb" in val:
                rings = ", ".join(f"{v:.2f}" for v in val["ring_sigma_over_crb"].values())
                grid = val["grid_sigma_over_crb"]
                print(f"    {key}: grid {grid:.2f}; by ring {rings}  (m' {val['slope']:.2f})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
