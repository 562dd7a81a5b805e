"""The simulated bench's clock.

Headless runs must go much faster than the bench's 30 frames/s while every
simulated device agrees on *when* things happen (which DMD picture is shown at a
camera exposure, how far the flowing medium decorrelated between two frames).
All simulated devices therefore read one :class:`SimClock`. In ``realtime`` mode it
follows the wall clock (for the GUI's live view); otherwise it is *virtual*: time
moves only when a device advances it (a camera exposure, a sequence interval), so a
5x10^5-frame protocol runs as fast as the physics can be computed.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable


class SimClock:
    """Monotonic bench time in seconds since the clock was made."""

    def __init__(self, realtime: bool = False) -> None:
        self.realtime = realtime
        self._t0_wall = time.monotonic()
        self._virtual_s = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], None]] = []

    def now(self) -> float:
        if self.realtime:
            return time.monotonic() - self._t0_wall
        with self._lock:
            return self._virtual_s

    def advance(self, seconds: float) -> float:
        """Let ``seconds`` of bench time pass (sleeps in realtime mode); returns the new time."""
        if not (math.isfinite(seconds) and seconds >= 0):  # NaN would make every later time NaN
            raise ValueError(f"cannot advance the bench clock by a negative or non-finite time ({seconds} s)")
        if self.realtime:
            time.sleep(seconds)
            t = self.now()
        else:
            with self._lock:
                self._virtual_s += seconds
                t = self._virtual_s
        for listener in list(self._listeners):
            listener(t)
        return t

    def advance_to(self, t_s: float) -> float:
        """Advance to absolute bench time ``t_s`` (no-op if already past it)."""
        if not math.isfinite(t_s):
            raise ValueError(f"cannot advance the bench clock to a non-finite time ({t_s} s)")
        return self.advance(max(0.0, t_s - self.now()))

    def subscribe(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(t)`` after every advance (the simulated DMD library follows the clock so)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[float], None]) -> None:
        """Stop calling ``listener``; a no-op when it was never subscribed (close() paths call it freely)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
