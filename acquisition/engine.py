"""The engine: everything that touches the hardware during a run, and nothing about timing policy.

Split (after pymmcore-plus): the :class:`~acquisition.runner.Runner` decides *when*
(blocks, pause, resume, abort, progress); the engine knows *how* to make the DMD,
camera and pump produce the frames of a block of events. The engine is a small
runtime-checkable :class:`Engine` Protocol so a scripted or deliberately broken engine
drops in for tests.

Hardware timing (:class:`BenchEngine`): a run is cut into *blocks* of consecutive
events sharing one frame interval and exposure. Inside a block nothing is
software-timed: the DMD projects the block's pictures at picture time = frame
interval, and the camera runs one sequence acquisition at the same interval.

* A *periodic* plan (bsbd: B,S,B,D with the D target snaking over 25 positions has
  period 100) uploads one period once and projects it continuously; the block then
  spans the whole uniform stretch of the run.
* A non-periodic plan (speckle-sim: 600 random masks per sample) uploads blocks of
  ``block_size`` pictures (DMD memory is finite, 1024x768 masks are 0.75 MB each).

Each frame is paired with its event. With a DMD that can tell what it displayed at a
time (the simulated one, ``displayed_pattern(t)``), the engine checks that the picture on
the DMD during the exposure is the event's pattern, and a mismatch is an error
(:class:`PatternMismatchError`), not a silently mislabelled frame. When the DMD can also
tell *which* uploaded picture it shows (``displayed_index(t) -> (sequence id, index)``), the
check costs no picture copy: the first time a block shows an uploaded picture its full
content is compared with the event's pattern (this also checks the upload), afterwards the
shown index is compared with the upload order; an unexpected index still gets the full
comparison (two uploaded pictures may be identical) before it is called a mismatch.

Samples (speckle-sim, seed 001: N masks per sample): a plan whose config lists ``samples`` images
physical samples, one per event (``Event.sample``). With a :class:`~devices.base.SampleHolder` the
engine never lets a block span two samples, and mounts each block's sample before projecting it; the
first sample is mounted in :meth:`BenchEngine.setup`, before the pump starts, so a manual holder that
cannot ask anybody (headless) fails before anything moves.

Known limit on real hardware: DMD (master) and camera run on independent clocks; over a
long continuous block they can drift by a frame. A real bench should trigger the camera
from the DMD's sync output; the Camera interface has no trigger setting yet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from acquisition.events import Event, Plan
from devices.base import Camera, DeviceError, Dmd, Frame, Pump, SampleHolder, TriggerMode

log = logging.getLogger(__name__)


class PatternMismatchError(DeviceError):
    """The DMD displayed another picture than the event's pattern during the exposure."""


@runtime_checkable
class Engine(Protocol):
    """What the runner needs from whatever drives the hardware."""

    def setup(self, plan: Plan) -> None:
        """Prepare for the run (camera exposure, pump flowing). Called once before any block."""

    def start_block(self, plan: Plan, start: int) -> int:
        """Start producing frames for events ``start, start+1, ...``; return the block's end (exclusive)."""

    def read(self, event: Event) -> Frame:
        """The frame of ``event`` (the next one of the running block); raises DeviceError on failure."""

    def end_block(self) -> None:
        """Stop the running block (also when it was cut short by pause/abort/error)."""

    def teardown(self) -> None:
        """Always called last, even after failures: DMD halted, camera stopped, pump stopped."""


def uniform_stop(events: Sequence[Event], start: int) -> int:
    """End (exclusive) of the stretch from ``start`` that shares one interval and exposure."""
    first = events[start]
    stop = start + 1
    n = len(events)
    while (
        stop < n
        and events[stop].interval_s == first.interval_s
        and events[stop].exposure_s == first.exposure_s
    ):
        stop += 1
    return stop


def planned_samples(plan: Plan) -> frozenset[str]:
    """Physical samples a plan images: its config's ``samples`` list (speckle-sim); empty for others.

    Other protocols use ``Event.sample`` as a label (generalisation: the target set), not a sample.
    """
    names = plan.config.get("samples") if isinstance(plan.config, dict) else None
    return frozenset(str(n) for n in names) if names else frozenset()


def sample_stop(events: Sequence[Event], start: int, stop: int) -> int:
    """End (exclusive, <= ``stop``) of the stretch from ``start`` imaging the same sample."""
    sample = events[start].sample
    k = start + 1
    while k < stop and events[k].sample == sample:
        k += 1
    return k


def find_period(pattern_ids: np.ndarray, max_period: int) -> int | None:
    """Smallest period p <= max_period with ids[i] == ids[i+p] for all i (None if there is none).

    A period must repeat at least twice to be worth a continuous projection.
    """
    n = pattern_ids.size
    for p in range(1, min(max_period, n // 2) + 1):
        # cheap rejection on a prefix first, then the full check
        head = min(n - p, 4 * p)
        if np.array_equal(pattern_ids[p : p + head], pattern_ids[:head]) and np.array_equal(
            pattern_ids[p:], pattern_ids[:-p]
        ):
            return p
    return None


@dataclass
class PumpSettings:
    """How the pump runs during an acquisition (paper: ~7 ml/h through the flow cuvette)."""

    rate_ml_per_h: float
    diameter_mm: float = 14.5
    direction: str = "infuse"


class BenchEngine:
    """Hardware-timed engine for a DMD + camera (+ optional pump) bench."""

    def __init__(
        self,
        dmd: Dmd,
        camera: Camera,
        pump: Pump | None = None,
        pump_settings: PumpSettings | None = None,
        *,
        block_size: int = 100,
        max_period: int = 256,
        verify_patterns: bool = True,
        frame_timeout_s: float = 5.0,
        sample_holder: SampleHolder | None = None,
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.dmd = dmd
        self.camera = camera
        self.pump = pump
        self.pump_settings = pump_settings
        self.block_size = block_size
        self.max_period = max_period
        self.verify_patterns = verify_patterns and hasattr(dmd, "displayed_pattern")
        self._by_index = hasattr(dmd, "displayed_index") and hasattr(dmd, "sequence_id")
        self.frame_timeout_s = frame_timeout_s
        self.sample_holder = sample_holder
        self.mounts: list[str] = []  # samples mounted during the run, in order
        self._samples: frozenset[str] = frozenset()  # the plan's physical samples (mounted by the holder)
        self.period: int | None = None
        self.uploads = 0  # number of DMD uploads (a periodic plan needs one per uniform stretch)
        self._events: Sequence[Event] = ()
        self._block_patterns: dict[int, np.ndarray] = {}
        self._block_ids: list[int] = []  # pattern id of each uploaded picture, in upload order
        self._verified: set[tuple[int, int]] = set()  # (sequence id, index) whose content was checked
        self._binary = True
        self._pump_running = False
        self._block_open = False

    def identities(self) -> dict[str, dict[str, str]]:
        out = {"dmd": self.dmd.identity(), "camera": self.camera.identity()}
        if self.pump is not None:
            out["pump"] = self.pump.identity()
        return out

    def setup(self, plan: Plan) -> None:
        self._events = plan.events
        ids = np.fromiter((e.pattern_id for e in plan.events), dtype=np.int64, count=len(plan.events))
        self.period = find_period(ids, self.max_period) if len(ids) else None
        self.mounts = []
        self._samples = planned_samples(plan) if self.sample_holder is not None else frozenset()
        if self._samples and len(plan.events):
            self._mount(plan.events[0])  # before the pump runs: an operator mounts the first sample first
        if self.pump is not None and self.pump_settings is not None:
            s = self.pump_settings
            self.pump.set_diameter(s.diameter_mm)
            self.pump.set_direction(s.direction)
            self.pump.set_rate(s.rate_ml_per_h)
            self._pump_running = True  # before run(): a run() that fails half-way is still stopped
            self.pump.run()
            if not self.pump.status().running:
                raise DeviceError(f"pump {self.pump.identity()} did not start")

    def _mount(self, event: Event) -> None:
        """Put ``event``'s sample under the microscope if it is a planned sample not yet in place."""
        holder = self.sample_holder
        if holder is None or event.sample not in self._samples or holder.mounted == event.sample:
            return
        log.info("event %d: mounting sample %r (was %r)", event.index, event.sample, holder.mounted)
        holder.mount(event.sample)
        self.mounts.append(event.sample)

    def _render(self, plan: Plan, ids: Sequence[int]) -> np.ndarray:
        cache: dict[int, np.ndarray] = {}
        for pid in ids:
            if pid not in cache:
                pat = np.asarray(plan.patterns.pattern(int(pid)), dtype=np.uint8)
                if pat.shape != tuple(self.dmd.shape):
                    raise ValueError(f"pattern {pid} has shape {pat.shape}, DMD is {self.dmd.shape}")
                cache[pid] = pat
        self._block_patterns = cache
        self._binary = all(bool(np.isin(p, (0, 255)).all()) for p in cache.values())
        return np.stack([cache[pid] for pid in ids])

    def start_block(self, plan: Plan, start: int) -> int:
        events = plan.events
        first = events[start]
        stop = uniform_stop(events, start)
        if self._samples:  # one sample per block, mounted before its first picture
            stop = sample_stop(events, start, stop)
            self._mount(first)
        continuous = self.period is not None and stop - start > self.period
        if continuous:
            assert self.period is not None
            ids = [events[start + k].pattern_id for k in range(self.period)]
        else:
            stop = min(stop, start + self.block_size)
            ids = [events[k].pattern_id for k in range(start, stop)]
        stack = self._render(plan, ids)
        self._block_ids = [int(pid) for pid in ids]
        self._verified = set()
        if self.camera.exposure_s != first.exposure_s:
            self.camera.set_exposure(first.exposure_s)
        self.dmd.upload(stack, picture_time_s=first.interval_s, bit_depth=1 if self._binary else 8)
        self.uploads += 1
        self._block_open = True
        # DMD first, then camera: the camera's first exposure falls inside the first picture
        self.dmd.start(continuous=continuous, trigger=TriggerMode.MASTER)
        self.camera.start_sequence(stop - start, first.interval_s)
        return stop

    def read(self, event: Event) -> Frame:
        frame = self.camera.read_frame(timeout_s=max(self.frame_timeout_s, 3 * event.interval_s))
        if self.verify_patterns:
            self._verify(frame, event)
        return frame

    def _verify(self, frame: Frame, event: Event) -> None:
        t_mid = frame.timestamp_s + 0.5 * frame.exposure_s
        key: tuple[int, int] | None = None
        if self._by_index:
            shown_at = self.dmd.displayed_index(t_mid)  # type: ignore[attr-defined]
            if shown_at is None:
                raise PatternMismatchError(f"event {event.index}: DMD showed nothing at t={t_mid:.6f} s")
            seq, k = shown_at
            ids = self._block_ids
            if (
                seq == self.dmd.sequence_id  # type: ignore[attr-defined]
                and 0 <= k < len(ids)
                and ids[k] == event.pattern_id
            ):
                key = (seq, k)
                if key in self._verified:
                    return  # this uploaded picture's content was already checked in this block
        shown = self.dmd.displayed_pattern(t_mid)  # type: ignore[attr-defined]
        expected = self._block_patterns[event.pattern_id]
        if shown is None:
            raise PatternMismatchError(f"event {event.index}: DMD showed nothing at t={t_mid:.6f} s")
        ok = np.array_equal(shown > 127, expected > 127) if self._binary else np.array_equal(shown, expected)
        if not ok:
            raise PatternMismatchError(
                f"event {event.index} (role {event.role}, pattern {event.pattern_id}): the DMD displayed "
                f"another picture at t={t_mid:.6f} s (frame {frame.frame_number})"
            )
        if key is not None:
            self._verified.add(key)

    def end_block(self) -> None:
        if not self._block_open:
            return
        self._block_open = False
        try:
            self.camera.stop_sequence()
        finally:
            self.dmd.halt()

    def teardown(self) -> None:
        """Every step is attempted even if an earlier one fails; the first error is re-raised."""
        errors: list[BaseException] = []
        steps: list[tuple[str, Any]] = [
            ("camera.stop_sequence", self.camera.stop_sequence),
            ("dmd.halt", self.dmd.halt),
        ]
        if self.pump is not None and self._pump_running:
            steps.append(("pump.stop", self.pump.stop))
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log.exception("teardown step %s failed", name)
                errors.append(exc)
        self._pump_running = False
        self._block_open = False
        if errors:
            raise errors[0]
