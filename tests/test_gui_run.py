"""The main window runs protocols on a (fake) bench: complete, pause/resume/abort, close mid-run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_gui_helpers import fake_opener, small_config

from acquisition.reader import RunReader
from acquisition.runner import RunState
from gui.app import MainWindow

WAIT_MS = 15_000


@pytest.fixture
def make_window(qtbot, tmp_path):
    windows: list[MainWindow] = []

    def make(frames: int = 40, delay_s: float = 0.0, opened: list | None = None) -> MainWindow:
        cfg = small_config(tmp_path, frames=frames)
        w = MainWindow(cfg, opener=fake_opener(delay_s, opened), pump_poll_ms=100)
        qtbot.addWidget(w)
        windows.append(w)
        with qtbot.waitSignal(w.bench_ready, timeout=WAIT_MS) as blocker:
            pass
        assert blocker.args == [True]
        return w

    yield make
    for w in windows:  # never leave a run thread or open devices behind
        w.abort_run("test teardown")
        if w.controller is not None:
            w.controller.join(10)
        w.shutdown()


def start(qtbot, w: MainWindow, out) -> None:
    w.protocol.out.setText(str(out))
    qtbot.mouseClick(w.protocol.start_btn, 1)  # Qt.LeftButton
    qtbot.waitUntil(lambda: w.controller is not None, timeout=WAIT_MS)


def test_complete_run_writes_file_and_feeds_live_view(qtbot, make_window, tmp_path):
    w = make_window(frames=40, delay_s=0.002)
    assert w.protocol.protocol == "bsbd"
    assert w.protocol.form.editors["frames"].get() == 40  # the form starts from the config
    out = tmp_path / "complete.h5"
    with qtbot.waitSignal(w.run_finished, timeout=WAIT_MS) as blocker:
        start(qtbot, w, out)
    result = blocker.args[0]
    assert result.status == "complete", result.error
    assert result.frames == 40
    assert w.camera.frames_shown > 0  # the observer sink reached the live view
    assert w.live_sink.received + result.dropped()["LiveViewSink-0"] == 40  # dropped ones are counted
    assert w.protocol.progress.value() == 40
    assert w.protocol.start_btn.isEnabled() and not w.protocol.abort_btn.isEnabled()
    assert w.dmd.current is not None and w.dmd.current.shape == (96, 128)  # DMD preview followed the run
    with RunReader(out) as r:
        assert r.status == "complete"
        assert r.n_frames == 40
        assert r.roles() == {"B": 20, "D": 10, "S": 10}
        assert r.attrs["started_from"] == "gui"
    qtbot.waitUntil(lambda: "complete" in w.log_pane.toPlainText(), timeout=WAIT_MS)


def test_pause_resume_abort_leaves_aborted_readable_file(qtbot, make_window, tmp_path):
    w = make_window(frames=2000, delay_s=0.01)
    out = tmp_path / "aborted.h5"
    start(qtbot, w, out)
    qtbot.waitUntil(lambda: w.protocol.progress.value() >= 5, timeout=WAIT_MS)
    assert not w.camera.snap_btn.isEnabled()  # the run owns the camera
    assert not w.dmd.controls.isEnabled()

    qtbot.mouseClick(w.protocol.pause_btn, 1)
    qtbot.waitUntil(lambda: w.protocol.resume_btn.isEnabled(), timeout=WAIT_MS)  # runner reported PAUSED
    assert "paused" in w.protocol.progress_label.text()
    done_paused = w.controller._runner.engine.camera.counter
    qtbot.wait(300)
    assert w.controller._runner.engine.camera.counter == done_paused  # nothing acquired while paused

    qtbot.mouseClick(w.protocol.resume_btn, 1)
    qtbot.waitUntil(lambda: w.controller._runner.engine.camera.counter > done_paused + 3, timeout=WAIT_MS)
    assert w.controller._runner.state is RunState.RUNNING

    with qtbot.waitSignal(w.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(w.protocol.abort_btn, 1)
    result = blocker.args[0]
    assert result.status == "aborted"
    assert 5 < result.frames < 2000
    with RunReader(out) as r:
        assert r.status == "aborted"
        assert r.n_frames == result.frames
        assert r.frames[r.n_frames - 1].shape == (48, 64)
    assert w.protocol.start_btn.isEnabled()
    assert w.camera.snap_btn.isEnabled()  # manual control is back


def test_closing_window_mid_run_aborts_and_closes_devices(qtbot, make_window, tmp_path):
    opened: list = []
    w = make_window(frames=2000, delay_s=0.01, opened=opened)
    w.show()
    out = tmp_path / "closed.h5"
    start(qtbot, w, out)
    qtbot.waitUntil(lambda: w.protocol.progress.value() >= 3, timeout=WAIT_MS)
    assert w.close() is False  # deferred: the run must end first
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=WAIT_MS)
    assert w.last_result is not None and w.last_result.status == "aborted"
    assert w.session.bench is None  # devices closed
    assert opened[0].pump.calls[-1] == "stop" and opened[0].dmd.t0 is None  # pump stopped, DMD halted
    with RunReader(out) as r:
        assert r.status == "aborted"
        assert 0 < r.n_frames < 2000
        assert np.asarray(r.frames[:]).shape[0] == r.n_frames


def test_invalid_parameters_are_refused_before_anything_moves(qtbot, make_window, tmp_path):
    w = make_window()
    w.protocol.form.editors["interval_s"].widget.setText("1e-6")  # shorter than the exposure
    out = tmp_path / "never.h5"
    w.protocol.out.setText(str(out))
    qtbot.mouseClick(w.protocol.start_btn, 1)
    assert "interval_s" in w.protocol.message.text()
    assert w.controller is None and not out.exists()
    time.sleep(0.05)
    assert w.protocol.start_btn.isEnabled()


def test_a_protocol_of_other_physics_is_refused_on_the_simulated_bench(qtbot, make_window, tmp_path):
    """The bench opened with the reflection physics of bsbd: speckle-SIM masks on it would record frames
    of no protocol, so Start names the fix instead of running."""
    w = make_window()
    w.protocol.combo.setCurrentText("speckle-sim")
    out = tmp_path / "never.h5"
    w.protocol.out.setText(str(out))
    qtbot.mouseClick(w.protocol.start_btn, 1)
    assert "start it with --set run.protocol=speckle-sim" in w.protocol.message.text()  # as gui.md says
    assert w.controller is None and not out.exists()


def test_existing_output_is_not_overwritten(qtbot, make_window, tmp_path):
    w = make_window()
    out = tmp_path / "exists.h5"
    out.write_bytes(b"keep me")
    w.protocol.out.setText(str(out))
    qtbot.mouseClick(w.protocol.start_btn, 1)
    assert "exists" in w.protocol.message.text()
    assert out.read_bytes() == b"keep me"


def start_while_preparing(qtbot, w: MainWindow, out):
    """Click Start while the device thread is busy: the run stays "being prepared" until the gate opens."""
    import threading

    gate = threading.Event()
    w.session.submit(gate.wait, 10)
    w.protocol.out.setText(str(out))
    qtbot.mouseClick(w.protocol.start_btn, 1)
    assert w.controller is None and w.protocol.pause_btn.isEnabled() and w.protocol.abort_btn.isEnabled()
    return gate


def test_abort_while_the_run_is_being_prepared_is_not_lost(qtbot, make_window, tmp_path):
    w = make_window(frames=2000, delay_s=0.01)
    gate = start_while_preparing(qtbot, w, tmp_path / "early-abort.h5")
    qtbot.mouseClick(w.protocol.abort_btn, 1)  # used to be ignored: the run then went on to the end
    with qtbot.waitSignal(w.run_finished, timeout=WAIT_MS) as blocker:
        gate.set()
    assert blocker.args[0].status == "aborted" and blocker.args[0].frames == 0


def test_pause_while_the_run_is_being_prepared_is_not_lost(qtbot, make_window, tmp_path):
    w = make_window(frames=2000, delay_s=0.01)
    gate = start_while_preparing(qtbot, w, tmp_path / "early-pause.h5")
    qtbot.mouseClick(w.protocol.pause_btn, 1)
    gate.set()
    qtbot.waitUntil(lambda: w.protocol.resume_btn.isEnabled(), timeout=WAIT_MS)  # the run starts paused
    assert w.controller._runner.engine.camera.counter == 0
    with qtbot.waitSignal(w.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(w.protocol.abort_btn, 1)
    assert blocker.args[0].status == "aborted" and blocker.args[0].frames == 0


def test_close_is_not_lost_when_the_result_arrives_before_the_run_thread_ends(qtbot, make_window, tmp_path):
    """The run thread reports its result, then still has to return: a deferred close must not wait on it."""
    w = make_window(frames=2000, delay_s=0.01)
    report = w.run_bridge.on_done

    def slow_to_return(result) -> None:
        report(result)
        time.sleep(0.5)  # the GUI handles the result while the run thread is still alive

    w.run_bridge.on_done = slow_to_return
    w.show()
    start(qtbot, w, tmp_path / "closed-late.h5")
    qtbot.waitUntil(lambda: w.protocol.progress.value() >= 3, timeout=WAIT_MS)
    assert w.close() is False
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=WAIT_MS)  # used to stay open for good
    assert w.last_result.status == "aborted" and w.session.bench is None
