"""Building blocks shared by the protocols: parameter base model, lazy event sequences, square targets.

Why lazy: the paper's bsbd run is 5x10^5 frames (seed 000, Methods "Data collection"). A list of
5x10^5 frozen dataclasses (each with its own ``extra`` dict) costs hundreds of MB and seconds to
build, and the engine only ever needs event ``i`` when it reaches it. Every protocol therefore
returns an :class:`EventSequence` that computes ``Event i`` from ``i`` with O(1) arithmetic, and a
pattern bank that renders a DMD image from its id on demand.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acquisition.events import Event

DEFAULT_DMD_SHAPE: tuple[int, int] = (768, 1024)
"""Vialux V-7001 (seeds 000 and 003): 1024 columns x 768 rows; shapes are (rows, cols) throughout."""


class ProtocolParams(BaseModel):
    """Parameters every protocol has. ``extra="forbid"`` so that a typo in a config is an error, not a no-op.

    ``frames`` is the total number of frames of the run. ``None`` means the protocol's natural
    length (e.g. samples x masks); a number truncates the natural order or wraps around it, so
    ``--set frames=N`` means the same thing (exactly N frames) for every protocol.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # gt=0 lets inf through

    frames: int | None = Field(default=None, ge=1, description="total frames; None = natural length")
    exposure_s: float = Field(gt=0, description="camera exposure per frame")
    interval_s: float = Field(gt=0, description="time between successive frame starts")

    @model_validator(mode="after")
    def _interval_holds_exposure(self) -> ProtocolParams:
        # A frame cannot start before the previous exposure ended; catching it here means the
        # engine never has to find out mid-run.
        if self.interval_s < self.exposure_s:
            raise ValueError(
                f"interval_s ({self.interval_s} s) is shorter than exposure_s ({self.exposure_s} s)"
            )
        return self


class EventSequence(Sequence[Event]):
    """An immutable, lazily computed sequence of events; subclasses implement :meth:`_event`.

    Indexing supports negative indices and slices (a slice is itself lazy), iteration is a
    generator, so nothing proportional to the run length is ever held in memory.
    """

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError("an event sequence cannot have a negative length")
        self._length = int(length)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | Sequence[Event]:
        if isinstance(index, slice):
            return _SliceView(self, range(self._length)[index])
        i = int(index)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"event index {index} out of range for {self._length} events")
        return self._event(i)

    def __iter__(self) -> Iterator[Event]:
        for i in range(self._length):
            yield self._event(i)

    def _event(self, i: int) -> Event:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._length} events>"


class _SliceView(EventSequence):
    """A lazy slice of another :class:`EventSequence`; events keep their original ``index``."""

    def __init__(self, parent: EventSequence, indices: range) -> None:
        super().__init__(len(indices))
        self._parent = parent
        self._indices = indices

    def _event(self, i: int) -> Event:
        return self._parent[self._indices[i]]


def total_frames(params: ProtocolParams, natural: int) -> int:
    """The run length: ``params.frames`` if given, else the protocol's natural length."""
    return int(params.frames) if params.frames is not None else int(natural)


def dmd_centre(dmd_shape: tuple[int, int]) -> tuple[int, int]:
    """(x, y) = (column, row) of the DMD pixel taken as the centre (integer, lower-right of the middle)."""
    rows, cols = dmd_shape
    return cols // 2, rows // 2


def square_origin(centre_x: float, centre_y: float, size: int) -> tuple[int, int]:
    """Top-left (x0, y0) of a ``size`` x ``size`` block whose centre is (centre_x, centre_y).

    For odd sizes the centre is a pixel; for even sizes it lies on a pixel corner, so the centre
    coordinates must then be half-integers. Anything else cannot be drawn exactly and is refused.
    """
    x0 = centre_x - (size - 1) / 2
    y0 = centre_y - (size - 1) / 2
    if not (float(x0).is_integer() and float(y0).is_integer()):
        raise ValueError(
            f"a {size}x{size} target cannot be centred on ({centre_x}, {centre_y}) DMD pixels: "
            "use integer centres for odd sizes and half-integer centres for even sizes"
        )
    return int(x0), int(y0)


def check_square_fits(centre_x: float, centre_y: float, size: int, dmd_shape: tuple[int, int]) -> None:
    """Raise ``ValueError`` if the target would leave the DMD (a silently clipped target moves its centre)."""
    x0, y0 = square_origin(centre_x, centre_y, size)
    rows, cols = dmd_shape
    if x0 < 0 or y0 < 0 or x0 + size > cols or y0 + size > rows:
        raise ValueError(
            f"a {size}x{size} target centred at x={centre_x}, y={centre_y} does not fit on the "
            f"{cols}x{rows} DMD"
        )


class SquareTargetBank:
    """Pattern bank of one blank pattern (id 0) and square targets at given centres (ids 1..n).

    Used by bsbd (S + 25 D positions) and fisher-scan (reference + displaced positions): the
    target is a bright ``size`` x ``size`` block of 'on' mirrors (255) on an 'off' (0) DMD.
    """

    def __init__(
        self, dmd_shape: tuple[int, int], centres_px: Sequence[tuple[float, float]], size: int
    ) -> None:
        self._dmd_shape = (int(dmd_shape[0]), int(dmd_shape[1]))
        self._centres = [(float(x), float(y)) for x, y in centres_px]
        self._size = int(size)
        for x, y in self._centres:
            check_square_fits(x, y, self._size, self._dmd_shape)
        self._render = lru_cache(maxsize=64)(self._render_uncached)

    @property
    def dmd_shape(self) -> tuple[int, int]:
        return self._dmd_shape

    def __len__(self) -> int:
        return 1 + len(self._centres)

    def centre(self, pattern_id: int) -> tuple[float, float]:
        """Target centre (x, y) in DMD pixels for a target pattern id; NaN for the blank pattern."""
        if pattern_id == 0:
            return math.nan, math.nan
        return self._centres[self._check(pattern_id) - 1]

    def pattern(self, pattern_id: int) -> np.ndarray:
        img = self._render(self._check(pattern_id))
        return img.copy()  # callers may modify their copy; the cache must stay intact

    def _check(self, pattern_id: int) -> int:
        pid = int(pattern_id)
        if not 0 <= pid < len(self):
            raise KeyError(f"pattern id {pattern_id} not in bank of {len(self)} patterns")
        return pid

    def _render_uncached(self, pattern_id: int) -> np.ndarray:
        img = np.zeros(self._dmd_shape, dtype=np.uint8)
        if pattern_id > 0:
            x, y = self._centres[pattern_id - 1]
            x0, y0 = square_origin(x, y, self._size)
            img[y0 : y0 + self._size, x0 : x0 + self._size] = 255
        return img


def square_target_event(
    index: int,
    role: str,
    pattern_id: int,
    bank: SquareTargetBank,
    reference_px: tuple[float, float],
    um_per_px: float,
    params: ProtocolParams,
    extra: dict[str, Any],
) -> Event:
    """The event showing ``bank``'s pattern ``pattern_id`` (the blank has a NaN centre).

    ``extra`` gains the target position in micrometres at the sample, relative to the reference (S)
    position, so every protocol stores positions the same way.
    """
    x, y = bank.centre(pattern_id)
    if math.isnan(x):
        um = {"target_x_um": math.nan, "target_y_um": math.nan}
    else:
        um = {
            "target_x_um": (x - reference_px[0]) * um_per_px,
            "target_y_um": (y - reference_px[1]) * um_per_px,
        }
    return Event(
        index=index,
        role=role,
        pattern_id=pattern_id,
        exposure_s=params.exposure_s,
        interval_s=params.interval_s,
        target_x_px=x,
        target_y_px=y,
        extra={**extra, **um},
    )
