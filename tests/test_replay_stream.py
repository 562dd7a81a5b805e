"""Replay streams a stored run through the same dispatcher/sinks, with identical frames and metadata."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from test_engine_helpers import FakeCamera, FakeDmd, bsbd_plan, run_info

from acquisition.engine import BenchEngine
from acquisition.hdf5_writer import Hdf5RunWriter
from acquisition.reader import RunReader
from acquisition.replay import ReplaySource
from acquisition.runner import record
from acquisition.sinks import Dispatcher, RunInfo
from devices.bench.clock import SimClock


class Collect:
    """A sink that keeps everything it is given."""

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.items: list = []
        self.status: str | None = None

    def setup(self, info: RunInfo) -> None:
        self.info = info

    def frame(self, frame, event) -> None:
        self.items.append((frame, event))

    def finish(self, status, error=None) -> None:
        self.status = status


def same_event(a, b) -> bool:
    """Event equality where NaN equals NaN (B frames have no target)."""
    da, db = a.to_dict(), b.to_dict()
    return da.keys() == db.keys() and all(
        (isinstance(v, float) and math.isnan(v) and math.isnan(db[k])) or v == db[k] for k, v in da.items()
    )


@pytest.fixture
def recorded(tmp_path):
    plan = bsbd_plan(n_frames=40, interval_s=0.005)
    clock = SimClock()
    dmd = FakeDmd(clock)
    engine = BenchEngine(dmd, FakeCamera(clock, dmd))
    out = tmp_path / "run.h5"
    assert record(plan, engine, run_info(plan), out).status == "complete"
    return plan, out


def test_replay_yields_identical_frames_and_metadata(recorded, tmp_path):
    plan, path = recorded
    sink = Collect()
    d = Dispatcher(observer_queue=1000)  # large enough: this observer must see everything
    d.add(sink, critical=False)
    result = ReplaySource(path).run(d)
    assert result.status == "complete" and result.frames == 40
    assert sink.status == "complete"
    assert sink.info is not None and sink.info.protocol == "bsbd" and sink.info.frame_shape == (12, 16)
    np.testing.assert_array_equal(sink.info.ground_truth["grid_px"], plan.ground_truth["grid_px"])
    with RunReader(path) as r:
        stored = r.frames[:]
        table = r.table
    assert len(sink.items) == 40
    for (_, got), want in zip(sink.items, plan.events, strict=True):  # events identical to the plan's
        assert same_event(got, want)
    for i, (frame, _event) in enumerate(sink.items):
        np.testing.assert_array_equal(frame.image, stored[i])
        assert frame.frame_number == table["frame_number"][i]
        assert frame.timestamp_s == table["timestamp_s"][i]
        assert frame.exposure_s == table["exposure_s"][i]


def test_replay_into_writer_reproduces_the_file(recorded, tmp_path):
    _, path = recorded
    copy = tmp_path / "copy.h5"
    d = Dispatcher()
    d.add(Hdf5RunWriter(copy), critical=True)
    assert ReplaySource(path).run(d).status == "complete"
    with RunReader(path) as a, RunReader(copy) as b:
        np.testing.assert_array_equal(a.frames[:], b.frames[:])
        for name in a.table.dtype.names:
            if a.table.dtype[name].kind == "f":
                np.testing.assert_array_equal(a.table[name], b.table[name])
            else:
                assert list(a.table[name]) == list(b.table[name])
        assert a.protocol_config == b.protocol_config and a.config_text == b.config_text
        assert b.attrs["replayed_from"] == str(path)


def test_replayed_copy_keeps_entry_attributes_and_ground_truth(tmp_path):
    """A copy made by replay is read like the original: ``full_config`` (the camera binning the CRB
    analysis needs), the other /entry attributes, and text arrays in the ground truth."""
    from acquisition.hdf5_writer import ENTRY_ATTRS

    plan = bsbd_plan(n_frames=12)
    plan.ground_truth["axes"] = np.asarray(["ref", "x", "y"])  # like fisher-scan's
    clock = SimClock()
    dmd = FakeDmd(clock)
    info = run_info(plan)
    info.extra = {"full_config": '{"devices": {"camera": {"binning": 4}}}', "started_from": "cli"}
    path, copy = tmp_path / "run.h5", tmp_path / "copy.h5"
    assert record(plan, BenchEngine(dmd, FakeCamera(clock, dmd)), info, path).status == "complete"
    d = Dispatcher()
    d.add(Hdf5RunWriter(copy), critical=True)
    assert ReplaySource(path).run(d).status == "complete"
    with RunReader(path) as a, RunReader(copy) as b:
        assert set(a.attrs) - {"full_config", "started_from"} == set(ENTRY_ATTRS)  # the writer's own
        skip = {"start_time", "end_time", "replayed_from", "original_status"}
        assert {k: v for k, v in b.attrs.items() if k not in skip} == {
            k: v for k, v in a.attrs.items() if k not in skip
        }
        assert b.attrs["original_status"] == "complete"
        assert list(b.ground_truth["axes"]) == ["ref", "x", "y"]
        np.testing.assert_array_equal(b.ground_truth["grid_px"], a.ground_truth["grid_px"])


def test_replay_paced_by_timestamps(recorded):
    _, path = recorded  # 40 frames recorded 5 ms apart: 195 ms of bench time
    d = Dispatcher(observer_queue=1000)
    d.add(Collect(), critical=False)
    t0 = time.monotonic()
    result = ReplaySource(path, speed=2.0).run(d)
    elapsed = time.monotonic() - t0
    assert result.frames == 40
    assert 0.09 <= elapsed < 2.0  # at x2: ~98 ms; as-fast-as-possible would take a few ms


def test_replay_abort_and_bad_speed(recorded):
    _, path = recorded
    with pytest.raises(ValueError):
        ReplaySource(path, speed=0)
    src = ReplaySource(path, speed=0.5)  # would take 0.4 s

    class AbortAfterFirstFrame(Collect):
        """Aborts from the sink's own thread once a frame has arrived: no wall-clock race."""

        def frame(self, frame, event) -> None:
            super().frame(frame, event)
            src.abort()

    d = Dispatcher(observer_queue=1000)
    d.add(AbortAfterFirstFrame(), critical=False)
    result = src.run(d)
    assert result.status == "aborted" and 0 < result.frames < 40
