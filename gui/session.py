"""The bench as the control panel holds it: opened once, shared by manual control and runs (Qt-free).

Why a session object: the GUI keeps the devices open for as long as the window lives (live
view, manual DMD patterns, pump control), and a protocol run borrows the *same* devices.
Two rules keep that safe without Qt:

* every camera/DMD operation takes :attr:`BenchSession.device_lock`; a run holds it for its
  whole duration, so a manual command can never interleave with a hardware-timed block.
  Manual commands never wait for it (:meth:`BenchSession.devices`) but fail with
  :class:`BenchBusy`, so the one device thread never stalls behind a run;
* every device call of the GUI goes through one single-thread executor
  (:attr:`BenchSession.executor`), never the Qt thread, so a slow serial reply or a long
  exposure cannot freeze the window. The pump is the exception to the lock: its driver
  serialises exchanges on the port, and the engine only touches it at run start/end,
  so its status is polled during runs too.

Tests build a session with any ``opener`` (a context manager factory yielding a
:class:`devices.factory.Bench`), e.g. test-local fake devices.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from devices.factory import Bench

log = logging.getLogger(__name__)

BenchOpener = Callable[[Any], contextlib.AbstractContextManager[Bench]]


class BenchBusy(RuntimeError):
    """The camera/DMD are in use by a run (or the bench is not open)."""


def default_opener(config: Any) -> contextlib.AbstractContextManager[Bench]:
    """``devices.factory.open_bench``, imported lazily so the GUI starts even if a driver is missing."""
    from devices.factory import open_bench

    return open_bench(config)


class BenchSession:
    """Config + (lazily) open bench + the lock and the device thread every GUI command goes through."""

    def __init__(
        self, config: Any, config_path: str | Path | None = None, opener: BenchOpener = default_opener
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.opener = opener
        self.bench: Bench | None = None
        self.device_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specklab-devices")
        self.open_error: str | None = None
        self._stack: contextlib.ExitStack | None = None
        self._closed = False

    # -- lifecycle (run on the executor) ---------------------------------------------------------
    def open(self) -> Bench:
        """Open every device of the config; on failure the error text is kept in :attr:`open_error`."""
        if self.bench is not None:
            return self.bench
        stack = contextlib.ExitStack()
        try:
            self.bench = stack.enter_context(self.opener(self.config))
        except BaseException as exc:
            stack.close()
            self.open_error = f"{type(exc).__name__}: {exc}"
            raise
        self._stack = stack
        self.open_error = None
        log.info("bench open: %s", ", ".join(f"{k} {v}" for k, v in self.bench.kinds.items()) or "devices")
        return self.bench

    def close(self, timeout_s: float = 15.0) -> None:
        """Close the devices (pump stopped by the factory) and stop the device thread; idempotent.

        The closing itself runs on the device thread, after the commands already queued (the
        bench still opening, a snap in progress), so it never races them. The window waits at
        most ``timeout_s`` for it; a device thread busy for longer still closes the bench when it
        gets there (the interpreter waits for that thread at exit): the close is never dropped.
        """
        if self._closed:
            return
        self._closed = True
        closing = self.executor.submit(self._close_devices)
        self.executor.shutdown(wait=False)  # nothing new; what is queued, the close last, still runs
        try:
            closing.result(timeout=timeout_s)
        except FutureTimeout:
            log.warning("the device thread is still busy: the bench will be closed when it is done")
        except Exception:  # noqa: BLE001 - closing must not raise into a closing window
            log.exception("closing the bench failed")

    def _close_devices(self) -> None:
        got = self.device_lock.acquire(timeout=10.0)  # a run still ending releases it within a frame
        try:
            stack, self._stack, self.bench = self._stack, None, None
        finally:
            if got:
                self.device_lock.release()
        if stack is not None:
            stack.close()
            log.info("bench closed")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on the device thread (never the Qt thread)."""
        return self.executor.submit(fn, *args)

    @property
    def is_open(self) -> bool:
        return self.bench is not None

    @property
    def text_source(self) -> str:
        return str(self.config_path) if self.config_path else "<defaults>"

    # -- exclusive device access -------------------------------------------------------------------
    @contextlib.contextmanager
    def devices(self) -> Iterator[Bench]:
        """The open bench for one manual camera/DMD command; :class:`BenchBusy` while a run holds it."""
        if self.bench is None:
            raise BenchBusy(f"the bench is not open ({self.open_error or 'still opening'})")
        if not self.device_lock.acquire(blocking=False):
            raise BenchBusy("the camera and DMD are in use by a run")
        try:
            yield self.bench
        finally:
            self.device_lock.release()

    def pump(self) -> Any:
        """The pump (or BenchBusy when there is none): its driver serialises access itself."""
        if self.bench is None or self.bench.pump is None:
            raise BenchBusy("no pump on this bench")
        return self.bench.pump
