"""Protocols: choose one, edit its parameters (form generated from its pydantic model), run it.

The panel only collects what to run and shows how it goes; the main window turns a
``start_requested`` into a run (``gui.app.MainWindow.start_run``) and feeds back progress. The
parameters start from the loaded config's values for each protocol, so the GUI and
``specklab acquire --config`` start from the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from acquisition.protocols import PROTOCOLS
from acquisition.runner import Progress, RunState
from acquisition.wiring import default_output
from gui.form import ModelForm


def format_eta(seconds: float | None) -> str:
    """``h:mm:ss`` (or ``–`` before a rate is known)."""
    if seconds is None:
        return "–"
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProtocolPanel(QWidget):
    """Protocol choice, parameter form, output file and run controls."""

    start_requested = pyqtSignal(str, dict, str)  # protocol, parameters, output path
    pause_requested = pyqtSignal()
    resume_requested = pyqtSignal()
    abort_requested = pyqtSignal()

    def __init__(self, config: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.combo = QComboBox()
        self.forms: dict[str, ModelForm] = {}
        self.stack = QStackedWidget()
        for name, spec in PROTOCOLS.items():
            form = ModelForm(spec.params, config.protocol_params(name))
            self.forms[name] = form
            self.combo.addItem(name)
            self.stack.addWidget(form)
        self.combo.currentIndexChanged.connect(self._on_protocol)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.stack)
        scroll.setMinimumHeight(240)

        self.out = QLineEdit()
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.resume_btn = QPushButton("Resume")
        self.abort_btn = QPushButton("Abort")
        self.start_btn.clicked.connect(self._start)
        self.pause_btn.clicked.connect(self.pause_requested)
        self.resume_btn.clicked.connect(self.resume_requested)
        self.abort_btn.clicked.connect(self.abort_requested)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m frames")
        self.progress_label = QLabel("idle")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #c00")

        head = QHBoxLayout()
        head.addWidget(QLabel("protocol"))
        head.addWidget(self.combo, 1)
        out_row = QHBoxLayout()
        out_row.addWidget(QLabel("output"))
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.pause_btn, self.resume_btn, self.abort_btn):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(scroll, 1)
        layout.addLayout(out_row)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.message)

        current = config.run.protocol
        self.combo.setCurrentText(current)
        self._on_protocol()
        self.set_state(None)
        self.set_bench_ready(False)

    # -- inputs ------------------------------------------------------------------------------------
    @property
    def protocol(self) -> str:
        return self.combo.currentText()

    @property
    def form(self) -> ModelForm:
        return self.forms[self.protocol]

    def _on_protocol(self, *_: object) -> None:
        self.stack.setCurrentWidget(self.form)
        self.out.setText(str(self.suggest_output()))

    def suggest_output(self) -> Path:
        """``specklab acquire``'s default output for the chosen protocol."""
        return default_output(self.config, self.protocol)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Run file", self.out.text(), "HDF5 run (*.h5)")
        if path:
            self.out.setText(path)

    def _start(self) -> None:
        self.message.setText("")
        try:
            params = self.form.values()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        out = self.out.text().strip()
        if not out:
            self.show_error("choose an output file")
            return
        self.start_requested.emit(self.protocol, params, out)

    def show_error(self, text: str) -> None:
        self.message.setText(text)

    # -- state -------------------------------------------------------------------------------------
    def set_bench_ready(self, ready: bool) -> None:
        self._ready = ready
        self.start_btn.setEnabled(ready and not self._running)

    def set_state(self, state: RunState | None) -> None:
        """Enable the buttons that make sense: None = no run, else the runner's state."""
        self._running = state in (RunState.IDLE, RunState.RUNNING, RunState.PAUSED)
        self.start_btn.setEnabled(getattr(self, "_ready", False) and not self._running)
        self.combo.setEnabled(not self._running)
        self.stack.setEnabled(not self._running)
        self.out.setEnabled(not self._running)
        self.pause_btn.setEnabled(state in (RunState.IDLE, RunState.RUNNING))
        self.resume_btn.setEnabled(state is RunState.PAUSED)
        self.abort_btn.setEnabled(self._running)

    def show_progress(self, p: Progress) -> None:
        self.progress.setMaximum(max(p.total, 1))
        self.progress.setValue(p.done)
        state = "paused" if p.state is RunState.PAUSED else str(p.state)
        self.progress_label.setText(
            f"{state}: {p.done}/{p.total} frames · {p.rate_hz:.1f} frames/s · "
            f"elapsed {format_eta(p.elapsed_s)} · ETA {format_eta(p.eta_s)}"
        )
        if p.state is not RunState.FINISHED:
            self.set_state(p.state)
