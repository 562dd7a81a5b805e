"""The HDF5 run file: one file per run, crash-safe, readable by generic viewers.

Layout (full description in ``docs/hdf5-layout.md``)::

    /entry                      NXentry; attrs: status, error, protocol, start_time, end_time, ...
    /entry/data                 NXdata (signal = "frames")
    /entry/data/frames          (N, H, W) uint16, one chunk per frame, resizable
    /entry/frames_written       scalar int64: valid frames, updated at every flush
    /entry/events/<column>      per-frame table as parallel 1-D datasets
    /entry/config/...           protocol config, bench config (JSON) and the source TOML text
    /entry/instrument/<device>  identity of every device (attrs)
    /entry/software             versions (attrs)
    /entry/ground_truth/...     what the simulated bench / the plan knows to be true
    /entry/targets/images       (n_targets, h, w): the target each frame showed (banks with target_image),
                                row = /entry/events/target_index of the frame; written as frames arrive

Why so: the writer is the one critical sink (:mod:`acquisition.sinks`); it opens the
file in SWMR mode (``libver="latest"``, ``swmr_mode = True`` once every dataset exists) so
that a reader can follow a live run, and a run killed with SIGKILL still leaves a file
h5py opens, where the ``frames_written`` counter says how many frames are intact. The
counter is only advanced *after* the frames it covers were flushed. Attributes cannot be
changed in SWMR mode, so the final ``status``/``end_time`` are written after the SWMR
session is closed, by reopening the file normally; a killed run therefore keeps
``status = "running"``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5s

from acquisition.events import Event
from acquisition.sinks import STATUS_COMPLETE, STATUS_FAILED, STATUS_RUNNING, RunInfo
from devices.base import Frame

log = logging.getLogger(__name__)

FORMAT_VERSION = "1.0"

#: Packages whose versions every run file records (absent ones are stored as "not installed").
SOFTWARE = (
    "specklab",
    "numpy",
    "h5py",
    "pydantic",
    "scipy",
    "ALP4lib",
    "pycromanager",
    "pymmcore",
    "pyserial",
)

#: Planned columns, known before the run (from the Plan) and stored up front.
PLANNED_COLUMNS: dict[str, str] = {
    "index": "i8",
    "role": "S1",
    "pattern_id": "i8",
    "target_x_px": "f8",
    "target_y_px": "f8",
    "target_x_um": "f8",
    "target_y_um": "f8",
    "interval_s": "f8",
    "planned_exposure_s": "f8",
}
#: Measured columns, filled frame by frame from what the camera returned.
MEASURED_COLUMNS: dict[str, str] = {"timestamp_s": "f8", "exposure_s": "f8", "frame_number": "i8"}

#: Attributes of /entry the writer sets itself; every other /entry attribute is ``RunInfo.extra``.
ENTRY_ATTRS = (
    "NX_class", "default", "format", "format_version", "protocol", "status", "error", "start_time",
    "end_time", "frames_planned", "frames_written", "simulated", "um_per_px", "dtype",
)  # fmt: skip


def utc_now_iso() -> str:
    """ISO 8601 time with offset; run files from different labs must compare unambiguously."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def software_versions() -> dict[str, str]:
    """Versions of everything that shaped the data (python, HDF5 library and packages)."""
    out = {"python": platform.python_version(), "hdf5": h5py.version.hdf5_version}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    if out["specklab"] == "not installed":  # running from a checkout before `pip install -e .`
        out["specklab"] = "0.1.0+checkout"
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return str(obj)


def to_json(obj: Any) -> str:
    """JSON text of a config (dicts, pydantic models, numpy values), stable key order."""
    return json.dumps(obj, default=_json_default, sort_keys=True, indent=1)


def _store_tree(group: h5py.Group, tree: Mapping[str, Any]) -> None:
    """Store a (nested) dict of arrays/scalars/strings as datasets and subgroups."""
    for key, value in tree.items():
        name = str(key).replace("/", "_")
        if isinstance(value, Mapping):
            _store_tree(group.create_group(name), value)
        elif isinstance(value, str):
            group.create_dataset(name, data=value, dtype=h5py.string_dtype())
        elif value is None:
            group.create_dataset(name, data="None", dtype=h5py.string_dtype())
        else:
            arr = np.asarray(value)
            # text arrays come back from RunReader as object arrays of str: store them as text again
            if arr.dtype.kind == "U" or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.flat)):
                group.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
            elif arr.dtype.kind == "O":
                group.create_dataset(name, data=to_json(value), dtype=h5py.string_dtype())
            else:
                group.create_dataset(name, data=arr)


@dataclass
class WriterOptions:
    """Flush policy and storage choices."""

    flush_every_frames: int = 100
    flush_every_s: float = 2.0
    compression: str | None = None  # e.g. "gzip"; None writes raw chunks directly (fastest)
    compression_opts: Any = None


class Hdf5RunWriter:
    """The critical sink writing a run file. Not thread-safe: the dispatcher serialises calls."""

    def __init__(self, path: str | Path, options: WriterOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or WriterOptions()
        self.frames_written = 0
        self.status: str | None = None
        self._file: h5py.File | None = None
        self._frames: h5py.Dataset | None = None
        self._counter: h5py.Dataset | None = None
        self._counter_value = np.zeros((), dtype=np.int64)
        self._measured: dict[str, h5py.Dataset] = {}
        self._buffer: dict[str, list[float]] = {k: [] for k in MEASURED_COLUMNS}
        self._buffer_start = 0
        self._last_flush = time.monotonic()
        self._since_flush = 0
        self._shape: tuple[int, int] = (0, 0)
        self._direct = True
        self._capacity = 0
        self._dtype = np.dtype("uint16")
        self._write_chunk: Any = None
        # targets (a bank with target_image): row of each event, pattern id of each row, rows on disk
        self._targets: h5py.Dataset | None = None
        self._target_source: Any = None
        self._target_rows = np.zeros(0, dtype=np.int64)
        self._target_ids = np.zeros(0, dtype=np.int64)
        self._target_done = np.zeros(0, dtype=bool)

    # -- Sink protocol -------------------------------------------------------------------
    def setup(self, info: RunInfo) -> None:
        """Create the file with every dataset, then switch to SWMR."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = max(int(info.n_frames), 1)
        h, w = (int(x) for x in info.frame_shape)
        self._shape = (h, w)
        f = h5py.File(self.path, "w", libver="latest")
        self._file = f
        try:
            self._create_layout(f, info, n, h, w)
            f.swmr_mode = True
        except BaseException:
            f.close()
            self._file = None
            raise
        self.status = STATUS_RUNNING
        self._last_flush = time.monotonic()

    def _create_layout(self, f: h5py.File, info: RunInfo, n: int, h: int, w: int) -> None:
        entry = f.create_group("entry")
        entry.attrs.update(
            {
                "NX_class": "NXentry",
                "default": "data",
                "format": "specklab-run",
                "format_version": FORMAT_VERSION,
                "protocol": info.protocol,
                "status": STATUS_RUNNING,
                "error": "",
                "start_time": utc_now_iso(),
                "end_time": "",
                "frames_planned": len(info.events),
                "frames_written": 0,
                "simulated": bool(info.simulated),
                "um_per_px": float(info.um_per_px),
                "dtype": info.dtype,
            }
        )
        for key, value in info.extra.items():
            entry.attrs[key] = value if isinstance(value, (int, float, str, bool)) else to_json(value)
        data = entry.create_group("data")
        data.attrs.update({"NX_class": "NXdata", "signal": "frames", "interpretation": "image"})
        opts = self.options
        self._direct = opts.compression is None
        self._frames = data.create_dataset(
            "frames",
            shape=(n, h, w),
            maxshape=(None, h, w),
            chunks=(1, h, w),
            dtype=np.dtype(info.dtype),
            compression=opts.compression,
            compression_opts=opts.compression_opts,
        )
        self._frames.attrs.update({"units": "ADU", "long_name": "camera frames"})
        self._capacity = n
        self._dtype = np.dtype(info.dtype)
        self._write_chunk = self._frames.id.write_direct_chunk
        self._counter = entry.create_dataset("frames_written", data=np.int64(0))
        self._counter.attrs["doc"] = "frames 0..frames_written-1 are complete and flushed"

        events = entry.create_group("events")
        events.attrs["NX_class"] = "NXcollection"
        events.attrs["doc"] = "one row per frame; planned columns from the protocol, measured from the camera"
        planned, samples, extra = _planned_table(info.events, info.um_per_px)
        events.attrs["um_from_extra"] = bool(planned.pop("um_from_extra"))
        for name, dtype in PLANNED_COLUMNS.items():
            events.create_dataset(name, data=planned[name], dtype=dtype, maxshape=(None,), chunks=True)
        self._create_targets(entry, events, getattr(info, "patterns", None), planned["pattern_id"])
        str_t = h5py.string_dtype()
        events.create_dataset("sample", data=samples, dtype=str_t, maxshape=(None,), chunks=True)
        extra_group = events.create_group("extra")
        extra_group.attrs["doc"] = "Event.extra, one column per key; kind says how to read it back"
        for key, (arr, attrs) in extra.items():
            dtype = str_t if arr.dtype == object else arr.dtype
            ds = extra_group.create_dataset(key, data=arr, dtype=dtype, maxshape=(None,), chunks=True)
            ds.attrs.update(attrs)
        for name, dtype in MEASURED_COLUMNS.items():
            fill = -1 if dtype.startswith("i") else np.nan
            self._measured[name] = events.create_dataset(
                name, shape=(n,), maxshape=(None,), dtype=dtype, chunks=(min(n, 4096),), fillvalue=fill
            )

        cfg = entry.create_group("config")
        cfg.attrs["NX_class"] = "NXcollection"
        cfg.create_dataset("protocol", data=to_json(info.protocol_config), dtype=str_t)
        cfg.create_dataset("bench", data=to_json(info.bench_config), dtype=str_t)
        cfg.create_dataset("source_toml", data=info.config_text, dtype=str_t)

        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        for dev, identity in info.devices.items():
            g = inst.create_group(dev)
            g.attrs["NX_class"] = "NXcollection"
            for k, v in identity.items():
                g.attrs[str(k)] = str(v)

        sw = entry.create_group("software")
        sw.attrs["NX_class"] = "NXcollection"
        sw.attrs.update(software_versions())

        gt = entry.create_group("ground_truth")
        gt.attrs["NX_class"] = "NXcollection"
        _store_tree(gt, info.ground_truth)

    def _create_targets(
        self, entry: h5py.Group, events: h5py.Group, bank: Any, pattern_ids: np.ndarray
    ) -> None:
        """``/entry/targets`` when the plan's bank can say what target a pattern shows (``target_image``).

        One row per distinct pattern id of the plan (ascending), written when its first frame is
        stored (never the whole bank up front: a run may show 10^4+ targets); per-frame
        ``events/target_index`` says which row each frame showed. Planned, so written up front.
        """
        if bank is None or not callable(getattr(bank, "target_image", None)) or pattern_ids.size == 0:
            return
        ids, rows = np.unique(pattern_ids, return_inverse=True)
        first = np.ascontiguousarray(bank.target_image(int(pattern_ids[0])))
        shape = tuple(int(x) for x in getattr(bank, "target_shape", first.shape))
        if first.ndim != 2 or first.shape != shape:
            raise ValueError(f"target_image gives shape {first.shape}, the bank's target_shape is {shape}")
        opts = self.options
        group = entry.create_group("targets")
        group.attrs.update(
            {
                "NX_class": "NXcollection",
                "doc": (
                    "images[k] = target shown on the DMD for pattern_id[k] (PatternBank.target_image);"
                    " frame i showed images[events/target_index[i]]; rows of frames beyond frames_written"
                    " may be unwritten (zeros)"
                ),
            }
        )
        self._targets = group.create_dataset(
            "images",
            shape=(ids.size, *shape),
            chunks=(1, *shape),
            dtype=first.dtype,
            compression=opts.compression,
            compression_opts=opts.compression_opts,
        )
        self._targets.attrs["long_name"] = "displayed targets"
        group.create_dataset("pattern_id", data=ids.astype(np.int64))
        events.create_dataset(
            "target_index", data=rows.astype(np.int64).reshape(-1), maxshape=(None,), chunks=True
        )
        self._target_source = bank
        self._target_ids = ids.astype(np.int64)
        self._target_rows = rows.astype(np.int64).reshape(-1)
        self._target_done = np.zeros(ids.size, dtype=bool)

    def _store_target(self, i: int, event: Event) -> None:
        """Write the target row of frame ``i`` if no earlier frame wrote it (before the frame counts)."""
        if i >= self._target_rows.size:  # a frame beyond the plan has no planned row (nor planned columns)
            return
        row = int(self._target_rows[i])
        if self._target_done[row]:
            return
        pid = int(self._target_ids[row])
        if pid != event.pattern_id:
            raise ValueError(f"frame {i}: event pattern {event.pattern_id}, the plan said {pid}")
        assert self._targets is not None
        img = np.asarray(self._target_source.target_image(pid))
        if img.shape != self._targets.shape[1:]:
            raise ValueError(
                f"target of pattern {pid} has shape {img.shape}, expected {self._targets.shape[1:]}"
            )
        img = np.ascontiguousarray(img, dtype=self._targets.dtype)
        if self._direct:
            self._targets.id.write_direct_chunk((row, 0, 0), img)
        else:
            self._targets[row] = img
        self._target_done[row] = True

    def frame(self, frame: Frame, event: Event) -> None:
        """Store one frame (raw chunk write) and buffer its measured metadata."""
        if self._frames is None:
            raise RuntimeError("Hdf5RunWriter.frame() before setup()")
        i = self.frames_written
        if event.index != i:
            raise ValueError(f"frame for event {event.index} arrived when event {i} was expected")
        img = frame.image
        if img.shape != self._shape:
            raise ValueError(f"frame {i} has shape {img.shape}, the run was set up for {self._shape}")
        if i >= self._capacity:  # more frames than planned (should not happen; never lose them)
            self._capacity = max(i + 1, 2 * self._capacity)
            self._frames.resize(self._capacity, axis=0)
            for ds in self._measured.values():
                ds.resize(self._capacity, axis=0)
        if img.dtype != self._dtype or not img.flags.c_contiguous:
            img = np.ascontiguousarray(img, dtype=self._dtype)
        if self._targets is not None:  # the target shown, stored before the frame counts
            self._store_target(i, event)
        if self._direct:  # one raw chunk per frame: no chunk cache, no type conversion, ~20 µs
            self._write_chunk((i, 0, 0), img)
        else:
            self._frames[i] = img
        self._buffer["timestamp_s"].append(frame.timestamp_s)
        self._buffer["exposure_s"].append(frame.exposure_s)
        self._buffer["frame_number"].append(frame.frame_number)
        self.frames_written = i + 1
        self._since_flush += 1
        opts = self.options
        if (
            self._since_flush >= opts.flush_every_frames
            or time.monotonic() - self._last_flush >= opts.flush_every_s
        ):
            self.flush()

    def frames(self, batch: list[tuple[Frame, Event]]) -> None:
        """Store several frames in order (the dispatcher's batch hand-off); same result as ``frame`` each.

        Each frame stays one raw chunk write (measured: one ``(k, H, W)`` slab write through
        HDF5 costs more per frame than k direct chunk writes) and the flush cadence stays per
        frame. On failure the exception carries ``frames_done``: frames of the batch stored.
        """
        store = self.frame
        done = 0
        try:
            for frame, event in batch:
                store(frame, event)
                done += 1
        except Exception as exc:
            exc.frames_done = done  # type: ignore[attr-defined]
            raise

    def flush(self) -> None:
        """Frames and metadata first, then the counter: the counter never covers unflushed frames."""
        if self._file is None or self._frames is None or self._counter is None:
            return
        start, stop = self._buffer_start, self.frames_written
        if stop > start:
            # low-level writes: the high-level slice assignment costs ~4x more (~90 µs a column)
            mspace = h5s.create_simple((stop - start,))
            for name, ds in self._measured.items():
                fspace = ds.id.get_space()
                fspace.select_hyperslab((start,), (stop - start,))
                ds.id.write(mspace, fspace, np.asarray(self._buffer[name], dtype=ds.dtype))
                self._buffer[name].clear()
        # One file flush pushes every dataset's cached raw data and all metadata (chunk index,
        # measured columns) to the OS; only then is the counter advanced and flushed on its own.
        self._file.flush()
        self._buffer_start = stop
        self._counter_value[()] = stop
        self._counter.id.write(h5s.ALL, h5s.ALL, self._counter_value)
        self._counter.flush()
        self._since_flush = 0
        self._last_flush = time.monotonic()

    def finish(self, status: str, error: str | None = None) -> None:
        """Flush, close the SWMR session, then record the outcome (attributes need a normal open)."""
        if self._file is None:
            return
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - still close and mark the file
            log.exception("final flush of %s failed", self.path)
            status, error = STATUS_FAILED, f"{error + '; ' if error else ''}final flush failed: {exc}"
        finally:
            self._file.close()
            self._file = self._frames = self._counter = self._targets = None
            self._measured = {}
            self._target_source = None
        n = self.frames_written
        with h5py.File(self.path, "r+", libver="latest") as f:
            entry = f["entry"]
            if status == STATUS_COMPLETE and n < int(entry.attrs["frames_planned"]):
                status, error = STATUS_FAILED, f"only {n} of {entry.attrs['frames_planned']} frames arrived"
            # shrink to the valid frames so that every dataset of a closed run is all data
            if f["entry/data/frames"].shape[0] != n:
                f["entry/data/frames"].resize(n, axis=0)
            events = f["entry/events"]
            for ds in [*events.values(), *events["extra"].values()]:
                if isinstance(ds, h5py.Dataset) and ds.shape[0] != n:
                    ds.resize(n, axis=0)
            entry.attrs["status"] = status
            entry.attrs["error"] = error or ""
            entry.attrs["end_time"] = utc_now_iso()
            entry.attrs["frames_written"] = n
        self.status = status


def _planned_table(
    events: Any, um_per_px: float
) -> tuple[dict[str, np.ndarray], list[str], dict[str, tuple[np.ndarray, dict[str, Any]]]]:
    """Columns known from the plan (one pass over a possibly lazy event sequence).

    Returns the fixed columns, the sample names, and ``Event.extra`` flattened into one
    column per key (so analysis can read e.g. ``grid_index`` as an array). µm columns use
    the event's own ``target_x_um``/``target_y_um`` when it carries them (protocols give
    them relative to the reference target), else ``px * um_per_px``.
    """
    n = len(events)
    out = {name: np.empty(n, dtype=dtype) for name, dtype in PLANNED_COLUMNS.items()}
    samples: list[str] = []
    extra: dict[str, list[Any]] = {}
    um_from_extra = False
    for i, e in enumerate(events):
        out["index"][i] = e.index
        out["role"][i] = e.role.encode("ascii")
        out["pattern_id"][i] = e.pattern_id
        out["target_x_px"][i] = e.target_x_px
        out["target_y_px"][i] = e.target_y_px
        out["target_x_um"][i] = e.extra.get("target_x_um", e.target_x_px * um_per_px)
        out["target_y_um"][i] = e.extra.get("target_y_um", e.target_y_px * um_per_px)
        out["interval_s"][i] = e.interval_s
        out["planned_exposure_s"][i] = e.exposure_s
        um_from_extra = um_from_extra or "target_x_um" in e.extra
        samples.append(e.sample)
        for key, value in e.extra.items():
            if key in ("target_x_um", "target_y_um"):
                continue
            col = extra.get(key)
            if col is None:
                col = extra[key] = [_MISSING] * i
            col.append(value)
        for col in extra.values():
            if len(col) < i + 1:
                col.append(_MISSING)
    out["um_from_extra"] = np.array(um_from_extra)
    return out, samples, {k: _extra_column(v) for k, v in extra.items()}


_MISSING = object()


def _extra_column(values: list[Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """One ``Event.extra`` key as an array: numbers as numbers (NaN where absent), the rest as JSON."""
    present = [v for v in values if v is not _MISSING]
    sparse = len(present) < len(values)
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        kind = "bool"
    elif present and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        kind = "int"
    elif present and all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
        kind = "float"
    else:
        kind = "json"
    if kind == "json":
        arr = np.array(
            ["" if v is _MISSING else json.dumps(v, default=_json_default, sort_keys=True) for v in values],
            dtype=object,
        )
    elif sparse or kind == "float":
        arr = np.array([np.nan if v is _MISSING else float(v) for v in values], dtype="f8")
    else:
        arr = np.array(values, dtype="i8")
    return arr, {"kind": kind, "sparse": sparse}
