"""Speckle-SIM (seed 001): one sample per block of N masks, mounted by the engine, validated at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_engine_helpers import FakeCamera, FakeDmd, FakePump, SquareBank, run_info

from acquisition.config import ConfigError, load_config
from acquisition.engine import BenchEngine, PumpSettings
from acquisition.events import Event, Plan
from acquisition.protocols.speckle_sim import SpeckleSimParams
from acquisition.reader import RunReader
from acquisition.runner import record
from acquisition.wiring import prepare_run
from devices.base import SampleError, SampleHolder
from devices.bench.clock import SimClock
from devices.bench.samples import SAMPLE_NAMES
from devices.factory import open_bench
from devices.sample_holder import ManualSampleHolder, SimulatedSampleHolder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPECKLE = [
    'bench.configuration="speckle_sim"',
    "run.protocol=speckle-sim",
    "protocols.speckle-sim.exposure_s=0.01",
    "protocols.speckle-sim.interval_s=0.02",
]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_two_samples_each_block_images_its_own_sample(tmp_path: Path) -> None:
    n = 16
    cfg = load_config(
        None,
        [
            *SPECKLE,
            "protocols.speckle-sim.samples=['cells', 'siemens_star']",
            f"protocols.speckle-sim.n_masks={n}",
        ],
    )
    out = tmp_path / "ss.h5"
    with open_bench(cfg) as bench:
        assert isinstance(bench.sample_holder, SimulatedSampleHolder)
        assert isinstance(bench.sample_holder, SampleHolder)
        assert bench.sample_holder.mounted == "siemens_star"  # the bench config's sample before the run
        prepared = prepare_run(cfg, bench, block_size=6)
        result = record(prepared.plan, prepared.engine, prepared.info, out)
        assert result.status == "complete", result.error
        assert prepared.engine.mounts == ["cells", "siemens_star"]  # first block's sample, then the next
        assert bench.virtual.sample == "siemens_star"
        # blocks never span two samples: 16 masks in blocks of 6 -> 3 uploads per sample
        assert prepared.engine.uploads == 6
    with RunReader(out) as r:
        samples = r.table["sample"]
        assert list(samples) == ["cells"] * n + ["siemens_star"] * n
        gt = r.ground_truth["bench"]["samples"]
        assert sorted(gt) == ["cells", "siemens_star"]
        for name in gt:
            assert gt[name]["rho"].shape == (128, 128) and gt[name]["rho_blurred"].shape == (128, 128)
        assert not np.allclose(gt["cells"]["rho"], gt["siemens_star"]["rho"])
        frames = r.frames[:].astype(float)
        for own, other in (("cells", "siemens_star"), ("siemens_star", "cells")):
            mean = frames[samples == own].mean(axis=0)
            c_own = _corr(mean, gt[own]["rho_blurred"])
            c_other = _corr(mean, gt[other]["rho_blurred"])
            assert c_own > 0.2 and c_own > c_other + 0.2, (own, c_own, c_other)


def test_sample_truth_matches_what_the_bench_images(tmp_path: Path) -> None:
    """The stored per-sample rho is the one the bench switches to (same seed, any mount order)."""
    cfg = load_config(None, [*SPECKLE, "protocols.speckle-sim.samples=['moon', 'cells']"])
    with open_bench(cfg) as bench:
        truth = bench.sample_ground_truth(["cells", "moon"])
        bench.sample_holder.mount("cells")
        np.testing.assert_array_equal(bench.virtual.ground_truth()["rho"], truth["cells"]["rho"])
        bench.sample_holder.mount("moon")
        gt = bench.virtual.ground_truth()
        assert str(gt["sample"]) == "moon"
        np.testing.assert_array_equal(gt["rho_blurred"], truth["moon"]["rho_blurred"])
        with pytest.raises(SampleError, match="'beads'"):
            bench.sample_holder.mount("beads")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["protocols.speckle-sim.samples=['cells', 'beads']"], "'beads'"),
        (["protocols.speckle-sim.samples=['neurons', 'beads']"], "'neurons', 'beads'"),
    ],
)
def test_unknown_sample_refused_at_config_load(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [*SPECKLE, *overrides])
    msg = str(err.value)
    assert "protocols.speckle-sim.samples" in msg and named in msg and "simulated bench" in msg
    assert "siemens_star" in msg  # says what the bench has
    assert "[from --set protocols.speckle-sim.samples=" in msg


def test_unknown_sample_in_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[run]\nprotocol = "speckle_sim"\n[protocols.speckle_sim]\nsamples = ["beads"]\n')
    with pytest.raises(ConfigError, match=r"c\.toml.*\n.*'beads' cannot be mounted"):
        load_config(p)


def test_defaults_and_shipped_configs_name_real_samples() -> None:
    assert set(SpeckleSimParams().samples) <= SAMPLE_NAMES
    cfg = load_config(CONFIGS / "sim-bench.toml", ["run.protocol=speckle-sim"])
    assert set(cfg.protocol_params().samples) <= SAMPLE_NAMES
    # a real bench mounts whatever the operator has: any name passes, the operator is asked
    real = load_config(CONFIGS / "real-bench.example.toml", ["run.protocol=speckle-sim"])
    assert real.protocol_params().samples == ["retina-neurons"]
    load_config(
        CONFIGS / "real-bench.example.toml",
        ["run.protocol=speckle-sim", "protocols.speckle-sim.samples=['beads']"],
    )


def _sample_plan(samples: list[str], n: int) -> Plan:
    bank = SquareBank(1 + len(samples) * n)
    events = [
        Event(i, "M", 1 + i, 1e-3, 0.01, sample=samples[i // n], extra={"sample_index": i // n})
        for i in range(len(samples) * n)
    ]
    return Plan(
        "speckle-sim", events, bank, {"samples": samples, "n_masks": n}, {"samples": np.asarray(samples)}
    )


def _engine(holder: ManualSampleHolder, block_size: int = 4):
    clock = SimClock()
    dmd = FakeDmd(clock)
    cam = FakeCamera(clock, dmd)
    pump = FakePump()
    engine = BenchEngine(dmd, cam, pump, PumpSettings(7.0), block_size=block_size, sample_holder=holder)
    return engine, dmd, cam, pump


def test_manual_holder_asks_the_operator_before_each_sample(tmp_path: Path) -> None:
    asked: list[tuple[str, str | None, int, bool]] = []
    plan = _sample_plan(["a", "b", "c"], 5)

    def confirm(name: str, previous: str | None) -> bool:
        asked.append((name, previous, cam.counter, pump.running))
        return True

    engine, dmd, cam, pump = _engine(ManualSampleHolder(confirm))
    result = record(plan, engine, run_info(plan, engine.identities()), tmp_path / "m.h5")
    assert result.status == "complete", result.error
    # asked once per sample, before any of its frames; the first one before the pump runs
    assert asked == [("a", None, 0, False), ("b", "a", 5, True), ("c", "b", 10, True)]
    assert dmd.uploads == 6  # 5 masks in blocks of 4: 2 blocks per sample, none spanning two samples


def test_headless_manual_holder_fails_before_anything_moves(tmp_path: Path) -> None:
    plan = _sample_plan(["slide-1", "slide-2"], 3)
    engine, dmd, cam, pump = _engine(ManualSampleHolder())
    out = tmp_path / "h.h5"
    result = record(plan, engine, run_info(plan, engine.identities()), out)
    assert result.status == "failed"
    assert "'slide-1'" in result.error and "confirm" in result.error
    assert "run" not in pump.calls and dmd.uploads == 0 and cam.sequences == 0
    with RunReader(out) as r:
        assert r.status == "failed" and r.n_frames == 0


def test_operator_cancel_stops_the_run(tmp_path: Path) -> None:
    plan = _sample_plan(["a", "b"], 3)
    engine, dmd, cam, pump = _engine(ManualSampleHolder(lambda name, prev: name != "b"))
    result = record(plan, engine, run_info(plan, engine.identities()), tmp_path / "c.h5")
    assert result.status == "aborted" and "did not confirm" in result.error and "'b'" in result.error
    assert result.frames == 3 and not pump.running


def test_plans_without_samples_never_mount(tmp_path: Path) -> None:
    """Event.sample of other protocols is a label (generalisation: the target set), not a sample."""
    bank = SquareBank(8)
    events = [Event(i, "T", 1 + i, 1e-3, 0.01, sample=["train", "test"][i // 4]) for i in range(8)]
    plan = Plan("generalisation", events, bank, {"n_train": 4}, {})
    engine, dmd, cam, pump = _engine(ManualSampleHolder())  # would refuse any mount (headless)
    result = record(plan, engine, run_info(plan, engine.identities()), tmp_path / "g.h5")
    assert result.status == "complete", result.error
    assert engine.mounts == [] and dmd.uploads == 2
