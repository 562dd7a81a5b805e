"""The saved window layout: geometry, docks, splitters, tabs and the live view's colour map.

Kept with :class:`QSettings` (organisation ``specklab``, application ``specklab-gui``: on Linux
``~/.config/specklab/specklab-gui.conf``, INI) under the ``layout/`` group. The main window
saves it when it closes and restores it when it opens. Every entry is restored on its own and
only if it reads back cleanly: a missing, corrupt or out-of-range entry keeps the default
layout for that part (a warning in the log, never a dialog). A layout saved by another
:data:`LAYOUT_VERSION` of the window is ignored as a whole: bump it when docks, splitters or
tabs are added, removed or reordered.

Splitters and tab widgets are found by the object names in :data:`SPLITTERS` and :data:`TABS`
(``findChild``; a name not found is skipped), so a new panel takes part by naming its splitter
or tab widget and listing the name here. Other splitters (pyqtgraph's ImageView has its own,
all called ``splitter``) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PyQt5.QtCore import QByteArray, QDataStream, QSettings, Qt
from PyQt5.QtWidgets import QMainWindow, QSplitter, QTabWidget, QWidget

log = logging.getLogger(__name__)

ORGANISATION = "specklab"
APPLICATION = "specklab-gui"
LAYOUT_VERSION = 1
GROUP = "layout"
SPLITTERS = ("bench", "bench_right", "replay", "replay_side", "results")
TABS = ("main_tabs", "device_tabs")


def named_splitter(
    name: str, orientation: Qt.Orientation, widgets: Sequence[QWidget], stretch: Sequence[int] = ()
) -> QSplitter:
    """A splitter that takes part in the saved layout: named, and the name listed in :data:`SPLITTERS`."""
    if name not in SPLITTERS:
        raise ValueError(f"splitter {name!r} is not in gui.layout.SPLITTERS: its state would not be saved")
    splitter = QSplitter(orientation)
    splitter.setObjectName(name)
    for w in widgets:
        splitter.addWidget(w)
    for i, factor in enumerate(stretch):
        splitter.setStretchFactor(i, factor)
    return splitter


def open_settings(path: str | Path | None = None) -> QSettings:
    """The user's settings (native format: INI on Linux), or an explicit INI file (tests)."""
    if path is None:
        return QSettings(QSettings.NativeFormat, QSettings.UserScope, ORGANISATION, APPLICATION)
    return QSettings(str(path), QSettings.IniFormat)


def clear_layout(settings: QSettings) -> None:
    """Forget the saved layout (``specklab gui --reset-layout``); other settings are kept."""
    settings.remove(GROUP)
    settings.sync()


def _named(window: QMainWindow, kind: type, names: tuple[str, ...]) -> list[Any]:
    return [w for name in names if (w := window.findChild(kind, name)) is not None]


def save_layout(window: QMainWindow, settings: QSettings) -> None:
    """Write the window's layout (replacing any saved one)."""
    settings.remove(GROUP)
    settings.beginGroup(GROUP)
    settings.setValue("version", LAYOUT_VERSION)
    settings.setValue("geometry", window.saveGeometry())
    settings.setValue("state", window.saveState(LAYOUT_VERSION))
    for s in _named(window, QSplitter, SPLITTERS):
        settings.setValue(f"splitters/{s.objectName()}", s.saveState())
    for t in _named(window, QTabWidget, TABS):
        settings.setValue(f"tabs/{t.objectName()}", t.currentIndex())
    camera = getattr(window, "camera", None)
    if camera is not None:
        settings.setValue("camera/colour_map", camera.cmap.currentText())
        settings.setValue("camera/auto_levels", camera.auto_levels.isChecked())
    settings.endGroup()
    settings.sync()
    if settings.status() == QSettings.AccessError:
        log.warning("window layout not saved: %s is not writable", settings.fileName())


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return {"true": True, "false": False}.get(value) if isinstance(value, str) else None


def restore_layout(window: QMainWindow, settings: QSettings) -> list[str]:
    """Apply the saved layout; returns the entries that were present but unusable (logged)."""
    settings.beginGroup(GROUP)
    try:
        if not settings.allKeys():
            return []  # nothing saved: the default layout
        version = _int(settings.value("version"))
        if version != LAYOUT_VERSION:
            log.info("saved window layout ignored (version %s, this window %d)", version, LAYOUT_VERSION)
            return []
        try:
            bad = _restore(window, settings)
        except Exception:  # a cosmetic setting must never stop the control panel from opening
            log.warning("saved window layout not fully restored", exc_info=True)
            bad = ["layout"]
    finally:
        settings.endGroup()
    if bad:
        log.warning("saved window layout: default kept for %s", ", ".join(bad))
    return bad


def _splitter_state_ok(state: QByteArray, count: int) -> bool:
    """QSplitter.restoreState applies a truncated state once its magic number matches: check it all."""
    stream = QDataStream(state)
    marker, _version, n = stream.readInt32(), stream.readInt32(), stream.readInt32()
    if marker != 0xFF or n != count:
        return False
    for _ in range(n):
        stream.readInt32()  # sizes
    stream.readBool(), stream.readInt32(), stream.readBool(), stream.readInt32(), stream.readBool()
    return stream.status() == QDataStream.Ok


def _restore(window: QMainWindow, settings: QSettings) -> list[str]:
    bad: list[str] = []

    def blob(key: str) -> QByteArray | None:
        value = settings.value(key)
        if value is None:
            return None
        if not isinstance(value, QByteArray) or value.isEmpty():
            bad.append(key)
            return None
        return value

    if (g := blob("geometry")) is not None and not window.restoreGeometry(g):
        bad.append("geometry")
    if (s := blob("state")) is not None and not window.restoreState(s, LAYOUT_VERSION):
        bad.append("state")
    for split in _named(window, QSplitter, SPLITTERS):
        key = f"splitters/{split.objectName()}"
        if (s := blob(key)) is not None and not (
            _splitter_state_ok(s, split.count()) and split.restoreState(s)
        ):
            bad.append(key)
    for tabs in _named(window, QTabWidget, TABS):
        key = f"tabs/{tabs.objectName()}"
        if (raw := settings.value(key)) is None:
            continue
        i = _int(raw)
        if i is None or not 0 <= i < tabs.count():
            bad.append(key)
        else:
            tabs.setCurrentIndex(i)
    camera = getattr(window, "camera", None)
    if camera is not None:
        if (name := settings.value("camera/colour_map")) is not None:
            i = camera.cmap.findText(str(name))
            if i < 0:
                bad.append("camera/colour_map")
            else:
                camera.cmap.setCurrentIndex(i)
        if (raw := settings.value("camera/auto_levels")) is not None:
            on = _bool(raw)
            if on is None:
                bad.append("camera/auto_levels")
            else:
                camera.auto_levels.setChecked(on)
    return bad
