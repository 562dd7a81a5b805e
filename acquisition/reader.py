"""``RunReader``: the one way analysis, models and the GUI read run files.

Why one reader: the file layout (``docs/hdf5-layout.md``) and its crash semantics
(only the first ``frames_written`` frames of a live or killed run are valid) are
known in exactly one place. Frames are never loaded whole: ``iter_batches`` reads
chunk-sized slabs so a 5x10^5-frame run streams through a training loop.

The file is opened in SWMR read mode, which is what lets a reader follow a run that is
still being written (call :meth:`RunReader.refresh`) and open a file whose writer was
SIGKILLed (HDF5 refuses a normal open of such a file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from acquisition.events import Event

#: Columns of :attr:`RunReader.table`, in order.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("index", "i8"),
    ("role", "U1"),
    ("pattern_id", "i8"),
    ("target_x_px", "f8"),
    ("target_y_px", "f8"),
    ("target_x_um", "f8"),
    ("target_y_um", "f8"),
    ("timestamp_s", "f8"),
    ("exposure_s", "f8"),
    ("frame_number", "i8"),
    ("interval_s", "f8"),
    ("planned_exposure_s", "f8"),
    ("sample", "O"),
)


class RunFileError(RuntimeError):
    """The file is not a specklab run file (or is damaged beyond the valid frames)."""


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _read_tree(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        elif item.dtype.kind == "O" or h5py.check_string_dtype(item.dtype) is not None:
            out[key] = item.asstr()[()]
        else:
            out[key] = item[()]
    return out


class ValidFrames:
    """The valid prefix of a frames dataset of a live or killed run (array-like, read on demand)."""

    def __init__(self, dataset: h5py.Dataset, n: int) -> None:
        self._ds = dataset
        self._n = n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self._ds.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self._ds.dtype

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key: Any) -> np.ndarray:
        first = key[0] if isinstance(key, tuple) else key
        rest = key[1:] if isinstance(key, tuple) else ()
        if isinstance(first, (int, np.integer)):
            i = int(first) + self._n if first < 0 else int(first)
            if not 0 <= i < self._n:
                raise IndexError(f"frame {first} out of range: {self._n} valid frames")
            return self._ds[(i, *rest)]
        if isinstance(first, slice):
            return self._ds[(slice(*first.indices(self._n)), *rest)]
        idx = np.asarray(first)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.where(idx < 0, idx + self._n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"frame indices out of range: {self._n} valid frames")
        return self._ds[(idx, *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._ds[: self._n]
        return arr if dtype is None else arr.astype(dtype)


class RunReader:
    """Read a run file: ``with RunReader("run.h5") as r: r.frames, r.table, r.indices("D")``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no run file at {self.path}")
        # Only a run still flagged as being written (live, or killed mid-run) needs SWMR reads;
        # HDF5 refuses a plain open of such a file. Finished runs are opened plainly: two SWMR
        # handles on one file in one process read zeros after either refreshes (HDF5 shares the
        # file object between them), and analysis and the GUI often open a run twice.
        try:
            self._file = h5py.File(self.path, "r")
            self._live = False
        except OSError:
            self._file = self._open_swmr()
            self._live = True
        missing = [
            f"/{k}"
            for k in ("entry/data/frames", "entry/frames_written", "entry/events")
            if k not in self._file
        ]
        if not missing and "status" not in self._file["entry"].attrs:
            missing = ["/entry@status"]
        if missing:  # another program's HDF5 file (NeXus files have /entry/data too)
            self._file.close()
            raise RunFileError(f"{self.path} is not a specklab run file (no {', '.join(missing)})")
        self._entry = self._file["entry"]
        self._ds = self._entry["data/frames"]
        self._table: np.ndarray | None = None
        self._n = 0
        self.refresh()

    def _open_swmr(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError as exc:
            raise RunFileError(f"{self.path} cannot be opened as HDF5: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> int:
        """Re-read the valid-frame counter (a live run grows); returns the number of valid frames."""
        counter = self._entry["frames_written"]
        if self._live:
            counter.refresh()
            self._ds.refresh()
            for ds in self._entry["events"].values():
                if isinstance(ds, h5py.Dataset):
                    ds.refresh()
            if "targets/images" in self._entry:
                self._entry["targets/images"].refresh()
        n = int(counter[()])
        if self.status != "running":
            n = max(n, int(_attr(self._entry.attrs.get("frames_written", n))))
        self._n = min(n, self._ds.shape[0])
        self._table = None
        return self._n

    # -- metadata --------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Attributes of /entry (status, protocol, times, ...), as plain Python values."""
        return {k: _attr(v) for k, v in self._entry.attrs.items()}

    @property
    def status(self) -> str:
        return str(_attr(self._entry.attrs["status"]))

    @property
    def protocol(self) -> str:
        return str(_attr(self._entry.attrs["protocol"]))

    @property
    def n_frames(self) -> int:
        """Valid frames (complete and flushed)."""
        return self._n

    def __len__(self) -> int:
        return self._n

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self._ds.shape[1]), int(self._ds.shape[2]))

    def _json(self, name: str) -> Any:
        ds = self._entry.get(f"config/{name}")
        return json.loads(ds.asstr()[()]) if ds is not None else {}

    @property
    def protocol_config(self) -> dict[str, Any]:
        return self._json("protocol")

    @property
    def bench_config(self) -> dict[str, Any]:
        return self._json("bench")

    @property
    def config_text(self) -> str:
        ds = self._entry.get("config/source_toml")
        return ds.asstr()[()] if ds is not None else ""

    @property
    def software(self) -> dict[str, str]:
        return {k: str(_attr(v)) for k, v in self._entry["software"].attrs.items() if k != "NX_class"}

    @property
    def devices(self) -> dict[str, dict[str, str]]:
        inst = self._entry["instrument"]
        return {
            name: {k: str(_attr(v)) for k, v in g.attrs.items() if k != "NX_class"}
            for name, g in inst.items()
        }

    @property
    def ground_truth(self) -> dict[str, Any]:
        return _read_tree(self._entry["ground_truth"]) if "ground_truth" in self._entry else {}

    # -- data ------------------------------------------------------------------------------
    @property
    def frames(self) -> h5py.Dataset | ValidFrames:
        """(N, H, W) uint16, valid frames only: the h5py dataset itself for a closed run."""
        if self._ds.shape[0] == self._n:
            return self._ds
        return ValidFrames(self._ds, self._n)

    @property
    def table(self) -> np.ndarray:
        """Per-frame structured array (valid frames only); columns in :data:`TABLE_COLUMNS`."""
        if self._table is None:
            ev = self._entry["events"]
            n = self._n
            table = np.empty(n, dtype=list(TABLE_COLUMNS))
            for name, _ in TABLE_COLUMNS:
                if name not in ev:
                    table[name] = np.nan if table.dtype[name].kind == "f" else 0
                elif name == "role":
                    table[name] = ev[name][:n].astype("U1")
                elif name == "sample":
                    table[name] = ev[name].asstr()[:n] if n else []
                else:
                    table[name] = ev[name][:n]
            self._table = table
        return self._table

    def extra_columns(self) -> dict[str, np.ndarray]:
        """``Event.extra`` keys as per-frame arrays (valid frames), e.g. ``["grid_index"]`` for bsbd.

        Numeric keys come back as numbers (float with NaN where an event lacked the key);
        other values as JSON text ("" where absent).
        """
        ev = self._entry["events"]
        if "extra" not in ev:
            return {}
        out = {}
        for key, ds in ev["extra"].items():
            out[key] = ds.asstr()[: self._n] if ds.dtype.kind == "O" else ds[: self._n]
        return out

    def extras(self) -> list[dict[str, Any]]:
        """Per-event ``Event.extra`` dicts rebuilt from the columns (plus the stored µm position)."""
        ev = self._entry["events"]
        cols: list[tuple[str, np.ndarray, str, bool]] = []
        if "extra" in ev:
            for key, ds in ev["extra"].items():
                kind = str(_attr(ds.attrs.get("kind", "json")))
                sparse = bool(_attr(ds.attrs.get("sparse", False)))
                data = ds.asstr()[: self._n] if ds.dtype.kind == "O" else ds[: self._n]
                cols.append((key, data, kind, sparse))
        t = self.table
        um_in_extra = bool(_attr(ev.attrs.get("um_from_extra", False)))
        out: list[dict[str, Any]] = []
        for i in range(self._n):
            d: dict[str, Any] = {}
            for key, data, kind, sparse in cols:
                v = data[i]
                if kind == "json":
                    if v != "":
                        d[key] = json.loads(v)
                elif sparse and np.isnan(v):
                    continue
                elif kind == "int":
                    d[key] = int(v)
                elif kind == "bool":
                    d[key] = bool(v)
                else:
                    d[key] = float(v)
            if um_in_extra:
                d["target_x_um"] = float(t["target_x_um"][i])
                d["target_y_um"] = float(t["target_y_um"][i])
            out.append(d)
        return out

    def events(self) -> list[Event]:
        """The Events of the valid frames, rebuilt from the table (what replay feeds to sinks)."""
        t = self.table
        extras = self.extras()
        return [
            Event(
                index=int(r["index"]),
                role=str(r["role"]),
                pattern_id=int(r["pattern_id"]),
                exposure_s=float(r["planned_exposure_s"]),
                interval_s=float(r["interval_s"]),
                target_x_px=float(r["target_x_px"]),
                target_y_px=float(r["target_y_px"]),
                sample=str(r["sample"]),
                extra=extras[i],
            )
            for i, r in enumerate(t)
        ]

    def indices(self, role: str) -> np.ndarray:
        """Frame indices of one role ("B", "S", "D", "F", "M", "T"), in acquisition order."""
        return np.flatnonzero(self.table["role"] == role)

    def roles(self) -> dict[str, int]:
        """Count of valid frames per role."""
        values, counts = np.unique(self.table["role"], return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts, strict=True)}

    def positions(self, role: str = "D") -> list[tuple[float, float]]:
        """Distinct target positions (x, y) in DMD px among frames of ``role``, sorted."""
        t = self.table[self.indices(role)]
        pairs = {(float(x), float(y)) for x, y in zip(t["target_x_px"], t["target_y_px"], strict=True)}
        return sorted(p for p in pairs if not (np.isnan(p[0]) or np.isnan(p[1])))

    @property
    def has_targets(self) -> bool:
        """True when the run stores the target each frame showed (``/entry/targets``, generalisation)."""
        return "targets/images" in self._entry and "target_index" in self._entry["events"]

    def targets(self, indices: int | np.ndarray | list[int]) -> np.ndarray:
        """The target image(s) frame(s) ``indices`` showed: (h, w) for one frame, (k, h, w) for several.

        Read from ``/entry/targets/images`` through the per-frame ``events/target_index``; only valid
        frames (a live or killed run's rows beyond them may not be written yet). Order follows ``indices``.
        """
        if not self.has_targets:
            raise RunFileError(
                f"{self.path} stores no target images (its protocol's bank has no target_image)"
            )
        scalar = np.ndim(indices) == 0
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self._n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"frame indices outside the {self._n} valid frames")
        images = self._entry["targets/images"]
        column = self._entry["events/target_index"]
        if idx.size == 0:
            return np.empty((0, *images.shape[1:]), dtype=images.dtype)
        lo, hi = int(idx.min()), int(idx.max())
        rows = np.asarray(column[lo : hi + 1], dtype=np.int64)[idx - lo]  # the column is small: one slab
        uniq, inverse = np.unique(rows, return_inverse=True)
        out = images[uniq][inverse.reshape(-1)]
        return out[0] if scalar else out

    def iter_batches(
        self, indices: np.ndarray | None = None, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, frames)`` batches in the given order without loading the run.

        Contiguous runs of indices are read as one slab (fast for per-frame chunks); any
        other order is read with a sorted fancy index and put back in the asked order.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        idx = np.arange(self._n) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"indices outside the {self._n} valid frames")
        for start in range(0, idx.size, batch_size):
            batch = idx[start : start + batch_size]
            if batch.size and np.all(np.diff(batch) == 1):
                frames = self._ds[int(batch[0]) : int(batch[-1]) + 1]
            else:
                order = np.argsort(batch, kind="stable")
                uniq, inverse = np.unique(batch[order], return_inverse=True)
                data = self._ds[uniq]
                frames = np.empty((batch.size, *data.shape[1:]), dtype=data.dtype)
                frames[order] = data[inverse]
            yield batch, frames

    def summary(self) -> dict[str, Any]:
        """What ``specklab info`` prints."""
        a = self.attrs
        pos = self.positions("D")
        return {
            "path": str(self.path),
            "protocol": self.protocol,
            "status": self.status,
            "error": a.get("error", ""),
            "frames": self._n,
            "frames_planned": int(a.get("frames_planned", self._n)),
            "shape": list(self.frame_shape),
            "dtype": str(self._ds.dtype),
            "roles": self.roles(),
            "positions": {"count": len(pos), "px": [list(p) for p in pos]},
            "start_time": a.get("start_time", ""),
            "end_time": a.get("end_time", ""),
            "simulated": bool(a.get("simulated", False)),
            "devices": self.devices,
            "software": self.software,
            "ground_truth": sorted(self.ground_truth),
        }
