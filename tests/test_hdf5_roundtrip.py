"""HDF5 run file: round trip of frames, table, attributes, config text; live (SWMR) reading."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from test_engine_helpers import FRAME_SHAPE, bsbd_plan, run_info

from acquisition.hdf5_writer import Hdf5RunWriter, WriterOptions
from acquisition.reader import RunFileError, RunReader
from devices.base import Frame


def synthetic_frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65535, size=(n, *FRAME_SHAPE), dtype=np.uint16)


def write_run(path, plan, frames, status="complete", options=None, stop=None):
    w = Hdf5RunWriter(path, options)
    w.setup(run_info(plan))
    for e in plan.events[: stop if stop is not None else len(plan.events)]:
        w.frame(Frame(frames[e.index], 1000 + e.index, 0.5 + 0.01 * e.index, 2e-4), e)
    w.finish(status, None if status == "complete" else "boom")
    return w


def test_round_trip(tmp_path):
    plan = bsbd_plan(n_frames=24, n_positions=3)
    frames = synthetic_frames(24)
    path = tmp_path / "run.h5"
    write_run(path, plan, frames)
    with RunReader(path) as r:
        assert r.status == "complete" and r.protocol == "bsbd"
        assert r.n_frames == 24 and r.frame_shape == FRAME_SHAPE
        assert isinstance(r.frames, h5py.Dataset) and r.frames.dtype == np.uint16
        np.testing.assert_array_equal(r.frames[:], frames)
        t = r.table
        np.testing.assert_array_equal(t["index"], np.arange(24))
        assert "".join(t["role"][:4]) == "BSBD"
        np.testing.assert_array_equal(t["pattern_id"], [e.pattern_id for e in plan.events])
        np.testing.assert_array_equal(t["frame_number"], 1000 + np.arange(24))
        np.testing.assert_allclose(t["timestamp_s"], 0.5 + 0.01 * np.arange(24))
        np.testing.assert_allclose(t["exposure_s"], 2e-4)
        np.testing.assert_allclose(t["target_x_um"], t["target_x_px"] * 2.466)  # no µm in extra: px * scale
        assert np.isnan(t["target_x_px"][0]) and not np.isnan(t["target_x_px"][1])
        assert list(t["sample"][:2]) == ["s0", "s0"]
        np.testing.assert_array_equal(r.indices("D"), np.arange(3, 24, 4))
        assert r.roles() == {"B": 12, "D": 6, "S": 6}
        assert len(r.positions("D")) == 3
        assert r.protocol_config == {"frames": 24, "interval_s": 0.01}
        assert r.bench_config == {"configuration": "fake", "seed": 0}
        assert r.config_text == '[protocol]\nname = "bsbd"\n'
        np.testing.assert_array_equal(r.ground_truth["grid_px"], plan.ground_truth["grid_px"])
        a = r.attrs
        assert a["NX_class"] == "NXentry" and a["default"] == "data"
        assert a["start_time"] < a["end_time"] and a["start_time"].endswith("+00:00")
        assert a["frames_written"] == 24 and a["error"] == ""
        assert {"numpy", "h5py", "specklab", "ALP4lib", "pycromanager", "hdf5"} <= set(r.software)
        # extras come back as Event.extra
        assert r.extras()[3] == {"grid_index": 0} and r.extras()[0] == {}
        assert r.events()[7] == plan.events[7]  # a D event (no NaN fields)
        assert r.events()[0].to_dict().keys() == plan.events[0].to_dict().keys()
    with h5py.File(path, "r") as f:  # what a generic viewer sees
        assert f["entry/data"].attrs["NX_class"] == "NXdata"
        assert f["entry/data"].attrs["signal"] == "frames"
        assert f["entry/data/frames"].chunks == (1, *FRAME_SHAPE)
        assert json.loads(f["entry/config/protocol"].asstr()[()])["frames"] == 24


def test_iter_batches_orders(tmp_path):
    plan = bsbd_plan(n_frames=20)
    frames = synthetic_frames(20, seed=3)
    write_run(tmp_path / "r.h5", plan, frames)
    with RunReader(tmp_path / "r.h5") as r:
        got = [(i, f) for i, f in r.iter_batches(batch_size=6)]
        assert [len(i) for i, _ in got] == [6, 6, 6, 2]
        np.testing.assert_array_equal(np.concatenate([f for _, f in got]), frames)
        idx = np.array([9, 2, 2, 17, 0])
        ((bi, bf),) = list(r.iter_batches(idx, batch_size=10))
        np.testing.assert_array_equal(bi, idx)
        np.testing.assert_array_equal(bf, frames[idx])
        with pytest.raises(IndexError):
            next(r.iter_batches(np.array([20])))


def test_aborted_run_keeps_valid_frames_only(tmp_path):
    plan = bsbd_plan(n_frames=20)
    frames = synthetic_frames(20)
    write_run(tmp_path / "r.h5", plan, frames, status="aborted", stop=7)
    with RunReader(tmp_path / "r.h5") as r:
        assert r.status == "aborted" and r.attrs["error"] == "boom"
        assert r.frames.shape == (7, *FRAME_SHAPE) and len(r.table) == 7
        np.testing.assert_array_equal(r.frames[:], frames[:7])


def test_complete_with_missing_frames_becomes_failed(tmp_path):
    plan = bsbd_plan(n_frames=10)
    write_run(tmp_path / "r.h5", plan, synthetic_frames(10), stop=4)
    with RunReader(tmp_path / "r.h5") as r:
        assert r.status == "failed" and "only 4 of 10" in r.attrs["error"]


def test_live_reader_follows_swmr_writer(tmp_path):
    plan = bsbd_plan(n_frames=30)
    frames = synthetic_frames(30)
    path = tmp_path / "live.h5"
    w = Hdf5RunWriter(path, WriterOptions(flush_every_frames=5, flush_every_s=1e9))
    w.setup(run_info(plan))
    try:
        for e in plan.events[:12]:
            w.frame(Frame(frames[e.index], e.index, 0.0, 1e-3), e)
        with RunReader(path) as r:  # a second handle while the writer holds the file
            assert r.status == "running"
            assert r.n_frames == 10  # flushed at 5 and 10; frames 10, 11 are not yet counted
            assert r.frames.shape == (10, *FRAME_SHAPE)
            np.testing.assert_array_equal(r.frames[9], frames[9])
            np.testing.assert_array_equal(r.frames[-1], frames[9])
            with pytest.raises(IndexError):
                r.frames[10]
            for e in plan.events[12:20]:
                w.frame(Frame(frames[e.index], e.index, 0.0, 1e-3), e)
            assert r.refresh() == 20
            np.testing.assert_array_equal(np.asarray(r.frames), frames[:20])
            np.testing.assert_array_equal(r.table["frame_number"], np.arange(20))
    finally:
        w.finish("aborted", "stopped by test")
    with RunReader(path) as r:
        assert r.n_frames == 20 and r.status == "aborted"


def test_frame_shape_mismatch_is_an_error(tmp_path):
    plan = bsbd_plan(n_frames=4)
    w = Hdf5RunWriter(tmp_path / "r.h5")
    w.setup(run_info(plan))
    with pytest.raises(ValueError, match="shape"):
        w.frame(Frame(np.zeros((3, 3), np.uint16), 0, 0.0, 1e-3), plan.events[0])
    w.finish("failed", "bad frame")
    with RunReader(tmp_path / "r.h5") as r:
        assert r.status == "failed" and r.n_frames == 0


def test_not_a_run_file(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(RunFileError):
        RunReader(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError):
        RunReader(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "nexus.h5", "w") as f:  # another program's NeXus file: /entry/data/frames too
        f["entry/data/frames"] = np.zeros((2, 4, 4), np.uint16)
    with pytest.raises(RunFileError, match="/entry/frames_written"):
        RunReader(tmp_path / "nexus.h5")
    with h5py.File(tmp_path / "nexus.h5", "a") as f:
        f["entry/frames_written"] = 2
        f.create_group("entry/events")
    with pytest.raises(RunFileError, match="/entry@status"):
        RunReader(tmp_path / "nexus.h5")
    h5py.File(tmp_path / "nexus.h5", "w").close()  # HDF5 refuses to truncate a file still open: none is


class TargetBank:
    """A pattern bank that also says which target each pattern shows (like generalisation's)."""

    def __init__(self, base, shape=(6, 5)) -> None:
        self._base = base
        self.target_shape = shape
        self.asked: list[int] = []

    @property
    def dmd_shape(self):
        return self._base.dmd_shape

    def __len__(self) -> int:
        return len(self._base)

    def pattern(self, pid: int) -> np.ndarray:
        return self._base.pattern(pid)

    def target_image(self, pid: int) -> np.ndarray:
        self.asked.append(int(pid))
        return (np.arange(np.prod(self.target_shape)).reshape(self.target_shape) * 7 + 31 * pid).astype(
            np.uint8
        )


def _target_plan(n_frames: int):
    plan = bsbd_plan(n_frames=n_frames, n_positions=5)  # ids 0, 1, 2..6, repeating: 7 distinct targets
    plan.patterns = TargetBank(plan.patterns)
    return plan


def _info_with_targets(plan):
    info = run_info(plan)
    info.patterns = plan.patterns
    return info


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_targets_written_lazily_and_crash_safe(tmp_path, compression):
    plan = _target_plan(60)
    bank = plan.patterns
    frames = synthetic_frames(60)
    path = tmp_path / "t.h5"
    w = Hdf5RunWriter(path, WriterOptions(flush_every_frames=5, flush_every_s=1e9, compression=compression))
    w.setup(_info_with_targets(plan))
    assert bank.asked == [0]  # setup renders one target (its shape and dtype), not the bank
    try:
        for e in plan.events[:12]:
            w.frame(Frame(frames[e.index], e.index, 0.0, 1e-3), e)
        # each distinct target once, when its first frame is stored
        assert bank.asked[1:] == sorted(set(bank.asked[1:]), key=bank.asked[1:].index)
        assert set(bank.asked[1:]) == {e.pattern_id for e in plan.events[:12]}
        with RunReader(path) as r:  # live: the targets of the counted frames are on disk
            assert r.status == "running" and r.n_frames == 10 and r.has_targets
            for i in range(10):
                np.testing.assert_array_equal(r.targets(i), bank.target_image(plan.events[i].pattern_id))
            with pytest.raises(IndexError):
                r.targets(10)
    finally:
        w.finish("aborted", "stopped by test")
    with RunReader(path) as r:
        assert r.n_frames == 12
        expected = np.stack([bank.target_image(e.pattern_id) for e in plan.events[:12]])
        np.testing.assert_array_equal(r.targets(np.arange(12)), expected)
        np.testing.assert_array_equal(r.targets(np.arange(12)[::-1]), expected[::-1])
    with h5py.File(path, "r") as f:
        assert f["entry/targets/images"].shape == (7, 6, 5)
        np.testing.assert_array_equal(f["entry/targets/pattern_id"][:], np.arange(7))
        assert f["entry/events/target_index"].shape == (12,)  # shrunk with the other columns


def test_no_targets_without_target_image(tmp_path):
    plan = bsbd_plan(n_frames=8)
    write_run(tmp_path / "r.h5", plan, synthetic_frames(8))
    with RunReader(tmp_path / "r.h5") as r:
        assert not r.has_targets
        with pytest.raises(RunFileError, match="no target images"):
            r.targets(0)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert "targets" not in f["entry"] and "target_index" not in f["entry/events"]


def test_target_shape_must_match_the_bank(tmp_path):
    plan = _target_plan(8)
    plan.patterns.target_image = lambda pid: np.zeros((5, 6), np.uint8)  # bank says (6, 5)
    w = Hdf5RunWriter(tmp_path / "bad.h5")
    with pytest.raises(ValueError, match="target_shape"):
        w.setup(_info_with_targets(plan))
