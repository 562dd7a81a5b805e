"""A form generated from a pydantic model: one editor per field, chosen from the field's type.

Why generated: protocol parameter models (``acquisition/protocols``) change as protocols grow;
a hand-written form would drift from them. The mapping is deliberately small:

==========================  =========================================================
field type                  editor
==========================  =========================================================
``bool``                    check box
``int``                     spin box (``ge``/``gt``/``le``/``lt`` become its limits)
``float``                   line edit with a float validator (keeps ``200e-6`` readable)
``Literal[...]`` / ``Enum``  combo box
``str``                     line edit
anything else               line edit holding JSON (``null``, ``[1, 2]``, ``{"a": 1}``)
==========================  =========================================================

The form never validates on its own: :meth:`ModelForm.values` returns plain data, and the
caller validates it with the model (and the whole config), so the rules live in one place.
Field descriptions become tooltips.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from PyQt5.QtGui import QDoubleValidator
from PyQt5.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QSpinBox, QWidget

INT_LIMIT = 2**31 - 1


def _literal_choices(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [m.value for m in annotation]
    return None


def _int_limits(info: FieldInfo) -> tuple[int, int]:
    lo, hi = -INT_LIMIT, INT_LIMIT
    for m in info.metadata:
        if getattr(m, "ge", None) is not None:
            lo = max(lo, int(m.ge))
        if getattr(m, "gt", None) is not None:
            lo = max(lo, int(m.gt) + 1)
        if getattr(m, "le", None) is not None:
            hi = min(hi, int(m.le))
        if getattr(m, "lt", None) is not None:
            hi = min(hi, int(m.lt) - 1)
    return lo, hi


def _to_json(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value)


class FieldEditor:
    """One field's editor widget with ``get()`` / ``set(value)`` in plain Python values."""

    def __init__(self, name: str, info: FieldInfo) -> None:
        self.name = name
        self.info = info
        ann = info.annotation
        choices = _literal_choices(ann)
        self.kind: str
        if ann is bool:
            self.kind, self.widget = "bool", QCheckBox()
        elif ann is int:
            spin = QSpinBox()
            spin.setRange(*_int_limits(info))
            self.kind, self.widget = "int", spin
        elif ann is float:
            edit = QLineEdit()
            edit.setValidator(QDoubleValidator())
            self.kind, self.widget = "float", edit
        elif choices is not None:
            combo = QComboBox()
            for c in choices:
                combo.addItem(str(c), c)
            self.kind, self.widget = "choice", combo
        elif ann is str:
            self.kind, self.widget = "str", QLineEdit()
        else:
            edit = QLineEdit()
            edit.setPlaceholderText("JSON, e.g. null or [1, 2]")
            self.kind, self.widget = "json", edit
        self.widget.setObjectName(f"field_{name}")
        tip = info.description or ""
        type_name = getattr(ann, "__name__", None) if not isinstance(ann, types.UnionType) else None
        self.widget.setToolTip(f"{name} ({type_name or ann}){': ' + tip if tip else ''}")

    def set(self, value: Any) -> None:
        w = self.widget
        if self.kind == "bool":
            w.setChecked(bool(value))  # type: ignore[attr-defined]
        elif self.kind == "int":
            w.setValue(int(value))  # type: ignore[attr-defined]
        elif self.kind == "float":
            w.setText(repr(float(value)))  # type: ignore[attr-defined]
        elif self.kind == "choice":
            i = w.findData(value)  # type: ignore[attr-defined]
            w.setCurrentIndex(max(i, 0))  # type: ignore[attr-defined]
        elif self.kind == "str":
            w.setText(str(value))  # type: ignore[attr-defined]
        else:
            w.setText(_to_json(value))  # type: ignore[attr-defined]

    def get(self) -> Any:
        """The edited value; raises ValueError naming the field for text that does not parse."""
        w = self.widget
        if self.kind == "bool":
            return w.isChecked()  # type: ignore[attr-defined]
        if self.kind == "int":
            return w.value()  # type: ignore[attr-defined]
        if self.kind == "choice":
            return w.currentData()  # type: ignore[attr-defined]
        text = w.text().strip()  # type: ignore[attr-defined]
        if self.kind == "str":
            return text
        try:
            return float(text) if self.kind == "float" else json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot read {text!r} ({exc})") from None


class ModelForm(QWidget):
    """Editors for every field of ``model`` (a pydantic model class), filled from ``values``."""

    def __init__(
        self, model: type[BaseModel], values: BaseModel | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.editors: dict[str, FieldEditor] = {}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        for name, info in model.model_fields.items():
            editor = FieldEditor(name, info)
            self.editors[name] = editor
            layout.addRow(name, editor.widget)
        self.load(values if values is not None else model())

    def load(self, values: BaseModel) -> None:
        for name, editor in self.editors.items():
            editor.set(getattr(values, name))

    def values(self) -> dict[str, Any]:
        """Plain data for ``model.model_validate`` (ValueError when a text field does not parse)."""
        return {name: editor.get() for name, editor in self.editors.items()}

    def validated(self) -> BaseModel:
        """The model built from the form (pydantic ValidationError on invalid values)."""
        return self.model.model_validate(self.values())
