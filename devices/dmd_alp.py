"""Vialux ALP DMD driver: the :class:`~devices.base.Dmd` interface over the ALP4lib package.

Why ALP4lib and not our own ctypes binding: it is what the lab and the community use with the
vendor library, so the simulated bench exercises the very calls the real bench makes. ALP4lib 1.1
has defects; each one is worked around here, without touching the installed package, and each
workaround has a test (``tests/test_dmd_alp4lib_defects.py``; details in ``docs/dmd.md``):

1. ``ProjInquire`` passes four arguments (device, *sequence*, type, pointer) to the three-argument
   ``AlpProjInquire``: the library reads the sequence id as the inquire type and the type as the
   output pointer. -> :meth:`AlpDmd.is_projecting` calls ``AlpProjInquire`` through a correctly
   typed function pointer on ALP4lib's own library handle.
2. ``ProjInquireEx`` calls ``AlpProjInquire`` (not ``...Ex``) with a ``c_double`` for the struct.
   -> :meth:`AlpDmd.progress` calls ``AlpProjInquireEx`` with a ``tAlpProjProgress``.
3. ``ImgToBitPlane`` calls ``img_to_bitplane(imgArray, bitShift)``, which takes one argument:
   always ``TypeError``. -> :func:`img_to_bitplane` here (used for packed 1-bit uploads).
4. A sequence id of 0 is a falsy ``c_long``: the "default to the last sequence" branches
   (``if not SequenceId`` in ``SeqPut``, ``if SequenceId is None and self._lastDDRseq`` elsewhere)
   misfire, so ``SeqPut(SequenceId=seq0)`` writes into whichever sequence was allocated last and
   ``SetTiming()``/``Run()`` without an id fail (``Run`` even with ``AttributeError``: it calls a
   missing ``_raiseError``). -> every call passes the sequence explicitly, and ``_lastDDRseq`` is
   pointed at the target sequence before ``SeqPut``.
5. ``ALPError(code)`` looks the code up in ``ALP_ERRORS``; a code not in that table raises
   ``KeyError`` instead. -> :meth:`AlpDmd._call` turns both into :class:`AlpError` with the
   numeric code, the ALP name and the operation.
6. ``FreeSeq`` only *prints* a failure (``warning=True``) and drops the id from ``Seqs`` first.
   -> sequences are freed through a typed ``AlpSeqFree`` whose result is checked.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import importlib.metadata
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TypeVar

import numpy as np
from ALP4 import (
    ALP4,
    ALP_DATA_BINARY_TOPDOWN,
    ALP_DATA_FORMAT,
    ALP_DEVICE_NUMBER,
    ALP_DMDTYPE_SXGA_PLUS,
    ALP_ERRORS,
    ALP_MASTER,
    ALP_MAX_PICTURE_TIME,
    ALP_MIN_PICTURE_TIME,
    ALP_PROJ_MODE,
    ALP_PROJ_PROGRESS,
    ALP_PROJ_STATE,
    ALP_SLAVE,
    ALP_VERSION,
    ALPError,
    tAlpProjProgress,
)

from devices.base import DeviceBase, DeviceError, DeviceProtocolError, DeviceRefused, TriggerMode

logger = logging.getLogger(__name__)

T = TypeVar("T")

# alp.h values ALP4lib does not define.
ALP_PROJ_ACTIVE = 1200
ALP_PROJ_IDLE = 1201
ALP_INVALID_ID = ct.c_ulong(-1).value
ALP_FLAG_QUEUE_IDLE = 1
ALP_FLAG_SEQUENCE_INDEFINITE = 4

#: alp.h names of the return codes (ALP4lib only has descriptions, and not for every code).
ALP_ERROR_NAMES: dict[int, str] = {
    0: "ALP_OK",
    1001: "ALP_NOT_ONLINE",
    1002: "ALP_NOT_IDLE",
    1003: "ALP_NOT_AVAILABLE",
    1004: "ALP_NOT_READY",
    1005: "ALP_PARM_INVALID",
    1006: "ALP_ADDR_INVALID",
    1007: "ALP_MEMORY_FULL",
    1008: "ALP_SEQ_IN_USE",
    1009: "ALP_HALTED",
    1010: "ALP_ERROR_INIT",
    1011: "ALP_ERROR_COMM",
    1012: "ALP_DEVICE_REMOVED",
    1013: "ALP_NOT_CONFIGURED",
    1014: "ALP_LOADER_VERSION",
    1018: "ALP_ERROR_POWER_DOWN",
    1019: "ALP_DRIVER_VERSION",
    1020: "ALP_SDRAM_INIT",
}
ALP_PARM_INVALID = 1005
#: Codes meaning "understood and refused" (bad argument or state), as opposed to hardware trouble.
_REFUSAL_CODES = frozenset({1002, 1004, 1005, 1007, 1008})
_CODE_BY_DESCRIPTION = {text: code for code, text in ALP_ERRORS.items()}

_DMD_TYPE_NAMES = {
    1: "XGA (D3000)",
    2: "SXGA+",
    3: "1080p 0.95in",
    4: "XGA 0.7in (V-7001)",
    5: "XGA 0.55in A",
    6: "XGA 0.55in X",
    7: "WUXGA 0.96in",
    8: "WQXGA 0.9in",
    9: "WQXGA 0.9in 480MHz",
    12: "WXGA S450",
    255: "disconnected/unknown",
}
#: ``show()`` repeats one picture; any legal picture time works, 30 Hz keeps 8-bit gray legal.
_SHOW_PICTURE_TIME_S = 1 / 30


class AlpError(DeviceError):
    """An ALP API call failed; carries the numeric code, its alp.h name and what we were doing."""

    def __init__(self, operation: str, function: str, code: int, detail: str = "") -> None:
        self.operation = operation
        self.function = function
        self.code = code
        self.alp_name = ALP_ERROR_NAMES.get(code, "unknown ALP error code")
        description = ALP_ERRORS.get(code, "")
        message = f"ALP DMD: {operation} ({function}) failed: {self.alp_name} ({code})"
        if description:
            message += f": {description}"
        if detail:
            message += f" - {detail}"
        super().__init__(message)


class AlpRefused(AlpError, DeviceRefused):
    """The ALP refused the request (invalid parameter, not idle, sequence in use, memory full)."""


class AlpUnknownCode(AlpError, DeviceProtocolError):
    """The library returned a code that alp.h does not define."""


def alp_error(operation: str, function: str, code: int, detail: str = "") -> AlpError:
    """The :class:`AlpError` subclass that fits ``code``."""
    if code not in ALP_ERROR_NAMES:
        return AlpUnknownCode(operation, function, code, detail)
    if code in _REFUSAL_CODES:
        return AlpRefused(operation, function, code, detail)
    return AlpError(operation, function, code, detail)


def img_to_bitplane(images: np.ndarray, bit_shift: int = 0) -> np.ndarray:
    """Pack bit ``bit_shift`` of every pixel, 8 pixels a byte, leftmost pixel in bit 7.

    This is what ALP4lib's ``ImgToBitPlane`` documents (and cannot do, see defect 3): the
    ``ALP_DATA_BINARY_TOPDOWN`` layout, one row = ceil(cols / 8) bytes. Works on (rows, cols) or
    (n, rows, cols). For 1-bit display ("pixel >= 128 is on") use ``bit_shift=7``.
    """
    if not 0 <= bit_shift <= 7:
        raise ValueError(f"bit_shift must be 0..7, got {bit_shift}")
    data = np.asarray(images, dtype=np.uint8)
    return np.packbits((data >> bit_shift) & 1, axis=-1)


@dataclass(frozen=True)
class ProjectionProgress:
    """``AlpProjInquireEx(ALP_PROJ_PROGRESS)`` in plain numbers (see the ALP API description)."""

    idle: bool
    indefinite: bool  # started with AlpProjStartCont
    queue_id: int
    sequence_id: int
    iterations_left: int  # including the current one; 0 for continuous projections
    frames_left: int  # in the current iteration, including the current frame
    picture_time_us: int
    frames_per_iteration: int
    flags: int


def _typed_function(lib: ct.CDLL, name: str, *argtypes: type) -> ct._CFuncPtr:
    """A correctly typed entry point of ``lib``, separate from the untyped one ALP4lib calls."""
    function = lib._FuncPtr((name, lib))
    function.argtypes = argtypes
    function.restype = ct.c_long
    return function


class AlpDmd(DeviceBase):
    """A Vialux DMD on the ALP-4.x API through ALP4lib (see the module docstring for the defects).

    ``lib_dir`` is the folder holding the vendor library (``libalp43.so`` on Linux; on Windows the
    folder *above* ``x64/alp4395.dll``); ``None`` lets ALP4lib look (registry on Windows,
    ``/usr/lib/x86_64-linux-gnu/`` on Linux). ``device_number`` is the serial number of the unit to
    open, ``None`` for the first free one.

    One sequence is held at a time: ``upload`` replaces it. ALP errors become :class:`AlpError`
    (a :class:`~devices.base.DeviceError`) naming the operation and the ALP code.
    """

    def __init__(
        self, version: str = "4.3", lib_dir: str | None = None, device_number: int | None = None
    ) -> None:
        self._version = version
        self._alp: ALP4 | None = None
        self._device_allocated = False
        self._closed = False
        self._library_path = ""
        self._sequence: ct.c_long | None = None
        self._n_pictures = 0
        self._picture_time_s = 0.0
        self._bit_depth = 1
        self._continuous = False
        self._proj_mode: int | None = None
        self._shape = (0, 0)
        try:
            self._open(lib_dir, device_number)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening and errors

    def _open(self, lib_dir: str | None, device_number: int | None) -> None:
        try:
            # ALP4lib prints "Loading library ..." and "DMD found ..."; keep stdout for the caller.
            with contextlib.redirect_stdout(io.StringIO()):
                alp = ALP4(version=self._version, libDir=lib_dir)
        except (OSError, ValueError) as exc:
            where = lib_dir or "ALP4lib's default location"
            raise DeviceError(
                f"ALP DMD: open: cannot load the ALP-{self._version} library from {where}: {exc}"
            ) from exc
        self._alp = alp
        self._library_path = str(alp._ALPLib._name)
        lib = alp._ALPLib
        self._proj_inquire = _typed_function(
            lib, "AlpProjInquire", ct.c_ulong, ct.c_long, ct.POINTER(ct.c_long)
        )
        self._proj_inquire_ex = _typed_function(lib, "AlpProjInquireEx", ct.c_ulong, ct.c_long, ct.c_void_p)
        self._seq_free = _typed_function(lib, "AlpSeqFree", ct.c_ulong, ct.c_ulong)
        # Sentinel instead of ALP4lib's 0: device ids may be 0, and close() must know whether
        # AlpDevAlloc succeeded before a later step of Initialize failed.
        alp.ALP_ID = ct.c_ulong(ALP_INVALID_ID)

        def initialize() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                alp.Initialize(device_number)

        try:
            self._call("open", "AlpDevAlloc/AlpDevInquire", initialize)
        finally:
            self._device_allocated = alp.ALP_ID.value != ALP_INVALID_ID
        self._shape = (int(alp.nSizeY), int(alp.nSizeX))
        self._dmd_type = int(alp.DMDType.value)
        self._serial = self._call("open", "AlpDevInquire", lambda: alp.DevInquire(ALP_DEVICE_NUMBER))
        self._firmware = self._call("open", "AlpDevInquire", lambda: alp.DevInquire(ALP_VERSION))

    def _call(self, operation: str, function: str, call: Callable[[], T]) -> T:
        """Run an ALP4lib method, turning its failures into :class:`AlpError`."""
        try:
            return call()
        except ALPError as exc:
            code = _CODE_BY_DESCRIPTION.get(str(exc), -1)
            raise alp_error(operation, function, code) from exc
        except KeyError as exc:
            # Defect 5: ALPError(code) itself raises KeyError(code) for codes missing from ALP_ERRORS.
            if exc.args and isinstance(exc.args[0], int):
                raise alp_error(operation, function, exc.args[0]) from exc
            raise

    @staticmethod
    def _check(operation: str, function: str, rc: int) -> None:
        if rc != 0:
            raise alp_error(operation, function, rc)

    def _require_open(self, operation: str) -> ALP4:
        if self._closed or self._alp is None or not self._device_allocated:
            raise DeviceError(f"ALP DMD: {operation}: the device is closed")
        return self._alp

    # ------------------------------------------------------------------ description

    def identity(self) -> dict[str, str]:
        """Vendor, model, serial, ALP version and the loaded library path (stored in run files)."""
        try:
            alp4lib_version = importlib.metadata.version("ALP4lib")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed from source
            alp4lib_version = "unknown"
        rows, cols = self._shape
        dmd_name = _DMD_TYPE_NAMES.get(self._dmd_type, f"DMD type {self._dmd_type}")
        return {
            "vendor": "ViALUX",
            "model": f"ALP-{self._version} {dmd_name}",
            "serial": str(self._serial),
            "version": str(self._firmware),
            "api": f"ALP-{self._version}",
            "driver": f"ALP4lib {alp4lib_version}",
            "library": self._library_path,
            "shape": f"{rows}x{cols}",
        }

    @property
    def shape(self) -> tuple[int, int]:
        """Mirror array (rows, cols)."""
        return self._shape

    @property
    def device_id(self) -> int:
        """The ALP_ID ``AlpDevAlloc`` returned (may be 0)."""
        return int(self._require_open("device_id").ALP_ID.value)

    @property
    def sequence_id(self) -> int | None:
        """ALP id of the uploaded sequence (may be 0), ``None`` when nothing is uploaded."""
        return None if self._sequence is None else int(self._sequence.value)

    @property
    def n_pictures(self) -> int:
        return self._n_pictures

    @property
    def picture_time_s(self) -> float:
        return self._picture_time_s

    @property
    def bit_depth(self) -> int:
        return self._bit_depth

    @property
    def alp(self) -> ALP4:
        """The underlying ALP4lib object, for ALP features this class does not wrap."""
        return self._require_open("alp")

    # ------------------------------------------------------------------ upload

    def _validated_patterns(self, patterns: np.ndarray) -> np.ndarray:
        data = np.asarray(patterns)
        if data.dtype == np.bool_:
            data = data.astype(np.uint8) * np.uint8(255)
        elif data.dtype != np.uint8:
            raise DeviceRefused(
                "ALP DMD: upload: patterns must be uint8 (0/255 binary or 8-bit gray) or bool, "
                f"got {data.dtype}"
            )
        if data.ndim == 2:
            data = data[np.newaxis]
        if data.ndim != 3 or data.shape[0] == 0 or data.shape[1:] != self._shape:
            rows, cols = self._shape
            raise DeviceRefused(
                f"ALP DMD: upload: patterns must have shape (n, {rows}, {cols}) with n >= 1, got {data.shape}"
            )
        return np.ascontiguousarray(data)

    @property
    def _packed_upload(self) -> bool:
        # ALP_DATA_BINARY_TOPDOWN rows are cols/8 bytes except on SXGA+ (one pad byte first).
        return self._shape[1] % 8 == 0 and self._dmd_type != ALP_DMDTYPE_SXGA_PLUS

    def upload(self, patterns: np.ndarray, picture_time_s: float, bit_depth: int = 1) -> None:
        """Replace the sequence by ``patterns`` (n, rows, cols) uint8, shown ``picture_time_s`` each.

        ``bit_depth`` 1 shows pixel >= 128 as on (uploaded packed, 8x less data); 2..8 show the
        ``bit_depth`` most significant bits as gray. Halts and frees the previous sequence first.
        """
        alp = self._require_open("upload")
        frames = self._validated_patterns(patterns)
        # numbers' ABCs admit numpy scalars (np.int64 from a config array, np.float32 from a GUI spin box)
        if isinstance(bit_depth, bool) or not isinstance(bit_depth, Integral) or not 1 <= bit_depth <= 8:
            raise DeviceRefused(f"ALP DMD: upload: bit_depth must be an integer 1..8, got {bit_depth!r}")
        if not (isinstance(picture_time_s, Real) and math.isfinite(picture_time_s) and picture_time_s > 0):
            raise DeviceRefused(
                f"ALP DMD: upload: picture_time_s must be a positive number, got {picture_time_s!r}"
            )
        bit_depth, picture_time_s = int(bit_depth), float(picture_time_s)
        picture_us = round(picture_time_s * 1e6)
        self._halt("upload")
        self._free_sequence("upload")
        n = frames.shape[0]
        try:
            sequence = self._call("upload", "AlpSeqAlloc", lambda: alp.SeqAlloc(nbImg=n, bitDepth=bit_depth))
        except AlpError:
            alp.Seqs.pop()  # ALP4lib appends the id before checking the result
            raise
        try:
            packed = bit_depth == 1 and self._packed_upload
            if packed:
                self._call(
                    "upload",
                    "AlpSeqControl",
                    lambda: alp.SeqControl(ALP_DATA_FORMAT, ALP_DATA_BINARY_TOPDOWN, SequenceId=sequence),
                )
            self._set_timing(alp, sequence, picture_us, bit_depth)
            data = img_to_bitplane(frames, 7) if packed else frames
            alp._lastDDRseq = sequence  # defect 4: SeqPut replaces a falsy id 0 by _lastDDRseq
            self._call("upload", "AlpSeqPut", lambda: alp.SeqPut(data.ravel(), SequenceId=sequence))
        except BaseException:
            self._sequence = sequence
            with contextlib.suppress(DeviceError):
                self._free_sequence("upload")
            raise
        self._sequence = sequence
        self._n_pictures = n
        self._picture_time_s = picture_us / 1e6
        self._bit_depth = bit_depth

    def _set_timing(self, alp: ALP4, sequence: ct.c_long, picture_us: int, bit_depth: int) -> None:
        try:
            self._call(
                "upload", "AlpSeqTiming", lambda: alp.SetTiming(SequenceId=sequence, pictureTime=picture_us)
            )
        except AlpError as exc:
            if exc.code != ALP_PARM_INVALID:
                raise
            try:
                low = alp.SeqInquire(ALP_MIN_PICTURE_TIME, SequenceId=sequence)
                high = alp.SeqInquire(ALP_MAX_PICTURE_TIME, SequenceId=sequence)
                allowed = f"allowed {low}..{high} µs"
            except (ALPError, KeyError):
                allowed = "allowed range unknown"
            raise alp_error(
                "upload",
                "AlpSeqTiming",
                exc.code,
                f"picture time {picture_us} µs is invalid for bit depth {bit_depth} ({allowed})",
            ) from exc

    def _free_sequence(self, operation: str) -> None:
        sequence = self._sequence
        if sequence is None or self._alp is None:
            return
        alp = self._alp
        # Defect 6: ALP4lib's FreeSeq only prints a failure; call AlpSeqFree ourselves and check it.
        self._check(operation, "AlpSeqFree", self._seq_free(alp.ALP_ID, ct.c_ulong(sequence.value)))
        self._sequence = None
        self._n_pictures = 0
        alp.Seqs = [s for s in alp.Seqs if s is not sequence]
        if alp._lastDDRseq is sequence:
            alp._lastDDRseq = None

    # ------------------------------------------------------------------ projection

    def start(self, continuous: bool = False, trigger: TriggerMode = TriggerMode.MASTER) -> None:
        """Project the uploaded sequence once (``AlpProjStart``) or in a loop (``...Cont``).

        In ``TriggerMode.SLAVE`` every trigger-input edge shows the next picture. A running
        projection is halted first (the ALP accepts ``ALP_PROJ_MODE`` only when idle).
        """
        alp = self._require_open("start")
        sequence = self._sequence
        if sequence is None:
            raise DeviceRefused("ALP DMD: start: nothing uploaded; call upload() first")
        mode = ALP_SLAVE if TriggerMode(trigger) is TriggerMode.SLAVE else ALP_MASTER
        self._halt("start")
        if mode != self._proj_mode:
            self._call("start", "AlpProjControl", lambda: alp.ProjControl(ALP_PROJ_MODE, mode))
            self._proj_mode = mode
        function = "AlpProjStartCont" if continuous else "AlpProjStart"
        self._call("start", function, lambda: alp.Run(SequenceId=sequence, loop=continuous))
        self._continuous = continuous

    def wait(self) -> None:
        """Block until a single run (``start(continuous=False)``) has finished; at once when idle."""
        alp = self._require_open("wait")
        if not self.is_projecting():
            return
        if self._continuous:
            raise DeviceRefused("ALP DMD: wait: a continuous projection never finishes; call halt()")
        self._call("wait", "AlpProjWait", alp.Wait)

    def _halt(self, operation: str) -> None:
        alp = self._alp
        if alp is not None and self._device_allocated:
            self._call(operation, "AlpDevHalt", alp.Halt)

    def halt(self) -> None:
        """Stop projecting; harmless when idle or closed."""
        if not self._closed:
            self._halt("halt")

    def show(self, pattern: np.ndarray) -> None:
        """Display one (rows, cols) pattern until told otherwise (1-bit when it is 0/255 or bool)."""
        frames = self._validated_patterns(pattern)
        if frames.shape[0] != 1:
            raise DeviceRefused(f"ALP DMD: show: expected one (rows, cols) pattern, got {np.shape(pattern)}")
        binary = bool(np.all((frames == 0) | (frames == 255)))
        self.upload(frames, _SHOW_PICTURE_TIME_S, bit_depth=1 if binary else 8)
        self.start(continuous=True)

    def is_projecting(self) -> bool:
        """``AlpProjInquire(ALP_PROJ_STATE) == ALP_PROJ_ACTIVE`` (defect 1: not via ALP4lib)."""
        alp = self._require_open("projection state")
        value = ct.c_long(0)
        self._check(
            "projection state",
            "AlpProjInquire",
            self._proj_inquire(alp.ALP_ID, ALP_PROJ_STATE, ct.byref(value)),
        )
        if value.value not in (ALP_PROJ_ACTIVE, ALP_PROJ_IDLE):
            raise DeviceProtocolError(f"ALP DMD: projection state: unexpected ALP_PROJ_STATE {value.value}")
        return value.value == ALP_PROJ_ACTIVE

    def progress(self) -> ProjectionProgress:
        """``AlpProjInquireEx(ALP_PROJ_PROGRESS)`` (defect 2: not via ALP4lib)."""
        alp = self._require_open("progress")
        raw = tAlpProjProgress()
        self._check(
            "progress",
            "AlpProjInquireEx",
            self._proj_inquire_ex(alp.ALP_ID, ALP_PROJ_PROGRESS, ct.byref(raw)),
        )
        return ProjectionProgress(
            idle=bool(raw.nFlagse & ALP_FLAG_QUEUE_IDLE),
            indefinite=bool(raw.nFlagse & ALP_FLAG_SEQUENCE_INDEFINITE),
            queue_id=int(raw.CurrentQueueId),
            sequence_id=int(raw.SequenceId),
            iterations_left=int(raw.nSequenceCounter),
            frames_left=int(raw.nFrameCounter),
            picture_time_us=int(raw.nPictureTime),
            frames_per_iteration=int(raw.nFramesPerSubSequence),
            flags=int(raw.nFlagse),
        )

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Halt, free the sequence and the device. Idempotent, safe after a failed open, never raises
        for ALP errors (they are logged: close runs in ``__exit__`` and must not hide the real error)."""
        if self._closed:
            return
        self._closed = True
        if self._alp is None or not self._device_allocated:
            return
        alp = self._alp
        steps: list[tuple[str, Callable[[], None]]] = [
            ("AlpDevHalt", lambda: self._halt("close")),
            ("AlpSeqFree", lambda: self._free_sequence("close")),
            ("AlpDevFree", lambda: self._call("close", "AlpDevFree", alp.Free)),
        ]
        for function, step in steps:
            try:
                step()
            except DeviceError as exc:
                logger.warning("ALP DMD: close: %s failed: %s", function, exc)
        self._device_allocated = hasattr(alp, "_ALPLib")  # ALP4.Free deletes it only on success
