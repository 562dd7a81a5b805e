"""A manual sample holder asks the operator through the window's modal dialog, from the run thread."""

from __future__ import annotations

import contextlib
import threading

import pytest
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication, QMessageBox
from test_gui_helpers import fake_opener, small_config

from devices.base import SampleError
from devices.sample_holder import ManualSampleHolder
from gui.app import MainWindow

WAIT_MS = 10_000


def manual_holder_opener():
    """The fake bench with the real bench's ManualSampleHolder (no terminal callback)."""
    inner = fake_opener()

    @contextlib.contextmanager
    def opener(config):
        with inner(config) as bench:
            bench.sample_holder = ManualSampleHolder()
            yield bench

    return opener


def answer_dialog(action) -> tuple[QTimer, list[str]]:
    """Poll from the GUI event loop (also inside the dialog's own loop) and act on the modal question."""
    seen: list[str] = []
    timer = QTimer()  # the caller keeps it alive
    timer.setInterval(20)

    def poke() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            timer.stop()
            seen.append(box.text())
            action(box)

    timer.timeout.connect(poke)
    timer.start()
    return timer, seen


def mount_in_thread(holder: ManualSampleHolder, name: str) -> tuple[threading.Thread, list]:
    outcome: list = []

    def work() -> None:
        try:
            holder.mount(name)
            outcome.append(True)
        except SampleError as exc:
            outcome.append(exc)

    t = threading.Thread(target=work, name="fake-run", daemon=True)
    t.start()
    return t, outcome


@pytest.mark.timeout(60)
def test_manual_mount_asks_gui_dialog_from_worker_thread(qtbot, tmp_path):
    w = MainWindow(small_config(tmp_path), opener=manual_holder_opener(), pump_poll_ms=100)
    qtbot.addWidget(w)
    try:
        with qtbot.waitSignal(w.bench_ready, timeout=WAIT_MS) as blocker:
            pass
        assert blocker.args == [True]
        holder = w.session.bench.sample_holder
        assert holder.confirm == w.mount_confirmer.confirm  # wired to the dialog, not the terminal

        # OK → True: the worker is unblocked and the sample is mounted
        _timer, seen = answer_dialog(lambda box: box.button(QMessageBox.Ok).click())
        t, outcome = mount_in_thread(holder, "beads")
        qtbot.waitUntil(lambda: not t.is_alive(), timeout=WAIT_MS)
        assert outcome == [True] and holder.mounted == "beads"
        assert seen == ["Mount sample 'beads' (previous: none), then OK."]
        assert w.mount_confirmer.dialog is None

        # Cancel → False: the mount is refused (the engine turns it into a stopped run)
        _timer, seen = answer_dialog(lambda box: box.button(QMessageBox.Cancel).click())
        t, outcome = mount_in_thread(holder, "cells")
        qtbot.waitUntil(lambda: not t.is_alive(), timeout=WAIT_MS)
        assert isinstance(outcome[0], SampleError) and holder.mounted == "beads"
        assert seen == ["Mount sample 'cells' (previous: 'beads'), then OK."]

        # aborting the run while the question is pending → False and the dialog closes
        _timer, seen = answer_dialog(lambda box: w.abort_run("test abort"))
        t, outcome = mount_in_thread(holder, "cells")
        qtbot.waitUntil(lambda: not t.is_alive(), timeout=WAIT_MS)
        assert isinstance(outcome[0], SampleError) and len(seen) == 1

        # the window closes while the question is pending → False, dialog gone, nothing hangs
        _timer, seen = answer_dialog(lambda box: w.close())
        t, outcome = mount_in_thread(holder, "tissue")
        qtbot.waitUntil(lambda: not t.is_alive(), timeout=WAIT_MS)
        assert isinstance(outcome[0], SampleError) and holder.mounted == "beads"
        assert len(seen) == 1 and not w.isVisible() and w.session.bench is None
        qtbot.waitUntil(lambda: QApplication.activeModalWidget() is None, timeout=WAIT_MS)
        assert w.mount_confirmer.confirm("late", None) is False  # after closing: answered at once
    finally:
        w.shutdown()
