"""One protocol run in a background thread, controllable from the GUI (Qt-free).

Why a wrapper around the runner: the GUI must (1) hold the session's device lock for the
whole run so no manual command touches the camera/DMD mid-block, and (2) accept an abort that
arrives *before* the runner exists (a window closed in the first milliseconds). The run itself
goes through :func:`acquisition.runner.record`, the same function ``specklab acquire`` uses:
the HDF5 writer is its critical sink (never drops), the live view an observer (may drop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from acquisition.runner import Progress, Runner, RunResult, record
from acquisition.sinks import STATUS_FAILED, Sink
from gui.session import BenchSession
from gui.wiring import PreparedRun

log = logging.getLogger(__name__)


class RunController:
    """Start / pause / resume / abort one run; ``on_done(RunResult)`` is called on the run thread."""

    def __init__(
        self,
        session: BenchSession,
        prepared: PreparedRun,
        *,
        observers: Sequence[Sink] = (),
        on_progress: Callable[[Progress], None] | None = None,
        on_done: Callable[[RunResult], None] | None = None,
        lock_timeout_s: float = 10.0,
    ) -> None:
        self.session = session
        self.prepared = prepared
        self.observers = list(observers)
        self.on_progress = on_progress
        self.on_done = on_done
        self.lock_timeout_s = lock_timeout_s
        self.result: RunResult | None = None
        self._runner: Runner | None = None
        self._guard = threading.Lock()
        self._abort_reason: str | None = None
        self._paused = False
        self._thread = threading.Thread(target=self._run, name="specklab-gui-run", daemon=True)

    # -- commands (any thread) ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        with self._guard:
            self._paused = True
            if self._runner is not None:
                self._runner.pause()

    def resume(self) -> None:
        with self._guard:
            self._paused = False
            if self._runner is not None:
                self._runner.resume()

    def abort(self, reason: str = "aborted by user") -> None:
        with self._guard:
            self._abort_reason = reason
            if self._runner is not None:
                self._runner.abort(reason)

    def join(self, timeout_s: float | None = None) -> RunResult | None:
        self._thread.join(timeout_s)
        return self.result

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the result is known (already False inside ``on_done``)."""
        return self._thread.is_alive() and self.result is None

    # -- the run thread ----------------------------------------------------------------------------
    def _hook(self, runner: Runner) -> None:
        with self._guard:
            self._runner = runner
            if self._paused:
                runner.pause()
            if self._abort_reason is not None:
                runner.abort(self._abort_reason)

    def _run(self) -> None:
        p = self.prepared
        result: RunResult
        if not self.session.device_lock.acquire(timeout=self.lock_timeout_s):
            busy = "the camera/DMD stayed busy (manual command)"
            result = RunResult(STATUS_FAILED, busy, 0, len(p.plan.events), 0.0)
        else:
            try:
                log.info("run %s: %d frames -> %s", p.plan.protocol, len(p.plan.events), p.out)
                result = record(
                    p.plan,
                    p.engine,
                    p.info,
                    p.out,
                    observers=self.observers,
                    writer_options=p.writer_options,
                    progress=self.on_progress,
                    runner_hook=self._hook,
                )
            except BaseException as exc:  # noqa: BLE001 - e.g. the file cannot be created: report, never hang
                log.exception("run could not start")
                result = RunResult(STATUS_FAILED, f"{type(exc).__name__}: {exc}", 0, len(p.plan.events), 0.0)
            finally:
                self.session.device_lock.release()
        self.result = result
        log.info(
            "run %s ended: %s%s (%d/%d frames, %s dropped by the live view)",
            p.plan.protocol,
            result.status,
            f" ({result.error})" if result.error else "",
            result.frames,
            result.total,
            sum(result.dropped().values()),
        )
        if self.on_done is not None:
            self.on_done(result)
