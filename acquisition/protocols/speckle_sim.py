"""speckle-sim: blind structured illumination with random binary DMD masks (seed 001).

For each sample, N random binary masks (N = 600 in seed 001: "a few hundred illumination replicas
(N = 600)", and 600 speckle illuminations in the experiment of its Fig. 4) are shown on the DMD,
one camera frame each; the DMD plane is imaged onto the sample, so each mask gives a different
speckle illumination. Masks are drawn from ``numpy.random.default_rng([seed, pattern_id])``, so a
mask is reproducible from its id alone and can be rendered on demand (600 masks x several samples
of 768x1024 would not fit in memory).

``samples`` are physical samples: the engine mounts sample k before its block of N masks (the
virtual bench switches its density rho, a real bench asks the operator) and config validation
refuses names the bench cannot mount (``devices.factory.simulated_bench_problems``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import Field, field_validator

from acquisition.events import Event, Plan

from ._common import EventSequence, ProtocolParams, total_frames

NAME = "speckle-sim"


class SpeckleSimParams(ProtocolParams):
    """Parameters of the speckle-SIM acquisition; exposure from seed 001 Methods (0.2 s)."""

    exposure_s: float = Field(default=0.2, gt=0, description="seed 001: exposure time 0.2 s")
    interval_s: float = Field(default=0.25, gt=0, description="choice: exposure + DMD/camera overhead")
    samples: list[str] = Field(
        default=["siemens_star"],
        min_length=1,
        description=(
            "samples imaged in turn, N masks each; the engine mounts each one (the virtual bench's names:"
            " devices/bench/samples.py, checked at config load; a real bench asks the operator)"
        ),
    )
    n_masks: int = Field(default=600, ge=1, description="masks per sample (seed 001: N = 600)")
    fill_fraction: float = Field(default=0.5, gt=0, lt=1, description="fraction of 'on' macro-pixels")
    macro_pixel_px: int = Field(default=8, ge=1, description="side of one random macro-pixel in DMD pixels")
    region_px: tuple[int, int] | None = Field(
        default=None, description="(rows, cols) of the centred masked area; None = whole DMD"
    )
    shared_masks: bool = Field(
        default=False, description="True: every sample sees the same N masks; False: fresh masks per sample"
    )
    seed: int = 0

    @field_validator("samples")
    @classmethod
    def _unique_names(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or any(not s for s in v):
            raise ValueError("sample names must be non-empty and distinct")
        return v


class RandomMaskBank:
    """Binary masks rendered on demand: exactly round(fill * K) of the K macro-pixels are on.

    An exact count (rather than independent coin flips) keeps the illumination power identical from
    mask to mask, so frame-to-frame brightness changes come from the speckle only. That holds exactly
    when ``macro_pixel_px`` divides both sides of the region; otherwise the edge macro-pixels are
    cropped and the number of 'on' mirrors varies slightly from mask to mask.
    """

    def __init__(self, params: SpeckleSimParams, dmd_shape: tuple[int, int], n_patterns: int) -> None:
        self._p = params
        self._dmd_shape = (int(dmd_shape[0]), int(dmd_shape[1]))
        rows, cols = params.region_px if params.region_px is not None else self._dmd_shape
        if rows > self._dmd_shape[0] or cols > self._dmd_shape[1] or rows < 1 or cols < 1:
            raise ValueError(f"region_px {rows}x{cols} does not fit on the {self._dmd_shape} DMD")
        self._region = (int(rows), int(cols))
        m = params.macro_pixel_px
        self._grid = (-(-rows // m), -(-cols // m))
        k = self._grid[0] * self._grid[1]
        self._n_on = round(params.fill_fraction * k)
        if not 0 < self._n_on < k:
            raise ValueError(
                f"fill_fraction {params.fill_fraction} leaves no random choice on {k} macro-pixels"
            )
        self._n = int(n_patterns)
        self._render = lru_cache(maxsize=8)(self._render_uncached)

    @property
    def dmd_shape(self) -> tuple[int, int]:
        return self._dmd_shape

    def __len__(self) -> int:
        return self._n

    def macro_mask(self, pattern_id: int) -> np.ndarray:
        """The (grid rows, grid cols) boolean macro-pixel mask of a pattern id."""
        if not 0 <= int(pattern_id) < self._n:
            raise KeyError(f"pattern id {pattern_id} not in bank of {self._n} masks")
        rng = np.random.default_rng([self._p.seed, int(pattern_id)])
        flat = np.zeros(self._grid[0] * self._grid[1], dtype=bool)
        flat[rng.choice(flat.size, self._n_on, replace=False)] = True
        return flat.reshape(self._grid)

    def pattern(self, pattern_id: int) -> np.ndarray:
        return self._render(int(pattern_id)).copy()

    def _render_uncached(self, pattern_id: int) -> np.ndarray:
        m = self._p.macro_pixel_px
        rows, cols = self._region
        block = np.repeat(np.repeat(self.macro_mask(pattern_id), m, axis=0), m, axis=1)[:rows, :cols]
        img = np.zeros(self._dmd_shape, dtype=np.uint8)
        # centred to within a macro-pixel, on the DMD-wide grid of macro-pixels (multiples of m from the
        # corner), so every region's macro-pixels are the ones the simulated bench samples its pupil with
        r0 = (self._dmd_shape[0] - rows) // 2 // m * m
        c0 = (self._dmd_shape[1] - cols) // 2 // m * m
        img[r0 : r0 + rows, c0 : c0 + cols] = block.astype(np.uint8) * 255
        return img


class SpeckleSimEvents(EventSequence):
    """Event i: sample (i // N) mod S, mask i mod N (the natural order wraps when ``frames`` > S*N)."""

    def __init__(self, params: SpeckleSimParams) -> None:
        self._natural = len(params.samples) * params.n_masks
        super().__init__(total_frames(params, self._natural))
        self._p = params

    def _event(self, i: int) -> Event:
        n = self._p.n_masks
        s = (i // n) % len(self._p.samples)
        m = i % n
        pid = m if self._p.shared_masks else s * n + m
        return Event(
            index=i,
            role="M",
            pattern_id=pid,
            exposure_s=self._p.exposure_s,
            interval_s=self._p.interval_s,
            sample=self._p.samples[s],
            extra={"sample_index": s, "mask_index": m, "repeat": i // self._natural},
        )


def expand(params: SpeckleSimParams, dmd_shape: tuple[int, int]) -> Plan:
    """Pure expansion; pattern id = mask index (shared masks) or sample * N + mask index."""
    n_patterns = params.n_masks * (1 if params.shared_masks else len(params.samples))
    bank = RandomMaskBank(params, dmd_shape, n_patterns)
    return Plan(
        protocol=NAME,
        events=SpeckleSimEvents(params),
        patterns=bank,
        config=params.model_dump(mode="json"),
        ground_truth={"samples": np.asarray(params.samples)},
    )
