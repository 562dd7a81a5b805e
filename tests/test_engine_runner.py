"""Engine + runner + dispatcher + writer on test-local devices: outcomes, timing blocks, failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_engine_helpers import (
    FakeCamera,
    FakeDmd,
    FakePump,
    bsbd_plan,
    expected_image,
    random_plan,
    run_info,
)

from acquisition.engine import BenchEngine, Engine, PumpSettings, find_period
from acquisition.reader import RunReader
from acquisition.runner import Progress, RunState, record
from acquisition.sinks import CallbackSink
from devices.bench.clock import SimClock


def make_engine(fail_at=None, wrong_from=None, delay_s=0.0, block_size=8):
    clock = SimClock()
    dmd = FakeDmd(clock, wrong_from=wrong_from)
    cam = FakeCamera(clock, dmd, fail_at=fail_at, delay_s=delay_s)
    pump = FakePump()
    engine = BenchEngine(dmd, cam, pump, PumpSettings(rate_ml_per_h=7.0), block_size=block_size)
    return engine, dmd, cam, pump


def test_find_period():
    assert find_period(np.array([0, 1, 0, 2] * 5), 64) == 4
    assert find_period(np.array([0, 1, 2, 3, 4]), 64) is None
    assert find_period(np.array([0, 1, 0, 2] * 5 + [0]), 64) == 4  # a truncated last period is still periodic
    assert find_period(np.array([0, 1, 0, 2] * 5), 3) is None


def test_periodic_plan_complete_one_upload(tmp_path):
    plan = bsbd_plan(n_frames=60, n_positions=5)  # period 20
    engine, dmd, cam, pump = make_engine()
    out = tmp_path / "run.h5"
    result = record(plan, engine, run_info(plan, engine.identities()), out)
    assert result.status == "complete", result.error
    assert result.frames == 60
    assert engine.period == 20
    assert dmd.uploads == 1 and cam.sequences == 1  # hardware-timed: one upload, one camera sequence
    assert pump.calls[-1] == "stop" and not pump.running
    assert dmd.t0 is None  # halted
    with RunReader(out) as r:
        assert r.status == "complete"
        assert r.n_frames == 60
        frames = r.frames[:]
        for e in plan.events:
            np.testing.assert_array_equal(frames[e.index], expected_image(plan, e, e.index))
        np.testing.assert_array_equal(r.table["frame_number"], np.arange(60))
        assert r.devices["camera"]["model"] == "FakeCamera"
        assert r.roles() == {"B": 30, "D": 15, "S": 15}


def test_non_periodic_plan_uploads_blocks(tmp_path):
    plan = random_plan(n_frames=30)
    engine, dmd, cam, _ = make_engine(block_size=8)
    result = record(plan, engine, run_info(plan), tmp_path / "run.h5")
    assert result.status == "complete", result.error
    assert engine.period is None
    assert dmd.uploads == 4  # ceil(30 / 8)
    with RunReader(tmp_path / "run.h5") as r:
        for e in plan.events[::7]:
            np.testing.assert_array_equal(r.frames[e.index], expected_image(plan, e, e.index))


def test_pattern_mismatch_fails_the_run(tmp_path):
    plan = random_plan(n_frames=20)
    engine, dmd, _, pump = make_engine(wrong_from=3, block_size=50)
    result = record(plan, engine, run_info(plan), tmp_path / "run.h5")
    assert result.status == "failed"
    assert "PatternMismatchError" in result.error and "event 3" in result.error
    with RunReader(tmp_path / "run.h5") as r:
        assert r.status == "failed" and r.n_frames == 3
        assert "event 3" in r.attrs["error"]
    assert not pump.running


def test_device_failure_mid_run(tmp_path):
    plan = bsbd_plan(n_frames=40)
    engine, dmd, cam, pump = make_engine(fail_at=17)
    out = tmp_path / "run.h5"
    result = record(plan, engine, run_info(plan), out)
    assert result.status == "failed"
    assert "cable unplugged at frame 17" in result.error
    assert dmd.halts >= 1 and dmd.t0 is None  # DMD halted
    assert not pump.running and pump.calls[-1] == "stop"
    assert cam.stopped >= 1
    with RunReader(out) as r:  # file closed (we can open it) and readable
        assert r.status == "failed"
        assert "cable unplugged" in r.attrs["error"]
        assert r.n_frames == 17 and r.frames.shape == (17, 12, 16)
        np.testing.assert_array_equal(r.frames[16], expected_image(plan, plan.events[16], 16))
        assert r.attrs["end_time"]


def test_pause_resume_abort(tmp_path):
    plan = bsbd_plan(n_frames=400)
    engine, dmd, cam, pump = make_engine(delay_s=0.002)
    out = tmp_path / "run.h5"
    states: list[RunState] = []
    handle: dict = {}

    def on_progress(p: Progress) -> None:
        states.append(p.state)

    th = threading.Thread(
        target=lambda: handle.update(
            result=record(
                plan,
                engine,
                run_info(plan),
                out,
                progress=on_progress,
                runner_hook=lambda r: handle.update(runner=r),
            )
        )
    )
    th.start()
    try:
        deadline = time.monotonic() + 10
        while "runner" not in handle or cam.counter < 20:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        runner = handle["runner"]
        runner.pause()
        while runner.state is not RunState.PAUSED:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        n_paused = cam.counter
        time.sleep(0.1)
        assert cam.counter == n_paused  # nothing acquired while paused
        assert dmd.t0 is None  # DMD halted during the pause
        runner.resume()
        while cam.counter < n_paused + 20:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        runner.abort("test abort")
    finally:
        th.join(timeout=30)
    assert not th.is_alive()
    result = handle["result"]
    assert result.status == "aborted" and result.error == "test abort"
    assert n_paused + 20 <= result.frames < 400
    assert RunState.PAUSED in states
    assert dmd.uploads >= 2  # resume started a new hardware block
    assert not pump.running
    with RunReader(out) as r:
        assert r.status == "aborted"
        assert r.n_frames == result.frames
        # frames after the pause are still paired with their events (camera counter = event index)
        for i in (0, n_paused - 1, n_paused, result.frames - 1):
            np.testing.assert_array_equal(r.frames[i], expected_image(plan, plan.events[i], i))


def test_abort_while_paused(tmp_path):
    plan = bsbd_plan(n_frames=100)
    engine, *_ = make_engine()

    def hook(runner):
        runner.pause()  # paused before the first frame
        threading.Timer(0.1, runner.abort).start()

    result = record(plan, engine, run_info(plan), tmp_path / "r.h5", runner_hook=hook)
    assert result.status == "aborted" and result.frames == 0
    with RunReader(tmp_path / "r.h5") as r:
        assert r.status == "aborted" and r.n_frames == 0


def test_slow_writer_back_pressure_never_drops(tmp_path, monkeypatch):
    from acquisition import hdf5_writer

    plan = bsbd_plan(n_frames=40)
    engine, *_ = make_engine()
    original = hdf5_writer.Hdf5RunWriter.frame

    def slow_frame(self, frame, event):
        time.sleep(0.005)
        original(self, frame, event)

    monkeypatch.setattr(hdf5_writer.Hdf5RunWriter, "frame", slow_frame)
    result = record(plan, engine, run_info(plan), tmp_path / "r.h5", critical_queue=2)
    assert result.status == "complete"
    writer = next(s for s in result.sinks if s.name == "hdf5")
    assert writer.dropped == 0 and writer.processed == 40
    assert writer.blocked_s > 0.02  # the engine waited for the writer
    with RunReader(tmp_path / "r.h5") as r:
        assert r.n_frames == 40


def test_slow_observer_drops_and_reports(tmp_path):
    plan = bsbd_plan(n_frames=60)
    engine, *_ = make_engine()
    seen: list[int] = []

    def slow(frame, event):
        time.sleep(0.02)
        seen.append(event.index)

    result = record(plan, engine, run_info(plan), tmp_path / "r.h5", observers=[CallbackSink(slow)])
    assert result.status == "complete"
    obs = next(s for s in result.sinks if not s.critical)
    assert obs.dropped > 0
    assert obs.processed == len(seen) and obs.processed + obs.dropped == obs.submitted == 60
    assert result.dropped()[obs.name] == obs.dropped
    assert seen == sorted(seen)
    with RunReader(tmp_path / "r.h5") as r:
        assert r.n_frames == 60  # the writer got everything


def test_broken_engine_drops_in(tmp_path):
    """Any object with the Engine methods works; its exception fails the run and teardown still runs."""

    class BrokenEngine:
        torn_down = False

        def setup(self, plan):
            pass

        def start_block(self, plan, start):
            return len(plan.events)

        def read(self, event):
            raise RuntimeError("firmware crashed")

        def end_block(self):
            pass

        def teardown(self):
            BrokenEngine.torn_down = True

    eng = BrokenEngine()
    assert isinstance(eng, Engine)
    plan = bsbd_plan(n_frames=8)
    result = record(plan, eng, run_info(plan), tmp_path / "r.h5")
    assert result.status == "failed" and "firmware crashed" in result.error
    assert BrokenEngine.torn_down


def test_progress_reports_rate_and_eta(tmp_path):
    plan = bsbd_plan(n_frames=80)
    engine, *_ = make_engine(delay_s=0.003)
    reports: list[Progress] = []
    result = record(plan, engine, run_info(plan), tmp_path / "r.h5", progress=reports.append)
    assert result.status == "complete"
    final = reports[-1]
    assert final.done == final.total == 80 and final.state is RunState.FINISHED
    assert final.rate_hz > 0
    mid = [p for p in reports if 0 < p.done < 80]
    assert mid and all(p.eta_s is not None and p.eta_s > 0 for p in mid)


def test_unwritable_output_fails_before_devices_move(tmp_path):
    plan = bsbd_plan(n_frames=8)
    engine, dmd, cam, pump = make_engine()
    bad = tmp_path / "file-not-dir"
    bad.write_text("x")
    with pytest.raises(OSError):
        record(plan, engine, run_info(plan), bad / "run.h5")
    assert dmd.uploads == 0 and cam.sequences == 0 and pump.calls == []


def test_operator_cancel_aborts_rather_than_fails(tmp_path):
    """An operator declining a step (e.g. a sample mount) ends the run as aborted, file readable."""
    from devices.base import MountCancelled

    class CancellingEngine:
        def setup(self, plan):
            pass

        def start_block(self, plan, start):
            return len(plan.events)

        def read(self, event):
            raise MountCancelled("the operator did not confirm mounting sample 'cells'; run stopped")

        def end_block(self):
            pass

        def teardown(self):
            pass

    plan = bsbd_plan(n_frames=8)
    result = record(plan, CancellingEngine(), run_info(plan), tmp_path / "r.h5")
    assert result.status == "aborted" and "cells" in result.error
    with RunReader(tmp_path / "r.h5") as r:
        assert r.status == "aborted"
