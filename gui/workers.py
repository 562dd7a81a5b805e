"""Bridges from worker threads (runner, sinks, device thread, logging) to Qt signals.

Why: Qt widgets may only be touched from the GUI thread. Everything that happens elsewhere
(a frame reaching the live-view sink, runner progress, a device call finishing on the
session's executor, a log record from any thread) is turned into a Qt signal here; signals
emitted from another thread are delivered to GUI-thread slots through the event loop (queued
connections), so no widget is ever touched from a worker.

Frames are throttled at the source (:class:`LiveViewSink`, default 30 Hz): a 1000 frame/s
replay or acquisition never floods the event loop, and the sink counts what it skipped.

The other direction, a worker that needs an answer from the operator (a manual sample holder's
``confirm(name, previous)`` during a speckle-SIM run), goes through :class:`MountConfirmer`: the
run thread emits a queued signal and blocks on a :class:`threading.Event` until the GUI thread's
modal dialog has answered (or the window closes, which answers False).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from PyQt5 import sip
from PyQt5.QtCore import QObject, Qt, pyqtSignal
from PyQt5.QtWidgets import QMessageBox, QWidget

from acquisition.events import Event
from acquisition.runner import Progress, RunResult
from acquisition.sinks import RunInfo
from devices.base import Frame

#: Refresh limit of every live display (frames and the DMD preview), in Hz.
DISPLAY_HZ = 30.0


class LiveViewSink(QObject):
    """An observer :class:`~acquisition.sinks.Sink` that forwards at most ``max_hz`` frames/s to Qt.

    The dispatcher already drops frames when this sink's queue is full; on top of that only one
    frame per display period is emitted (the others are counted in :attr:`skipped`). ``frame``
    runs on the sink's worker thread, so emitting is all it does.
    """

    frame_ready = pyqtSignal(object, object)  # Frame, Event | None

    def __init__(self, max_hz: float = DISPLAY_HZ, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.min_period_s = 1.0 / max_hz if max_hz > 0 else 0.0
        self.received = 0
        self.emitted = 0
        self._last = -float("inf")
        self._lock = threading.Lock()

    @property
    def skipped(self) -> int:
        return self.received - self.emitted

    # -- Sink protocol ---------------------------------------------------------------------------
    def setup(self, info: RunInfo) -> None:
        with self._lock:
            self.received = self.emitted = 0
            self._last = -float("inf")

    def frame(self, frame: Frame, event: Event | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.received += 1
            if now - self._last < self.min_period_s:
                return
            self._last = now
            self.emitted += 1
        self.frame_ready.emit(frame, event)

    def finish(self, status: str, error: str | None = None) -> None:
        """Nothing to do: the window learns the outcome from the runner (:class:`RunBridge`)."""


class RunBridge(QObject):
    """Runner callbacks (progress on the runner thread, the result at the end) as signals."""

    progress = pyqtSignal(object)  # Progress
    done = pyqtSignal(object)  # RunResult

    def on_progress(self, p: Progress) -> None:
        self.progress.emit(p)

    def on_done(self, result: RunResult) -> None:
        self.done.emit(result)


class TaskBridge(QObject):
    """Deliver the outcome of a :class:`concurrent.futures.Future` to GUI-thread callbacks.

    ``watch(future, on_ok, on_error)``: when the device thread finishes, ``on_ok(result)`` or
    ``on_error(text)`` runs on the GUI thread. Cancelled futures (session closing) are ignored.
    """

    _finished = pyqtSignal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        # queued even when the future is already done and the callback runs on the GUI thread:
        # the outcome always arrives from the event loop, never inside the caller's ``watch``
        self._finished.connect(self._deliver, Qt.QueuedConnection)

    def watch(
        self,
        future: Future[Any],
        on_ok: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> Future[Any]:
        future.add_done_callback(lambda f: self._finished.emit((f, on_ok, on_error)))
        return future

    def _deliver(self, item: tuple[Future[Any], Any, Any]) -> None:
        future, on_ok, on_error = item
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if on_error is not None:
                on_error(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                logging.getLogger("gui").error("device command failed: %s", exc)
        elif on_ok is not None:
            on_ok(future.result())


class LogEmitter(QObject):
    """Carries formatted log records (text, level number) to the log pane."""

    record = pyqtSignal(str, int)


class QtLogHandler(logging.Handler):
    """Python logging → a Qt signal; safe from any thread (the signal is queued to the GUI)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.emitter = LogEmitter()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        # RuntimeError: the emitter was deleted with the window, nothing left to show the record in
        with contextlib.suppress(RuntimeError):
            self.emitter.record.emit(self.format(record), record.levelno)


@dataclass
class _MountRequest:
    name: str
    previous: str | None
    answer: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def mount_question(name: str, previous: str | None) -> str:
    """The dialog's text: ``Mount sample X (previous: Y), then OK``."""
    before = repr(previous) if previous else "none"
    return f"Mount sample {name!r} (previous: {before}), then OK."


class MountConfirmer(QObject):
    """A :class:`~devices.sample_holder.ManualSampleHolder` ``confirm`` callback backed by a Qt dialog.

    :meth:`confirm` may be called from any thread (the run thread): it asks the GUI thread, through
    a queued signal, to show a modal OK/Cancel :class:`QMessageBox` and blocks until it is answered
    (OK → True, Cancel or closing the dialog → False). No widget is touched off the GUI thread.
    :meth:`cancel_pending` (an aborted run) answers a pending question False and closes its dialog;
    after :meth:`close` (the window closing) every question is answered False at once, so a run
    waiting for the operator always ends instead of hanging.
    """

    _ask = pyqtSignal(object)  # _MountRequest

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._gui_thread = threading.get_ident()  # created on the GUI thread
        self._lock = threading.Lock()
        self._pending: list[_MountRequest] = []
        self._closed = False
        self._box: QMessageBox | None = None
        self._ask.connect(self._show, Qt.QueuedConnection)

    @property
    def dialog(self) -> QMessageBox | None:
        """The question on screen now (GUI thread only), for tests and the window."""
        return self._box

    # -- any thread --------------------------------------------------------------------------------
    def confirm(self, name: str, previous: str | None) -> bool:
        """Ask the operator to mount ``name``; True once confirmed, False to stop the run."""
        req = _MountRequest(name, previous)
        with self._lock:
            if self._closed:
                return False
            self._pending.append(req)
        try:
            if threading.get_ident() == self._gui_thread:
                self._show(req)  # waiting here would deadlock the event loop that shows the dialog
            else:
                self._ask.emit(req)
                # the poll only guards against a confirmer deleted without close(): never hang a run
                while not req.done.wait(0.2):
                    if self._closed or sip.isdeleted(self):
                        break
        finally:
            with self._lock:
                if req in self._pending:
                    self._pending.remove(req)
        return req.answer

    # -- GUI thread --------------------------------------------------------------------------------
    def cancel_pending(self) -> None:
        """Answer every pending question False and close the dialog on screen."""
        with self._lock:
            pending = list(self._pending)
        for req in pending:
            self._answer(req, False)
        if self._box is not None:
            self._box.reject()

    def close(self) -> None:
        """The window is closing: no more dialogs, pending and future questions answer False."""
        with self._lock:
            self._closed = True
        self.cancel_pending()

    def _answer(self, req: _MountRequest, answer: bool) -> None:
        with self._lock:
            if not req.done.is_set():
                req.answer = answer
                req.done.set()

    def _show(self, req: _MountRequest) -> None:
        if req.done.is_set() or self._closed:
            self._answer(req, False)
            return
        parent = self.parent()
        box = QMessageBox(
            QMessageBox.Question,
            "Mount sample",
            mount_question(req.name, req.previous),
            QMessageBox.Ok | QMessageBox.Cancel,
            parent if isinstance(parent, QWidget) else None,
        )
        box.setDefaultButton(QMessageBox.Ok)
        box.setEscapeButton(QMessageBox.Cancel)
        self._box = box
        try:
            answer = box.exec_() == QMessageBox.Ok
        finally:
            self._box = None
            box.deleteLater()
        self._answer(req, answer)  # no-op when cancel_pending() answered first
