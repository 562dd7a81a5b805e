"""``specklab crb RUN.h5 [--json]``: registered into the ``specklab`` command by ``acquisition/cli.py``.

For simulated reflection runs the output also holds the bench's analytic CRB at the reference position
(``analytic_crb_um``, ``analytic_fisher``, ``analytic``: model, binning, notes) and ``crb_ratio`` =
estimate / analytic per axis; all four are None for real runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from acquisition.cli import int_at_least, positive_float

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``crb`` subcommand."""
    p = subparsers.add_parser(
        "crb",
        help="Cramér–Rao bound of the target position from a fisher-scan or bsbd run",
        description="Model-free Fisher information matrix and CRB (µm, sample plane) of the target position.",
    )
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--role", choices=["F", "D"], default=None, help="target frames (default: F if any, else D)"
    )
    p.add_argument("--decorrelation", choices=["pca", "ica", "gaussianize", "none"], default="pca")
    p.add_argument("--step-rule", choices=["robust", "paper", "richardson"], default="robust")
    p.add_argument(
        "--rel-tol", type=positive_float, default=0.02, help="relative stderr for the robust step rule"
    )
    p.add_argument(
        "--bins", type=int_at_least(2), default=None, help="equal-frequency bins (default: from n)"
    )
    p.add_argument("--bin-factor", type=int_at_least(1), default=4, help="pixel binning (128 -> 32: 4)")
    p.add_argument(
        "--window",
        type=int_at_least(1),
        help="Savitzky–Golay window in B frames (default: seed 000's 5,000; <= polyorder: constant mean)",
    )
    p.add_argument("--polyorder", type=int_at_least(0), help="Savitzky–Golay polynomial order (default: 2)")
    p.add_argument("--no-background", action="store_true", help="skip background subtraction")
    p.add_argument("--no-normalise", action="store_true", help="skip per-frame max normalisation")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_crb)


def _safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return _safe(obj.item())
        except (TypeError, ValueError):
            return str(obj)
    return obj


def cmd_crb(args: argparse.Namespace) -> int:
    """Run the CRB analysis and print the result."""
    from acquisition.reader import RunFileError
    from analysis.crb import crb_from_run
    from analysis.decorrelation import resolve_device

    try:  # before loading the run and fitting its background (minutes on a paper-scale run)
        resolve_device(args.device)
    except ValueError as exc:  # "gpu" (not a torch device), or cuda on a machine without CUDA
        print(f"specklab crb: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        res = crb_from_run(
            args.run,
            role=args.role,
            bin_factor=args.bin_factor,
            background=not args.no_background,
            normalise=not args.no_normalise,
            **{k: v for k in ("window", "polyorder") if (v := getattr(args, k)) is not None},
            fisher_kwargs={
                "decorrelation": args.decorrelation,
                "step_rule": args.step_rule,
                "rel_tol": args.rel_tol,
                "bins": args.bins,
                "device": args.device,
            },
        )
    except (FileNotFoundError, RunFileError) as exc:  # no file, or not a run: bad input, as for info
        print(f"specklab crb: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, RuntimeError, OSError) as exc:  # the run cannot give a CRB
        print(f"specklab crb: {exc}", file=sys.stderr)
        return EXIT_FAILED
    out = _safe(res.as_dict())
    for warning in out.get("warnings", []):
        print(f"specklab crb: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=1, allow_nan=False))
    else:
        cx, cy = out["crb_um"]
        sx, sy = out["crb_stderr_um"]
        print(f"CRB x = {cx} ± {sx} µm, y = {cy} ± {sy} µm")
        print(f"Fisher matrix (1/µm²): {out['fisher']}")
        print(f"steps (µm): {out['step_um']}, frames used: {out['frames_used']}, rule: {out['method']}")
        if out.get("analytic_crb_um") is not None:
            ax, ay = out["analytic_crb_um"]
            rx, ry = out["crb_ratio"] if out["crb_ratio"] is not None else (None, None)
            model = out["analytic"]["model"]
            print(f"bench analytic CRB x = {ax} µm, y = {ay} µm ({model}); estimate/analytic {rx}, {ry}")
            for note in out["analytic"]["notes"]:
                print(f"  note: {note}")
    return EXIT_OK
