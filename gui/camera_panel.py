"""Camera: live view (levels, histogram, colour map, pixel read-out), exposure, ROI, binning, frame rate.

Idle, the panel snaps frames on the session's device thread (one snap in flight at a time, at
most :data:`gui.workers.DISPLAY_HZ` per second); during a run the main window feeds it the
frames of the live-view sink instead, and the camera controls are disabled (the run owns the
camera). Every device call goes through :meth:`BenchSession.submit`, never the Qt thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QPointF, QTimer
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from acquisition.events import Event
from devices.base import Frame
from gui.session import BenchSession
from gui.workers import DISPLAY_HZ, TaskBridge

log = logging.getLogger(__name__)

COLOUR_MAPS = ("grey", "viridis", "inferno", "magma", "CET-L8")


def make_image_view(name: str) -> pg.ImageView:
    """An ImageView in row-major order (numpy (rows, cols) shows as the camera sees it).

    ImageView registers its ViewBoxes by name for axis linking (which we do not use) and hooks a
    Python lambda on their ``destroyed`` signal; with several windows over a process (tests) that
    lambda runs on half-deleted objects and crashes PyQt5. The views are therefore unregistered
    and the hook disconnected right away.
    """
    view = pg.ImageView(name=f"{name}-{id(object())}")
    view.getImageItem().setOpts(axisOrder="row-major")
    for vb in (view.view, view.ui.roiPlot.getPlotItem().getViewBox()):
        with contextlib.suppress(TypeError, RuntimeError):
            vb.destroyed.disconnect()
        with contextlib.suppress(KeyError):
            vb.unregister()
    view.ui.roiBtn.hide()
    view.ui.menuBtn.hide()
    return view


def set_colour_map(view: pg.ImageView, name: str) -> None:
    if name == "grey":
        view.setColorMap(pg.ColorMap([0.0, 1.0], [(0, 0, 0), (255, 255, 255)]))
    else:
        view.setColorMap(pg.colormap.get(name))


class RateMeter:
    """Calls to :meth:`tick` per second over the last ``window_s`` (frames shown per second).

    A window count, not a smoothed 1/dt: queued frames often arrive in bursts, and averaging
    instantaneous rates of a burst reports hundreds of frames/s for a 30 Hz display.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        return self.rate_hz

    @property
    def rate_hz(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class CameraPanel(QWidget):
    """Live image plus camera settings; ``show_frame`` is the one entry point for images."""

    def __init__(self, session: BenchSession, tasks: TaskBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.tasks = tasks
        self.frames_shown = 0
        self.last_frame: Frame | None = None
        self._image: np.ndarray | None = None
        self._snap_pending = False
        self._run_active = False
        self._display_rate = RateMeter()
        self._prev: Frame | None = None
        self.camera_rate_hz = 0.0

        self.view = make_image_view("camera")
        self.readout = QLabel("x –, y –: –")
        self.rate_label = QLabel("– frames/s")
        self.view.scene.sigMouseMoved.connect(self._on_mouse)

        self.live_btn = QPushButton("Live")
        self.live_btn.setCheckable(True)
        self.live_btn.toggled.connect(self._on_live)
        self.snap_btn = QPushButton("Snap")
        self.snap_btn.clicked.connect(self.request_snap)
        self.auto_levels = QCheckBox("auto levels")
        self.cmap = QComboBox()
        self.cmap.addItems(COLOUR_MAPS)
        self.cmap.currentTextChanged.connect(lambda n: set_colour_map(self.view, n))

        self.exposure_ms = QDoubleSpinBox()
        self.exposure_ms.setDecimals(3)
        self.exposure_ms.setRange(0.001, 30000.0)
        self.exposure_ms.setSuffix(" ms")
        self.roi = [QSpinBox() for _ in range(4)]
        for s in self.roi:
            s.setRange(0, 65535)
        self.binning = QComboBox()
        self.binning.addItems(["1", "2", "4", "8"])
        apply_btn = QPushButton("Apply")
        apply_btn.clicked.connect(self.apply_settings)
        full_btn = QPushButton("Full sensor")
        full_btn.clicked.connect(self.clear_roi)

        settings = QGroupBox("Camera")
        grid = QGridLayout(settings)
        grid.addWidget(QLabel("exposure"), 0, 0)
        grid.addWidget(self.exposure_ms, 0, 1)
        grid.addWidget(QLabel("binning"), 0, 2)
        grid.addWidget(self.binning, 0, 3)
        grid.addWidget(QLabel("ROI x, y, w, h"), 1, 0)
        roi_row = QHBoxLayout()
        for s in self.roi:
            roi_row.addWidget(s)
        grid.addLayout(roi_row, 1, 1, 1, 3)
        grid.addWidget(apply_btn, 2, 2)
        grid.addWidget(full_btn, 2, 3)
        self.settings_box = settings

        top = QHBoxLayout()
        for w in (self.live_btn, self.snap_btn, self.auto_levels, QLabel("colour map"), self.cmap):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.rate_label)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.readout)
        layout.addWidget(settings)

        set_colour_map(self.view, "grey")
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / DISPLAY_HZ))
        self._timer.timeout.connect(self._on_timer)
        self.set_enabled_devices(False)

    # -- frames ------------------------------------------------------------------------------------
    def show_frame(self, frame: Frame, event: Event | None = None) -> None:
        """Display one frame (GUI thread); keeps the levels unless auto levels is on or it is the first."""
        first = self._image is None or self._image.shape != frame.image.shape
        self._image = frame.image
        self.view.setImage(
            frame.image,
            autoLevels=first or self.auto_levels.isChecked(),
            autoRange=first,
            autoHistogramRange=first or self.auto_levels.isChecked(),
        )
        self.frames_shown += 1
        self.last_frame = frame
        rate = self._display_rate.tick()
        if self._prev is not None and frame.timestamp_s > self._prev.timestamp_s:
            n = frame.frame_number - self._prev.frame_number
            self.camera_rate_hz = n / (frame.timestamp_s - self._prev.timestamp_s)
        self._prev = frame
        role = f" {event.role}#{event.index}" if event is not None else ""
        self.rate_label.setText(
            f"camera {self.camera_rate_hz:.1f} frames/s · shown {rate:.1f}/s · "
            f"frame {frame.frame_number}{role}"
        )

    def pixel_at(self, x: float, y: float) -> tuple[int, int, int] | None:
        """(column, row, value) of the shown image at image coordinates, None outside it."""
        if self._image is None:
            return None
        c, r = int(np.floor(x)), int(np.floor(y))
        rows, cols = self._image.shape[:2]
        if 0 <= r < rows and 0 <= c < cols:
            return c, r, int(self._image[r, c])
        return None

    def _on_mouse(self, pos: QPointF) -> None:
        p = self.view.getImageItem().mapFromScene(pos)
        hit = self.pixel_at(p.x(), p.y())
        if hit is not None:
            self.readout.setText(f"x {hit[0]}, y {hit[1]}: {hit[2]} ADU")

    # -- idle live view ----------------------------------------------------------------------------
    def _on_live(self, on: bool) -> None:
        if on:
            self._timer.start()
        else:
            self._timer.stop()

    def _on_timer(self) -> None:
        if not self._snap_pending and not self._run_active:
            self.request_snap()

    def request_snap(self) -> None:
        """Snap one frame on the device thread; the result arrives through :meth:`show_frame`."""
        if self._snap_pending or self._run_active or not self.session.is_open:
            return
        self._snap_pending = True

        def snap() -> Frame:
            with self.session.devices() as bench:
                return bench.camera.snap()

        self.tasks.watch(self.session.submit(snap), self._snapped, self._snap_failed)

    def _snapped(self, frame: Frame) -> None:
        self._snap_pending = False
        self.show_frame(frame)

    def _snap_failed(self, text: str) -> None:
        self._snap_pending = False
        if self.live_btn.isChecked():
            self.live_btn.setChecked(False)
        log.warning("camera snap failed: %s", text)

    # -- settings ----------------------------------------------------------------------------------
    def refresh_settings(self) -> None:
        """Read exposure/ROI/binning back from the camera (device thread) into the widgets."""

        def read() -> dict[str, Any]:
            with self.session.devices() as bench:
                cam = bench.camera
                return {"exposure_s": cam.exposure_s, "roi": cam.roi, "binning": cam.binning}

        self.tasks.watch(
            self.session.submit(read), self._show_settings, lambda t: log.warning("camera: %s", t)
        )

    def _show_settings(self, s: dict[str, Any]) -> None:
        self.exposure_ms.setValue(s["exposure_s"] * 1e3)
        for box, v in zip(self.roi, s["roi"], strict=True):
            box.setValue(int(v))
        i = self.binning.findText(str(s["binning"]))
        if i >= 0:
            self.binning.setCurrentIndex(i)

    def apply_settings(self) -> None:
        exposure_s = self.exposure_ms.value() / 1e3
        roi = tuple(s.value() for s in self.roi)
        binning = int(self.binning.currentText())

        def apply() -> None:
            with self.session.devices() as bench:
                cam = bench.camera
                cam.set_exposure(exposure_s)
                if tuple(cam.roi) != roi:
                    cam.set_roi(*roi)
                if cam.binning != binning:
                    cam.set_binning(binning)
            log.info("camera: exposure %.3f ms, ROI %s, binning %d", exposure_s * 1e3, roi, binning)

        self.tasks.watch(
            self.session.submit(apply),
            lambda _: self.refresh_settings(),
            lambda t: (log.error("camera settings refused: %s", t), self.refresh_settings()),
        )

    def clear_roi(self) -> None:
        def clear() -> None:
            with self.session.devices() as bench:
                bench.camera.clear_roi()

        self.tasks.watch(
            self.session.submit(clear),
            lambda _: self.refresh_settings(),
            lambda t: log.error("camera: %s", t),
        )

    # -- state -------------------------------------------------------------------------------------
    def set_enabled_devices(self, enabled: bool) -> None:
        """Camera controls usable only with an open bench and no run."""
        for w in (self.live_btn, self.snap_btn, self.settings_box):
            w.setEnabled(enabled)

    def set_run_active(self, active: bool) -> None:
        self._run_active = active
        self.set_enabled_devices(not active and self.session.is_open)
        if active and self.live_btn.isChecked():
            self.live_btn.setChecked(False)

    def shutdown(self) -> None:
        self._timer.stop()
        self.live_btn.setChecked(False)
