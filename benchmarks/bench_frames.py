"""Simulated frames per second of the virtual bench, configuration 1 (seed 000), on one core.

Usage: ``python benchmarks/bench_frames.py [--frames N] [--b 4.2] [--binning 1] [--vibration UM]``

Each frame = the bench's expected photon image at 128x128 (flowing medium, a target
pattern that cycles through the seed's 25 D positions plus B frames, as in a B,S,B,D run,
served as read-only pictures like the simulated DMD's) and, in the ``camera`` rows, what a
simulated frame really costs: ``SimulatedCamera.read_frame`` = bench + ROI/binning +
``SensorModel.expose`` (shot noise exact Poisson below ``normal_above_e`` electrons, normal
above; read noise, gain, 16-bit ADC). ``camera-exact`` forces exact Poisson on every pixel
(``normal_above_e = inf``) for comparison. Printed as frames/s and the ratio to the bench's
real 30 frames/s. ``--vibration`` sets ``reflection.vibration_rms_um`` (default: the config's 2 um;
0 = rigid bench, the cost without the per-frame target displacement).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy/scipy load their thread pools

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from devices.bench.bench import VirtualBench  # noqa: E402
from devices.bench.clock import SimClock  # noqa: E402
from devices.bench.config import BenchConfig  # noqa: E402
from devices.bench.sensor import SensorModel  # noqa: E402
from devices.camera_sim import SimulatedCamera  # noqa: E402

REAL_FPS = 1.0 / 0.0333  # seed 000: 33.3 ms between frames


def _patterns() -> list[np.ndarray | None]:
    """B, S, B, D: background (None), centre target, background, the 25 grid positions in raster order."""
    pats: list[np.ndarray | None] = []
    for i in range(25):
        gy, gx = divmod(i, 5)
        for x, y in ((511, 383), (507 + 2 * gx, 379 + 2 * gy)):
            pic = np.zeros((768, 1024), np.uint8)
            pic[y - 2 : y + 3, x - 2 : x + 3] = 255
            pic.flags.writeable = False  # as SimulatedDmd.displayed_pattern serves them
            pats += [None, pic]
    return pats


def run(n_frames: int, b: float, mode: str, binning: int = 1, vibration_um: float | None = None) -> float:
    """frames/s of ``mode``: 'physics' (bench alone), 'camera' or 'camera-exact' (bench + camera)."""
    pats = _patterns()
    clock = SimClock()
    refl = {} if vibration_um is None else {"vibration_rms_um": vibration_um}
    bench = VirtualBench(
        BenchConfig(medium={"optical_thickness": b}, reflection=refl),
        clock,
        pattern_source=lambda t: pats[int(round(t / 0.0333)) % len(pats)],
        flow_source=lambda: 7.0,
    )
    sensor = SensorModel(normal_above_e=math.inf) if mode == "camera-exact" else SensorModel()
    camera = SimulatedCamera(bench, clock, sensor=sensor, seed=0, exposure_s=200e-6)
    camera.set_binning(binning)
    camera.start_sequence(len(pats) + n_frames, 0.0333)
    for _ in range(len(pats)):  # warm the per-pattern cache (the 51 distinct pictures)
        camera.read_frame()
    t0 = time.perf_counter()
    if mode == "physics":
        for i in range(n_frames):
            bench.expected_photons((len(pats) + i) * 0.0333, 200e-6)
    else:
        for _ in range(n_frames):
            camera.read_frame()
    return n_frames / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--b", type=float, default=4.2, help="optical thickness (seed 000 Fig. 3: 4.2)")
    ap.add_argument("--binning", type=int, default=1, help="camera binning (camera rows)")
    ap.add_argument("--vibration", type=float, default=None, help="vibration RMS in um (default: config's)")
    args = ap.parse_args()
    for mode in ("physics", "camera", "camera-exact"):
        fps = run(args.frames, args.b, mode, args.binning, args.vibration)
        print(f"{mode:13s} frames/s={fps:.0f} realtime_ratio={fps / REAL_FPS:.1f}")
    print("(goal: realtime_ratio >= 100 for 'camera', i.e. >= 3000 frames/s at 128x128)")


if __name__ == "__main__":
    main()
