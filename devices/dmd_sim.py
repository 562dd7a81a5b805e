"""Simulated DMD: the real :class:`~devices.dmd_alp.AlpDmd` driver on the simulated ALP library.

Why the real driver: the virtual bench should exercise exactly the ALP4lib calls the lab bench
makes, defects and workarounds included. Only three things are added on top:

* the library is built on first use (:func:`devices.alp_sim.build_library`) and a unit with a
  unique serial number and the requested mirror geometry is plugged into it;
* the library follows the bench's :class:`~devices.bench.clock.SimClock`: every clock advance is
  pushed into it (virtual clock), or it reads CLOCK_MONOTONIC with the clock's offset (realtime);
* :meth:`SimulatedDmd.displayed_pattern` tells the bench which picture the mirrors show at any
  bench time, and :meth:`SimulatedDmd.trigger` plays the trigger-input edge for slave mode.

Per-frame cost (a 10^5-frame headless run asks for the displayed picture at every frame): the
library tells, without copying anything, which (content stamp, picture index) is shown at a
time; a rendered picture is copied out of the library once per key and then served from a
small cache as a *read-only* array, the same object every time (the bench caches its optics per
picture object). :meth:`SimulatedDmd.displayed_index` gives the (sequence id, picture index)
alone, which is all the acquisition engine needs to check a frame's pattern.
"""

from __future__ import annotations

import ctypes as ct
import itertools
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np

from devices.alp_sim.build import LIBRARY_NAME, build_library
from devices.alp_sim.extras import (
    SIMALP_CLOCK_VIRTUAL,
    SIMALP_CLOCK_WALL,
    SIMALP_NOT_DISPLAYED,
    SIMALP_TIME_UNKNOWN,
    SIMALP_TRIGGER_IGNORED,
    SimAlpExtras,
)
from devices.base import DeviceError
from devices.bench.clock import SimClock
from devices.dmd_alp import AlpDmd, alp_error

_serials = itertools.count(81001)
#: Bytes of rendered pictures a SimulatedDmd keeps (a 100-picture bsbd period of XGA is 79 MB).
PICTURE_CACHE_BYTES = 128 * 2**20
_libraries: dict[Path, SimAlpExtras] = {}
_libraries_lock = threading.Lock()


def simulated_library() -> tuple[Path, SimAlpExtras]:
    """Build (if needed) and load the simulated library once per process: (folder, extras).

    Loading goes through one ``ctypes.CDLL`` per path, so ALP4lib (which dlopens the same path)
    and the extras share one library instance and therefore one set of devices.
    """
    folder = build_library()
    with _libraries_lock:
        extras = _libraries.get(folder)
        if extras is None:
            extras = SimAlpExtras(ct.CDLL(str(folder / LIBRARY_NAME)))
            _libraries[folder] = extras
    return folder, extras


def _to_us(t_s: float) -> int:
    return round(t_s * 1e6)


class SimulatedDmd(AlpDmd):
    """An :class:`AlpDmd` on the simulated library, following ``clock``.

    ``shape`` is the mirror array (rows, cols); (768, 1024) is a V-7001.
    """

    def __init__(self, clock: SimClock, shape: tuple[int, int] = (768, 1024)) -> None:
        rows, cols = (int(v) for v in shape)
        self._clock = clock
        self._serial_plugged: int | None = None
        self._dev: int | None = None  # ALP device id once allocated (pushed time goes there)
        self._last_pushed_us: int | None = None
        # (content stamp, picture index) -> read-only rendered picture; see displayed_pattern
        self._pictures: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._pictures_lock = threading.Lock()
        folder, extras = simulated_library()
        self._extras = extras
        serial = next(_serials)
        rc = extras.plug_device(serial, cols, rows)
        if rc != 0:
            raise alp_error("open", "SimAlpPlugDevice", rc, f"cannot simulate a {rows}x{cols} DMD")
        self._serial_plugged = serial
        try:
            super().__init__(version="4.3", lib_dir=str(folder), device_number=serial)
            self._dev = self.device_id
            self._follow_clock()
        except BaseException:
            self.close()
            raise

    @property
    def serial(self) -> int:
        """Serial number of the simulated unit (unique in this process)."""
        return int(self._serial_plugged or 0)

    @property
    def extras(self) -> SimAlpExtras:
        """The ``SimAlp*`` bindings (tests use them for fault injection and direct inspection)."""
        return self._extras

    def _follow_clock(self) -> None:
        device = self.device_id
        if self._clock.realtime:
            # Device time = CLOCK_MONOTONIC - offset = bench time (SimClock uses time.monotonic()).
            offset_us = _to_us(time.monotonic() - self._clock.now())
            self._check(
                "open",
                "SimAlpSetClockMode",
                self._extras.set_clock_mode(device, SIMALP_CLOCK_WALL, offset_us),
            )
            return
        self._check("open", "SimAlpSetClockMode", self._extras.set_clock_mode(device, SIMALP_CLOCK_VIRTUAL))
        self._check("open", "SimAlpSetTime", self._extras.set_time(device, _to_us(self._clock.now())))
        # A weak reference: the clock (which has no unsubscribe) must not keep a closed DMD alive.
        self_ref = weakref.ref(self)

        def push_time(t_s: float) -> None:
            # Called at every clock advance (twice a camera frame): a plain int compare and one
            # GIL-holding C call; an unchanged time (advance_to a time already reached) is skipped.
            dmd = self_ref()
            if dmd is not None and not dmd._closed and dmd._device_allocated:
                t_us = _to_us(t_s)
                if t_us != dmd._last_pushed_us:
                    dmd._extras.set_time(dmd._dev, t_us)
                    dmd._last_pushed_us = t_us

        self._clock.subscribe(push_time)

    def displayed_pattern(self, t_s: float) -> np.ndarray | None:
        """The picture the mirrors show at bench time ``t_s`` (uint8 rows x cols, 255 = always on).

        ``None`` when nothing is projected (idle, halted, a single run finished, slave mode before
        its first trigger) or when ``t_s`` is before the current projection started (the library
        keeps no history of earlier projections).

        The array is **read-only** and shared: the same displayed picture (same projection
        content stamp and picture index) returns the same object until the projection changes,
        so callers may cache work per picture object. Copy it to modify it.
        """
        self._require_open("displayed pattern")
        rc, _, index, stamp = self._extras.displayed_key(self._dev, _to_us(t_s))
        if rc == 0:
            with self._pictures_lock:
                picture = self._pictures.get((stamp, index))
                if picture is not None:
                    self._pictures.move_to_end((stamp, index))
                    return picture
            # Miss: copy the picture out of the library, keyed by what that same call reports.
            rc, picture, _, index, stamp = self._extras.displayed_ex(self._dev, _to_us(t_s), self.shape)
            if rc == 0:
                picture.flags.writeable = False
                self._remember(stamp, index, picture)
                return picture
        if rc in (SIMALP_NOT_DISPLAYED, SIMALP_TIME_UNKNOWN):
            return None
        raise alp_error("displayed pattern", "SimAlpGetDisplayedEx", rc)

    def _remember(self, stamp: int, index: int, picture: np.ndarray) -> None:
        with self._pictures_lock:
            pictures = self._pictures
            if pictures and next(reversed(pictures))[0] != stamp:
                pictures.clear()  # a new projection: stamps never come back, older keys are dead
            pictures[(stamp, index)] = picture
            while len(pictures) > 1 and len(pictures) * picture.nbytes > PICTURE_CACHE_BYTES:
                pictures.popitem(last=False)

    def displayed_index(self, t_s: float) -> tuple[int, int] | None:
        """(sequence id, picture index) shown at ``t_s``, or ``None`` (cheap: no picture copy)."""
        self._require_open("displayed index")
        rc, sequence, index, _ = self._extras.displayed_key(self._dev, _to_us(t_s))
        if rc == 0:
            return sequence, index
        if rc in (SIMALP_NOT_DISPLAYED, SIMALP_TIME_UNKNOWN):
            return None
        raise alp_error("displayed index", "SimAlpGetDisplayedEx", rc)

    def trigger(self) -> bool:
        """One trigger-input edge now; True when a slave-mode projection advanced to its next picture."""
        self._require_open("trigger")
        rc = self._extras.trigger(self.device_id)
        if rc == SIMALP_TRIGGER_IGNORED:
            return False
        self._check("trigger", "SimAlpTrigger", rc)
        return True

    def wait(self) -> None:
        """Wait for a single run to end; with a virtual clock the *bench clock* moves to its end.

        Moving the clock (rather than letting the library jump ahead alone) keeps every simulated
        device agreeing on the time. A slave-mode run that still needs triggers raises
        :class:`~devices.dmd_alp.AlpRefused` (ALP_NOT_IDLE) instead of dead-locking.
        """
        self._require_open("wait")
        if not self._clock.realtime:
            end_us = self._extras.projection_end_us(self.device_id)
            if end_us is not None:
                self._clock.advance_to(end_us / 1e6)
        super().wait()

    def close(self) -> None:
        """Close the driver, then unplug the simulated unit so its serial and memory are released."""
        with self._pictures_lock:
            self._pictures.clear()
        super().close()
        serial, self._serial_plugged = self._serial_plugged, None
        if serial is not None and not self._device_allocated:
            rc = self._extras.unplug_device(serial)
            if rc != 0:
                raise DeviceError(f"simulated DMD: close: cannot unplug unit {serial} (code {rc})")
