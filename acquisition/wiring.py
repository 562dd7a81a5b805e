"""How a validated config and an open bench become an engine and the run's stored description.

One function for every front end (``specklab acquire``, the control panel, scripts), so a run
file records the same fields whoever started it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acquisition.config import SpecklabConfig
from acquisition.engine import BenchEngine, PumpSettings, planned_samples
from acquisition.events import Plan
from acquisition.hdf5_writer import to_json
from acquisition.sinks import RunInfo
from devices.factory import Bench


@dataclass
class PreparedRun:
    """What :func:`acquisition.runner.record` needs to run ``plan`` on an open bench."""

    plan: Plan
    engine: BenchEngine
    info: RunInfo


def default_output(cfg: SpecklabConfig, protocol: str) -> Path:
    """``<run.output_dir>/<protocol>-<local time>.h5``: sortable, never collides within a second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(cfg.run.output_dir) / f"{protocol}-{stamp}.h5"


def prepare_run(
    cfg: SpecklabConfig,
    bench: Bench,
    *,
    plan: Plan | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    block_size: int = 100,
    verify_patterns: bool = True,
    started_from: str = "cli",
) -> PreparedRun:
    """Engine on ``bench``'s devices and the RunInfo (configs, identities, ground truth) for the writer."""
    plan = plan if plan is not None else cfg.plan()
    params = cfg.protocol_params()
    pump_cfg = cfg.devices.pump
    engine = BenchEngine(
        bench.dmd,
        bench.camera,
        bench.pump,
        PumpSettings(pump_cfg.rate_ml_per_h, pump_cfg.diameter_mm, pump_cfg.direction),
        block_size=block_size,
        verify_patterns=verify_patterns,
        sample_holder=getattr(bench, "sample_holder", None),
    )
    ground_truth: dict[str, Any] = {"plan": dict(plan.ground_truth)}
    bench_truth = bench.ground_truth()
    samples = sorted(planned_samples(plan))
    per_sample = (
        bench.sample_ground_truth(samples) if samples and hasattr(bench, "sample_ground_truth") else {}
    )
    if per_sample:  # the truth of every sample the run images: ground_truth/bench/samples/<name>/rho
        bench_truth = {**bench_truth, "samples": per_sample}
    if bench_truth:
        ground_truth["bench"] = bench_truth
    info = RunInfo(
        protocol=plan.protocol,
        events=plan.events,
        frame_shape=bench.frame_shape(),
        protocol_config=dict(plan.config),
        bench_config=json.loads(to_json(cfg.bench_config())),
        config_text=Path(config_path).read_text(encoding="utf-8") if config_path else "",
        devices=bench.identities(),
        ground_truth=ground_truth,
        um_per_px=float(getattr(params, "um_per_px", math.nan)),
        simulated=bench.simulated,
        patterns=plan.patterns,
        extra={
            "config_source": str(config_path or "<defaults>"),
            "config_overrides": json.dumps(overrides or []),
            "full_config": to_json(cfg.to_dict()),
            "device_kinds": json.dumps(bench.kinds),
            "started_from": started_from,
        },
    )
    return PreparedRun(plan, engine, info)
