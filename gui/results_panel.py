"""Results: the CRB and network-precision results of a run, found beside its run file.

Naming convention (also in docs/gui.md), for a run file ``DIR/NAME.h5``:

* ``DIR/NAME.crb.json``  — ``specklab crb DIR/NAME.h5 --json > DIR/NAME.crb.json``
* ``DIR/NAME.eval.json`` — ``specklab evaluate ... --json > DIR/NAME.eval.json``
* ``DIR/NAME.*.png``     — figures of that run (e.g. ``NAME.crb.png``, ``NAME.eval.png``)
* ``DIR/NAME/*.png``     — or a folder of figures named like the run

The panel does not interpret the JSON schemas (they belong to ``analysis`` and ``models`` and
still change): it lists every file found, shows each JSON as a tree, and lifts numeric
top-level values into a headline so the main numbers are visible at a glance.
"""

from __future__ import annotations

import glob
import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QPixmap
from PyQt5.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.layout import named_splitter

log = logging.getLogger(__name__)

RESULT_KINDS = {"crb": "Cramér–Rao bound", "eval": "network precision"}


@dataclass
class RunResults:
    """Result files of one run (see the module docstring for the names)."""

    run: Path
    json: dict[str, Path] = field(default_factory=dict)  # kind ("crb", "eval") -> file
    figures: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.json and not self.figures


def find_results(run: str | Path) -> RunResults:
    """Result files beside ``run`` following the naming convention (Qt-free, tested directly)."""
    run = Path(run)
    stem = run.with_suffix("")
    out = RunResults(run)
    for kind in RESULT_KINDS:
        p = stem.parent / f"{stem.name}.{kind}.json"
        if p.is_file():
            out.json[kind] = p
    figs = set(stem.parent.glob(f"{glob.escape(stem.name)}.*.png"))  # a name may hold [ ] * ?
    if stem.is_dir():
        figs.update(stem.glob("*.png"))
    out.figures = sorted(figs)
    return out


def headline(data: Any, limit: int = 8) -> list[tuple[str, str]]:
    """Numeric / short text values at the top level (and one level down), for a summary line."""
    items: list[tuple[str, str]] = []

    def add(key: str, v: Any) -> None:
        if isinstance(v, bool) or len(items) >= limit:
            return
        if isinstance(v, (int, float)):
            items.append((key, "–" if isinstance(v, float) and not math.isfinite(v) else f"{v:.4g}"))
        elif isinstance(v, str) and len(v) <= 40:
            items.append((key, v))

    if isinstance(data, dict):
        for k, v in data.items():
            add(str(k), v)
        for k, v in data.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    add(f"{k}.{k2}", v2)
    return items


def _fill(item: QTreeWidgetItem, value: Any, max_list: int = 50) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            child = QTreeWidgetItem([str(k), "" if isinstance(v, (dict, list)) else str(v)])
            item.addChild(child)
            _fill(child, v)
    elif isinstance(value, list):
        if value and all(isinstance(v, (int, float)) for v in value):
            item.setText(1, json.dumps(value[:max_list]) + (" …" if len(value) > max_list else ""))
            return
        for i, v in enumerate(value[:max_list]):
            child = QTreeWidgetItem([f"[{i}]", "" if isinstance(v, (dict, list)) else str(v)])
            item.addChild(child)
            _fill(child, v)


class ResultsPanel(QWidget):
    """CRB / evaluation JSON as trees, headline numbers, and the run's figures."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.results: RunResults | None = None
        self.data: dict[str, Any] = {}
        self.run_label = QLabel("no run selected (open one in Replay)")
        self.run_label.setTextFormat(Qt.PlainText)  # file names are text, whatever they hold
        self.headline = QLabel("")
        self.headline.setTextFormat(Qt.RichText)  # its values are HTML-escaped
        self.headline.setWordWrap(True)
        self.headline.setTextInteractionFlags(Qt.TextSelectableByMouse)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(lambda: self.show_run(self.results.run) if self.results else None)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["key", "value"])
        self.figure_combo = QComboBox()
        self.figure_combo.currentIndexChanged.connect(self._show_figure)
        self.figure = QLabel("no figures")
        self.figure.setTextFormat(Qt.PlainText)
        self.figure.setAlignment(Qt.AlignCenter)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.figure)

        head = QHBoxLayout()
        head.addWidget(self.run_label, 1)
        head.addWidget(refresh)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.figure_combo)
        rl.addWidget(scroll, 1)
        split = named_splitter("results", Qt.Horizontal, [self.tree, right])
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.headline)
        layout.addWidget(split, 1)

    def show_run(self, run: str | Path) -> RunResults:
        """Look for the result files of ``run`` and show them."""
        res = find_results(run)
        self.results = res
        self.data = {}
        self.tree.clear()
        lines = []
        for kind, path in res.json.items():
            top = QTreeWidgetItem([f"{RESULT_KINDS[kind]} ({path.name})", ""])
            self.tree.addTopLevelItem(top)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                top.setText(1, f"unreadable: {exc}")
                log.warning("results: %s unreadable: %s", path, exc)
                continue
            self.data[kind] = data
            _fill(top, data)
            top.setExpanded(True)
            pairs = ", ".join(f"{html.escape(k)} = {html.escape(v)}" for k, v in headline(data))
            lines.append(f"<b>{RESULT_KINDS[kind]}</b>: {pairs or '(no scalar values)'}")
        self.figure_combo.blockSignals(True)
        self.figure_combo.clear()
        for fig in res.figures:
            self.figure_combo.addItem(fig.name, str(fig))
        self.figure_combo.blockSignals(False)
        self._show_figure()
        self.run_label.setText(
            f"{res.run.name}: {len(res.json)} result file(s), {len(res.figures)} figure(s)"
            if not res.empty
            else f"{res.run.name}: no results yet (expected {res.run.with_suffix('').name}.crb.json, "
            ".eval.json, .*.png beside the run)"
        )
        self.headline.setText("<br>".join(lines))
        return res

    def _show_figure(self, *_: object) -> None:
        path = self.figure_combo.currentData()
        if not path:
            self.figure.setPixmap(QPixmap())
            self.figure.setText("no figures")
            return
        pix = QPixmap(path)
        if pix.isNull():
            self.figure.setText(f"cannot read {path}")
        else:
            self.figure.setPixmap(pix)
