"""Small test-local devices and plans for the engine, writer and replay tests (no tests here).

They implement the devices/base.py Protocols on the shared SimClock, the way the real
simulated twins do, but with knobs for failure injection (fail at frame k, show the
wrong picture, be slow). The camera's image is a downsampled copy of what the DMD
displays during the exposure plus the frame number, so a frame paired with the wrong
event is visible in the data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from acquisition.events import Event, Plan
from acquisition.sinks import RunInfo
from devices.base import DeviceError, DeviceTimeout, Frame, PumpStatus, TriggerMode
from devices.bench.clock import SimClock

DMD_SHAPE = (24, 32)
FRAME_SHAPE = (12, 16)


class SquareBank:
    """Pattern 0 blank, pattern k >= 1 a 2x2 square at a position derived from k."""

    def __init__(self, n: int, shape: tuple[int, int] = DMD_SHAPE) -> None:
        self._n = n
        self._shape = shape

    @property
    def dmd_shape(self) -> tuple[int, int]:
        return self._shape

    def __len__(self) -> int:
        return self._n

    def centre(self, pid: int) -> tuple[float, float]:
        if pid == 0:
            return math.nan, math.nan
        rows, cols = self._shape
        return float(2 * (pid % (cols // 2 - 1)) + 1), float(
            2 * ((pid // (cols // 2 - 1)) % (rows // 2 - 1)) + 1
        )

    def pattern(self, pid: int) -> np.ndarray:
        img = np.zeros(self._shape, dtype=np.uint8)
        if pid:
            x, y = self.centre(pid)
            img[int(y) - 1 : int(y) + 1, int(x) - 1 : int(x) + 1] = 255
        return img


def bsbd_plan(n_frames: int = 40, n_positions: int = 5, interval_s: float = 0.01) -> Plan:
    """A miniature B,S,B,D plan (period 4 * n_positions)."""
    bank = SquareBank(2 + n_positions)
    events = []
    for i in range(n_frames):
        role = "BSBD"[i % 4]
        pid = {"B": 0, "S": 1}.get(role, 2 + (i // 4) % n_positions)
        x, y = bank.centre(pid)
        extra = {"grid_index": (i // 4) % n_positions} if role == "D" else {}
        events.append(Event(i, role, pid, 1e-3, interval_s, x, y, sample="s0", extra=extra))
    gt = {"grid_px": np.array([bank.centre(2 + k) for k in range(n_positions)])}
    return Plan("bsbd", events, bank, {"frames": n_frames, "interval_s": interval_s}, gt)


def random_plan(n_frames: int = 30, interval_s: float = 0.01, seed: int = 1) -> Plan:
    """A non-periodic plan (like speckle-sim): random pattern ids."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 60, size=n_frames)
    ids[1:][ids[1:] == ids[:-1]] += 1  # no accidental period 1
    bank = SquareBank(int(ids.max()) + 1)
    events = [Event(i, "M", int(p), 1e-3, interval_s, sample=f"s{i // 10}") for i, p in enumerate(ids)]
    return Plan("speckle-sim", events, bank, {"frames": n_frames}, {})


def run_info(plan: Plan, devices: dict[str, dict[str, str]] | None = None) -> RunInfo:
    return RunInfo(
        protocol=plan.protocol,
        events=plan.events,
        frame_shape=FRAME_SHAPE,
        protocol_config=dict(plan.config),
        bench_config={"configuration": "fake", "seed": 0},
        config_text='[protocol]\nname = "bsbd"\n',
        devices=devices or {"dmd": {"model": "FakeDmd"}},
        ground_truth=dict(plan.ground_truth),
        um_per_px=2.466,
        simulated=True,
    )


class FakeDmd:
    """Follows the clock like the simulated ALP: picture k shown over [t0 + k·pt, t0 + (k+1)·pt)."""

    def __init__(self, clock: SimClock, shape: tuple[int, int] = DMD_SHAPE, wrong_from: int | None = None):
        self.clock = clock
        self._shape = shape
        self.wrong_from = wrong_from  # from this picture on, show the next picture instead (a bug)
        self.patterns: np.ndarray | None = None
        self.picture_time = 0.0
        self.t0: float | None = None
        self.continuous = False
        self.uploads = 0
        self.halts = 0
        self.shown = 0

    def identity(self) -> dict[str, str]:
        return {"model": "FakeDmd"}

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def upload(self, patterns: np.ndarray, picture_time_s: float, bit_depth: int = 1) -> None:
        assert patterns.shape[1:] == self._shape
        self.patterns = patterns.copy()
        self.picture_time = picture_time_s
        self.t0 = None
        self.uploads += 1

    def start(self, continuous: bool = False, trigger: TriggerMode = TriggerMode.MASTER) -> None:
        self.t0 = self.clock.now()
        self.continuous = continuous

    def wait(self) -> None:
        pass

    def halt(self) -> None:
        self.t0 = None
        self.halts += 1

    def show(self, pattern: np.ndarray) -> None:
        self.upload(pattern[None], 1.0)
        self.start(continuous=True)

    def displayed_pattern(self, t_s: float) -> np.ndarray | None:
        if self.t0 is None or self.patterns is None or t_s < self.t0:
            return None
        k = int((t_s - self.t0) / self.picture_time)
        self.shown = k
        n = len(self.patterns)
        if self.wrong_from is not None and k >= self.wrong_from:
            k += 1
        if self.continuous:
            k %= n
        elif k >= n:
            return None
        return self.patterns[k % n]

    def close(self) -> None:
        self.halt()


class FakeCamera:
    """Sequence camera on the clock; image = DMD picture downsampled x2 * 4 + frame number."""

    def __init__(
        self,
        clock: SimClock,
        dmd: FakeDmd,
        fail_at: int | None = None,
        delay_s: float = 0.0,
        shape: tuple[int, int] = FRAME_SHAPE,
    ) -> None:
        self.clock = clock
        self.dmd = dmd
        self.fail_at = fail_at
        self.delay_s = delay_s
        self._shape = shape
        self._exposure = 1e-3
        self._n = 0
        self._k = 0
        self._t0 = 0.0
        self._interval = 0.0
        self.counter = 0
        self.sequences = 0
        self.stopped = 0

    def identity(self) -> dict[str, str]:
        return {"model": "FakeCamera"}

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def exposure_s(self) -> float:
        return self._exposure

    def set_exposure(self, seconds: float) -> None:
        self._exposure = seconds

    @property
    def roi(self) -> tuple[int, int, int, int]:
        return (0, 0, self._shape[1], self._shape[0])

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        raise NotImplementedError

    def clear_roi(self) -> None:
        pass

    @property
    def binning(self) -> int:
        return 1

    def set_binning(self, factor: int) -> None:
        raise NotImplementedError

    def _image(self, t: float) -> np.ndarray:
        shown = self.dmd.displayed_pattern(t + self._exposure / 2)
        base = np.zeros(self._shape, np.uint16) if shown is None else shown[::2, ::2].astype(np.uint16) * 4
        return base + np.uint16(self.counter % 1000)

    def snap(self) -> Frame:
        t = self.clock.now()
        self.clock.advance(self._exposure)
        f = Frame(self._image(t), self.counter, t, self._exposure)
        self.counter += 1
        return f

    def start_sequence(self, n_frames: int, interval_s: float) -> None:
        self._n, self._k, self._interval, self._t0 = n_frames, 0, interval_s, self.clock.now()
        self.sequences += 1

    def read_frame(self, timeout_s: float = 5.0) -> Frame:
        if self._k >= self._n:
            raise DeviceTimeout("FakeCamera: no frame pending")
        if self.fail_at is not None and self.counter >= self.fail_at:
            raise DeviceError(f"FakeCamera: read_frame: cable unplugged at frame {self.counter}")
        if self.delay_s:
            time.sleep(self.delay_s)
        t = self._t0 + self._k * self._interval
        self.clock.advance_to(t + self._exposure)
        f = Frame(self._image(t), self.counter, t, self._exposure, {})
        self._k += 1
        self.counter += 1
        return f

    def stop_sequence(self) -> None:
        self._n = self._k
        self.stopped += 1

    def close(self) -> None:
        pass


@dataclass
class FakePump:
    running: bool = False
    rate: float = 0.0
    calls: list[str] = field(default_factory=list)

    def identity(self) -> dict[str, str]:
        return {"model": "FakePump"}

    def set_diameter(self, mm: float) -> None:
        self.calls.append("diameter")

    def set_rate(self, ml_per_h: float) -> None:
        self.rate = ml_per_h

    def set_direction(self, direction: str) -> None:
        self.calls.append("direction")

    def run(self) -> None:
        self.running = True
        self.calls.append("run")

    def stop(self) -> None:
        self.running = False
        self.calls.append("stop")

    def status(self) -> PumpStatus:
        return PumpStatus(self.running, "infuse", self.rate, 14.5, 0.0)

    def close(self) -> None:
        pass


def expected_image(plan: Plan, event: Event, frame_number: int) -> np.ndarray:
    """What FakeCamera records for ``event`` when the DMD shows the right picture."""
    return plan.patterns.pattern(event.pattern_id)[::2, ::2].astype(np.uint16) * 4 + np.uint16(
        frame_number % 1000
    )


def test_verify_by_index_checks_content_once_and_still_catches_mismatches() -> None:
    from types import SimpleNamespace

    import pytest

    from acquisition.engine import BenchEngine, PatternMismatchError
    from devices.base import Frame

    a = np.zeros((4, 8), np.uint8)
    b = a.copy()
    b[1, 2] = 255

    class IndexDmd:
        sequence_id = 0

        def __init__(self) -> None:
            self.pictures = [a, b, a.copy()]
            self.shown = 0
            self.full_reads = 0

        def displayed_index(self, t_s: float) -> tuple[int, int] | None:
            return (0, self.shown)

        def displayed_pattern(self, t_s: float) -> np.ndarray | None:
            self.full_reads += 1
            return self.pictures[self.shown]

    dmd = IndexDmd()
    engine = BenchEngine(dmd, SimpleNamespace(), verify_patterns=True)  # type: ignore[arg-type]
    engine._block_ids = [10, 11, 12]
    engine._block_patterns = {10: a, 11: b, 12: a}
    frame = Frame(image=np.zeros((2, 2), np.uint16), frame_number=0, timestamp_s=0.0, exposure_s=1e-3)

    def event(pid: int) -> SimpleNamespace:
        return SimpleNamespace(index=0, role="D", pattern_id=pid)

    engine._verify(frame, event(10))  # first time index 0 is shown: full content check
    engine._verify(frame, event(10))  # then by index only
    assert dmd.full_reads == 1
    with pytest.raises(PatternMismatchError):
        engine._verify(frame, event(11))  # index 0 shows pattern 10, not 11
    engine._verify(frame, event(12))  # another index, but the same picture: accepted after a full check
    assert dmd.full_reads == 3
