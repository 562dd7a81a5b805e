"""The flat, serialisable unit of work the engine executes: one event = one camera frame.

A protocol (declarative config in ``configs/``) expands *purely* into a :class:`Plan`:
a sequence of events plus a :class:`PatternBank` that renders each event's DMD
pattern on demand (600 random masks x many samples would not fit in memory as
1024x768 images). Expansion needs no device, so it is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Event:
    """One frame to take: which DMD pattern, for how long, and what it means.

    ``role``: "B" background (DMD all off), "S" static target, "D" dynamic target,
    "F" fisher-scan displaced target, "M" speckle-SIM random mask, "T" generalisation target.
    Target coordinates are the target centre in DMD pixels (column x, row y); NaN when
    no target is shown.
    """

    index: int
    role: str
    pattern_id: int
    exposure_s: float
    interval_s: float
    target_x_px: float = math.nan
    target_y_px: float = math.nan
    sample: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PatternBank(Protocol):
    """Renders DMD patterns by id, deterministically (same id -> same pattern)."""

    @property
    def dmd_shape(self) -> tuple[int, int]: ...

    def __len__(self) -> int: ...

    def pattern(self, pattern_id: int) -> np.ndarray:
        """(rows, cols) uint8 image for the DMD: 0/255 for binary patterns, 0..255 for 8-bit gray."""


@dataclass
class Plan:
    """A fully expanded protocol: what the engine runs and the writer stores."""

    protocol: str
    events: Sequence[Event]
    patterns: PatternBank
    config: dict[str, Any]  # the validated protocol config, stored verbatim in the run file
    ground_truth: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events)
