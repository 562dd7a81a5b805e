"""Pump: rate, direction, diameter, run/stop, and a status/alarm read-out polled once a second.

Polling goes through the session's device thread with at most one status query in flight, so
a pump that stops answering (timeouts of a second each) slows the read-out, never the window.
During a run the engine owns the pump settings (from the config), so the controls are disabled,
but the status keeps being polled: an alarm during a run is exactly what the operator must see.
"""

from __future__ import annotations

import logging

from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from devices.base import PumpStatus
from gui.session import BenchSession
from gui.workers import TaskBridge

log = logging.getLogger(__name__)


class PumpPanel(QWidget):
    """Manual pump control and status."""

    def __init__(
        self,
        session: BenchSession,
        tasks: TaskBridge,
        poll_ms: int = 1000,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.tasks = tasks
        self.polls = 0
        self._pending = False

        pcfg = session.config.devices.pump
        self.rate = QDoubleSpinBox()
        self.rate.setDecimals(3)
        self.rate.setRange(0.001, 10000.0)
        self.rate.setSuffix(" ml/h")
        self.rate.setValue(pcfg.rate_ml_per_h)
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(0.1, 50.0)
        self.diameter.setSuffix(" mm")
        self.diameter.setValue(pcfg.diameter_mm)
        self.direction = QComboBox()
        self.direction.addItems(["infuse", "withdraw"])
        self.direction.setCurrentText(pcfg.direction)
        apply_btn = QPushButton("Apply")
        apply_btn.clicked.connect(self.apply)
        self.run_btn = QPushButton("Run")
        self.run_btn.clicked.connect(self.run)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.clicked.connect(self.stop)

        box = QGroupBox("Settings")
        form = QFormLayout(box)
        form.addRow("rate", self.rate)
        form.addRow("syringe diameter", self.diameter)
        form.addRow("direction", self.direction)
        row = QHBoxLayout()
        for w in (apply_btn, self.run_btn, self.stop_btn):
            row.addWidget(w)
        form.addRow(row)
        self.controls = box

        self.status_label = QLabel("status: –")
        self.alarm_label = QLabel("")
        self.alarm_label.setStyleSheet("color: #c00; font-weight: bold")
        layout = QVBoxLayout(self)
        layout.addWidget(box)
        layout.addWidget(self.status_label)
        layout.addWidget(self.alarm_label)
        layout.addStretch(1)
        self.controls.setEnabled(False)

        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    def start_polling(self) -> None:
        self._timer.start()
        self.poll()

    def stop(self) -> None:
        self._command("stop", lambda p: p.stop())

    def run(self) -> None:
        self._command("run", lambda p: p.run())

    def apply(self) -> None:
        rate, dia, direction = self.rate.value(), self.diameter.value(), self.direction.currentText()

        def settings(p: object) -> None:
            p.set_diameter(dia)  # type: ignore[attr-defined]
            p.set_direction(direction)  # type: ignore[attr-defined]
            p.set_rate(rate)  # type: ignore[attr-defined]

        self._command(f"rate {rate:g} ml/h, {direction}, syringe {dia:g} mm", settings)

    def _command(self, what: str, action: object) -> None:
        def call() -> None:
            action(self.session.pump())  # type: ignore[operator]

        self.tasks.watch(
            self.session.submit(call),
            lambda _: (log.info("pump: %s", what), self.poll()),
            lambda t: log.error("pump %s failed: %s", what, t),
        )

    def poll(self) -> None:
        """Ask for the status on the device thread (skipped while the previous query is pending)."""
        if self._pending or not self.session.is_open or self.session.bench.pump is None:  # type: ignore[union-attr]
            return
        self._pending = True
        self.tasks.watch(self.session.submit(lambda: self.session.pump().status()), self._show, self._failed)

    def _show(self, s: PumpStatus) -> None:
        self._pending = False
        self.polls += 1
        state = "running" if s.running else "stopped"
        self.status_label.setText(
            f"{state}, {s.direction} at {s.rate_ml_per_h:g} ml/h, syringe {s.diameter_mm:g} mm, "
            f"dispensed {s.dispensed_ml:.4f} ml"
        )
        self.alarm_label.setText(f"ALARM: {s.alarm}" if s.alarm else "")

    def _failed(self, text: str) -> None:
        self._pending = False
        self.status_label.setText("status: no answer")
        self.alarm_label.setText(text)

    def set_run_active(self, active: bool) -> None:
        self.controls.setEnabled(not active and self.session.is_open)

    def shutdown(self) -> None:
        self._timer.stop()
