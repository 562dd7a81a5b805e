"""Sample holders: how the bench puts the next sample under the microscope (``devices.base.SampleHolder``).

Speckle-SIM (seed 001) images N masks per sample, several samples per run; the engine mounts the
sample of the next block before projecting its masks.

* :class:`SimulatedSampleHolder` tells the :class:`~devices.bench.bench.VirtualBench` to switch its
  fluorophore density (names from ``devices/bench/samples.py``).
* :class:`ManualSampleHolder` is a real bench's: nothing motorised, the operator swaps the slide. It
  asks through a ``confirm(name, previous)`` callback and waits for the answer (the GUI passes a dialog,
  an interactive terminal :func:`console_confirm`). Headless, with no callback, a mount is refused with
  a :class:`~devices.base.SampleError` that says what to do, instead of imaging the wrong sample.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from devices.base import MountCancelled, SampleError

log = logging.getLogger(__name__)

#: ``confirm(name, previous) -> bool``: True once ``name`` is mounted, False to cancel the run.
ConfirmMount = Callable[[str, "str | None"], bool]


class SimulatedSampleHolder:
    """The virtual bench's sample stage: ``mount`` switches the bench's density rho (instant)."""

    def __init__(self, bench: Any) -> None:
        self._bench = bench  # devices.bench.bench.VirtualBench

    def identity(self) -> dict[str, str]:
        return {"vendor": "specklab", "model": "SimulatedSampleHolder", "samples": ",".join(self.names)}

    @property
    def names(self) -> list[str]:
        """Samples this holder can mount."""
        return sorted(self._bench.sample_names)

    @property
    def mounted(self) -> str | None:
        return self._bench.sample

    def mount(self, name: str) -> None:
        if name not in self._bench.sample_names:
            raise SampleError(
                f"simulated sample holder: cannot mount {name!r}; the virtual bench has {self.names}"
            )
        self._bench.mount_sample(name)


def console_confirm(name: str, previous: str | None) -> bool:
    """Ask on the terminal: the operator mounts ``name`` and presses Enter (``abort`` cancels)."""
    swap = f" (replacing {previous!r})" if previous else ""
    print(
        f"\nspecklab: mount sample {name!r}{swap}, then press Enter (type 'abort' to stop): ",
        end="",
        file=sys.stderr,
    )
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return bool(answer) and answer.strip().lower() not in ("abort", "a", "q", "quit", "n", "no")


class ManualSampleHolder:
    """A real bench's sample stage: the operator mounts each sample and confirms through ``confirm``.

    ``confirm`` may be set after construction (the GUI attaches its dialog to the open bench).
    """

    def __init__(self, confirm: ConfirmMount | None = None) -> None:
        self.confirm = confirm
        self._mounted: str | None = None

    def identity(self) -> dict[str, str]:
        return {"vendor": "operator", "model": "ManualSampleHolder"}

    @property
    def mounted(self) -> str | None:
        return self._mounted

    def mount(self, name: str) -> None:
        if name == self._mounted:
            return
        if self.confirm is None:
            raise SampleError(
                f"sample {name!r} must be mounted by hand, and this run has no way to ask the operator"
                " (headless, no confirmation callback): run interactively, or give the bench's"
                " ManualSampleHolder a confirm(name, previous) callback"
            )
        log.info("asking the operator to mount sample %r (in place: %r)", name, self._mounted)
        if not self.confirm(name, self._mounted):
            raise MountCancelled(f"the operator did not confirm mounting sample {name!r}; run stopped")
        self._mounted = name
        log.info("sample %r mounted (operator confirmed)", name)
