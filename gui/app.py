"""The main window: wires the panels to one :class:`BenchSession` and runs protocols in a worker.

Responsibilities kept here (and nothing else): opening the bench off the GUI thread, turning a
protocol panel request into a run (:class:`gui.run_control.RunController`), routing runner and
live-view signals to the panels, the log pane, and a clean close: closing the window during a
run aborts it, waits (without blocking the event loop) for the runner to close the file as
``aborted``, then closes the devices.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PyQt5.QtCore import QSettings, Qt, pyqtSignal
from PyQt5.QtGui import QCloseEvent, QColor
from PyQt5.QtWidgets import (
    QDockWidget,
    QMainWindow,
    QPlainTextEdit,
    QTabWidget,
)

from acquisition.config import ConfigError
from acquisition.events import Event, Plan
from acquisition.runner import Progress, RunResult, RunState
from devices.base import Frame
from gui.camera_panel import CameraPanel
from gui.dmd_panel import DmdPanel
from gui.layout import clear_layout, named_splitter, restore_layout, save_layout
from gui.protocol_panel import ProtocolPanel
from gui.pump_panel import PumpPanel
from gui.replay_panel import ReplayPanel
from gui.results_panel import ResultsPanel
from gui.run_control import RunController
from gui.session import BenchOpener, BenchSession, default_opener
from gui.wiring import PreparedRun, config_with_protocol, prepare_run
from gui.workers import LiveViewSink, MountConfirmer, QtLogHandler, RunBridge, TaskBridge

log = logging.getLogger("gui")

LEVEL_COLOURS = {logging.WARNING: "#b36b00", logging.ERROR: "#c00000", logging.CRITICAL: "#c00000"}


class LogPane(QPlainTextEdit):
    """Read-only, bounded view of the Python log (records arrive through :class:`QtLogHandler`)."""

    def __init__(self, max_lines: int = 5000) -> None:
        super().__init__()
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)

    def append_record(self, text: str, level: int) -> None:
        colour = next((c for lvl, c in sorted(LEVEL_COLOURS.items(), reverse=True) if level >= lvl), None)
        fmt = self.currentCharFormat()
        fmt.setForeground(QColor(colour) if colour else self.palette().text().color())
        self.setCurrentCharFormat(fmt)
        self.appendPlainText(text)


class MainWindow(QMainWindow):
    """specklab control panel."""

    bench_ready = pyqtSignal(bool)  # True: opened, False: failed
    run_finished = pyqtSignal(object)  # RunResult

    def __init__(
        self,
        config: Any,
        config_path: str | Path | None = None,
        *,
        opener: BenchOpener = default_opener,
        open_bench: bool = True,
        pump_poll_ms: int = 1000,
        settings: QSettings | None = None,
        reset_layout: bool = False,
    ) -> None:
        """``settings``: where the window layout is restored from and saved to on close
        (:mod:`gui.layout`; None: nothing saved); ``reset_layout``: start from the default
        layout and forget the saved one."""
        super().__init__()
        self.setWindowTitle(f"specklab — {config_path or 'default simulated bench'}")
        self.session = BenchSession(config, config_path, opener)
        self.tasks = TaskBridge(self)
        self.live_sink = LiveViewSink(parent=self)
        self.run_bridge = RunBridge(self)
        self.mount_confirmer = MountConfirmer(self)  # a manual sample holder asks through a dialog
        self.controller: RunController | None = None
        self.prepared: PreparedRun | None = None
        self.last_result: RunResult | None = None
        self._plan: Plan | None = None
        self._close_pending = False
        self._preparing = False  # a start was requested, the run is being prepared on the device thread
        self._early_pause = False  # Pause pressed while preparing: the run starts paused
        self._early_abort: str | None = None  # Abort pressed (or window closed) while preparing
        self._shut = False

        self.camera = CameraPanel(self.session, self.tasks)
        self.dmd = DmdPanel(self.session, self.tasks, config.dmd_shape)
        self.pump = PumpPanel(self.session, self.tasks, poll_ms=pump_poll_ms)
        self.protocol = ProtocolPanel(config)
        self.replay = ReplayPanel()
        self.results = ResultsPanel()

        devices = QTabWidget()
        devices.setObjectName("device_tabs")  # saved window layout (gui.layout.TABS, SPLITTERS)
        devices.addTab(self.dmd, "DMD")
        devices.addTab(self.pump, "Pump")
        right = named_splitter("bench_right", Qt.Vertical, [self.protocol, devices], stretch=(3, 2))
        bench = named_splitter("bench", Qt.Horizontal, [self.camera, right], stretch=(3, 2))
        self.tabs = QTabWidget()
        self.tabs.setObjectName("main_tabs")
        self.tabs.addTab(bench, "Bench")
        self.tabs.addTab(self.replay, "Replay")
        self.tabs.addTab(self.results, "Results")
        self.setCentralWidget(self.tabs)

        self.log_pane = LogPane()
        dock = QDockWidget("Log", self)
        dock.setObjectName("log")
        dock.setWidget(self.log_pane)
        self.addDockWidget(Qt.BottomDockWidgetArea, dock)
        self._log_handler = QtLogHandler()
        self._log_handler.emitter.record.connect(self.log_pane.append_record)
        root = logging.getLogger()
        self._root_level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        root.addHandler(self._log_handler)

        self.live_sink.frame_ready.connect(self._on_live_frame)
        self.run_bridge.progress.connect(self._on_progress)
        self.run_bridge.done.connect(self._on_run_done)
        self.protocol.start_requested.connect(self.start_run)
        self.protocol.pause_requested.connect(self.pause_run)
        self.protocol.resume_requested.connect(self.resume_run)
        self.protocol.abort_requested.connect(self.abort_run)
        self.replay.run_opened.connect(self.results.show_run)
        self.replay.writing = self._files_being_written

        self.statusBar().showMessage(f"config {self.session.text_source}: opening the bench…")
        self.resize(1400, 900)
        self.settings = settings
        if settings is not None:
            if reset_layout:
                clear_layout(settings)
            else:
                restore_layout(self, settings)
        if open_bench:
            self.open_bench()

    # -- bench -------------------------------------------------------------------------------------
    def open_bench(self) -> None:
        """Open the devices on the device thread; panels are enabled when they are open."""
        self.tasks.watch(self.session.submit(self.session.open), self._bench_opened, self._bench_failed)

    def _bench_opened(self, bench: Any) -> None:
        kinds = ", ".join(f"{k}: {v}" for k, v in bench.kinds.items()) or "custom devices"
        self._attach_sample_holder(bench)
        self.statusBar().showMessage(f"config {self.session.text_source} · bench open ({kinds})")
        self.camera.set_enabled_devices(True)
        self.camera.refresh_settings()
        self.dmd.set_run_active(False)
        self.pump.set_run_active(False)
        self.pump.start_polling()
        self.protocol.set_bench_ready(True)
        self.bench_ready.emit(True)

    def _attach_sample_holder(self, bench: Any) -> None:
        """A manual sample holder asks the operator through this window's dialog (not the terminal)."""
        from devices.sample_holder import ManualSampleHolder

        holder = getattr(bench, "sample_holder", None)
        if isinstance(holder, ManualSampleHolder):
            holder.confirm = self.mount_confirmer.confirm
            log.info("sample mounts will be confirmed in a dialog")

    def _bench_failed(self, text: str) -> None:
        log.error("the bench could not be opened: %s (replay and results still work)", text)
        self.statusBar().showMessage(f"config {self.session.text_source} · no bench: {text}")
        self.bench_ready.emit(False)

    # -- runs --------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.running

    def start_run(self, protocol: str, params: dict[str, Any], out: str) -> None:
        """Validate, prepare on the device thread, then run in the background (never blocks)."""
        if self.running:
            self.protocol.show_error("a run is already in progress")
            return
        try:
            cfg = config_with_protocol(self.session.config, protocol, params)
        except ConfigError as exc:
            self.protocol.show_error(str(exc))
            log.error("%s", exc)
            return
        path = Path(out)
        if path.exists():
            self.protocol.show_error(f"{path} exists: choose another output file")
            return
        self.protocol.set_state(RunState.IDLE)
        self.camera.set_run_active(True)  # no new snaps: the run is about to take the camera
        self._preparing = True
        self._early_pause, self._early_abort = False, None

        def prepare() -> PreparedRun:
            with self.session.devices() as bench:
                return prepare_run(cfg, bench, path, config_path=self.session.config_path)

        self.tasks.watch(self.session.submit(prepare), self._launch, self._prepare_failed)

    def _prepare_failed(self, text: str) -> None:
        self._preparing = False
        self.protocol.show_error(f"cannot start: {text}")
        log.error("cannot start the run: %s", text)
        self._set_run_active(False)
        if self._close_pending:
            self.close()

    def _launch(self, prepared: PreparedRun) -> None:
        self._preparing = False
        self.prepared = prepared
        self._plan = prepared.plan
        self._set_run_active(True)
        self.controller = RunController(
            self.session,
            prepared,
            observers=[self.live_sink],
            on_progress=self.run_bridge.on_progress,
            on_done=self.run_bridge.on_done,
        )
        self.protocol.progress.setMaximum(max(len(prepared.plan.events), 1))
        self.protocol.progress.setValue(0)
        if self._early_pause:
            self.controller.pause()
        if self._early_abort is not None:  # aborted or closed while the run was being prepared
            self.controller.abort(self._early_abort)
        self.controller.start()

    def _files_being_written(self) -> set[Path]:
        if self.running and self.prepared is not None:
            return {self.prepared.out.resolve()}
        return set()

    def pause_run(self) -> None:
        if self._preparing:
            self._early_pause = True
        elif self.controller is not None:
            self.controller.pause()
            log.info("pausing the run")

    def resume_run(self) -> None:
        if self._preparing:
            self._early_pause = False
        elif self.controller is not None:
            self.controller.resume()
            log.info("resuming the run")

    def abort_run(self, reason: str = "aborted by user") -> None:
        self.mount_confirmer.cancel_pending()  # a run waiting for a sample mount gets "no"
        if self._preparing:
            self._early_abort = reason
            log.info("aborting the run (still being prepared)")
        elif self.controller is not None:
            self.controller.abort(reason)
            log.info("aborting the run")

    def _set_run_active(self, active: bool) -> None:
        self.camera.set_run_active(active)
        self.dmd.set_run_active(active)
        self.pump.set_run_active(active)
        self.protocol.set_state(RunState.IDLE if active else None)

    def _on_live_frame(self, frame: Frame, event: Event | None) -> None:
        self.camera.show_frame(frame, event)
        self.dmd.show_event(self._plan, event)

    def _on_progress(self, p: Progress) -> None:
        self.protocol.show_progress(p)

    def _on_run_done(self, result: RunResult) -> None:
        self.last_result = result
        self._set_run_active(False)
        out = self.prepared.out if self.prepared is not None else None
        text = f"run {result.status}: {result.frames}/{result.total} frames → {out}"
        if result.error:
            text += f" ({result.error})"
        self.protocol.progress_label.setText(text)
        if result.status == "failed":
            self.protocol.show_error(result.error or "run failed")
        self.statusBar().showMessage(text)
        if out is not None:
            self.replay.path.setText(str(out))
        self.protocol.out.setText(str(self.protocol.suggest_output()))
        self.run_finished.emit(result)
        if self._close_pending:
            self.close()

    # -- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.running or self._preparing:
            self._close_pending = True
            self.abort_run("window closed during the run")
            self.statusBar().showMessage("aborting the run before closing…")
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop timers, close the replayed file and the devices, detach the log handler; idempotent."""
        if self._shut:
            return
        self._shut = True
        if self.settings is not None:
            save_layout(self, self.settings)
        self.mount_confirmer.close()  # before joining: a run waiting for a mount must not hang us
        if self.controller is not None and self.controller.running:
            self.controller.abort("control panel shut down")
            self.controller.join(30.0)
        self.camera.shutdown()
        self.pump.shutdown()
        self.replay.close_run()
        self.session.close()
        root = logging.getLogger()
        root.removeHandler(self._log_handler)
        root.setLevel(self._root_level)
