"""Camera driver over the Micro-Manager core, through pycromanager.

Any camera Micro-Manager supports (the bench's Andor Zyla through the ``AndorSDK3``
adapter, the ``DemoCamera`` used by the tests) is driven the same way:

* ``backend="python"`` (default): pycromanager's ``start_headless(mm_app_path,
  config_file, python_backend=True)`` creates a **pymmcore** ``CMMCore`` *in this
  process* (mmpycorex subclasses it with snake_case aliases and keeps it in a
  module list that ``pycromanager.Core()`` returns). ``mm_app_path`` is the folder
  holding the ``libmmgr_dal_*`` device adapters; their device-interface version must
  equal pymmcore's (``pymmcore.CMMCore().getAPIVersionInfo()``), or loading fails.
* ``backend="java"``: ``start_headless(..., python_backend=False)`` launches
  ``java -classpath <mm_app_path>/plugins/Micro-Manager/* org.micromanager.remote.HeadlessLauncher``
  from a Micro-Manager *application* install and talks to its MMCoreJ over ZMQ
  (pyjavaz). With ``config_file=None`` the driver instead attaches to an already
  running Micro-Manager (GUI with the ZMQ server enabled) and never stops it.

Both backends are used through the same snake_case method names; the differences
(Java images arrive as flat arrays, ``getROI`` returns a ``java.awt.Rectangle``, tag
values are strings in pymmcore) are handled here.

Conventions of :class:`devices.base.Camera` kept here:

* ROI is in *unbinned* sensor pixels. Micro-Manager's ROI is in binned pixels of the
  current binning, so the driver converts, and re-applies the requested ROI after a
  binning change (cameras typically reset their ROI when binning changes).
* ``Frame.frame_number`` never resets: Micro-Manager's ``ImageNumber`` tag restarts
  at 0 with every sequence, so frames number as ``base + ImageNumber`` where ``base``
  is the driver's count before the sequence (gaps show dropped frames).
* ``Frame.timestamp_s`` is seconds since the driver opened: the sequence start
  (host clock) plus the camera's ``ElapsedTime-ms`` tag when present (the adapter's
  own clock from the sequence start), else the host time the frame was popped.
  Every tag is kept in ``Frame.metadata["tags"]``.
* ``start_sequence(n, interval_s)`` passes ``interval_s`` as ``intervalMs`` to
  ``startSequenceAcquisition``; most cameras (the DemoCamera included) free-run at
  the rate their exposure and read-out allow and ignore it. Use the camera's frame
  rate or trigger properties for a slower, camera-timed cadence.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from devices.base import DeviceBase, DeviceError, DeviceProtocolError, DeviceRefused, DeviceTimeout, Frame

T = TypeVar("T")

#: pyjavaz's default ZMQ port for the Java backend.
DEFAULT_JAVA_PORT = 4827

#: Minimal Micro-Manager configuration for the DemoCamera adapter (see ``write_democam_config``).
DEMOCAM_CONFIG = """\
# specklab: DemoCamera only (hub + camera), 16-bit, for driver tests and demos.
Property,Core,Initialize,0
Device,DHub,DemoCamera,DHub
Device,Camera,DemoCamera,DCam
Parent,Camera,DHub
Property,Core,Initialize,1
Property,Camera,PixelType,16bit
Property,Core,Camera,Camera
"""


def democam_adapter_path() -> str:
    """Folder of the DemoCamera adapter from the ``mm-test-adapters`` PyPI package.

    Its major version must equal pymmcore's device-interface version (75 for
    pymmcore 12.5.1.75.x). Raises :class:`DeviceError` when it is not installed.
    """
    try:
        import mm_test_adapters
    except ImportError as exc:
        raise DeviceError(
            "MicroManagerCamera: the DemoCamera adapters need the 'mm-test-adapters' package "
            "(pip install 'mm-test-adapters==<device interface>.*', e.g. 75.* for pymmcore 12.5.1.75)"
        ) from exc
    return mm_test_adapters.device_adapter_path()


def write_democam_config(path: str | os.PathLike[str]) -> Path:
    """Write :data:`DEMOCAM_CONFIG` to ``path`` and return it (a camera-only demo system)."""
    out = Path(path)
    out.write_text(DEMOCAM_CONFIG)
    return out


def _tag_number(tags: dict[str, Any], key: str) -> float | None:
    """A numeric tag value (pymmcore gives strings, MMCoreJ numbers), or None when absent/garbled."""
    if key not in tags:
        return None
    try:
        value = float(str(tags[key]).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _binning_factor(value: str) -> int:
    """Parse a "Binning" property value: "2" (DemoCamera, Andor) or "2x2" (many others)."""
    head = str(value).strip().lower().split("x")[0]
    return int(float(head))


class MicroManagerCamera(DeviceBase):
    """A Micro-Manager camera implementing :class:`devices.base.Camera`."""

    def __init__(
        self,
        config_file: str | os.PathLike[str] | None,
        mm_app_path: str | os.PathLike[str] | None = None,
        backend: str = "python",
        camera_label: str | None = None,
        *,
        buffer_size_mb: int = 1024,
        port: int = DEFAULT_JAVA_PORT,
        java_loc: str | None = None,
        core_log_path: str = "",
    ) -> None:
        """Start (or attach to) a Micro-Manager core and select the camera.

        ``config_file``: Micro-Manager ``.cfg`` (relative paths are taken from the
        current directory, not from ``mm_app_path`` as pycromanager would).
        ``mm_app_path``: device-adapter folder (python) or application folder (java);
        None looks for a default Micro-Manager install (Windows/macOS only).
        ``buffer_size_mb``: the core's circular buffer; allocating it is most of the
        start-up time (≈1 s per GB), so tests use a small one.
        """
        # Everything close() looks at exists before anything can fail.
        self._core: Any = None
        self._owned_py_core: Any = None
        self._owned_java_port: int | None = None
        self._closed = False
        self._label = camera_label or "?"
        self._backend = backend
        self._t_open = time.monotonic()
        self._frame_counter = 0
        self._seq_base = 0
        self._seq_t0 = 0.0
        self._seq_n = 0
        self._seq_read = 0
        self._seq_active = False
        self._seq_exposure = 0.0
        self._roi_request: tuple[int, int, int, int] | None = None

        if backend not in ("python", "java"):
            raise DeviceRefused(f"MicroManagerCamera: backend must be 'python' or 'java', got {backend!r}")
        if config_file is None and backend == "python":
            raise DeviceRefused("MicroManagerCamera: the python backend needs a config_file")
        cfg = None
        if config_file is not None:
            cfg = Path(config_file).expanduser().resolve()
            if not cfg.is_file():
                raise DeviceError(f"MicroManagerCamera: Micro-Manager config file not found: {cfg}")
        self._config_file = str(cfg) if cfg is not None else ""
        try:
            if cfg is None:
                self._core = self._attach_java(port)
            else:
                app = self._resolve_app_path(mm_app_path)
                self._core = self._start(
                    app, str(cfg), backend, buffer_size_mb, port, java_loc, core_log_path
                )
            self._select_camera(camera_label)
            self._sensor_shape = self._measure_sensor_shape()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ start-up
    @staticmethod
    def _resolve_app_path(mm_app_path: str | os.PathLike[str] | None) -> str:
        if mm_app_path is not None:
            app = Path(mm_app_path).expanduser().resolve()
            if not app.is_dir():
                raise DeviceError(f"MicroManagerCamera: Micro-Manager folder not found: {app}")
            return str(app)
        try:
            from mmpycorex import find_existing_mm_install

            return str(find_existing_mm_install())
        except Exception as exc:  # ValueError on Linux, FileNotFoundError when absent
            raise DeviceError(
                "MicroManagerCamera: no mm_app_path given and no default Micro-Manager install found "
                f"({exc}); pass the device-adapter folder (python backend) or the application folder"
            ) from exc

    def _start(
        self,
        app: str,
        cfg: str,
        backend: str,
        buffer_size_mb: int,
        port: int,
        java_loc: str | None,
        core_log_path: str,
    ) -> Any:
        from mmpycorex import launcher
        from pycromanager import start_headless

        if backend == "python":
            before = list(launcher._PYMMCORES)
            try:
                start_headless(
                    app,
                    cfg,
                    python_backend=True,
                    buffer_size_mb=buffer_size_mb,
                    core_log_path=core_log_path,
                )
            except Exception as exc:
                raise DeviceError(
                    f"MicroManagerCamera: loading Micro-Manager config {cfg} with adapters from {app} "
                    f"failed: {exc}"
                ) from exc
            # pycromanager.Core() returns the *first* pymmcore ever started; take ours.
            new = [c for c in launcher._PYMMCORES if not any(c is b for b in before)]
            if not new:
                raise DeviceError("MicroManagerCamera: pycromanager started no pymmcore core")
            self._owned_py_core = new[-1]
            return self._owned_py_core
        try:
            start_headless(
                app,
                cfg,
                java_loc=java_loc,
                python_backend=False,
                buffer_size_mb=buffer_size_mb,
                core_log_path=core_log_path,
                port=port,
            )
            self._owned_java_port = port
        except Exception as exc:
            # mmpycorex registers the process before it knows it started; forget it again so
            # the port is not reported "in use" forever.
            with contextlib.suppress(Exception):
                launcher.terminate_java_instances(port=port)
            raise DeviceError(
                f"MicroManagerCamera: starting the Java headless core (config {cfg}, app {app}, "
                f"port {port}) failed: {exc} (the Java backend needs a Micro-Manager application folder "
                "with plugins/Micro-Manager/*.jar, and java on PATH or java_loc)"
            ) from exc
        return self._attach_java(port)

    @staticmethod
    def _attach_java(port: int) -> Any:
        # Not pycromanager.Core(): it returns a python-backend core whenever one exists.
        from mmpycorex.core import ZMQRemoteMMCoreJ

        try:
            return ZMQRemoteMMCoreJ(port=port)
        except Exception as exc:
            raise DeviceError(
                f"MicroManagerCamera: no Micro-Manager ZMQ server on port {port}: {exc}"
            ) from exc

    def _select_camera(self, camera_label: str | None) -> None:
        core = self._core
        if camera_label is None:
            label = str(self._call("get the core camera", core.get_camera_device))
            if not label:
                raise DeviceError(
                    f"MicroManagerCamera: config {self._config_file} sets no Core camera "
                    "(add 'Property,Core,Camera,<label>' or pass camera_label)"
                )
        else:
            label = camera_label
            self._call(f"select camera {label!r}", core.set_camera_device, label)
        self._label = label

    def _measure_sensor_shape(self) -> tuple[int, int]:
        # Full frame at the current binning, scaled back to unbinned pixels.
        self._call("clear the ROI", self._core.clear_roi)
        b = self.binning
        w = int(self._call("read the image width", self._core.get_image_width))
        h = int(self._call("read the image height", self._core.get_image_height))
        return (h * b, w * b)

    # ------------------------------------------------------------------ helpers
    @property
    def _live(self) -> Any:
        """The core, or DeviceRefused once closed (instead of an AttributeError on None)."""
        if self._core is None:
            raise DeviceRefused(f"MicroManagerCamera({self._label}): the camera is closed")
        return self._core

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one core call, turning any core/bridge exception into a DeviceError naming it."""
        if self._core is None:
            raise DeviceRefused(f"MicroManagerCamera({self._label}): cannot {what}: the camera is closed")
        try:
            return fn(*args)
        except DeviceError:
            raise
        except Exception as exc:
            raise DeviceError(f"MicroManagerCamera({self._label}): cannot {what}: {exc}") from exc

    def _to_uint16(self, pix: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
        """Core pixels (2-D from pymmcore, flat from MMCoreJ; 8/16/32-bit) as an (H, W) uint16 array."""
        arr = np.asarray(pix)
        if arr.ndim == 1:
            if width is None or height is None:
                width = int(self._call("read the image width", self._live.get_image_width))
                height = int(self._call("read the image height", self._live.get_image_height))
            if arr.size != width * height:
                raise DeviceProtocolError(
                    f"MicroManagerCamera({self._label}): {arr.size} pixels for a {width}x{height} image "
                    "(RGB cameras are not supported)"
                )
            arr = arr.reshape(height, width)
        if arr.dtype == np.uint16:
            return arr
        if arr.dtype == np.int16:  # Java short[]: same bits, signed view
            return arr.view(np.uint16)
        if arr.dtype == np.uint8:
            return arr.astype(np.uint16)
        if arr.dtype.kind in "ui" and arr.size and int(arr.max()) <= 0xFFFF and int(arr.min()) >= 0:
            return arr.astype(np.uint16)
        raise DeviceProtocolError(
            f"MicroManagerCamera({self._label}): pixel type {arr.dtype} does not fit uint16 "
            "(set the camera to a 8/12/14/16-bit mode)"
        )

    def _refuse_during_sequence(self, what: str) -> None:
        """DeviceRefused while this driver's sequence runs: the core would not refuse it safely.

        Micro-Manager accepts an exposure, ROI or binning change under a running sequence;
        a ROI change re-sizes the circular buffer the camera thread is writing into (with
        pymmcore and the DemoCamera the sequence silently ends, or the next pop segfaults).
        """
        if self._seq_active and self._call("check the sequence", self._live.is_sequence_running):
            raise DeviceRefused(
                f"MicroManagerCamera({self._label}): cannot {what} while a sequence is running"
            )

    def _now(self) -> float:
        return time.monotonic() - self._t_open

    # ------------------------------------------------------------------ Camera protocol
    def identity(self) -> dict[str, str]:
        core = self._live
        label = self._label
        ident = {
            "vendor": "Micro-Manager",
            "camera_label": label,
            "device_adapter": str(self._call("read the adapter", core.get_device_library, label)),
            "device_name": str(self._call("read the device name", core.get_device_name, label)),
            "model": str(self._call("read the description", core.get_device_description, label)),
            "core_version": str(self._call("read the core version", core.get_version_info)),
            "device_api": str(self._call("read the API version", core.get_api_version_info)),
            "backend": self._backend,
            "config_file": self._config_file,
            "bit_depth": str(self._call("read the bit depth", core.get_image_bit_depth)),
        }
        for prop, key in (("CameraID", "serial"), ("CameraName", "camera_name"), ("PixelType", "pixel_type")):
            if self._call(f"look for property {prop}", core.has_property, label, prop):
                ident[key] = str(self._call(f"read property {prop}", core.get_property, label, prop))
        with contextlib.suppress(Exception):
            import pycromanager

            ident["pycromanager_version"] = str(pycromanager.__version__)
        if self._backend == "python":
            with contextlib.suppress(Exception):
                import pymmcore

                ident["pymmcore_version"] = str(pymmcore.__version__)
        return ident

    @property
    def label(self) -> str:
        """The camera's Micro-Manager device label."""
        return self._label

    @property
    def core(self) -> Any:
        """The underlying core (pymmcore CMMCore or MMCoreJ proxy), for properties this class lacks."""
        return self._core

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return self._sensor_shape

    @property
    def exposure_s(self) -> float:
        return float(self._call("read the exposure", self._live.get_exposure)) / 1000.0

    def set_exposure(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds > 0):
            raise DeviceRefused(f"MicroManagerCamera({self._label}): exposure must be > 0 s, got {seconds!r}")
        self._refuse_during_sequence("set the exposure")
        self._call(f"set the exposure to {seconds} s", self._live.set_exposure, float(seconds) * 1000.0)

    @property
    def roi(self) -> tuple[int, int, int, int]:
        r = self._call("read the ROI", self._live.get_roi)
        if hasattr(r, "width"):  # java.awt.Rectangle through pyjavaz
            x, y, w, h = int(r.x), int(r.y), int(r.width), int(r.height)
        else:
            x, y, w, h = (int(v) for v in r)
        b = self.binning
        return (x * b, y * b, w * b, h * b)

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        rows, cols = self._sensor_shape
        if not (
            x >= 0 and y >= 0 and width >= 1 and height >= 1 and x + width <= cols and y + height <= rows
        ):
            raise DeviceRefused(
                f"MicroManagerCamera({self._label}): ROI (x={x}, y={y}, w={width}, h={height}) "
                f"outside the {cols}x{rows} sensor"
            )
        self._refuse_during_sequence("change the ROI")
        self._apply_roi((int(x), int(y), int(width), int(height)))
        self._roi_request = (int(x), int(y), int(width), int(height))

    def _apply_roi(self, roi: tuple[int, int, int, int]) -> None:
        x, y, w, h = roi
        b = self.binning
        if w < b or h < b:
            raise DeviceRefused(
                f"MicroManagerCamera({self._label}): ROI {w}x{h} smaller than one {b}x{b} bin"
            )
        self._call(f"set the ROI to {roi}", self._live.set_roi, x // b, y // b, w // b, h // b)

    def clear_roi(self) -> None:
        self._refuse_during_sequence("clear the ROI")
        self._call("clear the ROI", self._live.clear_roi)
        self._roi_request = None

    @property
    def binning(self) -> int:
        value = self._call("read the binning", self._live.get_property, self._label, "Binning")
        try:
            return _binning_factor(value)
        except ValueError as exc:
            raise DeviceProtocolError(
                f"MicroManagerCamera({self._label}): binning {value!r} unparsable"
            ) from exc

    def set_binning(self, factor: int) -> None:
        self._refuse_during_sequence("change the binning")
        allowed = [
            str(v)
            for v in self._call(
                "list binnings", self._live.get_allowed_property_values, self._label, "Binning"
            )
        ]
        choices = {}
        for v in allowed:
            with contextlib.suppress(ValueError):
                choices.setdefault(_binning_factor(v), v)
        if choices and factor not in choices:
            raise DeviceRefused(
                f"MicroManagerCamera({self._label}): binning {factor} not supported "
                f"(allowed: {sorted(choices)})"
            )
        value = choices.get(factor, str(factor))
        self._call(f"set the binning to {value}", self._live.set_property, self._label, "Binning", value)
        if self._roi_request is not None:
            self._apply_roi(self._roi_request)

    def snap(self) -> Frame:
        self._refuse_during_sequence("snap")
        exposure = self.exposure_s
        t_start = self._now()
        self._call("snap an image", self._live.snap_image)
        image = self._to_uint16(self._call("get the image", self._live.get_image))
        frame = Frame(
            image=image,
            frame_number=self._frame_counter,
            timestamp_s=t_start,
            exposure_s=exposure,
            metadata={"mode": "snap", "camera": self._label, "binning": self.binning, "roi": self.roi},
        )
        self._frame_counter += 1
        return frame

    def start_sequence(self, n_frames: int, interval_s: float) -> None:
        if n_frames < 1:
            raise DeviceRefused(f"MicroManagerCamera({self._label}): n_frames must be >= 1, got {n_frames}")
        if not (math.isfinite(interval_s) and interval_s >= 0):
            raise DeviceRefused(
                f"MicroManagerCamera({self._label}): interval must be >= 0 s, got {interval_s!r}"
            )
        if self._call("check the sequence", self._live.is_sequence_running):
            raise DeviceRefused(f"MicroManagerCamera({self._label}): a sequence is already running")
        self._call("clear the circular buffer", self._live.clear_circular_buffer)
        self._seq_base = self._frame_counter
        self._seq_n = int(n_frames)
        self._seq_read = 0
        self._seq_exposure = self.exposure_s
        self._seq_t0 = self._now()
        self._call(
            f"start a sequence of {n_frames} frames",
            self._live.start_sequence_acquisition,
            int(n_frames),
            float(interval_s) * 1000.0,
            True,
        )
        self._seq_active = True

    def read_frame(self, timeout_s: float = 5.0) -> Frame:
        core = self._live
        if not self._seq_active or self._seq_read >= self._seq_n:
            raise DeviceTimeout(f"MicroManagerCamera({self._label}): read_frame: no sequence frame pending")
        deadline = time.monotonic() + timeout_s
        while True:
            if self._call("count buffered images", core.get_remaining_image_count) > 0:
                break
            if self._call("check the buffer", core.is_buffer_overflowed):
                raise DeviceError(f"MicroManagerCamera({self._label}): circular buffer overflowed")
            if not self._call("check the sequence", core.is_sequence_running) and (
                self._call("count buffered images", core.get_remaining_image_count) == 0
            ):
                self._seq_active = False
                raise DeviceTimeout(
                    f"MicroManagerCamera({self._label}): sequence ended after {self._seq_read} of "
                    f"{self._seq_n} frames"
                )
            if time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"MicroManagerCamera({self._label}): no frame within {timeout_s} s "
                    f"(frame {self._seq_read} of {self._seq_n})"
                )
            time.sleep(0.001)
        t_pop = self._now()
        tagged = self._call("pop the next tagged image", core.pop_next_tagged_image)
        tags = {str(k): v for k, v in dict(tagged.tags).items()}
        width = _tag_number(tags, "Width")
        height = _tag_number(tags, "Height")
        image = self._to_uint16(
            tagged.pix,
            int(width) if width is not None else None,
            int(height) if height is not None else None,
        )
        number = _tag_number(tags, "ImageNumber")
        frame_number = self._seq_base + int(number) if number is not None else self._frame_counter
        frame_number = max(frame_number, self._frame_counter)  # never go backwards
        elapsed_ms = _tag_number(tags, "ElapsedTime-ms")
        timestamp = self._seq_t0 + elapsed_ms / 1000.0 if elapsed_ms is not None else t_pop
        self._frame_counter = frame_number + 1
        self._seq_read += 1
        if self._seq_read >= self._seq_n:
            self._seq_active = False
        return Frame(
            image=image,
            frame_number=frame_number,
            timestamp_s=timestamp,
            exposure_s=self._seq_exposure,
            metadata={
                "mode": "sequence",
                "camera": self._label,
                "sequence_index": self._seq_read - 1,
                "tags": {k: str(v) for k, v in tags.items()},
            },
        )

    def stop_sequence(self) -> None:
        """Stop the camera's sequence (if any) and wait until the core says it stopped."""
        self._seq_active = False
        if self._core is None:
            return
        if self._call("check the sequence", self._live.is_sequence_running):
            self._call("stop the sequence", self._live.stop_sequence_acquisition)
            deadline = time.monotonic() + 10.0
            while self._call("check the sequence", self._live.is_sequence_running):
                if time.monotonic() > deadline:
                    raise DeviceTimeout(f"MicroManagerCamera({self._label}): sequence did not stop in 10 s")
                time.sleep(0.005)

    def close(self) -> None:
        """Stop any sequence, unload the devices of the core this driver started; idempotent.

        Never raises: it runs in ``__exit__`` and after failed start-ups, where a second
        error would hide the first. A core this driver only attached to is left running.
        """
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.stop_sequence()
        if self._owned_py_core is not None:
            core = self._owned_py_core
            with contextlib.suppress(Exception):
                core.unloadAllDevices()
            with contextlib.suppress(Exception):
                from mmpycorex import launcher

                launcher._PYMMCORES[:] = [c for c in launcher._PYMMCORES if c is not core]
            self._owned_py_core = None
        if self._owned_java_port is not None:
            with contextlib.suppress(Exception):
                from mmpycorex.launcher import terminate_java_instances

                terminate_java_instances(port=self._owned_java_port)
            self._owned_java_port = None
        self._core = None
