"""Config → plan → engine + RunInfo for a run started from the GUI (Qt-free).

The wiring itself is :func:`acquisition.wiring.prepare_run`, shared with ``specklab acquire``, so a
GUI run file is indistinguishable from a CLI one; this module adds what only the panel needs: a
protocol edited in its form, and the writer options it owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acquisition.config import SpecklabConfig, validate_config
from acquisition.engine import BenchEngine
from acquisition.events import Plan
from acquisition.hdf5_writer import WriterOptions
from acquisition.protocols import canonical_name
from acquisition.sinks import RunInfo
from acquisition.wiring import prepare_run as acquisition_prepare_run
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


def prepare_run(
    cfg: SpecklabConfig,
    bench: Bench,
    out: str | Path,
    *,
    config_path: str | Path | None = None,
    block_size: int = 100,
    flush_every_frames: int = 100,
) -> PreparedRun:
    """The CLI's own wiring (:func:`acquisition.wiring.prepare_run`), tagged as started from the GUI."""
    prepared = acquisition_prepare_run(
        cfg,
        bench,
        config_path=config_path,
        overrides=["edited in the control panel"],
        block_size=block_size,
        started_from="gui",
    )
    options = WriterOptions(flush_every_frames=flush_every_frames, flush_every_s=cfg.run.flush_interval_s)
    return PreparedRun(cfg, prepared.plan, prepared.engine, prepared.info, Path(out), options)
