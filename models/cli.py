"""``specklab train | evaluate | report | grid-search``: the localiser subcommands.

Registered into the main parser by ``acquisition/cli.py`` through :func:`register`.  Like the other
subcommands, results meant for scripts (``evaluate --json``, ``grid-search``) go to stdout as one JSON
object; progress bars and diagnostics go to stderr.  Exit codes, as the other subcommands: 0 success,
1 the output file refused, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from acquisition.cli import int_at_least, positive_float
from models import LATTICE_MAX_FRAMES, LATTICE_SIDE

__all__ = ["register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _input_errors() -> tuple[type[Exception], ...]:
    """What a bad input raises: a missing or unreadable file (RunFileError), a wrong option or run, ..."""
    from acquisition.reader import RunFileError

    return (OSError, ValueError, RunFileError)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _kv(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _json_safe(obj.item())
    return obj


def _train_config(args: argparse.Namespace) -> Any:
    from models.data import DataConfig
    from models.train import TrainConfig

    data = DataConfig(
        n_classes=args.n_classes,
        shift_max_px=args.shift_max_px,
        shift_mode=args.shift_mode,
        holdout_fraction=args.holdout_fraction,
        seed=args.data_seed,
        camera_um_per_px=args.camera_um_per_px,
        max_train=args.max_train,
        max_test=args.max_test,
        background=not args.no_background,
    )
    return TrainConfig(
        arch=args.arch,
        model_kwargs=_kv(args.model_arg),
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        in_memory=False if args.streaming else None,
        select_best=not args.last_epoch,
        data=data,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from models.train import learnt, train_repeats, train_run

    progress = not args.no_progress
    try:
        cfg = _train_config(args)
        if args.repeats > 1:
            paths = train_repeats(
                args.run, cfg, args.out, args.repeats, resume=args.resume, progress=progress
            )
            print(json.dumps({"models": [str(p) for p in paths]}))
            return EXIT_OK
        ckpt = train_run(args.run, cfg, args.out, resume=args.resume, progress=progress)
    except _input_errors() as exc:  # missing run, no calibration, not a bsbd run, bad checkpoint, ...
        print(f"specklab train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    last = ckpt["history"][-1]
    summary = {k: last.get(k) for k in ("epoch", "train_loss", "test_loss", "sigma_um", "bias_um")}
    summary |= {k: ckpt[k] for k in ("best_epoch", "best_holdout_mse_um2", "holdout_prior_mse_um2")}
    summary["learnt"] = learnt(ckpt)
    print(json.dumps(_json_safe({"model": str(args.out), **summary})))
    return EXIT_OK


def _model_paths(model: str) -> list[Path]:
    p = Path(model)
    if p.is_dir():
        paths = sorted(p.glob("*.pt"))
        if not paths:
            raise FileNotFoundError(f"no *.pt checkpoints in {p}")
        return paths
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return [p]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import aggregate_evaluations, evaluate_checkpoint, load_crb

    try:
        crb = load_crb(args.crb)
        paths = _model_paths(args.model)
    except (OSError, ValueError) as exc:
        print(f"specklab evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = [
            evaluate_checkpoint(
                p,
                args.run,
                crb=crb,
                device=args.device,
                correct_bias=not args.no_bias_correction,
                lattice_side=args.lattice_side,
                lattice_frames=args.lattice_frames or None,
            )
            for p in paths
        ]
    except _input_errors() as exc:  # also: a lattice that does not fit the training range
        print(f"specklab evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = results[0] if len(results) == 1 else aggregate_evaluations(results)
    if args.b is not None:
        result["b"] = args.b
    text = json.dumps(_json_safe(result), indent=None if args.json else 2)
    for warning in result.get("warnings", []):
        print(f"specklab evaluate: warning: {warning}", file=sys.stderr)
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            print(f"specklab evaluate: cannot write --out: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        print(text)
    else:
        s, b = result["sigma_um"], result["bias_um"]
        print(f"σ = ({s[0]:.3f}, {s[1]:.3f}) µm   |B| = ({b[0]:.3f}, {b[1]:.3f}) µm", end="")
        if "sigma_over_crb" in result:
            r = result["sigma_over_crb"]
            print(f"   σ/CRB = ({r[0]:.2f}, {r[1]:.2f})", end="")
        # the lattice-free figure of merit: one model's, or the median over repeats
        if "uncorrected" in result:
            u = result["uncorrected"]["sigma_over_slope_um"]
            print(f"   uncorrected σ/m′ = ({u[0]:.3f}, {u[1]:.3f}) µm", end="")
        if "clipped_fraction" in result:
            print(f"   clipped {result['clipped_fraction']:.1%}", end="")
        print()
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from models import report
    from models.evaluate import load_crb

    try:
        if args.figure == "training":
            from models.train import load_checkpoint

            ckpt = load_checkpoint(args.inputs[0])
            crb = load_crb(args.crb)
            out = report.plot_training(ckpt["history"], args.out, crb_um=crb, title=ckpt["config"]["arch"])
        elif args.figure == "histograms":
            from models.train import load_checkpoint

            ckpt = load_checkpoint(args.inputs[0])
            snaps = {k: v.numpy() for k, v in ckpt["snapshots"].items()}
            out = report.plot_histograms(
                snaps, ckpt["test_true_um"].numpy(), ckpt["test_pos_id"].numpy(), args.out,
                title=ckpt["config"]["arch"],
            )  # fmt: skip
        else:
            evs = report.load_evaluations(args.inputs)
            labels = [float(v) for v in args.labels.split(",")] if args.labels else None
            out = report.plot_violins(evs, args.out, labels=labels)
    except (OSError, ValueError, KeyError) as exc:
        print(f"specklab report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"figure": str(out)}))
    return EXIT_OK


def cmd_grid_search(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from models.train import grid_search_run

    try:
        cfg = _train_config(args)
        results = grid_search_run(
            args.run, cfg, max_parameters=args.max_parameters, progress=not args.no_progress
        )
    except _input_errors() as exc:
        print(f"specklab grid-search: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(_json_safe({"arch": cfg.arch, "results": [asdict(r) for r in results]}))
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            print(f"specklab grid-search: cannot write --out: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(text)
    return EXIT_OK


def _add_training_args(p: argparse.ArgumentParser) -> None:
    from models import ARCHITECTURE_NAMES

    p.add_argument("run", help="bsbd run file (.h5)")
    p.add_argument("--arch", choices=ARCHITECTURE_NAMES, default="coordconv")
    p.add_argument(
        "--epochs", type=int_at_least(1), default=50, help="total epochs (with --resume: train up to this)"
    )
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int_at_least(2), default=256)
    p.add_argument("--seed", type=int, default=0, help="initialisation / batch-order seed")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the shifts and the held-out split")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--workers", type=int_at_least(0), default=0, help="DataLoader workers (streaming mode)")
    p.add_argument("--streaming", action="store_true", help="stream from HDF5 each epoch (no in-memory copy)")
    p.add_argument(
        "--last-epoch",
        action="store_true",
        help="evaluate the last epoch's weights (default: the epoch with the lowest held-out S error)",
    )
    p.add_argument("--n-classes", type=int, default=81, help="N_h classes per axis (81: one per px of shift)")
    p.add_argument(
        "--shift-max-px", type=int_at_least(1), default=40, help="S-frame shifts uniform in [-m, m] camera px"
    )
    p.add_argument("--shift-mode", choices=["roll", "zero"], default="roll")
    p.add_argument("--holdout-fraction", type=float, default=0.1, help="S frames kept for bias correction")
    p.add_argument(
        "--camera-um-per-px",
        type=float,
        default=None,
        help="camera pixel (before binning) in µm at the sample; needed for runs without "
        "ground_truth/bench/um_per_camera_px (real benches)",
    )
    p.add_argument(
        "--max-train", type=int_at_least(1), default=None, help="use at most this many training frames"
    )
    p.add_argument("--max-test", type=int_at_least(1), default=None, help="use at most this many D frames")
    p.add_argument(
        "--no-background",
        action="store_true",
        help="skip background subtraction (diagnostics; as `specklab crb --no-background`)",
    )
    p.add_argument(
        "--model-arg", action="append", metavar="KEY=VALUE", help="constructor argument (JSON value)"
    )
    p.add_argument("--no-progress", action="store_true")


def register(subparsers: Any) -> None:
    """Add ``train``, ``evaluate``, ``report`` and ``grid-search`` to the ``specklab`` parser."""
    p = subparsers.add_parser("train", help="train a localiser on a bsbd run")
    _add_training_args(p)
    p.add_argument("--out", required=True, help="checkpoint (.pt); a directory with --repeats > 1")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    p.add_argument(
        "--repeats", type=int_at_least(1), default=1, help="trainings with seeds seed..seed+n-1 (paper: 25)"
    )
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="σ and bias per test position, optionally against the CRB")
    p.add_argument("model", help="checkpoint, or a directory of repeated-training checkpoints (aggregated)")
    p.add_argument("run", help="bsbd run file (.h5) the model was trained on (for the held-out split)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--crb", help="JSON with crb_um: [cx, cy]; adds sigma_over_crb")
    p.add_argument("--no-bias-correction", action="store_true")
    p.add_argument(
        "--lattice-side",
        type=int,
        default=LATTICE_SIDE,
        help="bias correction: calibration lattice points per axis (D range plus one step each side)",
    )
    p.add_argument(
        "--lattice-frames",
        type=int,
        default=LATTICE_MAX_FRAMES,
        help="bias correction: held-out frames per lattice point, at most (0: all)",
    )
    p.add_argument("--b", type=float, default=None, help="optical thickness label stored in the JSON")
    p.add_argument("--device", default=None)
    p.add_argument("--out", help="also write the JSON to this file")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("report", help="figures: training (Fig. 3b), histograms (3a), violins (4b)")
    p.add_argument("figure", choices=["training", "histograms", "violins"])
    p.add_argument(
        "inputs", nargs="+", help="checkpoint (training, histograms) or evaluation JSONs (violins)"
    )
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--crb", help="JSON with crb_um (training figure)")
    p.add_argument("--labels", help="comma-separated b values for the violins (default: from the JSONs)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("grid-search", help="hyper-parameter grid search, scored on held-out MSE")
    _add_training_args(p)
    p.add_argument("--max-parameters", type=int, default=None)
    p.add_argument("--out", help="also write the JSON results here")
    p.set_defaults(func=cmd_grid_search)
