"""Config → plan → engine + RunInfo for a run started from the GUI (Qt-free adapter).

Why this module exists: ``specklab acquire`` (``acquisition/cli.py::cmd_acquire``) builds the
engine and the :class:`~acquisition.sinks.RunInfo` inline, with no reusable function. Until the
CLI exposes one (requested from the acquisition owner: ``prepare_run(cfg, bench, config_path,
overrides) -> (plan, engine, info, writer_options)``), this adapter reproduces exactly the same
wiring, field for field, so a GUI run file is indistinguishable from a CLI one. Replace the body
of :func:`prepare_run` by that call when it lands.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acquisition.config import SpecklabConfig, validate_config
from acquisition.engine import BenchEngine, PumpSettings
from acquisition.events import Plan
from acquisition.hdf5_writer import WriterOptions, to_json
from acquisition.protocols import canonical_name
from acquisition.sinks import RunInfo
from devices.factory import Bench


@dataclass
class PreparedRun:
    """Everything :func:`acquisition.runner.record` needs, plus the config that produced it."""

    config: SpecklabConfig
    plan: Plan
    engine: BenchEngine
    info: RunInfo
    out: Path
    writer_options: WriterOptions


def config_with_protocol(cfg: SpecklabConfig, protocol: str, params: dict[str, Any]) -> SpecklabConfig:
    """``cfg`` with ``run.protocol`` and that protocol's parameters replaced, fully re-validated.

    Re-validating the whole config (not just the parameter model) also expands the plan, so a
    target that does not fit the configured DMD is refused before any device moves; the message
    is the config loader's (``ConfigError``).
    """
    name = canonical_name(protocol)
    data = cfg.to_dict()
    data["run"]["protocol"] = name
    data.setdefault("protocols", {})[name] = dict(params)
    return validate_config(data, source="control panel")


def default_output(cfg: SpecklabConfig, protocol: str) -> Path:
    """``<run.output_dir>/<protocol>-<time>.h5``, as ``specklab acquire`` names runs."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(cfg.run.output_dir) / f"{canonical_name(protocol)}-{stamp}.h5"


def prepare_run(
    cfg: SpecklabConfig,
    bench: Bench,
    out: str | Path,
    *,
    config_path: str | Path | None = None,
    block_size: int = 100,
    flush_every_frames: int = 100,
) -> PreparedRun:
    """Engine, RunInfo and writer options as ``cmd_acquire`` builds them (see the module docstring)."""
    plan = cfg.plan()
    params = cfg.protocol_params()
    pump_cfg = cfg.devices.pump
    engine = BenchEngine(
        bench.dmd,
        bench.camera,
        bench.pump,
        PumpSettings(pump_cfg.rate_ml_per_h, pump_cfg.diameter_mm, pump_cfg.direction),
        block_size=block_size,
    )
    ground_truth: dict[str, Any] = {"plan": dict(plan.ground_truth)}
    bench_truth = bench.ground_truth()
    if bench_truth:
        ground_truth["bench"] = bench_truth
    config_text = Path(config_path).read_text(encoding="utf-8") if config_path else ""
    info = RunInfo(
        protocol=plan.protocol,
        events=plan.events,
        frame_shape=bench.frame_shape(),
        protocol_config=dict(plan.config),
        bench_config=json.loads(to_json(cfg.bench_config())),
        config_text=config_text,
        devices=bench.identities(),
        ground_truth=ground_truth,
        um_per_px=float(getattr(params, "um_per_px", math.nan)),
        simulated=bench.simulated,
        extra={
            "config_source": str(config_path or "<defaults>"),
            "config_overrides": json.dumps(["edited in the control panel"]),
            "full_config": to_json(cfg.to_dict()),
            "device_kinds": json.dumps(bench.kinds),
            "started_from": "gui",
        },
    )
    options = WriterOptions(flush_every_frames=flush_every_frames, flush_every_s=cfg.run.flush_interval_s)
    return PreparedRun(cfg, plan, engine, info, Path(out), options)
