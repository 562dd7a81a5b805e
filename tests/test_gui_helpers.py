"""Shared pieces of the GUI tests (no tests here): a small config, a fake bench opener, a window fixture.

The GUI tests drive real widgets on test-local devices (``test_engine_helpers``: a DMD and a
camera on the SimClock whose image is the displayed pattern, a pump that records calls), so
they need neither the simulated ALP library nor a pty, and a slow camera (``delay_s``) makes a
run last long enough to pause, resume and abort it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from test_engine_helpers import FakeCamera, FakeDmd, FakePump

from acquisition.config import SpecklabConfig, load_config
from devices.bench.clock import SimClock
from devices.factory import Bench

DMD_SHAPE = (96, 128)


def small_config(tmp_path: Path, frames: int = 40) -> SpecklabConfig:
    """Defaults (simulated bench) with a 96x128 DMD, a short bsbd run and outputs in ``tmp_path``."""
    return load_config(
        None,
        [
            f"devices.dmd.shape=[{DMD_SHAPE[0]}, {DMD_SHAPE[1]}]",
            f"bench.dmd.rows={DMD_SHAPE[0]}",
            f"bench.dmd.cols={DMD_SHAPE[1]}",
            f"frames={frames}",
            f"run.output_dir='{tmp_path / 'runs'}'",
            "protocols.bsbd.interval_s=0.01",
        ],
    )


def fake_opener(delay_s: float = 0.0, opened: list[Bench] | None = None):
    """An ``open_bench`` stand-in: fake DMD + camera (+ pump) sharing one SimClock."""

    @contextlib.contextmanager
    def opener(config: SpecklabConfig) -> Iterator[Bench]:
        clock = SimClock()
        rows, cols = config.dmd_shape
        dmd = FakeDmd(clock, shape=(rows, cols))
        camera = FakeCamera(clock, dmd, delay_s=delay_s, shape=(rows // 2, cols // 2))
        bench = Bench(dmd=dmd, camera=camera, pump=FakePump(), clock=clock, kinds={"all": "fake"})
        if opened is not None:
            opened.append(bench)
        try:
            yield bench
        finally:
            bench.pump.stop()
            dmd.close()

    return opener
