"""Simulated sCMOS camera: the bench's expected photon image through the sensor model.

It implements :class:`devices.base.Camera` exactly like the Micro-Manager driver, so
the acquisition engine cannot tell them apart. Where real cameras differ in
behaviour, the twin copies the real camera:

* **Time.** Every frame happens on the shared :class:`~devices.bench.clock.SimClock`.
  ``snap()`` exposes from *now* and advances the clock by the exposure. A sequence
  started at ``t0`` exposes frame ``k`` from ``t0 + k·period`` for ``exposure_s``;
  reading it advances the clock to the frame's start, then to its end (so the
  simulated DMD and pump, which follow the clock, have reached that time), and only
  then asks the source for the photons of that interval. In ``realtime`` mode the
  clock sleeps, so frames arrive at the camera's pace. ``Frame.timestamp_s`` is the
  *start* of the exposure, the instant ``source.expected_photons`` integrates from.
* **Period.** ``period = max(interval_s, exposure_s)``: like a real camera, frames
  cannot come faster than the exposure (read-out overlaps exposure on sCMOS).
* **Order of operations.** The full-sensor expectation is cropped to the ROI, summed
  over bins (photon *expectations*: exact for Poisson statistics), and only then
  given shot noise, read noise (σ·b for b×b digital sCMOS binning), offset, gain and
  the 16-bit ADC by :class:`~devices.bench.sensor.SensorModel`. Cropping first only
  saves work; binning before the noise is the physics.
* **ROI/binning.** ROI is in unbinned sensor pixels; a binned image has
  ``(height // b, width // b)`` pixels (the remainder rows/columns are dropped, as
  Micro-Manager cameras do).
* **Counters.** ``frame_number`` counts every frame the camera produced (snaps and
  sequences) from 0 and is never reset. Noise comes from one ``numpy`` generator
  seeded with ``seed``, so the same seed and the same calls give identical frames.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Protocol

import numpy as np

from devices.base import DeviceBase, DeviceRefused, DeviceTimeout, Frame
from devices.bench.clock import SimClock
from devices.bench.sensor import SensorModel


class PhotonSource(Protocol):
    """What the simulated camera needs from the virtual bench."""

    @property
    def sensor_shape(self) -> tuple[int, int]: ...

    def expected_photons(self, t_s: float, exposure_s: float) -> np.ndarray:
        """Mean photons reaching each sensor pixel during [t_s, t_s + exposure_s), float (H, W)."""


class SimulatedCamera(DeviceBase):
    """Camera twin: seeded sensor noise on the bench's expected photon image, on the bench clock."""

    #: Longest exposure accepted (the Zyla's limit is 30 s); guards against ms/s mix-ups.
    MAX_EXPOSURE_S = 30.0

    def __init__(
        self,
        source: PhotonSource,
        clock: SimClock,
        sensor: SensorModel | None = None,
        seed: int = 0,
        exposure_s: float = 0.01,
    ) -> None:
        self._source = source
        self._clock = clock
        self._sensor = sensor if sensor is not None else SensorModel()
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        shape = tuple(int(n) for n in source.sensor_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise DeviceRefused(f"SimulatedCamera: source sensor_shape must be (H, W) >= 1, got {shape}")
        self._shape: tuple[int, int] = (shape[0], shape[1])
        self._roi = (0, 0, self._shape[1], self._shape[0])
        self._binning = 1
        self._exposure_s = 0.0
        self._frame_counter = 0
        self._lock = threading.RLock()
        # Sequence state: None when no sequence is active.
        self._seq_t0: float | None = None
        self._seq_n = 0
        self._seq_next = 0
        self._seq_period = 0.0
        self._closed = False
        self.set_exposure(exposure_s)

    # ------------------------------------------------------------------ identity and settings
    def identity(self) -> dict[str, str]:
        s = self._sensor
        return {
            "vendor": "specklab",
            "model": "SimulatedCamera (Andor Zyla 5.5-like sCMOS model)",
            "serial": f"sim-seed-{self._seed}",
            "driver": "devices.camera_sim.SimulatedCamera",
            "sensor_shape": f"{self._shape[0]}x{self._shape[1]}",
            "sensor_model": ", ".join(f"{k}={v:g}" for k, v in s.as_dict().items()),
        }

    @property
    def sensor(self) -> SensorModel:
        return self._sensor

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def exposure_s(self) -> float:
        return self._exposure_s

    def set_exposure(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and 0 < seconds <= self.MAX_EXPOSURE_S):
            raise DeviceRefused(
                f"SimulatedCamera: exposure must be in (0, {self.MAX_EXPOSURE_S}] s, got {seconds!r}"
            )
        with self._lock:
            self._refuse_during_sequence("set the exposure")
            self._exposure_s = float(seconds)

    @property
    def roi(self) -> tuple[int, int, int, int]:
        return self._roi

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        rows, cols = self._shape
        if not (
            x >= 0 and y >= 0 and width >= 1 and height >= 1 and x + width <= cols and y + height <= rows
        ):
            raise DeviceRefused(
                f"SimulatedCamera: ROI (x={x}, y={y}, w={width}, h={height}) outside the {cols}x{rows} sensor"
            )
        if width < self._binning or height < self._binning:
            raise DeviceRefused(
                f"SimulatedCamera: ROI {width}x{height} smaller than one {self._binning}x{self._binning} bin"
            )
        with self._lock:
            self._refuse_during_sequence("change the ROI")
            self._roi = (int(x), int(y), int(width), int(height))

    def clear_roi(self) -> None:
        with self._lock:
            self._refuse_during_sequence("clear the ROI")
            self._roi = (0, 0, self._shape[1], self._shape[0])

    @property
    def binning(self) -> int:
        return self._binning

    def set_binning(self, factor: int) -> None:
        try:
            factor_int = int(factor)
        except (TypeError, ValueError, OverflowError):  # NaN, inf, text: refused below like 0
            factor_int = 0
        if factor_int != factor or factor_int < 1:
            raise DeviceRefused(f"SimulatedCamera: binning must be a positive integer, got {factor!r}")
        _, _, w, h = self._roi
        if factor_int > min(w, h):
            raise DeviceRefused(f"SimulatedCamera: binning {factor_int} larger than the {w}x{h} ROI")
        with self._lock:
            self._refuse_during_sequence("change the binning")
            self._binning = factor_int

    # ------------------------------------------------------------------ acquisition
    def snap(self) -> Frame:
        """Expose from the current bench time for ``exposure_s``; the clock advances by the exposure."""
        with self._lock:
            self._check_open()
            self._refuse_during_sequence("snap")
            t_start = self._clock.now()
            self._clock.advance(self._exposure_s)
            return self._make_frame(t_start, {"mode": "snap"})

    def start_sequence(self, n_frames: int, interval_s: float) -> None:
        """Arm a camera-timed sequence starting now; frames are computed when read."""
        if n_frames < 1:
            raise DeviceRefused(f"SimulatedCamera: a sequence needs n_frames >= 1, got {n_frames}")
        if not (math.isfinite(interval_s) and interval_s >= 0):
            raise DeviceRefused(f"SimulatedCamera: interval must be finite and >= 0 s, got {interval_s!r}")
        with self._lock:
            self._check_open()
            self._refuse_during_sequence("start another sequence")
            self._seq_t0 = self._clock.now()
            self._seq_n = int(n_frames)
            self._seq_next = 0
            self._seq_period = max(float(interval_s), self._exposure_s)

    def read_frame(self, timeout_s: float = 5.0) -> Frame:
        """Next frame of the sequence (exposure ``k`` starts at ``t0 + k·period``).

        Raises :class:`DeviceTimeout` when no sequence is active or all its frames
        were read (immediately: nothing more will ever come), and in realtime mode
        when the next frame would arrive more than ``timeout_s`` from now (after
        waiting ``timeout_s``, as a real camera's read would).
        """
        with self._lock:
            self._check_open()
            if self._seq_t0 is None or self._seq_next >= self._seq_n:
                done = "" if self._seq_t0 is None else f" (all {self._seq_n} frames were read)"
                raise DeviceTimeout(f"SimulatedCamera: read_frame: no sequence frame pending{done}")
            k = self._seq_next
            t_start = self._seq_t0 + k * self._seq_period
            t_end = t_start + self._exposure_s
            if self._clock.realtime and t_end - self._clock.now() > timeout_s:
                wait = max(0.0, timeout_s)
            else:
                wait = None
            if wait is None:
                self._seq_next += 1
                if self._seq_next >= self._seq_n:
                    self._seq_t0 = None  # sequence complete: settings may change again
        if wait is not None:
            time.sleep(wait)
            raise DeviceTimeout(
                f"SimulatedCamera: read_frame: frame {k} arrives at t={t_end:.3f} s, not within {timeout_s} s"
            )
        # Let the bench reach the start of the exposure, then its end (listeners, e.g. the
        # simulated DMD, see both instants), then integrate the photons over the exposure.
        self._clock.advance_to(t_start)
        self._clock.advance_to(t_end)
        with self._lock:
            return self._make_frame(t_start, {"mode": "sequence", "sequence_index": k})

    def stop_sequence(self) -> None:
        """Stop the sequence; frames not yet read are discarded. Safe when none runs."""
        with self._lock:
            self._seq_t0 = None
            self._seq_n = 0
            self._seq_next = 0

    def close(self) -> None:
        """Stop any sequence and refuse further frames; idempotent."""
        self.stop_sequence()
        self._closed = True

    # ------------------------------------------------------------------ internals
    def _make_frame(self, t_start: float, extra: dict[str, Any]) -> Frame:
        image = self._render(t_start)
        frame = Frame(
            image=image,
            frame_number=self._frame_counter,
            timestamp_s=t_start,
            exposure_s=self._exposure_s,
            metadata={"roi": self._roi, "binning": self._binning, **extra},
        )
        self._frame_counter += 1
        return frame

    def _render(self, t_start: float) -> np.ndarray:
        photons = np.asarray(self._source.expected_photons(t_start, self._exposure_s), dtype=np.float64)
        if photons.shape != self._shape:
            raise DeviceRefused(
                f"SimulatedCamera: source gave a {photons.shape} photon image, sensor is {self._shape}"
            )
        x, y, w, h = self._roi
        b = self._binning
        rows, cols = h // b, w // b
        crop = photons[y : y + rows * b, x : x + cols * b]
        if b > 1:
            crop = crop.reshape(rows, b, cols, b).sum(axis=(1, 3))
        return self._sensor.expose(crop, self._rng, n_summed=b * b)

    def _refuse_during_sequence(self, what: str) -> None:
        if self._seq_t0 is not None:
            raise DeviceRefused(f"SimulatedCamera: cannot {what} while a sequence is running")

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceRefused("SimulatedCamera: the camera is closed")
