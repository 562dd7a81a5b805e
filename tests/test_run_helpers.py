"""A run recorded on the simulated bench as ``specklab acquire`` records it (no tests here)."""

from __future__ import annotations

from pathlib import Path

from acquisition.config import SpecklabConfig
from acquisition.events import Plan
from acquisition.runner import record
from acquisition.wiring import prepare_run
from devices.factory import open_bench


def record_simulated(cfg: SpecklabConfig, out: Path) -> Plan:
    """Record ``cfg``'s run into ``out`` (asserting it completes); returns the plan that was run."""
    with open_bench(cfg) as bench:
        prepared = prepare_run(cfg, bench)
        result = record(prepared.plan, prepared.engine, prepared.info, out)
    assert result.status == "complete", result.error
    return prepared.plan
