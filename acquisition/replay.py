"""Replay: a stored run as a frame source for the same dispatcher and sinks as live data.

Why: live view, live analysis and the writer are tested, demonstrated and debugged on
recorded runs without a bench, and a sink cannot tell the difference (after Bluesky,
where a stored run replays through the same callbacks). Frames and events come back
exactly as stored: the image, the camera's frame number, timestamp and exposure, and the
Event rebuilt from the per-frame table (role, pattern id, target, sample, extra).

Pacing: ``speed=None`` streams as fast as the sinks take frames; ``speed=X`` follows the
recorded timestamps X times faster than recorded (``speed=1`` is the recorded pace).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from acquisition.events import Event
from acquisition.hdf5_writer import ENTRY_ATTRS
from acquisition.reader import RunReader
from acquisition.runner import Progress, RunResult, RunState
from acquisition.sinks import STATUS_ABORTED, STATUS_COMPLETE, STATUS_FAILED, Dispatcher, RunInfo, SinkError
from devices.base import Frame

log = logging.getLogger(__name__)


class ReplaySource:
    """Stream the valid frames of a run file; ``run(dispatcher)`` drives sinks like a live run."""

    def __init__(self, path: str | Path, speed: float | None = None, batch_size: int = 64) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be > 0 (or None for as fast as possible), got {speed}")
        self.path = Path(path)
        self.speed = speed
        self.batch_size = batch_size
        self._stop = threading.Event()

    def abort(self) -> None:
        """Stop streaming after the current frame (from any thread)."""
        self._stop.set()

    def info(self) -> RunInfo:
        """The stored run's description, as the live run's sinks saw it."""
        with RunReader(self.path) as r:
            a = r.attrs
            return RunInfo(
                protocol=r.protocol,
                events=r.events(),
                frame_shape=r.frame_shape,
                dtype=str(r.frames.dtype),
                protocol_config=r.protocol_config,
                bench_config=r.bench_config,
                config_text=r.config_text,
                devices=r.devices,
                ground_truth=r.ground_truth,
                um_per_px=float(a.get("um_per_px", float("nan"))),
                simulated=bool(a.get("simulated", False)),
                # the original's other /entry attributes (full_config, device_kinds, ...): analysis
                # reads e.g. the camera binning from full_config, so a replayed copy must keep them
                extra={
                    **{k: v for k, v in a.items() if k not in ENTRY_ATTRS},
                    "replayed_from": str(self.path),
                    "original_status": r.status,
                },
            )

    def frames(self, events: list[Event] | None = None) -> Iterator[tuple[Frame, Event]]:
        """Yield ``(Frame, Event)`` in recorded order, paced by the recorded timestamps if ``speed``."""
        with RunReader(self.path) as r:
            events = events if events is not None else r.events()
            t = r.table
            t_wall0 = time.monotonic()
            ts0 = float(t["timestamp_s"][0]) if len(t) else 0.0
            for idx, batch in r.iter_batches(batch_size=self.batch_size):
                for j, i in enumerate(idx):
                    if self._stop.is_set():
                        return
                    row = t[i]
                    if self.speed is not None:
                        due = t_wall0 + (float(row["timestamp_s"]) - ts0) / self.speed
                        delay = due - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    frame = Frame(
                        image=batch[j],
                        frame_number=int(row["frame_number"]),
                        timestamp_s=float(row["timestamp_s"]),
                        exposure_s=float(row["exposure_s"]),
                        metadata={"replayed_from": str(self.path)},
                    )
                    yield frame, events[int(i)]

    def run(self, dispatcher: Dispatcher, progress: Callable[[Progress], None] | None = None) -> RunResult:
        """Feed every frame to ``dispatcher`` (start → submit… → close), like the live runner."""
        info = self.info()
        total = info.n_frames
        done = 0
        status, error = STATUS_FAILED, None
        t0 = time.monotonic()
        last = 0.0
        dispatcher.start(info)
        try:
            for frame, event in self.frames(list(info.events)):
                dispatcher.submit(frame, event)
                failure = dispatcher.failure()
                if failure:
                    raise SinkError(failure)
                done += 1
                now = time.monotonic()
                if progress is not None and now - last > 0.2:
                    last = now
                    rate = done / (now - t0)
                    progress(Progress(done, total, rate, (total - done) / rate, now - t0, RunState.RUNNING))
            status = STATUS_COMPLETE if done == total else STATUS_ABORTED
            error = None if done == total else "replay stopped"
        except Exception as exc:  # noqa: BLE001 - reported like a live failure
            log.exception("replay failed at frame %d", done)
            status, error = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            reports = dispatcher.close(status, error)
        elapsed = time.monotonic() - t0
        if progress is not None:
            rate = done / elapsed if elapsed > 0 else 0.0
            progress(Progress(done, total, rate, 0.0, elapsed, RunState.FINISHED))
        return RunResult(status, error, done, total, elapsed, reports)
