"""DMD: preview of the pattern on the mirrors, manual patterns, sequence state.

The preview shows what the panel *asked* the DMD to display (a manual pattern), or during a
run the pattern of the event whose frame the live view last showed (rendered from the plan's
pattern bank, cached by pattern id, at most at the live-view rate). A simulated DMD could report
what it really displayed (``displayed_pattern(t)``) but that is on the bench clock, which the
run thread owns; the run itself checks the displayed pattern on every frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PyQt5.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from acquisition.events import Event, Plan
from gui import patterns
from gui.session import BenchSession
from gui.workers import TaskBridge

log = logging.getLogger(__name__)


class DmdPanel(QWidget):
    """Manual DMD control and a preview of the current pattern."""

    def __init__(
        self, session: BenchSession, tasks: TaskBridge, shape: tuple[int, int], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.tasks = tasks
        self.shape = (int(shape[0]), int(shape[1]))
        self.current: np.ndarray | None = None
        self.state = "idle"
        self._preview_id: int | None = None

        self.preview_widget = pg.GraphicsLayoutWidget()
        self.preview_box = self.preview_widget.addViewBox(lockAspect=True, invertY=True)
        self.preview = pg.ImageItem(axisOrder="row-major")
        self.preview_box.addItem(self.preview)
        self.preview_widget.setMinimumHeight(150)
        self.state_label = QLabel("idle")
        self.zoom = QCheckBox("zoom to lit mirrors")
        self.zoom.setToolTip("a 5-pixel target is invisible on a 1024-pixel-wide preview: zoom around it")
        self.zoom.setChecked(True)
        self.zoom.toggled.connect(lambda _: self._frame_view())

        rows, cols = self.shape
        self.tx, self.ty = QDoubleSpinBox(), QDoubleSpinBox()
        self.tx.setRange(0, cols - 1)
        self.ty.setRange(0, rows - 1)
        self.tx.setValue(cols / 2)
        self.ty.setValue(rows / 2)
        self.tsize = QSpinBox()
        self.tsize.setRange(1, min(rows, cols))
        self.tsize.setValue(5)
        self.fill = QDoubleSpinBox()
        self.fill.setRange(0.0, 1.0)
        self.fill.setSingleStep(0.05)
        self.fill.setValue(0.5)
        self.macro = QSpinBox()
        self.macro.setRange(1, 256)
        self.macro.setValue(8)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.image_path = QLineEdit()
        self.image_path.setPlaceholderText("image file (PNG, ...) or .npy")

        off_btn = QPushButton("All off")
        off_btn.clicked.connect(self.show_all_off)
        halt_btn = QPushButton("Halt")
        halt_btn.clicked.connect(self.halt)
        target_btn = QPushButton("Show target")
        target_btn.clicked.connect(self.show_target)
        mask_btn = QPushButton("Random mask")
        mask_btn.clicked.connect(self.show_random)
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        image_btn = QPushButton("Show image")
        image_btn.clicked.connect(self.show_image)

        box = QGroupBox("Manual patterns")
        g = QGridLayout(box)
        g.addWidget(off_btn, 0, 0)
        g.addWidget(halt_btn, 0, 1)
        g.addWidget(QLabel("target x, y, size (px)"), 1, 0)
        trow = QHBoxLayout()
        for w in (self.tx, self.ty, self.tsize, target_btn):
            trow.addWidget(w)
        g.addLayout(trow, 1, 1)
        g.addWidget(QLabel("fill, macro px, seed"), 2, 0)
        mrow = QHBoxLayout()
        for w in (self.fill, self.macro, self.seed, mask_btn):
            mrow.addWidget(w)
        g.addLayout(mrow, 2, 1)
        g.addWidget(QLabel("image"), 3, 0)
        irow = QHBoxLayout()
        for w in (self.image_path, browse, image_btn):
            irow.addWidget(w)
        g.addLayout(irow, 3, 1)
        self.controls = box

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"DMD {cols}×{rows}: pattern on the mirrors"))
        layout.addWidget(self.preview_widget, 1)
        state_row = QHBoxLayout()
        state_row.addWidget(self.state_label, 1)
        state_row.addWidget(self.zoom)
        layout.addLayout(state_row)
        layout.addWidget(box)
        self.controls.setEnabled(False)

    # -- preview -----------------------------------------------------------------------------------
    def set_preview(self, pattern: np.ndarray | None, state: str) -> None:
        self.current = pattern
        self.state = state
        if pattern is None:
            self.preview.clear()
        else:
            self.preview.setImage(pattern, levels=(0, 255))
            self._frame_view()
        self.state_label.setText(state)

    def _frame_view(self) -> None:
        """Whole DMD, or (zoom on) the lit mirrors with a margin when they cover a small area."""
        rows, cols = self.shape
        lit = np.nonzero(self.current) if self.current is not None else ((), ())
        if self.zoom.isChecked() and len(lit[0]) and len(lit[0]) < 0.02 * rows * cols:
            r0, r1, c0, c1 = lit[0].min(), lit[0].max() + 1, lit[1].min(), lit[1].max() + 1
            pad = max(16, (r1 - r0), (c1 - c0))
            self.preview_box.setRange(
                xRange=(max(c0 - pad, 0), min(c1 + pad, cols)),
                yRange=(max(r0 - pad, 0), min(r1 + pad, rows)),
                padding=0,
            )
        else:
            self.preview_box.setRange(xRange=(0, cols), yRange=(0, rows), padding=0)

    def show_event(self, plan: Plan | None, event: Event | None) -> None:
        """During a run: preview the event's pattern (rendered only when the pattern id changes)."""
        if plan is None or event is None:
            return
        if event.pattern_id != self._preview_id:
            self._preview_id = event.pattern_id
            self.current = np.asarray(plan.patterns.pattern(event.pattern_id))
            self.preview.setImage(self.current, levels=(0, 255))
            if event.role != "B":  # keep the zoom on the target across the B frames in between
                self._frame_view()
        self.state = f"sequence running: event {event.index}, role {event.role}, pattern {event.pattern_id}"
        self.state_label.setText(self.state)

    # -- manual patterns ---------------------------------------------------------------------------
    def _show(self, make: Callable[[], np.ndarray], state: str) -> None:
        try:
            pattern = make()
        except (ValueError, OSError) as exc:
            log.error("DMD: %s", exc)
            return

        def show() -> None:
            with self.session.devices() as bench:
                bench.dmd.show(pattern)

        self.tasks.watch(
            self.session.submit(show),
            lambda _: (self.set_preview(pattern, f"static: {state}"), log.info("DMD shows %s", state)),
            lambda t: log.error("DMD show failed: %s", t),
        )

    def show_all_off(self) -> None:
        self._show(lambda: patterns.all_off(self.shape), "all off")

    def show_target(self) -> None:
        x, y, s = self.tx.value(), self.ty.value(), self.tsize.value()
        self._show(lambda: patterns.target_at(self.shape, x, y, s), f"target {s} px at ({x:g}, {y:g})")

    def show_random(self) -> None:
        f, m, seed = self.fill.value(), self.macro.value(), self.seed.value()
        what = f"random mask (fill {f:g}, {m} px, seed {seed})"
        self._show(lambda: patterns.random_mask(self.shape, f, m, seed), what)

    def show_image(self) -> None:
        path = self.image_path.text().strip()
        if not path:
            log.error("DMD: choose an image file first")
            return
        self._show(lambda: patterns.from_image_file(path, self.shape), f"image {path}")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Pattern image", "", "Images (*.png *.bmp *.tif *.npy)")
        if path:
            self.image_path.setText(path)

    def halt(self) -> None:
        def halt() -> None:
            with self.session.devices() as bench:
                bench.dmd.halt()

        self.tasks.watch(
            self.session.submit(halt),
            lambda _: self.set_preview(None, "halted"),
            lambda t: log.error("DMD halt failed: %s", t),
        )

    # -- state -------------------------------------------------------------------------------------
    def set_run_active(self, active: bool) -> None:
        self.controls.setEnabled(not active and self.session.is_open)
        if not active:
            self._preview_id = None
            if self.state.startswith("sequence"):
                self.set_preview(self.current, "idle (run ended, DMD halted)")
