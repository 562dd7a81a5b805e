"""Batch hand-off between the dispatcher and its sinks: order, pairing, back-pressure, crash safety."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_engine_helpers import FRAME_SHAPE, bsbd_plan, run_info

from acquisition.hdf5_writer import Hdf5RunWriter, WriterOptions
from acquisition.reader import RunReader
from acquisition.sinks import BatchQueue, BatchSink, Dispatcher
from devices.base import Frame

ROOT = Path(__file__).resolve().parents[1]


def indexed_frame(i: int, shape: tuple[int, int]) -> Frame:
    """A frame whose pixels, number, timestamp and exposure all say which event it belongs to."""
    return Frame(np.full(shape, i % 65536, dtype=np.uint16), 1000 + i, 0.25 + 1e-3 * i, 1e-4 * (1 + i % 7))


def test_batch_queue_is_fifo_and_hands_over_batches():
    q = BatchQueue(8)
    got: list[int] = []
    sizes: list[int] = []

    def consume():
        while len(got) < 500:
            batch = q.get_batch(max_items=6)
            assert 1 <= len(batch) <= 6
            sizes.append(len(batch))
            got.extend(batch)
            time.sleep(0.0005)  # a consumer slower than the producer: batches form

    t = threading.Thread(target=consume)
    t.start()
    for i in range(500):
        assert q.put(i, timeout=10)
    t.join(10)
    assert got == list(range(500))
    assert max(sizes) > 1  # several items per wake-up


def test_batch_queue_full_semantics():
    q = BatchQueue(4)
    assert all(q.put_nowait(i) for i in range(4))
    assert not q.put_nowait(4) and q.qsize() == 4  # full: nothing added, nothing lost
    assert not q.put(4, timeout=0.05)  # a blocking put times out rather than overfilling
    woke = threading.Event()

    def producer():
        q.put(4)
        woke.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not woke.wait(0.05)  # still full: the producer waits
    assert q.get_batch(1) == [0]  # 3 left, above half: the producer is not woken yet
    assert not woke.wait(0.05)
    assert q.get_batch(1) == [1]  # 2 left = half: now it is
    assert woke.wait(2)
    t.join(2)
    assert q.get_batch(10) == [2, 3, 4]


class Recorder:
    """A batch sink that keeps what it gets and how it got it."""

    def __init__(self, slow_s: float = 0.0) -> None:
        self.items: list = []
        self.batches: list[int] = []
        self.slow_s = slow_s

    def setup(self, info) -> None:
        pass

    def frame(self, frame, event) -> None:
        self.items.append((frame, event))

    def frames(self, batch) -> None:
        time.sleep(self.slow_s)
        self.batches.append(len(batch))
        self.items.extend(batch)

    def finish(self, status, error=None) -> None:
        pass


def test_dispatcher_batches_keep_order_and_pairing():
    plan = bsbd_plan(n_frames=300)
    rec = Recorder(slow_s=0.002)
    assert isinstance(rec, BatchSink)
    d = Dispatcher(critical_queue=16)
    d.add(rec, critical=True, name="rec")
    d.start(run_info(plan))
    frames = [indexed_frame(e.index, (4, 4)) for e in plan.events]
    for f, e in zip(frames, plan.events, strict=True):
        d.submit(f, e)
    (report,) = d.close("complete")
    assert report.processed == report.submitted == 300 and report.dropped == 0
    assert [e.index for _, e in rec.items] == list(range(300))
    assert all(f is frames[e.index] for f, e in rec.items)  # each frame with its own event
    assert max(rec.batches) > 1 and sum(rec.batches) == 300
    assert report.blocked_s > 0  # back-pressure, not loss


def test_failing_batch_sink_counts_frames_done(tmp_path):
    plan = bsbd_plan(n_frames=40)
    writer = Hdf5RunWriter(tmp_path / "r.h5")
    d = Dispatcher(critical_queue=64)
    d.add(writer, critical=True, name="hdf5")
    d.start(run_info(plan))
    bad = 23
    for e in plan.events:
        if d.failure():  # the runner stops here too
            break
        d.submit(indexed_frame(e.index, (3, 3) if e.index == bad else FRAME_SHAPE), e)
    (report,) = d.close("complete")
    assert report.errors and "shape" in report.errors[0]
    assert report.processed == writer.frames_written == bad
    with RunReader(tmp_path / "r.h5") as r:
        assert r.status == "failed" and r.n_frames == bad
        np.testing.assert_array_equal(r.frames[:, 0, 0], np.arange(bad))


def test_writer_batches_equal_frame_by_frame(tmp_path):
    """Batches of any size give the same file as frame-by-frame calls, flushes falling mid-batch."""
    plan = bsbd_plan(n_frames=57)
    shape = FRAME_SHAPE
    frames = [indexed_frame(e.index, shape) for e in plan.events]
    opts = WriterOptions(flush_every_frames=5, flush_every_s=1e9)
    one = Hdf5RunWriter(tmp_path / "one.h5", opts)
    one.setup(run_info(plan))
    for f, e in zip(frames, plan.events, strict=True):
        one.frame(f, e)
    one.finish("complete")
    many = Hdf5RunWriter(tmp_path / "many.h5", opts)
    many.setup(run_info(plan))
    pairs = list(zip(frames, plan.events, strict=True))
    for a, b in ((0, 1), (1, 13), (13, 14), (14, 40), (40, 57)):
        many.frames(pairs[a:b])
        assert many.frames_written == b
    many.finish("complete")
    with RunReader(tmp_path / "one.h5") as r1, RunReader(tmp_path / "many.h5") as r2:
        np.testing.assert_array_equal(r1.frames[:], r2.frames[:])
        for col in ("index", "role", "frame_number", "timestamp_s", "exposure_s", "pattern_id"):
            np.testing.assert_array_equal(r1.table[col], r2.table[col])
        np.testing.assert_array_equal(r2.frames[:, 0, 0], np.arange(57))
        np.testing.assert_array_equal(r2.table["frame_number"], 1000 + np.arange(57))
        np.testing.assert_allclose(r2.table["timestamp_s"], 0.25 + 1e-3 * np.arange(57))
        np.testing.assert_allclose(r2.table["exposure_s"], 1e-4 * (1 + np.arange(57) % 7))
    # an out-of-order batch is refused at the offending frame, the frames before it are kept
    w = Hdf5RunWriter(tmp_path / "bad.h5", opts)
    w.setup(run_info(plan))
    with pytest.raises(ValueError, match="arrived when event 3 was expected") as info:
        w.frames([pairs[0], pairs[1], pairs[2], pairs[4]])
    assert info.value.frames_done == 3 and w.frames_written == 3
    w.finish("failed", "test")


CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path[:0] = [{root!r}, {tests!r}]
    from test_engine_helpers import FRAME_SHAPE, bsbd_plan, run_info
    from acquisition.hdf5_writer import Hdf5RunWriter, WriterOptions
    from acquisition.sinks import Dispatcher
    from devices.base import Frame

    class Logged(Hdf5RunWriter):
        def frames(self, batch):  # announce each batch before storing it
            print(len(batch), self.frames_written, flush=True)
            super().frames(batch)

    plan = bsbd_plan(n_frames=400000)
    info = run_info(plan)
    shape = info.frame_shape
    d = Dispatcher(critical_queue=256)
    d.add(Logged({out!r}, WriterOptions(flush_every_frames=7, flush_every_s=1e9)), critical=True)
    d.start(info)
    for e in plan.events:
        i = e.index
        img = np.full(shape, i % 65536, dtype=np.uint16)
        d.submit(Frame(img, 1000 + i, 0.25 + 1e-3 * i, 1e-4 * (1 + i % 7)), e)
    """
)


def test_sigkill_mid_batch_leaves_consistent_counter(tmp_path):
    out = tmp_path / "killed.h5"
    script = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "child ended"
            try:
                with RunReader(out) as r:
                    if r.n_frames >= 2000:
                        break
            except (OSError, KeyError, RuntimeError):
                pass  # file still being created
            time.sleep(0.05)
        else:
            raise AssertionError("the child wrote no 2000 frames in 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # only newline-terminated lines are whole: under PYTHONUNBUFFERED each piece of a print() is its own
    # write(), so the kill can land inside the last announcement and leave it cut short
    complete_lines = stdout.decode().split("\n")[:-1]
    batches = [tuple(map(int, line.split())) for line in complete_lines]
    assert max(size for size, _ in batches) > 7  # batches spanned several flushes
    last_size, last_start = batches[-1]
    with RunReader(out) as r:
        assert r.status == "running"
        n = r.n_frames
        assert n >= 2000
        frames = r.frames[:]
        assert frames.shape[0] == n
        # every counted frame is complete, in order, and paired with its own metadata
        np.testing.assert_array_equal(frames.reshape(n, -1).min(axis=1), np.arange(n) % 65536)
        np.testing.assert_array_equal(frames.reshape(n, -1).max(axis=1), np.arange(n) % 65536)
        t = r.table
        np.testing.assert_array_equal(t["index"], np.arange(n))
        np.testing.assert_array_equal(t["frame_number"], 1000 + np.arange(n))
        np.testing.assert_allclose(t["timestamp_s"], 0.25 + 1e-3 * np.arange(n))
        np.testing.assert_allclose(t["exposure_s"], 1e-4 * (1 + np.arange(n) % 7))
    with h5py.File(out, "r", swmr=True) as f:
        assert int(f["entry/frames_written"][()]) == n
    assert n % 7 == 0  # the counter only moves at flushes (every 7 frames), whatever the batch size
    # the kill came while the last announced batch was being stored (or just after it)
    assert last_start - 7 < n <= last_start + last_size
