"""Frame dispatch: every consumer of frames runs in its own thread behind a bounded queue.

Why threads and queues: the engine must keep pace with hardware-timed acquisition
(a camera sequence does not wait for a slow disk or a slow plot). Each consumer
(*sink*) therefore gets a worker thread and a bounded queue, and the policy depends
on how much the consumer matters:

* **critical** sinks (the HDF5 writer) never lose a frame: when the queue is full
  the engine *blocks* until there is room (back-pressure). A failure of a critical
  sink stops the run (the runner polls :meth:`Dispatcher.failure`).
* **observer** sinks (live view, live analysis) may skip frames: when the queue is
  full the new frame is dropped and counted, and the count is reported at the end
  (:class:`SinkReport`), so nobody mistakes a thinned live plot for the data.

Hand-off is by batch, not by frame (at 128x128 a per-frame hand-off cost as much as
writing the frame): a worker takes *everything* queued in one go, a producer blocked on
a full critical queue is woken once the queue is down to half, and a worker is only
woken when it is actually waiting. A sink that has a ``frames(batch)`` method (the HDF5
writer) receives each batch as a list of ``(frame, event)`` in order; any other sink gets
``frame(frame, event)`` once per item, as before.

Live acquisition (:mod:`acquisition.runner`) and replay (:mod:`acquisition.replay`)
feed the same :class:`Dispatcher`, so a sink cannot tell a stored run from a live one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from acquisition.events import Event
from devices.base import Frame

log = logging.getLogger(__name__)

#: Run outcomes, as stored in the run file's ``status`` attribute.
STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_ABORTED = "aborted"
STATUS_FAILED = "failed"


@dataclass
class RunInfo:
    """Everything a sink needs to know before the first frame (and the writer stores).

    Built by the runner from a Plan plus the bench, or by replay from a stored file,
    so sinks see the same description in both cases.
    """

    protocol: str
    events: Sequence[Event]
    frame_shape: tuple[int, int]
    dtype: str = "uint16"
    protocol_config: dict[str, Any] = field(default_factory=dict)
    bench_config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""  # the TOML file the run was configured from, verbatim
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> identity()
    ground_truth: dict[str, Any] = field(default_factory=dict)
    um_per_px: float = float("nan")  # DMD pixel -> µm in the target plane
    simulated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # free attributes stored on /entry
    # the plan's PatternBank (live runs; None for replays): the writer stores what a bank with
    # ``target_image`` displayed (generalisation targets, /entry/targets)
    patterns: Any = None

    @property
    def n_frames(self) -> int:
        return len(self.events)


@runtime_checkable
class Sink(Protocol):
    """A consumer of frames. ``frame`` runs on the sink's own worker thread."""

    def setup(self, info: RunInfo) -> None:
        """Called once, on the caller's thread, before any frame."""

    def frame(self, frame: Frame, event: Event) -> None:
        """Consume one frame paired with the event that produced it."""

    def finish(self, status: str, error: str | None = None) -> None:
        """Called once after the last frame (and after the worker drained its queue)."""


@runtime_checkable
class BatchSink(Sink, Protocol):
    """A sink that also takes frames in batches (the dispatcher prefers ``frames`` when present).

    ``frames(batch)`` gets a non-empty list of ``(frame, event)`` in submission order and must
    behave exactly like calling ``frame`` on each item in turn. If it raises, the frames before
    the failing one count as consumed when the exception carries ``frames_done`` (an int).
    """

    def frames(self, batch: list[tuple[Frame, Event]]) -> None:
        """Consume several frames, in order."""


class SinkError(RuntimeError):
    """A critical sink failed; the run cannot go on without it."""


@dataclass
class SinkReport:
    """What happened to one sink during a run."""

    name: str
    critical: bool
    submitted: int = 0
    processed: int = 0
    dropped: int = 0
    blocked_s: float = 0.0  # time the producer spent waiting for room (critical sinks)
    errors: list[str] = field(default_factory=list)


_STOP = object()


class BatchQueue:
    """Bounded FIFO that hands items over in batches: one wake-up per batch, not per item.

    * ``put`` blocks while the queue is full; a blocked producer is woken once the consumer
      has brought the queue down to half its size (not after every item).
    * ``get_batch`` waits for at least one item, then takes everything queued (up to
      ``max_items``); the producer only notifies the consumer when the consumer is waiting.

    Order is FIFO; nothing is ever dropped here (``put_nowait`` says when it could not add).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, int(maxsize))
        self._items: deque[Any] = deque()
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)
        self._not_full = threading.Condition(self._mutex)
        self._getter_waiting = False
        self._putters_waiting = 0

    def qsize(self) -> int:
        return len(self._items)

    def put(self, item: Any, timeout: float | None = None) -> bool:
        """Append ``item``, waiting for room; False if there was still no room after ``timeout``."""
        with self._mutex:
            if len(self._items) >= self.maxsize:
                deadline = None if timeout is None else time.monotonic() + timeout
                self._putters_waiting += 1
                try:
                    while len(self._items) >= self.maxsize:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return False
                        self._not_full.wait(remaining)
                finally:
                    self._putters_waiting -= 1
            self._items.append(item)
            if self._getter_waiting:
                self._getter_waiting = False
                self._not_empty.notify()
        return True

    def put_nowait(self, item: Any) -> bool:
        """Append ``item`` if there is room; False (nothing added) when the queue is full."""
        with self._mutex:
            if len(self._items) >= self.maxsize:
                return False
            self._items.append(item)
            if self._getter_waiting:
                self._getter_waiting = False
                self._not_empty.notify()
        return True

    def get_batch(self, max_items: int) -> list[Any]:
        """Wait for at least one item, then take up to ``max_items`` (oldest first)."""
        with self._mutex:
            items = self._items
            while not items:
                self._getter_waiting = True
                self._not_empty.wait()
            if len(items) <= max_items:
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(max_items)]
            if self._putters_waiting and len(items) <= self.maxsize // 2:
                self._not_full.notify_all()
        return batch


class _Worker:
    """One sink, its bounded queue and its thread."""

    def __init__(self, name: str, sink: Sink, critical: bool, maxsize: int, max_batch: int) -> None:
        self.name = name
        self.sink = sink
        self.critical = critical
        self.queue = BatchQueue(maxsize)
        self.max_batch = max(1, int(max_batch))
        self.report = SinkReport(name=name, critical=critical)
        self.failed: BaseException | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"sink-{name}", daemon=True)

    def _loop(self) -> None:
        batch_fn = getattr(self.sink, "frames", None)
        if not callable(batch_fn):
            batch_fn = None
        while True:
            batch = self.queue.get_batch(self.max_batch)
            stop = batch[-1] is _STOP  # _STOP is the last item ever queued: the rest is still consumed
            if stop:
                batch.pop()
            if batch and self.failed is None:  # a dead sink just drains so the producer never blocks
                if batch_fn is not None:
                    self._consume_batch(batch_fn, batch)
                else:
                    for frame, event in batch:
                        self._consume_one(frame, event)
                        if self.failed is not None:
                            break
            if stop:
                return

    def _consume_one(self, frame: Frame, event: Event) -> None:
        try:
            self.sink.frame(frame, event)
            with self._lock:
                self.report.processed += 1
        except Exception as exc:  # noqa: BLE001 - any sink failure is reported, never lost
            log.exception("sink %r failed on frame %d", self.name, event.index)
            self._record_failure(exc)

    def _consume_batch(self, batch_fn: Callable[[list[tuple[Frame, Event]]], None], batch: list) -> None:
        try:
            batch_fn(batch)
            with self._lock:
                self.report.processed += len(batch)
        except Exception as exc:  # noqa: BLE001 - any sink failure is reported, never lost
            done = getattr(exc, "frames_done", 0)
            done = done if isinstance(done, int) and 0 <= done < len(batch) else 0
            with self._lock:
                self.report.processed += done
            log.exception("sink %r failed on frame %d", self.name, batch[done][1].index)
            self._record_failure(exc)

    def _record_failure(self, exc: Exception) -> None:
        self.report.errors.append(f"{type(exc).__name__}: {exc}")
        if self.critical:
            self.failed = exc
        # an observer that raises keeps running: a glitch in a live plot must not stop a run

    def submit(self, frame: Frame, event: Event, poll_s: float = 0.2) -> None:
        self.report.submitted += 1
        if not self.critical:
            if not self.queue.put_nowait((frame, event)):
                self.report.dropped += 1
            return
        if self.failed is not None:
            raise SinkError(f"sink {self.name!r} failed: {self.failed}") from self.failed
        queue = self.queue
        if queue.put_nowait((frame, event)):  # the common case: room, no waiting, no clock reads
            return
        t0 = time.perf_counter()
        # block (back-pressure) but wake up regularly to notice a dead worker
        while not queue.put((frame, event), timeout=poll_s):
            if self.failed is not None or not self.thread.is_alive():
                raise SinkError(f"sink {self.name!r} stopped accepting frames") from self.failed
        self.report.blocked_s += time.perf_counter() - t0


class Dispatcher:
    """Fan frames out to sinks; the single object a frame source talks to.

    Use: ``add(...)`` sinks, ``start(info)``, ``submit(frame, event)`` per frame,
    ``close(status, error)`` exactly once (it always joins every thread, with a timeout).
    """

    def __init__(
        self,
        critical_queue: int = 64,
        observer_queue: int = 4,
        join_timeout_s: float = 120.0,
        max_batch: int = 256,
    ):
        self.critical_queue = critical_queue
        self.observer_queue = observer_queue
        self.join_timeout_s = join_timeout_s
        self.max_batch = max_batch  # most frames one worker takes from its queue at once
        self._workers: list[_Worker] = []
        self._started = False
        self._closed = False

    def add(self, sink: Sink, *, critical: bool = False, name: str | None = None) -> None:
        if self._started:
            raise RuntimeError("add sinks before start()")
        if not isinstance(sink, Sink):
            raise TypeError(f"{sink!r} does not implement the Sink protocol (setup, frame, finish)")
        name = name or type(sink).__name__
        size = self.critical_queue if critical else self.observer_queue
        self._workers.append(_Worker(name, sink, critical, size, self.max_batch))

    def start(self, info: RunInfo) -> None:
        """Set every sink up, then start their threads. A failing setup closes those already set up."""
        done: list[_Worker] = []
        try:
            for w in self._workers:
                w.sink.setup(info)
                done.append(w)
        except BaseException as exc:
            for w in done:
                try:
                    w.sink.finish(STATUS_FAILED, f"setup of another sink failed: {exc}")
                except Exception:  # noqa: BLE001
                    log.exception("finish of sink %r after a failed setup", w.name)
            self._closed = True
            raise
        for w in self._workers:
            w.thread.start()
        self._started = True

    def submit(self, frame: Frame, event: Event) -> None:
        """Hand one frame to every sink: blocks on critical sinks, may drop for observers."""
        for w in self._workers:
            w.submit(frame, event)

    def failure(self) -> str | None:
        """Text of the first critical-sink failure, or None: the producer polls this to stop early."""
        for w in self._workers:
            if w.critical and w.failed is not None:
                return f"sink {w.name!r} failed: {type(w.failed).__name__}: {w.failed}"
        return None

    def close(self, status: str, error: str | None = None) -> list[SinkReport]:
        """Drain and join every worker, then ``finish`` every sink; returns the reports.

        Every queue is drained (observer queues are short, so this costs little) so that a
        live analysis sees the end of the run. A worker that does not finish in
        ``join_timeout_s`` is reported, never waited on forever.
        """
        if self._closed:
            return [w.report for w in self._workers]
        self._closed = True
        if self._started:
            for w in self._workers:
                deadline = time.monotonic() + self.join_timeout_s
                while not w.queue.put(_STOP, timeout=0.2):
                    if not w.thread.is_alive() or time.monotonic() > deadline:
                        break
            for w in self._workers:
                w.thread.join(timeout=self.join_timeout_s)
                if w.thread.is_alive():
                    w.report.errors.append(f"worker did not finish within {self.join_timeout_s} s")
                    log.error("sink %r did not finish within %s s", w.name, self.join_timeout_s)
        first_failure = self.failure()
        for w in self._workers:
            final_status, final_error = status, error
            if w.critical and w.failed is not None and status == STATUS_COMPLETE:
                final_status, final_error = STATUS_FAILED, first_failure
            try:
                w.sink.finish(final_status, final_error)
            except Exception as exc:  # noqa: BLE001 - every sink gets its finish
                log.exception("finish of sink %r failed", w.name)
                w.report.errors.append(f"finish: {type(exc).__name__}: {exc}")
        return [w.report for w in self._workers]


class CallbackSink:
    """An observer made of a function, e.g. a live view: ``CallbackSink(lambda f, e: ...)``."""

    def __init__(self, on_frame: Callable[[Frame, Event], None]) -> None:
        self._on_frame = on_frame

    def setup(self, info: RunInfo) -> None:
        pass

    def frame(self, frame: Frame, event: Event) -> None:
        self._on_frame(frame, event)

    def finish(self, status: str, error: str | None = None) -> None:
        pass


class RoleSummarySink:
    """A small live analysis: frames and mean intensity per role (used by ``specklab replay``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sums: dict[str, float] = {}
        self.status: str | None = None

    def setup(self, info: RunInfo) -> None:
        self.counts.clear()
        self.sums.clear()

    def frame(self, frame: Frame, event: Event) -> None:
        self.counts[event.role] = self.counts.get(event.role, 0) + 1
        self.sums[event.role] = self.sums.get(event.role, 0.0) + float(np.mean(frame.image))

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status

    def summary(self) -> dict[str, dict[str, float]]:
        return {r: {"frames": n, "mean_adu": self.sums[r] / n} for r, n in sorted(self.counts.items())}
