"""The saved window layout: restored after close/reopen, corrupt or foreign entries ignored, reset.

Every test points QSettings at ``tmp_path`` (an explicit INI file, or ``QSettings.setPath`` for
the CLI), so the user's ``~/.config/specklab/specklab-gui.conf`` is never read or written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PyQt5.QtCore import QByteArray, QSettings, QStandardPaths, Qt
from PyQt5.QtWidgets import QApplication, QDockWidget, QSplitter, QTabWidget
from test_gui_helpers import small_config

from gui import layout
from gui.app import MainWindow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_window(qtbot, tmp_path):
    windows: list[MainWindow] = []
    cfg = small_config(tmp_path)

    def make(settings_path: Path | None = None, **kw) -> MainWindow:
        settings = layout.open_settings(settings_path) if settings_path is not None else None
        w = MainWindow(cfg, open_bench=False, settings=settings, **kw)
        qtbot.addWidget(w)
        windows.append(w)
        w.show()
        qtbot.waitExposed(w)
        return w

    yield make
    for w in windows:
        w.shutdown()


def dock(w: MainWindow) -> QDockWidget:
    return w.findChild(QDockWidget, "log")


def splitter(w: MainWindow, name: str) -> QSplitter:
    return w.findChild(QSplitter, name)


def snapshot(qtbot, w: MainWindow) -> dict:
    """What the saved layout is about, in comparable form."""
    tab = w.tabs.currentIndex()
    w.tabs.setCurrentIndex(0)  # a splitter on a hidden tab is laid out only once it is shown
    qtbot.wait(20)
    splits = [splitter(w, name) for name in ("bench", "bench_right")]
    splits = [(s.sizes(), s.orientation(), s.handleWidth()) for s in splits]
    w.tabs.setCurrentIndex(tab)
    return {
        "size": (w.width(), w.height()),
        "dock_area": w.dockWidgetArea(dock(w)),
        "dock_floating": dock(w).isFloating(),
        "dock_size": (dock(w).width(), dock(w).height()),
        "splitters": splits,
        "tab": tab,
        "device_tab": w.findChild(QTabWidget, "device_tabs").currentIndex(),
        "cmap": w.camera.cmap.currentText(),
        "auto_levels": w.camera.auto_levels.isChecked(),
    }


def rearrange(qtbot, w: MainWindow) -> None:
    """Move and resize everything the layout keeps, away from the defaults."""
    w.resize(1500, 1150)
    w.addDockWidget(Qt.LeftDockWidgetArea, dock(w))
    w.resizeDocks([dock(w)], [260], Qt.Horizontal)
    w.tabs.setCurrentIndex(2)  # Results
    w.findChild(QTabWidget, "device_tabs").setCurrentIndex(1)  # Pump
    w.camera.cmap.setCurrentText("viridis")
    w.camera.auto_levels.setChecked(True)
    qtbot.wait(50)  # let the dock move and resize settle
    for name in ("bench", "bench_right"):  # as far to the left / top as the panels allow
        split = splitter(w, name)
        split.setSizes([1, sum(split.sizes()) - 1])


@pytest.fixture
def default(qtbot, make_window) -> dict:
    return snapshot(qtbot, make_window())  # no settings at all: the layout the window builds


def test_default_window_is_what_the_tests_assume(default):
    assert default["dock_area"] == Qt.BottomDockWidgetArea
    assert default["tab"] == 0 and default["device_tab"] == 0
    assert default["cmap"] == "grey" and not default["auto_levels"]


def test_layout_is_restored_after_close_and_reopen(qtbot, make_window, tmp_path, default):
    ini = tmp_path / "gui.conf"
    w = make_window(ini)
    assert snapshot(qtbot, w) == default  # nothing saved yet
    rearrange(qtbot, w)
    changed = snapshot(qtbot, w)
    assert w.close()
    assert ini.exists()

    w2 = make_window(ini)
    restored = snapshot(qtbot, w2)
    assert restored == changed
    for key in ("size", "dock_area", "dock_size", "splitters", "tab", "device_tab", "cmap", "auto_levels"):
        assert restored[key] != default[key], key  # each entry really moved away from the default


def test_corrupt_entries_fall_back_to_the_default_layout(qtbot, make_window, tmp_path, default):
    ini = tmp_path / "gui.conf"
    w = make_window(ini)
    rearrange(qtbot, w)
    assert w.close()
    s = QSettings(str(ini), QSettings.IniFormat)  # a saved layout, then every entry damaged
    for key in ("geometry", "state", "splitters/bench"):  # truncated: the magic number is still right
        blob = s.value(f"layout/{key}")
        s.setValue(f"layout/{key}", blob.left(blob.size() // 2))
    s.setValue("layout/splitters/bench_right", QByteArray(b"garbage!"))
    s.setValue("layout/splitters/results", "not a byte array")
    s.setValue("layout/tabs/main_tabs", 7)
    s.setValue("layout/tabs/device_tabs", "Pump")
    s.setValue("layout/camera/colour_map", "rainbow")
    s.setValue("layout/camera/auto_levels", ["x", "y"])
    s.sync()
    del s

    bad = layout.restore_layout(make_window(), layout.open_settings(ini))
    assert set(bad) == {
        "geometry",
        "state",
        "splitters/bench",
        "splitters/bench_right",
        "splitters/results",
        "tabs/main_tabs",
        "tabs/device_tabs",
        "camera/colour_map",
        "camera/auto_levels",
    }
    w2 = make_window(ini)
    assert snapshot(qtbot, w2) == default
    assert QApplication.activeModalWidget() is None  # no error dialog
    assert "default kept for geometry" in w2.log_pane.toPlainText()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff\xfe\x80 not an ini file [[[\n=\n\x01",
        b"[layout\nversion=1\ngeometry=@ByteArray(\\xff\ntabs\\main_tabs=\xff\xfe\n",
        b"",
    ],
    ids=["binary", "truncated", "empty"],
)
def test_unreadable_file_gives_the_default_layout(qtbot, make_window, tmp_path, default, content):
    ini = tmp_path / "gui.conf"
    ini.write_bytes(content)
    w = make_window(ini)
    assert snapshot(qtbot, w) == default
    assert QApplication.activeModalWidget() is None
    w.tabs.setCurrentIndex(1)
    assert w.close()
    assert make_window(ini).tabs.currentIndex() == 1  # the broken file was replaced by a good layout


def test_layout_of_another_window_version_is_ignored(qtbot, make_window, tmp_path, default):
    ini = tmp_path / "gui.conf"
    w = make_window(ini)
    rearrange(qtbot, w)
    assert w.close()
    s = QSettings(str(ini), QSettings.IniFormat)
    s.setValue("layout/version", layout.LAYOUT_VERSION + 1)
    s.sync()
    del s
    assert snapshot(qtbot, make_window(ini)) == default
    s = QSettings(str(ini), QSettings.IniFormat)
    s.remove("layout/version")  # no version key at all: also foreign
    s.sync()
    del s
    assert snapshot(qtbot, make_window(ini)) == default


def test_reset_layout_starts_from_the_default_and_forgets_the_saved_one(
    qtbot, make_window, tmp_path, default
):
    ini = tmp_path / "gui.conf"
    w = make_window(ini)
    rearrange(qtbot, w)
    assert w.close()
    assert make_window(ini).tabs.currentIndex() == 2  # saved and restored...

    w = make_window(ini, reset_layout=True)
    assert snapshot(qtbot, w) == default  # ...but reset
    assert not QSettings(str(ini), QSettings.IniFormat).childGroups().count("layout")  # and forgotten


def test_cli_saves_restores_and_resets_the_layout(qtbot, tmp_path, monkeypatch):
    """``specklab gui`` end to end on the user settings location, moved into tmp_path."""
    from acquisition.cli import main

    config_home = tmp_path / "config"
    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(config_home))
    seen: list[tuple[int, bool]] = []

    def fake_exec(app) -> int:  # the event loop: look at the window, switch to Replay, close it
        w = next(x for x in QApplication.topLevelWidgets() if isinstance(x, MainWindow) and x.isVisible())
        saved = "layout" in layout.open_settings().childGroups()
        seen.append((w.tabs.currentIndex(), saved))
        w.tabs.setCurrentIndex(1)
        assert w.close()
        return 0

    monkeypatch.setattr(QApplication, "exec_", fake_exec)
    argv = ["gui", "--no-bench", "--config", str(REPO / "configs" / "sim-bench.toml")]
    try:
        assert main(argv) == 0
        assert (config_home / "specklab" / "specklab-gui.conf").exists()
        assert main(argv) == 0
        assert main([*argv, "--reset-layout"]) == 0
    finally:
        QSettings.setPath(
            QSettings.NativeFormat,
            QSettings.UserScope,
            QStandardPaths.writableLocation(QStandardPaths.GenericConfigLocation),
        )
    assert seen == [(0, False), (1, True), (0, False)]


def test_a_splitter_outside_the_saved_names_is_refused(qtbot) -> None:
    """A splitter must be listed in SPLITTERS to be saved: naming one that is not is a programming error."""
    with pytest.raises(ValueError, match="not in gui.layout.SPLITTERS"):
        layout.named_splitter("nowhere", Qt.Horizontal, [])
    s = layout.named_splitter("results", Qt.Horizontal, [QTabWidget(), QTabWidget()], stretch=(3, 2))
    qtbot.addWidget(s)
    assert s.objectName() == "results" and s.count() == 2 and s.orientation() == Qt.Horizontal
