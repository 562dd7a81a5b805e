"""Replay and results panels on a run recorded through the acquisition API (no GUI involved)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from test_engine_helpers import FakeCamera, FakeDmd, FakePump, bsbd_plan, run_info

from acquisition.engine import BenchEngine, PumpSettings
from acquisition.reader import RunReader
from acquisition.runner import record
from devices.bench.clock import SimClock
from gui.replay_panel import ReplayPanel
from gui.results_panel import ResultsPanel, find_results, headline


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A 40-frame B,S,B,D run (1 ms apart on the bench clock) written by ``acquisition.runner.record``."""
    clock = SimClock()
    dmd = FakeDmd(clock)
    engine = BenchEngine(dmd, FakeCamera(clock, dmd), FakePump(), PumpSettings(7.0))
    plan = bsbd_plan(n_frames=40, n_positions=5, interval_s=0.001)
    out = tmp_path_factory.mktemp("replay") / "stored.h5"
    result = record(plan, engine, run_info(plan, engine.identities()), out)
    assert result.status == "complete"
    # Expected values are read now, with no other reader open: two h5py SWMR handles on one file in
    # one process read zeros after a refresh (HDF5 shared-file issue, reported to the reader owner).
    with RunReader(out) as r:
        expected = {"frames": np.asarray(r.frames[:]), "D": r.indices("D")}
    return out, expected


@pytest.fixture
def panel(qtbot):
    p = ReplayPanel()
    qtbot.addWidget(p)
    yield p
    p.close_run()


def test_open_scrub_and_filter_by_role(qtbot, panel, stored_run):
    stored_run, expected = stored_run
    opened = []
    panel.run_opened.connect(opened.append)
    assert panel.open_run(stored_run)
    assert opened == [str(stored_run)]
    assert len(panel.indices) == 40 and panel.current_frame == 0
    assert [panel.role.itemData(i) for i in range(1, panel.role.count())] == ["B", "D", "S"]
    assert '"status": "complete"' in panel.attrs_text.toPlainText()

    panel.slider.setValue(7)  # scrub
    assert panel.current_frame == 7
    np.testing.assert_array_equal(panel.view.getImageItem().image, expected["frames"][7])
    d_idx = expected["D"]

    panel.set_role("D")
    np.testing.assert_array_equal(panel.indices, d_idx)
    assert panel.slider.maximum() == len(d_idx) - 1
    panel.slider.setValue(3)
    assert panel.current_frame == d_idx[3]
    np.testing.assert_array_equal(panel.view.getImageItem().image, expected["frames"][d_idx[3]])
    meta = panel.frame_metadata(panel.current_frame)
    assert meta["role"] == "D" and meta["index"] == d_idx[3]
    shown = {panel.frame_table.item(r, 0).text(): panel.frame_table.item(r, 1).text() for r in range(10)}
    assert shown["role"] == "D"
    assert "extra.grid_index" in meta  # Event.extra columns are shown too
    assert "D" in panel.position_label.text()


def test_play_follows_recorded_pace_and_stops_at_end(qtbot, panel, stored_run):
    panel.open_run(stored_run[0])
    panel.set_role("S")
    panel.speed.setCurrentText("0.25×")  # 10 S frames 4 ms apart → 40 ms at 1x, 160 ms at 0.25x
    t0 = time.monotonic()
    panel.play_btn.setChecked(True)
    qtbot.waitUntil(lambda: not panel.play_btn.isChecked(), timeout=5000)
    assert time.monotonic() - t0 >= 0.13  # 36 ms of recorded time at 0.25x, not as fast as possible
    assert panel.position == len(panel.indices) - 1  # reached the last S frame and stopped


def test_missing_or_foreign_file_is_reported_not_raised(qtbot, panel, tmp_path):
    assert not panel.open_run(tmp_path / "nope.h5")
    assert "cannot open" in panel.position_label.text()
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert not panel.open_run(tmp_path / "junk.h5")
    assert panel.reader is None


def test_results_found_by_naming_convention_and_shown(qtbot, tmp_path):
    run = tmp_path / "r1.h5"
    run.write_bytes(b"")
    (tmp_path / "r1.crb.json").write_text(json.dumps({"crb_um": 0.123456, "fisher": {"value": 65.6}}))
    (tmp_path / "r1.eval.json").write_text("{broken")
    (tmp_path / "other.crb.json").write_text("{}")  # another run: not picked up
    from PyQt5.QtGui import QImage

    img = QImage(8, 6, QImage.Format_RGB32)
    img.fill(0)
    img.save(str(tmp_path / "r1.crb.png"))

    found = find_results(run)
    assert set(found.json) == {"crb", "eval"}
    assert [p.name for p in found.figures] == ["r1.crb.png"]

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.show_run(run)
    assert panel.data["crb"]["crb_um"] == pytest.approx(0.123456)
    assert "eval" not in panel.data  # unreadable JSON is listed, not fatal
    assert "crb_um = 0.1235" in panel.headline.text() and "fisher.value = 65.6" in panel.headline.text()
    assert panel.tree.topLevelItemCount() == 2
    assert panel.figure.pixmap() is not None and panel.figure.pixmap().width() == 8


def test_results_panel_says_what_it_looks_for(qtbot, tmp_path):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    res = panel.show_run(tmp_path / "empty.h5")
    assert res.empty
    assert "empty.crb.json" in panel.run_label.text()
    assert headline({"a": 1, "b": "x", "c": [1, 2], "d": True}) == [("a", "1"), ("b", "x")]


def shown_as_typed(label) -> bool:
    """A QLabel shows its text as typed (not as HTML): plain-text format, or nothing Qt takes for HTML."""
    from PyQt5.QtCore import Qt

    return label.textFormat() == Qt.PlainText or (
        label.textFormat() == Qt.AutoText and not Qt.mightBeRichText(label.text())
    )


@pytest.mark.parametrize("name", ["r[1]", "a*b", "what?"])
def test_results_of_a_run_named_with_glob_characters_are_found(tmp_path, name):
    run = tmp_path / f"{name}.h5"
    run.write_bytes(b"")
    (tmp_path / f"{name}.crb.png").write_bytes(b"")
    for other in ("r1", "axxb", "whatX"):  # what the name read as a glob pattern matches
        (tmp_path / f"{other}.crb.png").write_bytes(b"")
    assert [p.name for p in find_results(run).figures] == [f"{name}.crb.png"]  # "[1]" found r1's figure


def test_results_text_with_html_characters_is_shown_as_is(qtbot, tmp_path):
    from PyQt5.QtGui import QTextDocument

    run = tmp_path / "<b>run & co.h5"
    run.write_bytes(b"")
    (tmp_path / "<b>run & co.crb.json").write_text(json.dumps({"a<b": "x & <i>y", "n": 2}))
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.show_run(run)
    doc = QTextDocument()
    doc.setHtml(panel.headline.text())
    assert doc.toPlainText() == "Cramér–Rao bound: a<b = x & <i>y, n = 2"  # was "…: ay, n = 2"
    assert shown_as_typed(panel.run_label) and panel.run_label.text().startswith("<b>run & co.h5: 1 result")
    panel.show_run(tmp_path / "<b>none.h5")
    assert shown_as_typed(panel.run_label)


def test_replay_status_line_shows_file_names_as_typed(qtbot, panel, tmp_path):
    assert not panel.open_run(tmp_path / "<b>missing.h5")
    assert "<b>missing.h5" in panel.position_label.text() and shown_as_typed(panel.position_label)


def record_run(out, n_frames: int, abort_at_start: bool = False):
    """A small bsbd run (1 ms apart) recorded with the acquisition API; abort_at_start: no frames."""
    clock = SimClock()
    dmd = FakeDmd(clock)
    engine = BenchEngine(dmd, FakeCamera(clock, dmd), FakePump(), PumpSettings(7.0))
    plan = bsbd_plan(n_frames=n_frames, n_positions=1, interval_s=0.001)
    hook = (lambda r: r.abort("test")) if abort_at_start else None
    record(plan, engine, run_info(plan, engine.identities()), out, runner_hook=hook)
    return out


def test_a_file_that_is_not_a_run_is_refused_and_nothing_stale_stays(qtbot, panel, stored_run, tmp_path):
    """Another program's HDF5 file with /entry/data/frames but nothing else of a run: refused, no raise."""
    import h5py

    foreign = tmp_path / "other-program.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("entry/data/frames", data=np.zeros((3, 4, 4), np.uint16))
    assert panel.open_run(stored_run[0])
    panel.slider.setValue(5)
    assert not panel.open_run(foreign)  # raised KeyError('frames_written') into the slot: the app aborted
    assert panel.reader is None and "cannot open" in panel.position_label.text()
    assert "other-program.h5" in panel.position_label.text()
    assert panel.view.getImageItem().image is None  # not the frame of the run open before
    assert panel.attrs_text.toPlainText() == "" and panel.frame_table.rowCount() == 0
    assert panel.open_run(stored_run[0])  # and the panel still works


def test_a_run_without_frames_shows_no_stale_frame(qtbot, panel, stored_run, tmp_path):
    empty = record_run(tmp_path / "empty.h5", 8, abort_at_start=True)
    assert panel.open_run(stored_run[0])
    assert panel.view.getImageItem().image is not None
    assert panel.open_run(empty)
    assert panel.reader.n_frames == 0 and panel.position_label.text() == "no frames"
    assert panel.view.getImageItem().image is None  # was the previous run's frame under "no frames"
    assert panel.frame_table.rowCount() == 0
    panel.play_btn.setChecked(True)
    assert not panel.play_btn.isChecked()


def test_play_of_a_single_frame_stops(qtbot, panel, tmp_path):
    run = record_run(tmp_path / "tiny.h5", 4)  # B, S, B, D: one S frame
    assert panel.open_run(run)
    panel.set_role("S")
    assert len(panel.indices) == 1
    panel.play_btn.setChecked(True)
    qtbot.wait(150)  # the timer used to re-arm itself at 30 Hz forever, the button stuck on "playing"
    assert not panel.play_btn.isChecked() and not panel._timer.isActive()
    assert panel.current_frame == panel.indices[0]


def test_changing_speed_while_playing_keeps_the_position(qtbot, panel, stored_run, monkeypatch):
    """The new speed counts from the frame shown, not from the moment Play was pressed."""
    import gui.replay_panel as rp

    now = [100.0]
    monkeypatch.setattr(rp.time, "monotonic", lambda: now[0])
    assert panel.open_run(stored_run[0])  # 40 frames, 1 ms apart
    panel.speed.setCurrentText("20×")
    panel.play_btn.setChecked(True)
    panel._timer.stop()  # ticks are driven by hand on the fake clock
    now[0] += 0.001  # 20 ms of recorded time at 20x
    panel._tick()
    at = panel.position
    assert 15 <= at <= 25
    panel.speed.setCurrentText("0.25×")
    now[0] += 0.0084  # 2.1 ms of recorded time at 0.25x
    panel._tick()
    assert panel.position == at + 2  # the replay time used to fall back to 20 ms * 0.25 / 20: stuck for ages
    panel.play_btn.setChecked(False)


@pytest.fixture
def live_run(tmp_path):
    """A run still being written (SWMR, flushed every 4 frames); yields (path, write(n) -> frames written)."""
    from test_engine_helpers import FRAME_SHAPE

    from acquisition.hdf5_writer import Hdf5RunWriter, WriterOptions
    from devices.base import Frame

    plan = bsbd_plan(n_frames=40, n_positions=5, interval_s=0.001)
    frames = np.random.default_rng(0).integers(0, 65535, size=(40, *FRAME_SHAPE), dtype=np.uint16)
    path = tmp_path / "live.h5"
    w = Hdf5RunWriter(path, WriterOptions(flush_every_frames=4, flush_every_s=1e9))
    w.setup(run_info(plan))
    done = [0]

    def write(n: int) -> None:
        for e in plan.events[done[0] : done[0] + n]:
            w.frame(Frame(frames[e.index], e.index, 0.001 * e.index, 1e-3), e)
        done[0] += n

    try:
        yield path, write, frames
    finally:
        w.finish("aborted", "stopped by test")


def test_reload_keeps_the_shown_frame_and_extends_the_range(qtbot, panel, live_run):
    path, write, frames = live_run
    write(16)
    assert panel.open_run(path) and panel.reader.n_frames == 16
    panel.slider.setValue(7)
    write(8)
    panel.reload()  # used to jump back to frame 0
    assert panel.reader.n_frames == 24 and panel.slider.maximum() == 23
    assert panel.current_frame == 7 and panel.position == 7 and panel.slider.value() == 7
    np.testing.assert_array_equal(panel.view.getImageItem().image, frames[7])

    panel.set_role("D")  # D frames 3, 7, 11, 15, 19, 23
    panel.slider.setValue(2)
    assert panel.current_frame == 11
    write(8)
    panel.reload()  # the filter used to fall back to all roles ("D (6)" is now "D (8)")
    assert panel.role_filter == "D" and panel.role.currentText() == "D (8)"
    assert panel.slider.maximum() == 7 and panel.position == 2 and panel.current_frame == 11


def test_a_run_that_grew_while_playing_keeps_playing_from_where_it_was(qtbot, panel, live_run, monkeypatch):
    import gui.replay_panel as rp

    path, write, _ = live_run
    now = [100.0]
    monkeypatch.setattr(rp.time, "monotonic", lambda: now[0])
    write(20)
    assert panel.open_run(path)
    panel.speed.setCurrentText("1× (recorded)")
    panel.play_btn.setChecked(True)
    panel._timer.stop()  # ticks are driven by hand on the fake clock
    now[0] += 0.0105  # frames 1 ms apart: frame 10 is due
    panel._tick()
    assert panel.position == 10
    write(12)
    panel.reload()
    assert panel.play_btn.isChecked() and panel.position == 10 and panel.slider.maximum() == 31
    now[0] += 0.012
    panel._tick()
    assert panel.play_btn.isChecked() and panel.position == 22  # past the old end, still playing
    panel.play_btn.setChecked(False)
