"""The ``specklab`` command: acquire, info, replay, snap (+ subcommands registered by other packages).

Exit codes: 0 success, 1 run failed (or a device or the output file refused before the first
frame), 2 bad usage or invalid config (nothing was opened), 130 aborted (Ctrl-C). Diagnostics go
to stderr; ``info --json`` and the final summaries of ``acquire``/``replay`` go to stdout as one
JSON object, so scripts can parse them.

Ctrl-C during ``acquire`` asks the runner to abort between frames (DMD halted, pump
stopped, file marked ``aborted``); a second Ctrl-C interrupts harder (for a device that
hangs): the runner's ``finally`` still tears down and closes the file, unless that second
interrupt lands inside the teardown itself. The file then stays marked ``running``, which
readers treat as a killed run: every frame counted before is intact (SWMR).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import signal
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CONFIG = "configs/sim-bench.toml"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 130

#: Other packages add subcommands with ``register(subparsers)`` in these modules (when they exist).
PLUGIN_MODULES = ("analysis.cli", "models.cli", "gui.cli")

log = logging.getLogger("specklab")


# -- helpers -------------------------------------------------------------------------------------------


def _setup_failed(command: str, exc: BaseException) -> int:
    """A device or the output refused before any frame: one line, not a traceback (``-vv`` shows it)."""
    log.debug("specklab %s: setup failed", command, exc_info=exc)
    print(f"specklab {command}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _progress_bar(total: int, desc: str, enabled: bool) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A tqdm bar on stderr fed by runner Progress reports (rate in frames/s, ETA)."""
    if not enabled:
        return (lambda p: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(p: Any) -> None:
        bar.update(p.done - bar.n)
        if str(p.state) == "paused":
            bar.set_postfix_str("paused")

    return update, bar.close


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _print_json(obj: Any) -> None:
    print(json.dumps(_json_safe(obj), indent=1, allow_nan=False))


def write_png(path: str | Path, image: np.ndarray) -> None:
    """16-bit (uint16) or 8-bit grayscale PNG with the standard library only (no imaging dependency)."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"PNG writer takes a 2-D image, got shape {img.shape}")
    depth = 16 if img.dtype.itemsize > 1 else 8
    data = img.astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\x00" + row.tobytes() for row in data)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", img.shape[1], img.shape[0], depth, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    Path(path).write_bytes(png)


def _output_refused(path: Path, overwrite: bool) -> str | None:
    """Why a run file may not be written at ``path`` (a folder; an existing file without --overwrite)."""
    if path.is_dir():
        return f"{path} is a folder, not a run file"
    if path.exists() and not overwrite:
        return f"{path} exists (use --overwrite to replace it)"
    return None


def _overrides(args: argparse.Namespace) -> list[str]:
    """Every override of the config file, ``--protocol`` as ``run.protocol=...``: what a run file records
    (``config_overrides``), so that the file plus these rebuild the run's config."""
    return [*([f"run.protocol={args.protocol}"] if args.protocol else []), *(args.set or [])]


def _load_plan(args: argparse.Namespace, command: str) -> tuple[Any, Any] | None:
    """Config and expanded plan of ``--protocol``, or None after printing why (before any device opens)."""
    from acquisition.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, _overrides(args))
        return cfg, cfg.plan()
    except ConfigError as exc:
        print(f"specklab {command}: {exc}", file=sys.stderr)
        return None


# -- acquire -------------------------------------------------------------------------------------------


def cmd_acquire(args: argparse.Namespace) -> int:
    from acquisition.hdf5_writer import WriterOptions
    from acquisition.runner import Runner, record
    from acquisition.sinks import STATUS_ABORTED, STATUS_COMPLETE
    from acquisition.wiring import default_output, prepare_run
    from devices.base import DeviceError
    from devices.factory import open_bench

    # 1. everything that can be checked without hardware, before any device opens
    loaded = _load_plan(args, "acquire")
    if loaded is None:
        return EXIT_USAGE
    cfg, plan = loaded
    out = Path(args.out) if args.out else default_output(cfg, plan.protocol)
    problem = _output_refused(out, args.overwrite)
    if problem:
        print(f"specklab acquire: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if len(plan.events) == 0:
        print("specklab acquire: the plan has no frames", file=sys.stderr)
        return EXIT_USAGE
    options = WriterOptions(flush_every_frames=args.flush_every, flush_every_s=cfg.run.flush_interval_s)

    # 2. the devices
    runner_ref: dict[str, Runner] = {}

    def on_sigint(signum: int, frame: Any) -> None:
        runner = runner_ref.get("runner")
        if runner is None or runner_ref.get("asked"):
            raise KeyboardInterrupt
        runner_ref["asked"] = True  # type: ignore[assignment]
        print("\nspecklab: aborting (Ctrl-C again to interrupt)", file=sys.stderr)
        runner.abort("aborted by user (Ctrl-C)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_term = signal.signal(signal.SIGTERM, on_sigint)
    update, close_bar = _progress_bar(len(plan.events), plan.protocol, not args.no_progress)
    try:
        with open_bench(cfg) as bench:
            prepared = prepare_run(
                cfg,
                bench,
                plan=plan,
                config_path=args.config,
                overrides=_overrides(args),
                block_size=args.block_size,
                verify_patterns=not args.no_verify,
            )
            result = record(
                prepared.plan,
                prepared.engine,
                prepared.info,
                out,
                writer_options=options,
                progress=update,
                runner_hook=lambda r: runner_ref.__setitem__("runner", r),
            )
    except KeyboardInterrupt:
        close_bar()
        if "runner" in runner_ref:
            print(f"specklab acquire: interrupted; {out} is closed and marked aborted", file=sys.stderr)
        else:
            print("specklab acquire: interrupted before the run started", file=sys.stderr)
        return EXIT_ABORTED
    except (DeviceError, OSError) as exc:  # a device refused its settings, or the run file cannot be created
        close_bar()
        return _setup_failed("acquire", exc)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        close_bar()
    _print_json(
        {
            "out": str(out),
            "status": result.status,
            "error": result.error,
            "frames": result.frames,
            "planned": result.total,
            "elapsed_s": round(result.elapsed_s, 3),
            "frames_per_s": round(result.frames / result.elapsed_s, 1) if result.elapsed_s > 0 else None,
            "dropped": result.dropped(),
            "dmd_uploads": prepared.engine.uploads,
        }
    )
    if result.status == STATUS_COMPLETE:
        return EXIT_OK
    if result.status == STATUS_ABORTED:
        return EXIT_ABORTED
    print(f"specklab acquire: run failed: {result.error}", file=sys.stderr)
    return EXIT_FAILED


# -- info / replay / snap ------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from acquisition.reader import RunFileError, RunReader

    try:
        with RunReader(args.run) as r:
            summary = r.summary()
    except (FileNotFoundError, RunFileError) as exc:
        print(f"specklab info: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _print_json(summary)
        return EXIT_OK
    print(f"{summary['path']}")
    print(f"  protocol  {summary['protocol']}   status {summary['status']}", end="")
    print(f" ({summary['error']})" if summary["error"] else "")
    s = summary
    print(f"  frames    {s['frames']} of {s['frames_planned']}  {s['shape']} {s['dtype']}")
    print(f"  roles     {', '.join(f'{k}: {v}' for k, v in summary['roles'].items())}")
    print(f"  positions {summary['positions']['count']} distinct D positions")
    print(f"  time      {summary['start_time']} -> {summary['end_time']}")
    for name, ident in summary["devices"].items():
        print(f"  {name:9s} {ident.get('model', '')} {ident.get('serial', '')}")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from acquisition.hdf5_writer import Hdf5RunWriter
    from acquisition.reader import RunFileError, RunReader
    from acquisition.replay import ReplaySource
    from acquisition.sinks import STATUS_ABORTED, STATUS_COMPLETE, Dispatcher, RoleSummarySink

    try:
        with RunReader(args.run) as r:
            total = r.n_frames
        source = ReplaySource(args.run, speed=args.speed)
    except (FileNotFoundError, RunFileError, ValueError) as exc:
        print(f"specklab replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.to:
        to = Path(args.to)
        same = to.exists() and to.resolve() == Path(args.run).resolve()
        problem = f"--to {to} is the run being replayed" if same else _output_refused(to, args.overwrite)
        if problem:
            print(f"specklab replay: {problem}", file=sys.stderr)
            return EXIT_USAGE
    dispatcher = Dispatcher()
    summary = RoleSummarySink()
    dispatcher.add(summary, critical=True, name="summary")  # the command's output: it must see every frame
    if args.to:
        dispatcher.add(Hdf5RunWriter(args.to), critical=True, name="hdf5")
    update, close_bar = _progress_bar(total, "replay", not args.no_progress)
    previous = signal.signal(signal.SIGINT, lambda s, f: source.abort())
    try:
        result = source.run(dispatcher, progress=update)
    except OSError as exc:  # the --to file cannot be created
        return _setup_failed("replay", exc)
    finally:
        signal.signal(signal.SIGINT, previous)
        close_bar()
    _print_json(
        {
            "run": str(args.run),
            "status": result.status,
            "error": result.error,
            "frames": result.frames,
            "elapsed_s": round(result.elapsed_s, 3),
            "dropped": result.dropped(),
            "roles": summary.summary(),
            "to": args.to,
        }
    )
    if result.status == STATUS_COMPLETE:
        return EXIT_OK
    return EXIT_ABORTED if result.status == STATUS_ABORTED else EXIT_FAILED


def cmd_snap(args: argparse.Namespace) -> int:
    from devices.base import DeviceError
    from devices.factory import open_bench

    loaded = _load_plan(args, "snap")
    if loaded is None:
        return EXIT_USAGE
    cfg, plan = loaded
    if not 0 <= args.event < len(plan.events):
        print(
            f"specklab snap: --event {args.event} outside the plan's {len(plan.events)} events",
            file=sys.stderr,
        )
        return EXIT_USAGE
    event = plan.events[args.event]
    try:
        with open_bench(cfg) as bench:
            bench.camera.set_exposure(event.exposure_s)
            bench.dmd.show(plan.patterns.pattern(event.pattern_id))
            try:
                frame = bench.camera.snap()
            finally:
                bench.dmd.halt()
        write_png(args.out, frame.image)
    except (DeviceError, OSError) as exc:
        return _setup_failed("snap", exc)
    _print_json(
        {
            "out": str(args.out),
            "shape": list(frame.image.shape),
            "event": event.index,
            "role": event.role,
            "min": int(frame.image.min()),
            "max": int(frame.image.max()),
            "mean": round(float(frame.image.mean()), 2),
        }
    )
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------------


def positive_float(text: str) -> float:
    """argparse type for every subcommand: a finite number > 0 (argparse names the option on error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type for every subcommand: an integer >= ``minimum`` (a count of 0 that would silently
    do nothing, or a negative one, is a usage error naming the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML config (default {DEFAULT_CONFIG})")
    p.add_argument("--protocol", help="protocol to run (bsbd, speckle-sim, generalisation, fisher-scan)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specklab", description="Optical bench acquisition and analysis")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("acquire", help="run a protocol on the bench into an HDF5 run file")
    _add_config_args(p)
    p.add_argument("--out", help="run file to write (default: <run.output_dir>/<protocol>-<time>.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--block-size", type=int_at_least(1), default=100, help="DMD pictures per upload (non-periodic plans)"
    )
    p.add_argument(
        "--flush-every", type=int_at_least(1), default=100, help="flush the run file every N frames"
    )
    p.add_argument(
        "--no-verify", action="store_true", help="skip the displayed-pattern check (simulated DMD)"
    )
    p.set_defaults(func=cmd_acquire)

    p = sub.add_parser("info", help="describe a run file")
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("replay", help="stream a stored run through the live sinks")
    p.add_argument("run", help="run file (.h5)")
    p.add_argument(
        "--speed", type=positive_float, default=None, help="x recorded pace (default: as fast as possible)"
    )
    p.add_argument("--to", help="also record the replayed stream into this run file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --to file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("snap", help="take one frame on the bench and save it as PNG")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="PNG file (16-bit grayscale)")
    p.add_argument("--event", type=int, default=1, help="show the pattern of this plan event (default 1: S)")
    p.set_defaults(func=cmd_snap)

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that package has no CLI (yet); any other missing module is a real error
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `specklab info run.h5 | head`: the reader left, nothing to report
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
