"""fisher-scan: the S target displaced by +-k DMD pixels along x and y, for Fisher information.

The model-free estimator of seed 000 (Fig. 2, "finite-difference scheme", step-size stability
criterion) needs many frames at theta and at theta +- d(theta) for several step sizes. This protocol
records exactly that: the reference position and, for each k in ``offsets_px`` and each axis, the
target displaced by -k and +k. Positions are visited round-robin (optionally shuffled per cycle) so
a slow drift of the medium biases every position equally, and B frames are interleaved like in
bsbd so the background can be subtracted the same way.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from acquisition.events import Event, Plan

from ._common import (
    EventSequence,
    ProtocolParams,
    SquareTargetBank,
    dmd_centre,
    square_target_event,
    total_frames,
)

NAME = "fisher-scan"


class FisherScanParams(ProtocolParams):
    """Parameters of the displacement scan; timing and target defaults follow bsbd (seed 000)."""

    exposure_s: float = Field(default=200e-6, gt=0)
    interval_s: float = Field(default=0.0333, gt=0)
    offsets_px: list[int] = Field(default=[1, 2, 4], min_length=1, description="step sizes k (DMD pixels)")
    axes: list[Literal["x", "y"]] = Field(default=["x", "y"], min_length=1)
    frames_per_position: int = Field(default=100, ge=1, description="F frames per position (if frames unset)")
    background_ratio: int = Field(
        default=1, ge=0, description="F frames between two B frames; 1 = B,F,B,F like bsbd; 0 = no B"
    )
    shuffle: bool = Field(default=False, description="permute the position order in every cycle")
    seed: int = 0
    target_size_px: int = Field(default=5, ge=1)
    reference_px: tuple[float, float] | None = Field(default=None, description="(x, y); None = DMD centre")
    dmd_pixel_um: float = Field(default=13.7, gt=0)
    magnification: float = Field(default=0.18, gt=0)

    @field_validator("offsets_px")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        # Offsets are magnitudes: the protocol adds both signs itself so the scan is symmetric.
        if any(k <= 0 for k in v):
            raise ValueError("offsets must be positive magnitudes (both signs are scanned)")
        if len(set(v)) != len(v):
            raise ValueError("offsets must be distinct")
        return sorted(v)

    @field_validator("axes")
    @classmethod
    def _unique_axes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("axes must be distinct")
        return v

    @property
    def um_per_px(self) -> float:
        return self.dmd_pixel_um * self.magnification


def scan_positions(offsets_px: list[int], axes: list[str]) -> list[tuple[str, int]]:
    """(axis, signed offset) of every position: ("ref", 0) first, then -k and +k along each axis."""
    out: list[tuple[str, int]] = [("ref", 0)]
    for axis in axes:
        for k in offsets_px:
            out += [(axis, -k), (axis, k)]
    return out


class FisherScanEvents(EventSequence):
    """Event i from i: units of one B + ``background_ratio`` F frames; F frame j is at position j mod P."""

    def __init__(self, params: FisherScanParams, bank: SquareTargetBank, positions: list[tuple[str, int]]):
        n_pos = len(positions)
        n_f = params.frames_per_position * n_pos
        # one B opens every unit of background_ratio F frames, so a partial last unit still has its B
        natural = n_f + (-(-n_f // params.background_ratio) if params.background_ratio else 0)
        super().__init__(total_frames(params, natural))
        self._p = params
        self._bank = bank
        self._pos = positions
        self._ref = bank.centre(1)

    def _order(self, cycle: int) -> np.ndarray | None:
        if not self._p.shuffle:
            return None
        return np.random.default_rng([self._p.seed, cycle]).permutation(len(self._pos))

    def _event(self, i: int) -> Event:
        r = self._p.background_ratio
        extra: dict[str, object]
        if r and i % (r + 1) == 0:
            pid, role = 0, "B"
            extra = {"axis": "", "offset_px": 0}
        else:
            j = (i // (r + 1)) * r + (i % (r + 1)) - 1 if r else i
            cycle, slot = divmod(j, len(self._pos))
            order = self._order(cycle)
            p = int(order[slot]) if order is not None else slot
            axis, off = self._pos[p]
            pid, role = 1 + p, "F"
            extra = {"axis": axis, "offset_px": off, "position_index": p, "cycle": cycle}
        return square_target_event(i, role, pid, self._bank, self._ref, self._p.um_per_px, self._p, extra)


def expand(params: FisherScanParams, dmd_shape: tuple[int, int]) -> Plan:
    """Pure expansion: pattern 0 = blank, 1 + p = position p of :func:`scan_positions` (1 = reference)."""
    rx, ry = params.reference_px if params.reference_px is not None else dmd_centre(dmd_shape)
    positions = scan_positions(params.offsets_px, params.axes)
    centres = [
        (rx + (off if axis == "x" else 0), ry + (off if axis == "y" else 0)) for axis, off in positions
    ]
    bank = SquareTargetBank(dmd_shape, centres, params.target_size_px)
    events = FisherScanEvents(params, bank, positions)
    ground_truth = {
        "positions_px": np.asarray(centres, dtype=float),
        "offsets_px": np.asarray([off for _, off in positions], dtype=float),
        "axes": np.asarray([axis for axis, _ in positions]),
        "reference_px": np.array([rx, ry], dtype=float),
        "um_per_px": np.array(params.um_per_px),
    }
    return Plan(
        protocol=NAME,
        events=events,
        patterns=bank,
        config=params.model_dump(mode="json"),
        ground_truth=ground_truth,
    )
