"""Typed ctypes bindings of the simulated library's ``SimAlp*`` extras.

Why a separate binding: ALP4lib only knows the vendor API; the bench additionally needs to push
the bench clock into the library, send trigger edges, and read back the picture the mirrors show.
The bindings take the *same* ``ctypes.CDLL`` handle ALP4lib loaded (dlopen of one path returns one
library instance), so both see the same devices.
"""

from __future__ import annotations

import ctypes as ct

import numpy as np

SIMALP_NOT_DISPLAYED = 1
SIMALP_TIME_UNKNOWN = 2
SIMALP_TRIGGER_IGNORED = 3
SIMALP_CLOCK_VIRTUAL = 0
SIMALP_CLOCK_WALL = 1

_ID = ct.c_ulong
_LONG = ct.c_long
_LL = ct.c_longlong
_ULL = ct.c_ulonglong


class _HoldGilFuncPtr(ct._CFuncPtr):  # type: ignore[misc, name-defined]
    """A foreign function called *without* releasing the GIL (what ``ctypes.PyDLL`` functions do).

    Why: releasing and re-acquiring the GIL costs little alone, but while another thread (the
    HDF5 writer) runs Python code every re-acquire can wait for that thread's switch interval.
    Only the short, never-blocking extras (set the time, ask which picture is shown) use it; the
    C functions never call back into Python, so holding the GIL while they take the library's
    mutex cannot dead-lock.
    """

    _flags_ = ct._FUNCFLAG_CDECL | ct._FUNCFLAG_PYTHONAPI
    _restype_ = ct.c_int


class SimAlpExtras:
    """The ``SimAlp*`` functions of one loaded simulated library, with correct argument types.

    Each method returns the library's return code (``0`` = ALP_OK); callers decide what an error
    means for them.
    """

    def __init__(self, lib: ct.CDLL) -> None:
        self.lib = lib

        def bind(name: str, *argtypes: type, hold_gil: bool = False) -> ct._CFuncPtr:
            # A fresh function object: typing it never changes the (untyped) ones ALP4lib uses.
            function = (_HoldGilFuncPtr if hold_gil else lib._FuncPtr)((name, lib))
            function.argtypes = argtypes
            function.restype = _LONG
            return function

        self._plug = bind("SimAlpPlugDevice", _LONG, _LONG, _LONG)
        self._unplug = bind("SimAlpUnplugDevice", _LONG)
        self._inject = bind("SimAlpInjectError", _LONG, _LONG, _LONG)
        self._clock_mode = bind("SimAlpSetClockMode", _ID, _LONG, _LL)
        self._set_time = bind("SimAlpSetTime", _ID, _LL, hold_gil=True)
        self._get_time = bind("SimAlpGetTime", _ID, ct.POINTER(_LL))
        self._trigger = bind("SimAlpTrigger", _ID)
        self._end_time = bind("SimAlpProjEndTime", _ID, ct.POINTER(_LL))
        self._displayed = bind(
            "SimAlpGetDisplayed", _ID, _LL, ct.c_void_p, ct.POINTER(_LONG), ct.POINTER(_LONG)
        )
        displayed_ex = (_ID, _LL, ct.c_void_p, ct.POINTER(_LONG), ct.POINTER(_LONG), ct.POINTER(_ULL))
        self._displayed_ex = bind("SimAlpGetDisplayedEx", *displayed_ex)  # copies a picture: GIL released
        self._displayed_key = bind("SimAlpGetDisplayedEx", *displayed_ex, hold_gil=True)  # no copy
        self._read_picture = bind("SimAlpReadPicture", _ID, _ID, _LONG, ct.c_void_p)

    def plug_device(self, serial: int, width: int, height: int) -> int:
        """Make a unit with this serial number and mirror geometry available to ``AlpDevAlloc``."""
        return self._plug(serial, width, height)

    def unplug_device(self, serial: int) -> int:
        return self._unplug(serial)

    def inject_error(self, serial: int, after_calls: int, code: int) -> int:
        """Make the unit's API call after ``after_calls`` more calls return ``code`` (tests only)."""
        return self._inject(serial, after_calls, code)

    def set_clock_mode(self, device: int, mode: int, wall_offset_us: int = 0) -> int:
        return self._clock_mode(device, mode, wall_offset_us)

    def set_time(self, device: int, t_us: int) -> int:
        return self._set_time(device, t_us)

    def get_time(self, device: int) -> int:
        value = _LL(0)
        rc = self._get_time(device, ct.byref(value))
        if rc:
            raise RuntimeError(f"SimAlpGetTime returned {rc}")
        return value.value

    def trigger(self, device: int) -> int:
        return self._trigger(device)

    def projection_end_us(self, device: int) -> int | None:
        """End of the running master-mode single run in device µs; ``None`` when there is none."""
        value = _LL(-1)
        rc = self._end_time(device, ct.byref(value))
        if rc:
            raise RuntimeError(f"SimAlpProjEndTime returned {rc}")
        return None if value.value < 0 else value.value

    def displayed(self, device: int, t_us: int, shape: tuple[int, int]) -> tuple[int, np.ndarray, int, int]:
        """``(code, picture, sequence_id, picture_index)`` shown at ``t_us``; picture valid if code is 0."""
        out = np.zeros(shape, dtype=np.uint8)
        seq, index = _LONG(-1), _LONG(-1)
        rc = self._displayed(device, t_us, out.ctypes.data, ct.byref(seq), ct.byref(index))
        return rc, out, seq.value, index.value

    def displayed_key(self, device: int, t_us: int) -> tuple[int, int, int, int]:
        """``(code, sequence_id, picture_index, stamp)`` shown at ``t_us``, without copying the picture.

        ``stamp`` identifies the content of the projection: the same ``(stamp, picture_index)``
        is always the same rendered picture (a new projection or a put into the projected
        sequence gives a new stamp; stamps are never reused), so pictures can be cached by it.
        """
        seq, index, stamp = _LONG(-1), _LONG(-1), _ULL(0)
        rc = self._displayed_key(device, t_us, None, ct.byref(seq), ct.byref(index), ct.byref(stamp))
        return rc, seq.value, index.value, stamp.value

    def displayed_ex(
        self, device: int, t_us: int, shape: tuple[int, int]
    ) -> tuple[int, np.ndarray, int, int, int]:
        """``(code, picture, sequence_id, picture_index, stamp)``, read in one atomic call."""
        out = np.empty(shape, dtype=np.uint8)  # fully written when code is 0
        seq, index, stamp = _LONG(-1), _LONG(-1), _ULL(0)
        refs = (ct.byref(seq), ct.byref(index), ct.byref(stamp))
        rc = self._displayed_ex(device, t_us, out.ctypes.data, *refs)
        return rc, out, seq.value, index.value, stamp.value

    def read_picture(self, device: int, sequence: int, index: int, shape: tuple[int, int]) -> np.ndarray:
        """A picture as stored in a sequence (tests use it to see *where* an upload landed)."""
        out = np.zeros(shape, dtype=np.uint8)
        rc = self._read_picture(device, sequence, index, out.ctypes.data)
        if rc:
            raise RuntimeError(f"SimAlpReadPicture returned {rc}")
        return out
