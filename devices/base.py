"""Device interfaces shared by real drivers and their simulated twins.

Every driver (ALP4lib DMD, pycromanager camera, New Era pump) and every simulated
twin implements one of the Protocols below, so the acquisition engine, the GUI and
the tests never need to know which one they hold. The Protocols are
``runtime_checkable`` so a test can assert that a twin really fits the interface.

Errors: every device raises a subclass of :class:`DeviceError` that names the
device and the operation, never a bare ``KeyError``/``OSError`` from a vendor library.
``close()`` must be idempotent and safe after a failed ``open``; every device is a
context manager through :class:`DeviceBase`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np


class DeviceError(RuntimeError):
    """A device failed; the message names the device and what it was asked to do."""


class DeviceTimeout(DeviceError):
    """A device did not answer (or deliver a frame) in time."""


class DeviceProtocolError(DeviceError):
    """A device answered something that does not parse (garbled reply, unknown code)."""


class DeviceRefused(DeviceError):
    """A device understood the request and refused it (out of range, alarm, bad state)."""


class OperatorCancelled(DeviceError):
    """The operator declined a step the run needs (e.g. mounting a sample): an abort, not a failure."""


class SampleError(DeviceError):
    """A sample could not be mounted: unknown to the bench, refused by the operator, or nobody to ask."""


class MountCancelled(SampleError, OperatorCancelled):
    """The operator cancelled mounting a sample."""


@dataclass(frozen=True)
class Frame:
    """One camera image with the metadata the camera itself knows.

    ``timestamp_s`` is on the device clock (seconds since the camera opened); for
    simulated devices that clock is the bench's :class:`devices.bench.clock.SimClock`.
    """

    image: np.ndarray  # (H, W) uint16
    frame_number: int  # camera's own counter, monotonically increasing, never reset by a sequence
    timestamp_s: float
    exposure_s: float
    metadata: dict[str, Any] = field(default_factory=dict)


class DeviceBase:
    """Context-manager plumbing: ``with Device(...) as d:`` always ends in ``close()``."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 - returns the concrete subclass
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class Camera(Protocol):
    """A scientific camera (sCMOS/CCD). Images are uint16 in ADU."""

    def identity(self) -> dict[str, str]:
        """Vendor, model, serial/label and driver versions, stored in every run file."""

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """Full sensor (rows, cols) before ROI and binning."""

    @property
    def exposure_s(self) -> float: ...

    def set_exposure(self, seconds: float) -> None: ...

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) in unbinned sensor pixels."""

    def set_roi(self, x: int, y: int, width: int, height: int) -> None: ...

    def clear_roi(self) -> None: ...

    @property
    def binning(self) -> int: ...

    def set_binning(self, factor: int) -> None: ...

    def snap(self) -> Frame:
        """Expose once and return the frame (software-timed)."""

    def start_sequence(self, n_frames: int, interval_s: float) -> None:
        """Start a hardware/camera-timed sequence of ``n_frames`` frames, one every ``interval_s``."""

    def read_frame(self, timeout_s: float = 5.0) -> Frame:
        """Next frame of the running sequence, in order; raises DeviceTimeout when none comes."""

    def stop_sequence(self) -> None:
        """Stop a running sequence; safe when none runs."""

    def close(self) -> None: ...


class TriggerMode(StrEnum):
    """How the DMD advances pictures: on its own clock (master) or on a trigger input (slave)."""

    MASTER = "master"
    SLAVE = "slave"


@runtime_checkable
class Dmd(Protocol):
    """A binary/grayscale digital micromirror device (Vialux ALP)."""

    def identity(self) -> dict[str, str]: ...

    @property
    def shape(self) -> tuple[int, int]:
        """Mirror array (rows, cols), e.g. (768, 1024) for a V-7001."""

    def upload(self, patterns: np.ndarray, picture_time_s: float, bit_depth: int = 1) -> None:
        """Replace the current sequence by ``patterns`` (n, rows, cols), uint8 (0/255 or 8-bit gray).

        Frees any previous sequence on the device first.
        """

    def start(self, continuous: bool = False, trigger: TriggerMode = TriggerMode.MASTER) -> None:
        """Start projecting the uploaded sequence once (or in a loop)."""

    def wait(self) -> None:
        """Block until a non-continuous projection has finished."""

    def halt(self) -> None:
        """Stop projecting; safe when idle."""

    def show(self, pattern: np.ndarray) -> None:
        """Display one static pattern until told otherwise (upload + continuous start)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class PumpStatus:
    """What a syringe pump reports about itself (New Era status prompt + queried values)."""

    running: bool
    direction: str  # "infuse" | "withdraw"
    rate_ml_per_h: float
    diameter_mm: float
    dispensed_ml: float
    alarm: str | None = None  # e.g. "R" (reset), "S" (stalled); None when no alarm


@runtime_checkable
class Pump(Protocol):
    """A syringe/flow pump driving the scattering suspension through the cuvette."""

    def identity(self) -> dict[str, str]: ...

    def set_diameter(self, mm: float) -> None: ...

    def set_rate(self, ml_per_h: float) -> None: ...

    def set_direction(self, direction: str) -> None: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> PumpStatus: ...

    def close(self) -> None: ...


@runtime_checkable
class SampleHolder(Protocol):
    """Where the imaged sample sits (speckle-SIM images one sample per block of N masks, seed 001).

    ``mount(name)`` returns once ``name`` is in place: the virtual bench switches its fluorophore
    density at once; on a real bench the operator swaps the slide and confirms. Mounting the sample
    already in place is a no-op. Raises :class:`SampleError` when it cannot be done.
    """

    def identity(self) -> dict[str, str]: ...

    @property
    def mounted(self) -> str | None:
        """The sample in place now (None: unknown, e.g. a manual holder before its first mount)."""

    def mount(self, name: str) -> None: ...
