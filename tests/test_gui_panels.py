"""Device panels, the generated form, manual patterns and the ``specklab gui`` subcommand."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox
from test_gui_helpers import DMD_SHAPE, fake_opener, small_config

from acquisition.protocols import PROTOCOLS
from gui import patterns
from gui.app import MainWindow
from gui.form import ModelForm

WAIT_MS = 10_000


@pytest.fixture
def window(qtbot, tmp_path):
    opened: list = []
    w = MainWindow(small_config(tmp_path), opener=fake_opener(opened=opened), pump_poll_ms=50)
    w.opened = opened
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.bench_ready, timeout=WAIT_MS):
        pass
    yield w
    w.shutdown()


# -- patterns and form (no bench) -------------------------------------------------------------------
def test_manual_patterns():
    shape = (20, 30)
    assert not patterns.all_off(shape).any()
    t = patterns.target_at(shape, x=10, y=5, size_px=3)
    rows, cols = np.nonzero(t)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 6, 9, 11)
    assert patterns.target_at(shape, x=-50, y=5).sum() == 0  # off the DMD: nothing, no error
    m = patterns.random_mask((64, 64), fill_fraction=0.25, macro_pixel_px=4, seed=3)
    assert set(np.unique(m)) <= {0, 255}
    assert 0.1 < (m > 0).mean() < 0.4
    np.testing.assert_array_equal(m, patterns.random_mask((64, 64), 0.25, 4, seed=3))  # seeded
    blocks = m.reshape(16, 4, 16, 4)
    assert (blocks == blocks[:, :1, :, :1]).all()  # constant over each macro pixel
    with pytest.raises(ValueError):
        patterns.random_mask(shape, fill_fraction=1.5)


def test_image_file_pattern(tmp_path):
    arr = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) % 256
    np.save(tmp_path / "p.npy", arr)
    np.testing.assert_array_equal(patterns.from_image_file(tmp_path / "p.npy", (20, 30)), arr)
    with pytest.raises(ValueError, match="DMD"):
        patterns.from_image_file(tmp_path / "p.npy", (10, 10))
    # unusable .npy files are a ValueError (the DMD panel logs it) not EOFError/TypeError into a slot
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "text.npy", np.full((20, 30), "a"))
    with open(tmp_path / "npz.npy", "wb") as f:
        np.savez(f, a=arr)  # a zip archive named .npy: np.load returns an NpzFile
    for bad in ("empty.npy", "text.npy", "npz.npy"):
        with pytest.raises(ValueError, match=bad):
            patterns.from_image_file(tmp_path / bad, (20, 30))
    from PyQt5.QtGui import QImage

    img = QImage(60, 40, QImage.Format_Grayscale8)
    img.fill(200)
    img.save(str(tmp_path / "p.png"))
    out = patterns.from_image_file(tmp_path / "p.png", (20, 30))
    assert out.shape == (20, 30) and out.dtype == np.uint8 and int(out.mean()) == 200


def test_form_is_generated_from_the_protocol_models(qtbot):
    for name, spec in PROTOCOLS.items():
        form = ModelForm(spec.params)
        qtbot.addWidget(form)
        assert set(form.editors) == set(spec.params.model_fields), name
        assert spec.params.model_validate(form.values()) == spec.params(), name  # defaults round-trip
    gen = ModelForm(PROTOCOLS["generalisation"].params)
    qtbot.addWidget(gen)
    assert isinstance(gen.editors["case"].widget, QComboBox)  # Literal → combo
    assert isinstance(gen.editors["binarise_digits"].widget, QCheckBox)  # bool → check box
    assert isinstance(gen.editors["n_train"].widget, QSpinBox)  # int → spin box
    assert isinstance(gen.editors["dense_set"].widget, QLineEdit)  # nested model → JSON
    bsbd = ModelForm(PROTOCOLS["bsbd"].params)
    qtbot.addWidget(bsbd)
    assert bsbd.editors["frames"].widget.minimum() == 1  # ge=1 became the spin box limit
    bsbd.editors["exposure_s"].widget.setText("5e-4")
    bsbd.editors["centre_px"].widget.setText("[10, 20]")
    v = bsbd.validated()
    assert v.exposure_s == 5e-4 and v.centre_px == (10.0, 20.0)
    bsbd.editors["centre_px"].widget.setText("[10, ")
    with pytest.raises(ValueError, match="centre_px"):
        bsbd.values()


# -- device panels on the fake bench ----------------------------------------------------------------
def test_camera_snap_live_and_pixel_readout(qtbot, window):
    cam = window.camera
    qtbot.waitUntil(lambda: cam.exposure_ms.value() == pytest.approx(1.0), timeout=WAIT_MS)  # read back
    qtbot.mouseClick(cam.snap_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: cam.frames_shown == 1, timeout=WAIT_MS)
    assert cam.last_frame.image.shape == (DMD_SHAPE[0] // 2, DMD_SHAPE[1] // 2)
    x, y, value = cam.pixel_at(3.5, 2.2)
    assert (x, y) == (3, 2) and value == int(cam.last_frame.image[2, 3])
    assert cam.pixel_at(-1, 0) is None
    cam.live_btn.setChecked(True)
    qtbot.waitUntil(lambda: cam.frames_shown >= 5, timeout=WAIT_MS)
    cam.live_btn.setChecked(False)
    assert "frames/s" in cam.rate_label.text()

    cam.exposure_ms.setValue(2.5)
    cam.apply_settings()
    qtbot.waitUntil(lambda: window.opened[0].camera.exposure_s == pytest.approx(2.5e-3), timeout=WAIT_MS)


def test_dmd_manual_patterns_reach_the_device(qtbot, window):
    dmd_panel, dmd = window.dmd, window.opened[0].dmd
    assert dmd_panel.controls.isEnabled()
    dmd_panel.tx.setValue(40)
    dmd_panel.ty.setValue(30)
    dmd_panel.tsize.setValue(3)
    dmd_panel.show_target()
    qtbot.waitUntil(lambda: dmd_panel.state.startswith("static: target"), timeout=WAIT_MS)
    shown = dmd.patterns[0]
    np.testing.assert_array_equal(shown, patterns.target_at(DMD_SHAPE, 40, 30, 3))
    np.testing.assert_array_equal(dmd_panel.current, shown)  # the preview is what the DMD got
    dmd_panel.show_random()
    qtbot.waitUntil(lambda: dmd_panel.state.startswith("static: random"), timeout=WAIT_MS)
    assert dmd.uploads == 2
    dmd_panel.halt()
    qtbot.waitUntil(lambda: dmd_panel.state == "halted", timeout=WAIT_MS)
    assert dmd.t0 is None


def test_pump_panel_commands_and_status(qtbot, window):
    pump_panel, pump = window.pump, window.opened[0].pump
    qtbot.waitUntil(lambda: pump_panel.polls >= 1, timeout=WAIT_MS)
    assert "stopped" in pump_panel.status_label.text()
    pump_panel.rate.setValue(3.5)
    pump_panel.apply()
    qtbot.mouseClick(pump_panel.run_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: "running" in pump_panel.status_label.text(), timeout=WAIT_MS)
    assert pump.rate == 3.5 and pump.running
    qtbot.mouseClick(pump_panel.stop_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: "stopped" in pump_panel.status_label.text(), timeout=WAIT_MS)
    assert not pump.running and pump_panel.alarm_label.text() == ""


def test_bench_that_fails_to_open_leaves_replay_usable(qtbot, tmp_path):
    def broken(config):
        raise RuntimeError("no DMD on USB")

    w = MainWindow(small_config(tmp_path), opener=broken)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.bench_ready, timeout=WAIT_MS) as blocker:
        pass
    assert blocker.args == [False]
    assert "no DMD on USB" in w.statusBar().currentMessage()
    assert not w.protocol.start_btn.isEnabled() and not w.camera.snap_btn.isEnabled()
    assert w.replay.isEnabled()
    qtbot.waitUntil(lambda: "no DMD on USB" in w.log_pane.toPlainText(), timeout=WAIT_MS)
    w.shutdown()


def test_closing_while_the_bench_is_still_opening_closes_it_later(tmp_path):
    """A window closed while a slow bench opens (Micro-Manager, ALP) must not leave the devices open."""
    import contextlib
    import threading
    import time

    from gui.session import BenchSession

    inner, states = fake_opener(), []
    release = threading.Event()

    @contextlib.contextmanager
    def slow(config):
        release.wait(5)
        with inner(config) as bench:
            states.append("open")
            yield bench
        states.append("closed")

    session = BenchSession(small_config(tmp_path), opener=slow)
    session.submit(session.open)
    session.close(timeout_s=0.05)  # gives up waiting: the bench is still opening
    release.set()
    deadline = time.monotonic() + 5
    while states != ["open", "closed"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert states == ["open", "closed"]  # the queued close used to be cancelled: devices left open
    assert session.bench is None


# -- command line ----------------------------------------------------------------------------------
def test_gui_subcommand_is_registered_and_rejects_bad_config(tmp_path, capsys):
    from acquisition.cli import build_parser, main

    args = build_parser().parse_args(["gui", "--config", "x.toml", "--set", "frames=3"])
    assert args.command == "gui" and args.config == "x.toml" and args.set == ["frames=3"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nprotocoll = 'bsbd'\n")
    assert main(["gui", "--config", str(bad)]) == 2
    assert "protocoll" in capsys.readouterr().err


def test_an_error_escaping_a_slot_is_logged_not_fatal(qtbot, tmp_path, monkeypatch):
    """Under ``specklab gui`` an exception out of a slot goes to the log pane; PyQt5 used to abort()."""
    import sys
    from pathlib import Path

    from PyQt5.QtCore import QSettings, QStandardPaths
    from PyQt5.QtWidgets import QApplication, QPushButton

    from acquisition.cli import main
    from gui import cli as gui_cli

    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(tmp_path / "config"))
    hook_before = sys.excepthook
    seen: dict = {}
    quit_calls: list[int] = []
    monkeypatch.setattr(QApplication, "quit", lambda: quit_calls.append(1))

    def fake_exec(app) -> int:
        w = next(x for x in QApplication.topLevelWidgets() if isinstance(x, MainWindow) and x.isVisible())
        seen["hook"] = sys.excepthook
        button = QPushButton()
        button.clicked.connect(lambda: 1 / 0)
        button.click()  # PyQt5 hands the ZeroDivisionError to sys.excepthook
        qtbot.waitUntil(lambda: "ZeroDivisionError" in w.log_pane.toPlainText(), timeout=WAIT_MS)
        sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)  # Ctrl-C: quit (then shut down)
        assert w.close()
        return 0

    monkeypatch.setattr(QApplication, "exec_", fake_exec)
    repo = Path(__file__).resolve().parents[1]
    try:
        assert main(["gui", "--no-bench", "--config", str(repo / "configs" / "sim-bench.toml")]) == 0
    finally:
        QSettings.setPath(
            QSettings.NativeFormat,
            QSettings.UserScope,
            QStandardPaths.writableLocation(QStandardPaths.GenericConfigLocation),
        )
    assert seen["hook"] is gui_cli.log_unhandled and quit_calls == [1]
    assert sys.excepthook is hook_before  # restored when the window has closed


def test_rate_meter_counts_a_window_not_bursts():
    from gui.camera_panel import RateMeter

    m = RateMeter(window_s=1.0)
    for k in range(31):  # 30 Hz for one second, delivered in bursts of 3 within 1 ms
        m.tick(now=(k // 3) * 0.1 + (k % 3) * 0.0005)
    assert 25 < m.rate_hz < 35
