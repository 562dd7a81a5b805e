"""Save ``docs/screenshot.png``: the control panel in the middle of a short bsbd run.

Usage (from the repository root)::

    QT_QPA_PLATFORM=offscreen python docs/screenshot.py            # simulated bench, else fake devices
    xvfb-run -a python docs/screenshot.py --out /tmp/panel.png     # same under a virtual X server
    python docs/screenshot.py --bench fake                         # test-local fake devices only

``--bench auto`` (default) opens the simulated bench of ``--config`` and falls back to the
test-local fake devices of ``tests/test_engine_helpers.py`` when the simulated bench cannot be
opened (e.g. while parts of it are still being written); the log pane of the picture says which.
The window is grabbed with ``QWidget.grab()``, which works offscreen and under Xvfb alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fake_opener() -> Callable[..., contextlib.AbstractContextManager]:
    """Fake DMD/camera/pump from the test helpers (camera image = the DMD picture, slowed to ~60 Hz)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_engine_helpers import FakeCamera, FakeDmd, FakePump

    from devices.bench.clock import SimClock
    from devices.factory import Bench

    @contextlib.contextmanager
    def opener(config) -> Iterator[Bench]:  # noqa: ANN001
        clock = SimClock()
        rows, cols = config.dmd_shape
        dmd = FakeDmd(clock, shape=(rows, cols))
        camera = FakeCamera(clock, dmd, delay_s=0.015, shape=(rows // 2, cols // 2))
        yield Bench(dmd=dmd, camera=camera, pump=FakePump(), clock=clock, kinds={"all": "fake (tests)"})

    return opener


def wait(app, condition: Callable[[], bool], timeout_s: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.01)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    p.add_argument("--config", default=str(ROOT / "configs" / "sim-bench.toml"))
    p.add_argument("--bench", choices=("auto", "sim", "fake"), default="auto")
    p.add_argument("--size", default="1500x950", help="window size WxH")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "xcb")

    from PyQt5.QtWidgets import QApplication

    from acquisition.config import ConfigError, load_config
    from gui.app import MainWindow
    from gui.session import default_opener

    app = QApplication.instance() or QApplication([])
    overrides = ["frames=600", "run.output_dir='/tmp/specklab-screenshot'"]
    cfg, opener, source = None, default_opener, args.config
    if args.bench in ("auto", "sim"):
        try:
            cfg = load_config(args.config, overrides)
        except ConfigError as exc:
            if args.bench == "sim":
                raise
            print(f"screenshot: {args.config} does not load ({exc.args[0].splitlines()[0]}); fake devices")
    if cfg is None or args.bench == "fake":
        cfg = load_config(None, ["devices.dmd.shape=[192, 256]", *overrides, "protocols.bsbd.grid_step_px=6"])
        opener, source = fake_opener(), None

    w, h = (int(v) for v in args.size.split("x"))
    window = MainWindow(cfg, source, opener=opener, pump_poll_ms=250)
    window.resize(w, h)
    window.show()
    ready: list[bool] = []
    window.bench_ready.connect(ready.append)
    wait(app, lambda: bool(ready), 120)
    if ready != [True] and args.bench == "auto":
        print("screenshot: the simulated bench did not open; retrying with fake devices")
        window.shutdown()
        window.deleteLater()
        cfg = load_config(None, ["devices.dmd.shape=[192, 256]", *overrides, "protocols.bsbd.grid_step_px=6"])
        window = MainWindow(cfg, None, opener=fake_opener(), pump_poll_ms=250)
        window.resize(w, h)
        window.show()
        ready = []
        window.bench_ready.connect(ready.append)
        wait(app, lambda: bool(ready), 60)
    if ready != [True]:
        print("screenshot: no bench could be opened", file=sys.stderr)
        return 1

    out_run = Path("/tmp/specklab-screenshot") / f"screenshot-{os.getpid()}.h5"
    window.protocol.out.setText(str(out_run))
    window.camera.auto_levels.setChecked(True)
    window.protocol.start_btn.click()
    wait(app, lambda: window.protocol.progress.value() >= 150, 120)
    wait(app, lambda: False, 0.3)  # let the live view and the DMD preview catch up
    wait(app, lambda: "role D" in window.dmd.state, 5)  # grab a frame with the target on the DMD
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ok = window.grab().save(args.out)
    window.abort_run("screenshot taken")
    wait(app, lambda: not window.running, 60)
    window.shutdown()
    print(f"screenshot: {'saved' if ok else 'FAILED to save'} {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
