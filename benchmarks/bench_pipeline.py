"""End-to-end frames/s of a simulated acquisition, against the frame generation alone (not a test).

    python benchmarks/bench_pipeline.py [--config configs/sim-bench.toml] [--protocol bsbd]
                                        [--frames 20000] [--set key=value ...] [--dir /tmp]

Two measurements in the same process, on the same simulated bench (the config's devices,
by default every device simulated, 128x128 reflection bench):

* ``generation``: the engine starts the plan's first block (DMD projecting, camera sequence),
  then ``camera.read_frame()`` is called in a loop: DMD picture at the exposure + bench physics
  + camera ROI/binning + sensor noise, i.e. what one simulated frame costs;
* ``pipeline``: ``specklab acquire`` without the CLI: runner + BenchEngine (pattern
  verification on) + dispatcher + HDF5 writer into a file under ``--dir``.

Printed: frames/s, the ratio to the bench's real 30 frames/s, the pipeline's cost on top of
the generation (ms per frame) and frames dropped (goal: 0). Goal: pipeline >= 1000 frames/s
for 128x128 bsbd.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.cli import int_at_least  # noqa: E402
from acquisition.config import load_config  # noqa: E402
from acquisition.hdf5_writer import WriterOptions  # noqa: E402
from acquisition.runner import record  # noqa: E402
from acquisition.wiring import prepare_run  # noqa: E402
from devices.factory import open_bench  # noqa: E402

REAL_FPS = 1.0 / 0.0333  # seed 000: 33.3 ms between frames


def generation_fps(cfg, n_frames: int) -> float:  # noqa: ANN001 - SpecklabConfig
    """Frames/s of the simulated devices alone (first block of the plan, no engine per frame, no sink)."""
    plan = cfg.plan()
    with open_bench(cfg) as bench:
        engine = prepare_run(cfg, bench, plan=plan).engine
        engine.setup(plan)
        try:
            stop = engine.start_block(plan, 0)
            n = min(n_frames, stop)
            bench.camera.read_frame()  # warm-up: the first picture's optics
            t0 = time.perf_counter()
            for _ in range(n - 1):
                bench.camera.read_frame()
            elapsed = time.perf_counter() - t0
            engine.end_block()
        finally:
            engine.teardown()
    return (n - 1) / elapsed


def pipeline_fps(cfg, out: Path) -> tuple[float, int, dict[str, int], str]:  # noqa: ANN001
    plan = cfg.plan()
    with open_bench(cfg) as bench:
        prepared = prepare_run(cfg, bench, plan=plan)
        result = record(
            prepared.plan,
            prepared.engine,
            prepared.info,
            out,
            writer_options=WriterOptions(flush_every_s=cfg.run.flush_interval_s),
        )
    return result.frames / result.elapsed_s, result.frames, result.dropped(), result.status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_config = Path(__file__).resolve().parents[1] / "configs" / "sim-bench.toml"
    ap.add_argument("--config", default=str(default_config))
    ap.add_argument("--protocol", default="bsbd")
    ap.add_argument("--frames", type=int_at_least(2), default=20000)  # timed after a warm-up frame
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--dir", default=None, help="folder for the run file (default: a temporary folder)")
    args = ap.parse_args()
    overrides = [f"run.protocol={args.protocol}", f"frames={args.frames}", *args.set]
    cfg = load_config(args.config, overrides)

    gen = generation_fps(cfg, args.frames)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out = Path(tmp) / "bench_pipeline.h5"
        fps, frames, dropped, status = pipeline_fps(cfg, out)
        size_mb = os.path.getsize(out) / 1e6
    print(
        f"generation  frames/s={gen:.0f} realtime_ratio={gen / REAL_FPS:.1f}  (DMD + bench + camera + sensor)"
    )
    print(
        f"pipeline    frames/s={fps:.0f} realtime_ratio={fps / REAL_FPS:.1f}  "
        f"({frames} frames, {status}, {size_mb:.0f} MB, dropped={dropped})"
    )
    print(
        f"pipeline cost on top of the generation: {1e3 / fps - 1e3 / gen:.3f} ms/frame; "
        f"pipeline/generation = {fps / gen:.2f}"
    )
    print("(goal: pipeline >= 1000 frames/s for 128x128 bsbd, dropped = 0)")


if __name__ == "__main__":
    main()
