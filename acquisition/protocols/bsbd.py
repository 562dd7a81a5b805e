"""bsbd: the background / static / background / dynamic sequence of seed 000 (Methods, "Data collection").

Frames cycle B, S, B, D: B = all DMD mirrors off (the background speckle, later smoothed with a
Savitzky-Golay filter and subtracted), S = the 5x5-pixel target at the centre, D = the target on
the next position of a 5x5 grid of positions 2 DMD pixels apart, visited in a snake (row 0 left to
right, row 1 right to left, ...) and cycled. Every second frame is a B frame so the background
estimate follows the slow drift (particles sticking to the cuvette walls) at the frame rate.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from acquisition.events import Event, Plan

from ._common import (
    EventSequence,
    ProtocolParams,
    SquareTargetBank,
    dmd_centre,
    square_target_event,
    total_frames,
)

NAME = "bsbd"
CYCLE = ("B", "S", "B", "D")


class BsbdParams(ProtocolParams):
    """Parameters of the B,S,B,D sequence; defaults from seed 000 Methods unless stated."""

    frames: int = Field(default=4000, ge=1, description="total frames (paper: 5x10^5; demo default)")
    exposure_s: float = Field(default=200e-6, gt=0, description="200 us: speckle frozen during a frame")
    interval_s: float = Field(default=0.0333, gt=0, description="33.3 ms > 30 ms decorrelation time")
    target_size_px: int = Field(default=5, ge=1, description="5x5 DMD pixels (68.5 um on the DMD)")
    grid_size: int = Field(default=5, ge=1, description="D positions form a grid_size x grid_size grid")
    grid_step_px: int = Field(default=2, ge=1, description="grid spacing in DMD pixels")
    centre_px: tuple[float, float] | None = Field(
        default=None, description="(x, y) of the S target / grid centre in DMD pixels; None = DMD centre"
    )
    dmd_pixel_um: float = Field(default=13.7, gt=0, description="Vialux V-7001 mirror pitch")
    magnification: float = Field(default=0.18, gt=0, description="DMD-to-sample magnification")

    @model_validator(mode="after")
    def _grid_on_pixels(self) -> BsbdParams:
        # Grid offsets are (k - (n-1)/2) * step; they must be whole pixels or the D targets could not
        # be drawn where the table says they are.
        if ((self.grid_size - 1) * self.grid_step_px) % 2:
            raise ValueError(
                f"grid_size={self.grid_size} with grid_step_px={self.grid_step_px} puts grid positions "
                "between DMD pixels; use an odd grid_size or an even grid_step_px"
            )
        return self

    @property
    def um_per_px(self) -> float:
        """Micrometres at the sample per DMD pixel (13.7 um x 0.18 = 2.466 um by default)."""
        return self.dmd_pixel_um * self.magnification


def snake_offsets(grid_size: int, step_px: int) -> np.ndarray:
    """(n*n, 2) (dx, dy) grid offsets in snake order: even rows left->right, odd rows right->left."""
    half = (grid_size - 1) / 2
    out = []
    for row in range(grid_size):
        cols = range(grid_size) if row % 2 == 0 else range(grid_size - 1, -1, -1)
        for col in cols:
            out.append(((col - half) * step_px, (row - half) * step_px))
    return np.asarray(out, dtype=float)


class BsbdEvents(EventSequence):
    """Event i from i alone: role = CYCLE[i % 4]; the j-th D frame (j = i // 4) shows grid position j % n."""

    def __init__(self, params: BsbdParams, bank: SquareTargetBank, n_grid: int) -> None:
        super().__init__(total_frames(params, natural=params.frames))
        self._p = params
        self._bank = bank
        self._n_grid = n_grid
        self._ref = bank.centre(1)

    def _event(self, i: int) -> Event:
        role = CYCLE[i % 4]
        extra: dict[str, object] = {}
        if role == "B":
            pid = 0
        elif role == "S":
            pid = 1
        else:
            j = i // 4
            extra["grid_index"] = j % self._n_grid
            extra["cycle"] = j // self._n_grid
            pid = 2 + j % self._n_grid
        return square_target_event(i, role, pid, self._bank, self._ref, self._p.um_per_px, self._p, extra)


def expand(params: BsbdParams, dmd_shape: tuple[int, int]) -> Plan:
    """Pure expansion: pattern 0 = blank, 1 = S (centre), 2 + k = k-th snake grid position."""
    cx, cy = params.centre_px if params.centre_px is not None else dmd_centre(dmd_shape)
    offsets = snake_offsets(params.grid_size, params.grid_step_px)
    grid = np.column_stack([cx + offsets[:, 0], cy + offsets[:, 1]])
    bank = SquareTargetBank(dmd_shape, [(cx, cy), *map(tuple, grid)], params.target_size_px)
    events = BsbdEvents(params, bank, len(grid))
    um = params.um_per_px
    ground_truth = {
        "grid_px": grid,
        "grid_um": (grid - np.array([cx, cy])) * um,
        "reference_px": np.array([cx, cy], dtype=float),
        "um_per_px": np.array(um),
    }
    config = params.model_dump(mode="json")
    return Plan(protocol=NAME, events=events, patterns=bank, config=config, ground_truth=ground_truth)


__all__ = ["NAME", "CYCLE", "BsbdParams", "BsbdEvents", "snake_offsets", "expand"]
