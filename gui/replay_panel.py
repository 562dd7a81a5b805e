"""Replay: open a stored run, scrub its frames, filter by role, read metadata, play at recorded pace.

Scrubbing needs random access, so the panel reads frames through :class:`RunReader` (the one
reader of run files) one at a time, on demand; nothing is loaded whole. Playing steps through
the (filtered) frames with a single-shot timer whose delay is the recorded time between the
two frames divided by the speed, and never less than one display period (30 Hz): at a faster
recorded rate frames are skipped to keep the recorded pace, as a live view would.
A run that is still being written can be opened; "Reload" picks up the frames written since.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from acquisition.reader import RunFileError, RunReader
from gui.camera_panel import COLOUR_MAPS, make_image_view, set_colour_map
from gui.layout import named_splitter
from gui.workers import DISPLAY_HZ

log = logging.getLogger(__name__)

ALL_ROLES = "all roles"
SPEEDS = {"0.25×": 0.25, "1× (recorded)": 1.0, "4×": 4.0, "20×": 20.0}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (np.floating, np.integer)):
        return _fmt(value.item())
    return str(value)


class ReplayPanel(QWidget):
    """Stored-run browser; ``run_opened(path)`` lets the results panel follow."""

    run_opened = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reader: RunReader | None = None
        self.indices = np.zeros(0, dtype=np.int64)  # frame indices passing the role filter
        self.position = 0  # index into self.indices
        self.current_frame: int | None = None  # frame index shown
        self._timestamps = np.zeros(0)
        self._extras: dict[str, np.ndarray] = {}
        self._play_t0 = 0.0
        self._play_ts0 = 0.0
        self._paced = True
        #: returns the files this process is writing (set by the main window), refused by open_run
        self.writing: Callable[[], set[Path]] | None = None

        self.path = QLineEdit()
        self.path.setPlaceholderText("run file (.h5)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        open_btn = QPushButton("Open")
        open_btn.clicked.connect(lambda: self.open_run(self.path.text().strip()))
        reload_btn = QPushButton("Reload")
        reload_btn.clicked.connect(self.reload)
        self.role = QComboBox()
        self.role.addItem(ALL_ROLES)
        self.role.currentTextChanged.connect(self._on_role)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self.show_position)
        self.play_btn = QPushButton("Play")
        self.play_btn.setCheckable(True)
        self.play_btn.toggled.connect(self._on_play)
        self.speed = QComboBox()
        self.speed.addItems(list(SPEEDS))
        self.speed.setCurrentText("1× (recorded)")
        self.speed.currentTextChanged.connect(self._anchor)  # the new speed counts from the shown frame
        self.cmap = QComboBox()
        self.cmap.addItems(COLOUR_MAPS)
        self.position_label = QLabel("no run")
        self.position_label.setTextFormat(Qt.PlainText)  # it shows file names

        self.view = make_image_view("replay")
        self.cmap.currentTextChanged.connect(lambda n: set_colour_map(self.view, n))
        set_colour_map(self.view, "grey")
        self.frame_table = QTableWidget(0, 2)
        self.frame_table.setHorizontalHeaderLabels(["frame field", "value"])
        self.frame_table.horizontalHeader().setStretchLastSection(True)
        self.frame_table.verticalHeader().hide()
        self.attrs_text = QPlainTextEdit()
        self.attrs_text.setReadOnly(True)

        row1 = QHBoxLayout()
        for w in (QLabel("run"), self.path, browse, open_btn, reload_btn):
            row1.addWidget(w)
        row1.setStretchFactor(self.path, 1)
        row2 = QHBoxLayout()
        for w in (self.role, self.play_btn, self.speed, self.slider, self.cmap):
            row2.addWidget(w)
        row2.setStretchFactor(self.slider, 1)
        side = named_splitter("replay_side", Qt.Vertical, [self.frame_table, self.attrs_text])
        main = named_splitter("replay", Qt.Horizontal, [self.view, side], stretch=(3, 2))
        layout = QVBoxLayout(self)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.position_label)
        layout.addWidget(main, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._tick)

    # -- opening -----------------------------------------------------------------------------------
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open run", self.path.text(), "HDF5 run (*.h5 *.hdf5)")
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path) -> bool:
        """Open ``path``; returns False (and logs why) when it is not a readable run file.

        A file this process is still writing is refused: HDF5 shares one file object between
        handles of a process, and a reader's refresh on it is not safe next to the writer.
        """
        if self.writing is not None and Path(path).resolve() in self.writing():
            self.position_label.setText(f"{path} is being recorded: open it when the run has ended")
            log.warning("replay: %s is being recorded by this control panel", path)
            return False
        self.close_run()
        try:
            self.reader = RunReader(path)
            self._load_metadata()
        except (RunFileError, OSError) as exc:  # missing, not HDF5, or not a specklab run
            return self._refuse(path, str(exc))
        except Exception as exc:  # noqa: BLE001 - a run file damaged inside: refused, never a crashed window
            what = f"{type(exc).__name__}: {exc}"
            return self._refuse(path, f"{path} is not a readable specklab run file ({what})")
        r = self.reader
        self.path.setText(str(path))
        log.info("replay: %s (%s, %s, %d frames)", path, r.protocol, r.status, r.n_frames)
        self.run_opened.emit(str(path))
        return True

    def _refuse(self, path: str | Path, text: str) -> bool:
        """Nothing of a file that did not open (or of the run open before it) stays on screen."""
        self.close_run()
        self.indices = np.zeros(0, dtype=np.int64)
        self.slider.setRange(0, 0)
        self.attrs_text.clear()
        self._clear()
        log.error("replay: %s", text)
        self.position_label.setText(f"cannot open: {text}")
        return False

    def _clear(self) -> None:
        """Nothing shown: no frame, no metadata (no run, or a run without frames)."""
        self.view.clear()
        self.current_frame = None
        self.frame_table.setRowCount(0)

    def reload(self) -> None:
        """Re-read the valid-frame counter (a run still being written has grown).

        The frame shown stays shown (and playing goes on from it); only the range grows.
        """
        if self.reader is not None:
            self.reader.refresh()
            self._load_metadata(keep=self.current_frame)

    def _load_metadata(self, keep: int | None = None) -> None:
        """Read the run's metadata; show frame ``keep`` when it passes the filter, else the first."""
        r = self.reader
        assert r is not None
        table = r.table
        self._timestamps = np.asarray(table["timestamp_s"], dtype=float)
        try:
            self._extras = r.extra_columns()
        except Exception:  # noqa: BLE001 - extras are a nicety; an odd file still replays
            self._extras = {}
        roles = r.roles()
        self.role.blockSignals(True)
        role = self.role_filter  # by name: the item text carries a count, which a reload changes
        self.role.clear()
        self.role.addItem(ALL_ROLES)
        for name, count in roles.items():
            self.role.addItem(f"{name} ({count})", name)
        i = 0 if role is None else self.role.findData(role)
        self.role.setCurrentIndex(max(i, 0))
        self.role.blockSignals(False)
        attrs = dict(r.attrs)
        attrs["frames_valid"] = r.n_frames
        attrs["roles"] = roles
        attrs["devices"] = r.devices
        attrs["protocol_config"] = r.protocol_config
        self.attrs_text.setPlainText(json.dumps(attrs, indent=1, default=str))
        self._filter(keep)

    def close_run(self) -> None:
        self.play_btn.setChecked(False)
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # -- filter and scrub --------------------------------------------------------------------------
    @property
    def role_filter(self) -> str | None:
        data = self.role.currentData()
        return str(data) if data else None

    def set_role(self, role: str | None) -> None:
        """Select a role filter by name (None: all roles)."""
        i = 0 if role is None else self.role.findData(role)
        if i < 0:
            raise ValueError(f"role {role!r} not in this run")
        self.role.setCurrentIndex(i)

    def _on_role(self, *_: object) -> None:
        self._filter()

    def _filter(self, keep: int | None = None) -> None:
        """Apply the role filter; show frame ``keep`` when it passes it, else the first frame."""
        if self.reader is None:
            return
        role = self.role_filter
        n = self.reader.n_frames
        self.indices = np.arange(n) if role is None else self.reader.indices(role)
        ts = self._timestamps[self.indices]
        self._paced = bool(np.isfinite(ts).all() and np.all(np.diff(ts) >= 0))
        hit = np.flatnonzero(self.indices == keep) if keep is not None else []
        pos = int(hit[0]) if len(hit) else 0
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(len(self.indices) - 1, 0))
        self.slider.setValue(pos)
        self.slider.blockSignals(False)
        self.show_position(pos)

    def show_position(self, pos: int) -> None:
        """Show the ``pos``-th frame of the filtered list (slider value)."""
        if self.reader is None or len(self.indices) == 0:
            self.position_label.setText("no frames")
            self._clear()
            return
        pos = int(min(max(pos, 0), len(self.indices) - 1))
        self.position = pos
        i = int(self.indices[pos])
        image = self.reader.frames[i]
        first = self.current_frame is None
        self.view.setImage(image, autoLevels=first, autoRange=first, autoHistogramRange=first)
        self.current_frame = i
        self._show_row(i)
        if self.slider.value() != pos:
            self.slider.blockSignals(True)
            self.slider.setValue(pos)
            self.slider.blockSignals(False)
        self.position_label.setText(
            f"frame {i} ({pos + 1} of {len(self.indices)} {self.role_filter or 'frames'}) · "
            f"{self.reader.protocol} · status {self.reader.status}"
        )

    def frame_metadata(self, i: int) -> dict[str, Any]:
        """Per-frame table row plus Event.extra columns of frame ``i``."""
        assert self.reader is not None
        row = self.reader.table[i]
        meta = {name: row[name] for name in row.dtype.names}
        for key, col in self._extras.items():
            meta[f"extra.{key}"] = col[i]
        return meta

    def _show_row(self, i: int) -> None:
        meta = self.frame_metadata(i)
        self.frame_table.setRowCount(len(meta))
        for r, (k, v) in enumerate(meta.items()):
            self.frame_table.setItem(r, 0, QTableWidgetItem(k))
            self.frame_table.setItem(r, 1, QTableWidgetItem(_fmt(v)))

    # -- playing -----------------------------------------------------------------------------------
    def _on_play(self, on: bool) -> None:
        if on and self.reader is not None and len(self.indices) > 1:
            if self.position >= len(self.indices) - 1:
                self.show_position(0)
            self._anchor()
            self._schedule()
        else:  # nothing to play (no run, or a single frame: it is shown already)
            self._timer.stop()
            if on:
                self.play_btn.setChecked(False)

    def _anchor(self, *_: object) -> None:
        """Replay time starts at the shown frame now (on Play, and when the speed changes)."""
        if self.reader is not None and len(self.indices):
            self._play_t0 = time.monotonic()
            self._play_ts0 = float(self._timestamps[self.indices[self.position]])

    def _schedule(self) -> None:
        self._timer.start(int(1000 / DISPLAY_HZ))

    def _tick(self) -> None:
        """Jump to the frame recorded at the current replay time (skipping those in between)."""
        if not self.play_btn.isChecked() or self.reader is None:
            return
        speed = SPEEDS.get(self.speed.currentText(), 1.0)
        t_rec = self._play_ts0 + (time.monotonic() - self._play_t0) * speed
        ts = self._timestamps[self.indices]
        if self._paced:
            target = int(np.searchsorted(ts, t_rec, side="right")) - 1
            if target <= self.position:  # the next frame is not due yet
                self._schedule()
                return
        else:  # timestamps missing or out of order: one frame per display period
            target = self.position + 1
        if target >= len(self.indices) - 1:  # the last frame: show it and stop
            self.show_position(len(self.indices) - 1)
            self.play_btn.setChecked(False)
            return
        self.show_position(target)
        self._schedule()
