"""generalisation: targets displayed on the DMD for the training-set-design study of seed 003.

Seed 003 images 64x64 targets shown on a DMD through a ground-glass diffuser and asks which
training sets let a network trained on digits reconstruct faces. Its five cases (plus the
supplementary random-placement experiment) are training-set designs:

* ``1``: train on dense gray images (faces); test on faces and digits.
* ``2``: train on digits; test on faces and digits.
* ``3``: train on *enlarged* digits: 64 -> 96, then the central 64x64 crop.
* ``4a``/``4b``/``4c``: enlarged digits multiplied by the periodic fluctuation
  P(x', y') = A [sin(kx x' + phix) + sin(ky y' + phiy)], kx, ky in {2pi/16, 2pi/24}, phi in [0, 2pi):
  4a with A = 1, 4b with A drawn in (0, 1], 4c on two superposed digits (A drawn in (0, 1]).
* ``5``: train on faces in the central 64x64 of the 128x128 illuminated field; test faces and
  digits there and in shifted regions.
* ``random``: digits placed at random inside the 128x128 field (seed 003, SI section C).

Each event shows one target (role "T"); ``patterns.target_image(pattern_id)`` gives the 64x64 (cases
1-4) or 128x128 (5, random) uint8 picture actually displayed, so the writer can store it with the frame.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from acquisition.events import Event, Plan

from ._common import EventSequence, ProtocolParams, total_frames
from .targets import TargetSet, TargetSetSpec, make_target_set, square_resize

NAME = "generalisation"
Case = Literal["1", "2", "3", "4a", "4b", "4c", "5", "random"]
FIELD_CASES = ("5", "random")  # cases whose targets live in the 128x128 field rather than 64x64


class GeneralisationParams(ProtocolParams):
    """Parameters; sizes from seed 003 ("64x64" arrays on the DMD, "enlarged to 96x96", "128x128 range")."""

    exposure_s: float = Field(default=0.01, gt=0, description="choice: seed 003 gives no exposure")
    interval_s: float = Field(
        default=0.1, gt=0, description="choice: static diffuser, no decorrelation limit"
    )
    case: Case = "4b"
    n_train: int = Field(default=200, ge=0, description="training targets (seed 003: 9950)")
    n_test: int = Field(default=20, ge=0, description="targets per test set (and per test region in case 5)")
    dense_set: TargetSetSpec = Field(default=TargetSetSpec(source="faces"), description="faces / dense gray")
    digit_set: TargetSetSpec = Field(default=TargetSetSpec(source="digits"))
    image_px: int = Field(default=64, ge=2, description="target array size (seed 003: 64x64)")
    enlarged_px: int = Field(default=96, ge=2, description="cases 3-4: enlarge to this, then crop image_px")
    field_px: int = Field(default=128, ge=2, description="illuminated field for cases 5 and random")
    block_px: int = Field(
        default=1,
        ge=1,
        description="DMD pixels per target pixel (seed 003: 64x64 targets on the DMD, ~128x128 lit)",
    )
    display: Literal["gray8", "binary"] = Field(
        default="gray8", description="8-bit gray or 1-bit DMD display"
    )
    binary_threshold: float = Field(default=0.5, gt=0, lt=1)
    binarise_digits: bool = Field(default=True, description="digits are binary (0/1) in seed 003")
    amplitude: float | None = Field(
        default=None, gt=0, le=1, description="A of P(x,y); None: 1 for 4a, uniform in (0, 1] for 4b/4c"
    )
    periods_px: list[float] = Field(default=[16.0, 24.0], min_length=1, description="2pi/k choices")
    fluctuation_mode: Literal["multiply", "add"] = Field(
        default="multiply", description="multiply (seed 003 text) or add P to the digit"
    )
    shifts_px: list[tuple[int, int]] = Field(
        default=[(32, 0), (0, 32)], description="case 5: (dx, dy) of shifted test regions in field pixels"
    )
    seed: int = 0

    @field_validator("case", mode="before")
    @classmethod
    def _case_as_text(cls, v: Any) -> Any:
        # ``--set protocols.generalisation.case=3`` parses as the integer 3.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("periods_px")
    @classmethod
    def _positive_periods(cls, v: list[float]) -> list[float]:
        if any(p <= 0 for p in v):
            raise ValueError("periods must be positive")
        return v

    @model_validator(mode="after")
    def _sizes_consistent(self) -> GeneralisationParams:
        if self.enlarged_px < self.image_px:
            raise ValueError(f"enlarged_px ({self.enlarged_px}) is smaller than image_px ({self.image_px})")
        if self.field_px < self.image_px:
            raise ValueError(f"field_px ({self.field_px}) is smaller than image_px ({self.image_px})")
        half = (self.field_px - self.image_px) // 2
        for dx, dy in self.shifts_px:
            if abs(dx) > half or abs(dy) > half:
                raise ValueError(f"shift ({dx}, {dy}) moves the {self.image_px}px target out of the field")
        if self.n_train + self.n_test == 0:
            raise ValueError("n_train and n_test are both 0: nothing to show")
        return self

    @property
    def canvas_px(self) -> int:
        """Side of the stored target image: the 128 field for cases 5/random, else the 64 target."""
        return self.field_px if self.case in FIELD_CASES else self.image_px


# --- pure image operations (public so tests and analysis can reproduce a target) -------------------


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of a square image."""
    r0 = (img.shape[0] - size) // 2
    c0 = (img.shape[1] - size) // 2
    return img[r0 : r0 + size, c0 : c0 + size]


def enlarge(img: np.ndarray, enlarged_px: int) -> np.ndarray:
    """Bilinear enlargement of a square image to ``enlarged_px`` (cases 3-4: 64 -> 96)."""
    from skimage.transform import resize

    return np.clip(resize(img, (enlarged_px, enlarged_px), order=1, anti_aliasing=False), 0.0, 1.0)


def superpose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intensity superposition with saturation (seed 003 Fig. 1b II): clip(a + b, 0, 1)."""
    return np.clip(a + b, 0.0, 1.0)


def fluctuation(
    size: int, amplitude: float, kx: float, ky: float, phase_x: float, phase_y: float
) -> np.ndarray:
    """P(x', y') = A [sin(kx x' + phix) + sin(ky y' + phiy)] on a size x size grid (x' = column)."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    return amplitude * (np.sin(kx * x + phase_x) + np.sin(ky * y + phase_y))


def apply_fluctuation(img: np.ndarray, p: np.ndarray, amplitude: float, mode: str) -> np.ndarray:
    """Modulate ``img`` by P, staying in [0, 1].

    ``multiply`` (seed 003: "multiplying a periodic two-dimensional distribution"): P spans
    [-2A, 2A], so img * (1 - (2A - P) / 4) maps it onto a gain in [1 - A, 1]. Dark pixels stay dark
    (seed 003 SI: "the 0 value will not be changed"), bright ones spread over [1 - A, 1], i.e. over
    the full gray range for A = 1. ``add`` adds P and clips, which also lights the background.
    """
    if mode == "multiply":
        return img * (1.0 - (2.0 * amplitude - p) / 4.0)
    return np.clip(img + p, 0.0, 1.0)


# --- the plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """A run of consecutive targets sharing a set label, source set, treatment and placement."""

    label: str
    start: int
    count: int
    source: Literal["dense", "digits"]
    treatment: Literal["plain", "enlarge", "fluctuate", "superpose"]
    placement: tuple[int, int] | Literal["centre", "random"]
    train: bool


def _blocks(p: GeneralisationParams) -> list[_Block]:
    """The natural order of targets: the training set first, then each test set."""
    spec: list[tuple[str, str, str, Any, bool, int]] = []  # label, source, treatment, placement, train, n
    train_source = "dense" if p.case in ("1", "5") else "digits"
    treatment = {"3": "enlarge", "4a": "fluctuate", "4b": "fluctuate", "4c": "superpose"}.get(p.case, "plain")
    placement: Any = "random" if p.case == "random" else "centre"
    spec.append(("train", train_source, treatment, placement, True, p.n_train))
    if p.case == "random":
        spec.append(("test-digits", "digits", "plain", "random", False, p.n_test))
    else:
        spec.append(("test-dense", "dense", "plain", "centre", False, p.n_test))
        spec.append(("test-digits", "digits", "plain", "centre", False, p.n_test))
    if p.case == "5":
        for k, shift in enumerate(p.shifts_px, start=1):
            spec.append((f"test-dense-shift{k}", "dense", "plain", tuple(shift), False, p.n_test))
            spec.append((f"test-digits-shift{k}", "digits", "plain", tuple(shift), False, p.n_test))
    out, start = [], 0
    for label, source, treat, place, train, n in spec:
        if n:
            out.append(_Block(label, start, n, source, treat, place, train))  # type: ignore[arg-type]
            start += n
    return out


class GeneralisationBank:
    """Renders targets by id (= natural target index); ``target_image`` is the displayed target, per pixel."""

    def __init__(self, params: GeneralisationParams, dmd_shape: tuple[int, int]) -> None:
        self._p = params
        self._dmd_shape = (int(dmd_shape[0]), int(dmd_shape[1]))
        side = params.canvas_px * params.block_px
        if side > self._dmd_shape[0] or side > self._dmd_shape[1]:
            raise ValueError(
                f"a {params.canvas_px}x{params.canvas_px} target at block_px={params.block_px} "
                f"({side} DMD pixels) does not fit on the {self._dmd_shape[1]}x{self._dmd_shape[0]} DMD"
            )
        self._origin = ((self._dmd_shape[0] - side) // 2, (self._dmd_shape[1] - side) // 2)  # row, col
        self.blocks = _blocks(params)
        self._starts = [b.start for b in self.blocks]
        self._n = self.blocks[-1].start + self.blocks[-1].count
        self._spec = lru_cache(maxsize=4096)(self._spec_uncached)
        self._image = lru_cache(maxsize=64)(self._target_uncached)

    @property
    def dmd_shape(self) -> tuple[int, int]:
        return self._dmd_shape

    @property
    def target_shape(self) -> tuple[int, int]:
        """Shape of :meth:`target_image` (for the writer to size its dataset up front)."""
        return (self._p.canvas_px, self._p.canvas_px)

    def __len__(self) -> int:
        return self._n

    @cached_property
    def sets(self) -> dict[str, TargetSet]:
        """The two image sets, built on first use (loading MNIST is not needed to count events)."""
        return {"dense": make_target_set(self._p.dense_set), "digits": make_target_set(self._p.digit_set)}

    @cached_property
    def _pools(self) -> dict[tuple[str, bool], np.ndarray]:
        """Source indices per (set, is-training): test images are held out from training on the same set."""
        pools: dict[tuple[str, bool], np.ndarray] = {}
        trained = {b.source for b in self.blocks if b.train}
        for name, tset in self.sets.items():
            n = len(tset)
            perm = np.random.default_rng([self._p.seed, zlib.crc32(name.encode())]).permutation(n)
            n_held = min(self._p.n_test, n // 2) if name in trained else 0
            pools[(name, True)] = perm[: n - n_held] if n_held else perm
            pools[(name, False)] = perm[n - n_held :] if n_held else perm
        return pools

    def _block(self, pid: int) -> _Block:
        if not 0 <= pid < self._n:
            raise KeyError(f"pattern id {pid} not in bank of {self._n} targets")
        return self.blocks[bisect.bisect_right(self._starts, pid) - 1]

    def spec(self, pattern_id: int) -> dict[str, Any]:
        """Everything that defines target ``pattern_id`` (set, source indices, P parameters, placement)."""
        return dict(self._spec(int(pattern_id)))

    def _spec_uncached(self, pid: int) -> dict[str, Any]:
        p = self._p
        b = self._block(pid)
        j = pid - b.start
        pool = self._pools[(b.source, b.train)]
        rng = np.random.default_rng([p.seed, pid])
        out: dict[str, Any] = {
            "set": b.label,
            "case": p.case,
            "source": self.sets[b.source].name,
            "source_index": int(pool[j % len(pool)]),
        }
        if b.treatment == "superpose":
            k = int(rng.integers(len(pool) - 1)) if len(pool) > 1 else 0
            k = k + 1 if len(pool) > 1 and k >= j % len(pool) else k  # a different second digit
            out["source_index_2"] = int(pool[k])
        if b.treatment in ("fluctuate", "superpose"):
            amp = p.amplitude if p.amplitude is not None else (1.0 if p.case == "4a" else 1.0 - rng.random())
            periods = np.asarray(p.periods_px, dtype=float)
            out.update(
                amplitude=float(amp),
                kx=float(2 * np.pi / rng.choice(periods)),
                ky=float(2 * np.pi / rng.choice(periods)),
                phase_x=float(rng.uniform(0, 2 * np.pi)),
                phase_y=float(rng.uniform(0, 2 * np.pi)),
            )
        free = p.canvas_px - p.image_px
        if b.placement == "random":
            x0, y0 = (int(v) for v in rng.integers(0, free + 1, size=2))
        else:
            dx, dy = (0, 0) if b.placement == "centre" else b.placement
            x0, y0 = free // 2 + dx, free // 2 + dy
        out.update(x0=x0, y0=y0, canvas_px=p.canvas_px)
        return out

    def _source_image(self, source: str, index: int) -> np.ndarray:
        img = square_resize(self.sets[source].image(index), self._p.image_px)
        return self._binarise_digit(img) if source == "digits" else img

    def _binarise_digit(self, img: np.ndarray) -> np.ndarray:
        return (img >= 0.5).astype(float) if self._p.binarise_digits else img

    def target_float(self, pattern_id: int) -> np.ndarray:
        """The target before display quantisation, float in [0, 1], shape :attr:`target_shape`."""
        p = self._p
        s = self._spec(int(pattern_id))
        b = self._block(int(pattern_id))
        img = self._source_image(b.source, s["source_index"])
        if b.treatment != "plain":
            if b.treatment == "superpose":
                img = superpose(img, self._source_image(b.source, s["source_index_2"]))
            big = self._binarise_digit(enlarge(img, p.enlarged_px))
            if b.treatment in ("fluctuate", "superpose"):
                pf = fluctuation(p.enlarged_px, s["amplitude"], s["kx"], s["ky"], s["phase_x"], s["phase_y"])
                big = apply_fluctuation(big, pf, s["amplitude"], p.fluctuation_mode)
            img = centre_crop(big, p.image_px)
        canvas = np.zeros((p.canvas_px, p.canvas_px))
        canvas[s["y0"] : s["y0"] + p.image_px, s["x0"] : s["x0"] + p.image_px] = img
        return canvas

    def target_image(self, pattern_id: int) -> np.ndarray:
        """The uint8 target as displayed (0..255 gray, or 0/255 binary), one value per target pixel."""
        return self._image(int(pattern_id)).copy()

    def _target_uncached(self, pid: int) -> np.ndarray:
        t = self.target_float(pid)
        if self._p.display == "binary":
            return np.where(t >= self._p.binary_threshold, 255, 0).astype(np.uint8)
        return np.rint(t * 255.0).astype(np.uint8)

    def pattern(self, pattern_id: int) -> np.ndarray:
        """The DMD image: the target, each pixel a block_px x block_px block, centred on the DMD."""
        k = self._p.block_px
        big = np.repeat(np.repeat(self._image(int(pattern_id)), k, axis=0), k, axis=1)
        img = np.zeros(self._dmd_shape, dtype=np.uint8)
        r0, c0 = self._origin
        img[r0 : r0 + big.shape[0], c0 : c0 + big.shape[1]] = big
        return img

    def centre_px(self, pattern_id: int) -> tuple[float, float]:
        """(x, y) DMD pixel of the centre of the image_px x image_px target region."""
        s = self._spec(int(pattern_id))
        k, half = self._p.block_px, (self._p.image_px * self._p.block_px - 1) / 2
        return self._origin[1] + s["x0"] * k + half, self._origin[0] + s["y0"] * k + half


class GeneralisationEvents(EventSequence):
    """Event i shows target i (wrapping over the natural order when ``frames`` exceeds it)."""

    def __init__(self, params: GeneralisationParams, bank: GeneralisationBank) -> None:
        super().__init__(total_frames(params, len(bank)))
        self._p = params
        self._bank = bank

    def _event(self, i: int) -> Event:
        pid = i % len(self._bank)
        extra = self._bank.spec(pid)
        extra["repeat"] = i // len(self._bank)
        x, y = self._bank.centre_px(pid)
        return Event(
            index=i,
            role="T",
            pattern_id=pid,
            exposure_s=self._p.exposure_s,
            interval_s=self._p.interval_s,
            target_x_px=x,
            target_y_px=y,
            sample=extra["set"],
            extra=extra,
        )


def expand(params: GeneralisationParams, dmd_shape: tuple[int, int]) -> Plan:
    """Pure expansion; images are loaded and rendered only when an event's pattern is asked for."""
    bank = GeneralisationBank(params, dmd_shape)
    labels = np.asarray([b.label for b in bank.blocks])
    ground_truth = {
        "set_labels": labels,
        "set_starts": np.asarray([b.start for b in bank.blocks]),
        "set_counts": np.asarray([b.count for b in bank.blocks]),
    }
    return Plan(
        protocol=NAME,
        events=GeneralisationEvents(params, bank),
        patterns=bank,
        config=params.model_dump(mode="json"),
        ground_truth=ground_truth,
    )


__all__ = [
    "NAME", "GeneralisationParams", "GeneralisationBank", "expand", "centre_crop", "enlarge",
    "superpose", "fluctuation", "apply_fluctuation",
]  # fmt: skip
