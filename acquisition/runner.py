"""The runner: timing policy, pause/resume/abort and progress around an :class:`~acquisition.engine.Engine`.

Why a separate runner: commands (pause, abort) come from other threads (the GUI, a
Ctrl-C handler) and must take effect between frames without the engine knowing about
them; progress must reach any number of observers (tqdm in the CLI, the GUI) without
slowing acquisition. A pause cuts the running hardware block (DMD halted, camera
sequence stopped) and resume starts a new block at the next event, so no frame is
ever paired with the wrong event.

Whatever happens, ``run`` ends in the same ``finally``: the engine tears down (DMD
halted, pump stopped) and the dispatcher closes every sink with the outcome
(``complete`` / ``aborted`` / ``failed`` + error text), which the HDF5 writer stores.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from acquisition.engine import Engine
from acquisition.events import Plan
from acquisition.hdf5_writer import Hdf5RunWriter, WriterOptions
from acquisition.sinks import (
    STATUS_ABORTED,
    STATUS_COMPLETE,
    STATUS_FAILED,
    Dispatcher,
    RunInfo,
    Sink,
    SinkError,
    SinkReport,
)
from devices.base import OperatorCancelled

log = logging.getLogger(__name__)


class RunState(enum.StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


@dataclass(frozen=True)
class Progress:
    """A progress report; ``rate_hz`` excludes paused time, ``eta_s`` is None until a rate is known."""

    done: int
    total: int
    rate_hz: float
    eta_s: float | None
    elapsed_s: float
    state: RunState


@dataclass
class RunResult:
    """How a run ended, with per-sink reports (frames dropped by observers, time blocked by the writer)."""

    status: str
    error: str | None
    frames: int
    total: int
    elapsed_s: float
    sinks: list[SinkReport] = field(default_factory=list)

    def dropped(self) -> dict[str, int]:
        return {r.name: r.dropped for r in self.sinks}


class Runner:
    """Runs a Plan through an Engine into a Dispatcher. One run at a time; commands are thread-safe."""

    def __init__(self, engine: Engine, dispatcher: Dispatcher, *, progress_interval_s: float = 0.2) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"{engine!r} does not implement the Engine protocol")
        self.engine = engine
        self.dispatcher = dispatcher
        self.progress_interval_s = progress_interval_s
        self._listeners: list[Callable[[Progress], None]] = []
        self._abort = threading.Event()
        self._abort_reason = ""
        self._resume = threading.Event()
        self._resume.set()
        self._state = RunState.IDLE
        self._lock = threading.Lock()
        self.result: RunResult | None = None

    # -- commands (any thread) -----------------------------------------------------------
    def subscribe(self, listener: Callable[[Progress], None]) -> None:
        """``listener(Progress)`` is called on the runner's thread; keep it fast (or hand off)."""
        self._listeners.append(listener)

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def abort(self, reason: str = "aborted by user") -> None:
        self._abort_reason = reason
        self._abort.set()
        self._resume.set()  # a paused run must wake up to abort

    @property
    def state(self) -> RunState:
        return self._state

    # -- running ---------------------------------------------------------------------------
    def run(self, plan: Plan, info: RunInfo) -> RunResult:
        """Execute every event of ``plan``; returns the outcome (never raises for device failures)."""
        with self._lock:
            if self._state in (RunState.RUNNING, RunState.PAUSED):
                raise RuntimeError("a run is already in progress")
            self._state = RunState.RUNNING
        total = len(plan.events)
        done = 0
        status, error = STATUS_FAILED, None
        t0 = time.monotonic()
        active_s = 0.0
        seg_start = t0
        last_emit = 0.0
        interrupted: BaseException | None = None
        try:  # a writer that cannot create its file fails here, before any device moves
            self.dispatcher.start(info)
        except BaseException:
            self._state = RunState.FINISHED
            raise
        try:
            self.engine.setup(plan)
            while done < total and not self._abort.is_set():
                if not self._resume.is_set():
                    active_s += time.monotonic() - seg_start
                    self._set_state(RunState.PAUSED, done, total, active_s, t0)
                    while not self._resume.wait(timeout=0.1):
                        pass
                    seg_start = time.monotonic()
                    self._set_state(RunState.RUNNING, done, total, active_s, t0)
                    continue
                stop = self.engine.start_block(plan, done)
                if not done < stop <= total:
                    raise RuntimeError(f"engine returned block end {stop} for start {done} (total {total})")
                try:
                    while done < stop and not self._abort.is_set() and self._resume.is_set():
                        event = plan.events[done]
                        frame = self.engine.read(event)
                        self.dispatcher.submit(frame, event)
                        failure = self.dispatcher.failure()
                        if failure:
                            raise SinkError(failure)
                        done += 1
                        now = time.monotonic()
                        if now - last_emit >= self.progress_interval_s:
                            last_emit = now
                            self._emit(done, total, active_s + now - seg_start, now - t0)
                finally:
                    self.engine.end_block()
            if done == total:
                status = STATUS_COMPLETE
            else:
                status, error = STATUS_ABORTED, self._abort_reason or "aborted"
        except OperatorCancelled as exc:  # the operator said stop: an abort, not a failure
            status, error = STATUS_ABORTED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a failed run is a result, with its error text stored
            log.exception("run failed at event %d", done)
            status, error = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # KeyboardInterrupt / SystemExit: clean up, record, re-raise
            status, error = STATUS_ABORTED, f"interrupted ({type(exc).__name__})"
            interrupted = exc
        finally:
            try:
                self.engine.teardown()
            except Exception as exc:  # noqa: BLE001
                log.exception("engine teardown failed")
                if status == STATUS_COMPLETE:
                    status, error = STATUS_FAILED, f"teardown failed: {type(exc).__name__}: {exc}"
                else:
                    error = f"{error}; teardown failed: {exc}"
            reports = self.dispatcher.close(status, error)
            if status == STATUS_COMPLETE and self.dispatcher.failure():
                status, error = STATUS_FAILED, self.dispatcher.failure()
            now = time.monotonic()
            if self._state is not RunState.PAUSED:
                active_s += now - seg_start
            self._state = RunState.FINISHED
            self.result = RunResult(status, error, done, total, now - t0, reports)
            self._emit(done, total, active_s, now - t0)
        if interrupted is not None:
            raise interrupted
        return self.result

    # -- progress --------------------------------------------------------------------------
    def _set_state(self, state: RunState, done: int, total: int, active_s: float, t0: float) -> None:
        self._state = state
        self._emit(done, total, active_s, time.monotonic() - t0)

    def _emit(self, done: int, total: int, active_s: float, elapsed_s: float) -> None:
        rate = done / active_s if active_s > 0 and done else 0.0
        eta = (total - done) / rate if rate > 0 else None
        p = Progress(done, total, rate, eta, elapsed_s, self._state)
        for listener in list(self._listeners):
            try:
                listener(p)
            except Exception:  # noqa: BLE001 - a broken progress display must not stop a run
                log.exception("progress listener failed")


def record(
    plan: Plan,
    engine: Engine,
    info: RunInfo,
    out_path: str | Path,
    *,
    observers: Sequence[Sink] = (),
    writer_options: WriterOptions | None = None,
    progress: Callable[[Progress], None] | None = None,
    runner_hook: Callable[[Runner], None] | None = None,
    critical_queue: int = 64,
    observer_queue: int = 4,
) -> RunResult:
    """Record ``plan`` into one HDF5 run file (the writer critical, ``observers`` may drop frames).

    ``runner_hook(runner)`` is called before the run starts, e.g. to keep a handle for abort.
    """
    dispatcher = Dispatcher(critical_queue=critical_queue, observer_queue=observer_queue)
    dispatcher.add(Hdf5RunWriter(out_path, writer_options), critical=True, name="hdf5")
    for i, obs in enumerate(observers):
        dispatcher.add(obs, critical=False, name=f"{type(obs).__name__}-{i}")
    runner = Runner(engine, dispatcher)
    if progress is not None:
        runner.subscribe(progress)
    if runner_hook is not None:
        runner_hook(runner)
    return runner.run(plan, info)
