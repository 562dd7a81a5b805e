"""``specklab gui [--config CONFIG] [--set KEY=VALUE] [--replay RUN] [--no-bench] [--reset-layout]``.

Registered into the ``specklab`` command by ``acquisition/cli.py`` (``PLUGIN_MODULES``). Qt is
imported only when the subcommand runs, so ``specklab acquire`` on a headless machine never
loads it. The config is validated before any window opens: a bad file exits with code 2 and the
loader's message, as every other subcommand does. The window layout is saved on close and
restored on start (:mod:`gui.layout`); ``--reset-layout`` starts from the default one. An
error escaping a slot is logged, not fatal (:func:`log_unhandled`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

DEFAULT_CONFIG = "configs/sim-bench.toml"


def register(subparsers: Any) -> None:
    """Add the ``gui`` subcommand to the ``specklab`` parser."""
    p = subparsers.add_parser("gui", help="open the control panel (live view, protocols, replay, results)")
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML config (default {DEFAULT_CONFIG}: simulated bench)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--replay", metavar="RUN", help="open this run file in the Replay tab")
    p.add_argument("--no-bench", action="store_true", help="replay and results only (no devices)")
    p.add_argument(
        "--reset-layout",
        action="store_true",
        help="start with the default window layout and forget the saved one",
    )
    p.set_defaults(func=cmd_gui)


def cmd_gui(args: argparse.Namespace) -> int:
    from acquisition.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set or [])
    except ConfigError as exc:
        print(f"specklab gui: {exc}", file=sys.stderr)
        return 2

    from PyQt5.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    previous_hook, sys.excepthook = sys.excepthook, log_unhandled
    try:
        return _run_window(app, cfg, args)
    finally:
        sys.excepthook = previous_hook


def log_unhandled(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """``sys.excepthook`` while the window runs: an exception escaping a Qt slot is logged (log pane).

    With Python's own hook PyQt5 aborts the process on such an exception, which would leave a
    run's file unfinished and the pump running. Ctrl-C in the terminal quits the window cleanly
    (a run is aborted, the devices closed) instead.
    """
    if issubclass(exc_type, KeyboardInterrupt):
        from PyQt5.QtWidgets import QApplication

        QApplication.quit()
        return
    logging.getLogger("gui").critical("unexpected error: %s", exc, exc_info=(exc_type, exc, tb))


def _run_window(app: Any, cfg: Any, args: argparse.Namespace) -> int:
    from gui.app import MainWindow
    from gui.layout import open_settings

    window = MainWindow(
        cfg,
        args.config,
        open_bench=not args.no_bench,
        settings=open_settings(),
        reset_layout=args.reset_layout,
    )
    if args.replay:
        window.replay.open_run(args.replay)
        window.tabs.setCurrentWidget(window.replay)
    window.show()
    code = app.exec_()
    window.shutdown()
    return int(code)
