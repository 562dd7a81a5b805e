"""Training loop for the localisers: Adam, per-epoch precision/bias on the test set, resumable checkpoints.

Why it is built this way:

* **Reproducible and resumable.**  The model is initialised after seeding with ``config.seed``; the
  batch order of epoch ``e`` is drawn from a generator seeded with ``(seed, e)``, not from a global
  stream, and the global RNG states (torch, CUDA, numpy, random; dropout uses them) are stored with
  every checkpoint.  Training N epochs in one go and training k epochs then ``--resume`` to N give
  identical weights on the CPU.  On CUDA they agree only as far as the kernels are deterministic:
  cuDNN's convolution backward and atomic-add reductions are not by default, so even two straight
  runs can differ in the last bits.  ``--resume --device D`` may continue on another device.
* **Checkpoint every epoch** (written to a temporary file then renamed, so a kill never leaves a
  half-written checkpoint): model, optimiser, completed epoch, RNG states, config, class grid, data
  digests, metrics history and prediction snapshots for the Fig. 3a-like histograms.  Checkpoints only
  hold tensors and plain Python values, so they load with ``torch.load(weights_only=True)``.
* **Per-epoch σ and bias on the test set** (the D frames) are recorded for Fig. 3b-like curves.  They
  are monitoring only: model selection in :func:`grid_search_run` uses the held-out S split.
* **Device**: CUDA when ``torch.cuda.is_available()``, else CPU (``config.device`` overrides).  With
  ``in_memory`` (default when the preprocessed sets fit in 4 GB) the tensors are put on the device once
  and batches are sliced there, so the GPU is not starved by the per-item DataLoader path.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from analysis.decorrelation import resolve_device
from models import LATTICE_MAX_FRAMES, LATTICE_SIDE
from models.architectures import (
    HYPERPARAMETER_GRIDS,
    TRAINING_KEYS,
    GridResult,
    Localiser,
    build_model,
    count_parameters,
    grid_search,
    localisation_loss,
)
from models.data import (
    BlockShuffleSampler,
    BsbdData,
    ClassGrid,
    DataConfig,
    LocalisationDataset,
    build_datasets,
    open_source,
)
from models.evaluate import Predictions, evaluate_model, position_stats, predict, summarise

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "specklab-localiser"
CHECKPOINT_VERSION = 3  # 2: networks gained ``input_norm``; 3: hidden dense layers gained BatchNorm1d
IN_MEMORY_LIMIT_BYTES = 4 * 2**30

__all__ = [
    "TrainConfig",
    "build_run_data",
    "evaluate_fitted",
    "holdout_score",
    "fit",
    "grid_search_run",
    "load_checkpoint",
    "evaluation_model",
    "evaluation_state",
    "holdout_prior_mse_um2",
    "learnt",
    "load_model",
    "mse_um2",
    "train_repeats",
    "train_run",
]


@dataclass
class TrainConfig:
    """Training options; ``seed`` seeds the initialisation and batch order, ``data.seed`` the data split."""

    arch: str = "coordconv"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    epochs: int = 50
    batch_size: int = 256
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    in_memory: bool | None = None
    eval_every: int = 1
    select_best: bool = True  # evaluate the epoch with the lowest held-out S error (early stopping)
    snapshot_epochs: tuple[int, ...] = (5, 25, 50)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 2:  # a batch of one frame is skipped (BatchNorm1d): nothing would be trained
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = self.data.to_dict()
        d["snapshot_epochs"] = list(self.snapshot_epochs)
        d["model_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_kwargs.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "data" in known and not isinstance(known["data"], DataConfig):
            known["data"] = DataConfig.from_dict(known["data"])
        if "snapshot_epochs" in known:
            known["snapshot_epochs"] = tuple(int(e) for e in known["snapshot_epochs"])
        if "model_kwargs" in known:
            known["model_kwargs"] = dict(known["model_kwargs"])
        return cls(**known)


# ---------------------------------------------------------------------------------------------------
# Device, seeds, RNG state
# ---------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global stream, used by third-party code
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():  # a machine with fewer GPUs restores those it has
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(mixed)


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (safe ``weights_only`` load, tensors on ``map_location``).

    A missing file raises FileNotFoundError; anything torch cannot read (truncated, not a torch file,
    objects a weights-only load refuses) raises ValueError.
    """
    try:
        ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        # torch's own messages run to paragraphs (and suggest weights_only=False): name the error only
        raise ValueError(
            f"{path} is not a readable specklab localiser checkpoint ({type(exc).__name__}: truncated, "
            "corrupt or not written by specklab train)"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a specklab localiser checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} is a version {ckpt.get('version')} localiser checkpoint; this specklab reads version"
            f" {CHECKPOINT_VERSION} (the networks changed): train it again"
        )
    return ckpt


def evaluation_state(ckpt: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
    """The weights to evaluate and their epoch: the best held-out epoch when ``select_best``, else the last.

    ``model_state`` is always the last epoch (what ``--resume`` continues from); ``best_model_state`` the
    epoch with the lowest held-out S mean squared error.  Selecting on held-out S frames never uses the D
    test frames.
    """
    if ckpt["config"].get("select_best", True) and "best_model_state" in ckpt:
        return ckpt["best_model_state"], int(ckpt["best_epoch"])
    return ckpt["model_state"], int(ckpt["epoch"])


def evaluation_model(ckpt: Mapping[str, Any], device: torch.device | str = "cpu") -> Localiser:
    """The network of a checkpoint with :func:`evaluation_state`'s weights (eval mode, on ``device``).

    The weights are those of the best held-out epoch unless the training config says
    ``select_best=False``.
    """
    cfg = ckpt["config"]
    model = build_model(cfg["arch"], int(ckpt["grid"]["n_classes"]), **cfg["model_kwargs"])
    model.load_state_dict(evaluation_state(ckpt)[0])
    return model.to(device).eval()


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Localiser, dict[str, Any]]:
    """The model to evaluate from a checkpoint file (:func:`evaluation_model`), with the checkpoint."""
    ckpt = load_checkpoint(path)
    return evaluation_model(ckpt, device), ckpt


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def build_run_data(run_path: str | Path, config: TrainConfig | Mapping[str, Any]) -> tuple[BsbdData, Any]:
    """Open ``run_path`` and build its datasets with ``config.data``; returns (data, open source)."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    source = open_source(run_path)
    try:
        data = build_datasets(source, cfg.data, run_path=run_path)
    except BaseException:
        source.close()
        raise
    return data, source


def _fits_in_memory(data: BsbdData) -> bool:
    n = len(data.train) + len(data.test) + len(data.holdout)
    return n * 32 * 32 * 4 < IN_MEMORY_LIMIT_BYTES


@dataclass
class _Prepared:
    train: LocalisationDataset | TensorDataset
    test: LocalisationDataset | TensorDataset
    grid: ClassGrid


def _tensor_batches(
    ds: TensorDataset, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    perm = torch.randperm(len(ds), generator=generator)
    for s in range(0, perm.numel(), batch_size):
        idx = perm[s : s + batch_size].to(ds.tensors[0].device)
        yield tuple(t[idx] for t in ds.tensors)


def _epoch_batches(
    ds: Any, cfg: TrainConfig, epoch: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, ...]]:
    if isinstance(ds, TensorDataset):
        return _tensor_batches(ds, cfg.batch_size, _epoch_generator(cfg.seed, epoch))
    sampler = BlockShuffleSampler(ds.block_of_items(), seed=cfg.seed)
    sampler.set_epoch(epoch)
    return iter(
        DataLoader(
            ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda", persistent_workers=False,
        )
    )  # fmt: skip


def _n_batches(ds: Any, batch_size: int) -> int:
    return (len(ds) + batch_size - 1) // batch_size


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def fit(
    data: BsbdData,
    config: TrainConfig,
    checkpoint_path: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config.arch`` on ``data`` up to ``config.epochs`` epochs; returns the final checkpoint dict.

    With ``resume`` and an existing checkpoint, training continues from its last completed epoch with
    its model/optimiser/RNG state and config (:func:`_resumed_config`); its data settings must be
    ``config.data``, the settings ``data`` was built with, and its shifts those of ``data`` (digest).
    ``config.epochs`` may exceed the original count to train longer.
    """
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    previous: dict[str, Any] | None = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        previous = load_checkpoint(ckpt_path)
        if previous["data_meta"]["shifts_sha1"] != data.meta["shifts_sha1"]:
            raise ValueError("checkpoint was trained on a different data split/shifts; cannot resume")
        saved_data, now = previous["config"]["data"], config.data.to_dict()
        changed = sorted(k for k in now if saved_data.get(k) != now[k])
        if changed:  # ``data`` was built with ``config.data``: its samples are not those trained on
            raise ValueError(
                f"{ckpt_path} was trained with other data settings ({', '.join(changed)}); resume with the "
                "options it was trained with"
            )
        config = _resumed_config(previous["config"], config)
    elif resume:
        log.info("no checkpoint at %s: starting from scratch", ckpt_path)
    device = resolve_device(config.device)

    seed_everything(config.seed)
    model = build_model(config.arch, data.grid.n_classes, **config.model_kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[dict[str, Any]] = []
    snapshots: dict[str, torch.Tensor] = {}
    start = 0
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (held-out MSE, epoch, weights)
    if previous is not None:
        model.load_state_dict(previous["model_state"])
        optimizer.load_state_dict(previous["optimizer_state"])
        history = list(previous["history"])
        snapshots = dict(previous["snapshots"])
        start = int(previous["epoch"])
        _set_rng_state(previous["rng"])
        if "best_model_state" in previous:
            best = (
                float(previous["best_holdout_mse_um2"]),
                int(previous["best_epoch"]),
                previous["best_model_state"],
            )

    in_memory = config.in_memory if config.in_memory is not None else _fits_in_memory(data)
    if in_memory:
        train_ds: Any = _to_device(data.train.materialise(), device)
        test_ds: Any = _to_device(data.test.materialise(), device)
        hold_ds: Any = _to_device(data.holdout.materialise(), device)
    else:
        train_ds, test_ds, hold_ds = data.train, data.test, data.holdout
    n_classes = data.grid.n_classes
    test_true = torch.as_tensor(data.test.true_um)
    prior_mse = holdout_prior_mse_um2(data)
    test_pid = torch.as_tensor(data.test.pos_id)

    ckpt: dict[str, Any] = previous or {}
    for epoch in range(start, config.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum, seen = 0.0, 0
        bar = tqdm(
            _epoch_batches(train_ds, config, epoch, device), total=_n_batches(train_ds, config.batch_size),
            desc=f"{config.arch} epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False,
        )  # fmt: skip
        for x, c, _um, _pid in bar:
            if x.shape[0] < 2:  # a last batch of one frame: BatchNorm1d has no batch statistics for it
                continue
            x = x.to(device, non_blocking=True)
            c = c.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = localisation_loss(model(x), c, n_classes)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * x.shape[0]
            seen += x.shape[0]
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        train_time = time.perf_counter() - t0
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_time_s": train_time,
            "images_per_s": seen / train_time if train_time > 0 else float("nan"),
        }
        entry["holdout_mse_um2"] = mse_um2(_predict_keeping_rng(model, hold_ds, data.grid, device))
        if best is None or entry["holdout_mse_um2"] < best[0]:
            best = (
                entry["holdout_mse_um2"],
                epoch + 1,
                {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            )
        last = epoch + 1 == config.epochs
        if (epoch + 1) % config.eval_every == 0 or last or (epoch + 1) in config.snapshot_epochs:
            pred = _predict_keeping_rng(model, test_ds, data.grid, device)
            s = summarise(position_stats(pred.pred_um, pred.true_um, pred.pos_id))
            entry.update({"test_loss": pred.loss, **s})
            if (epoch + 1) in config.snapshot_epochs or last:
                snapshots[str(epoch + 1)] = torch.from_numpy(pred.pred_um.astype(np.float32))
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1}: loss {entry['train_loss']:.3f}  σ = ({s['sigma_um'][0]:.2f}, "
                    f"{s['sigma_um'][1]:.2f}) µm  |B| = ({s['bias_um'][0]:.2f}, {s['bias_um'][1]:.2f}) µm"
                )
        history.append(entry)
        assert best is not None  # set by this epoch's held-out evaluation
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": config.to_dict(),
            "grid": data.grid.to_dict(),
            "data_meta": dict(data.meta),
            "n_parameters": count_parameters(model),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer_state": _to_cpu(optimizer.state_dict()),
            "epoch": epoch + 1,
            "best_model_state": best[2],
            "best_epoch": best[1],
            "best_holdout_mse_um2": best[0],
            "holdout_prior_mse_um2": prior_mse,
            "rng": _rng_state(),
            "history": history,
            "snapshots": snapshots,
            "test_true_um": test_true,
            "test_pos_id": test_pid,
            "positions_um": torch.as_tensor(data.positions_um),
            "device": str(device),
        }
        if ckpt_path is not None:
            _atomic_save(ckpt, ckpt_path)
    if not ckpt:
        raise ValueError(f"nothing to train: checkpoint already at epoch {start} >= epochs {config.epochs}")
    if not learnt(ckpt):
        log.warning(
            "%s did not learn: its best held-out error %.3g um^2 (epoch %d) is that of the prior, %.3g um^2 "
            "(a constant guess); train again with another --seed, or on more S frames",
            config.arch, ckpt["best_holdout_mse_um2"], ckpt["best_epoch"], prior_mse,
        )  # fmt: skip
    return ckpt


NOT_LEARNT_FRACTION = 0.95


def holdout_prior_mse_um2(data: BsbdData) -> float:
    """Mean squared error (x + y, um^2) of the best constant guess on the held-out S frames.

    The yardstick of :func:`learnt`: a network whose output does not depend on the frame scores this
    at best (the spread of the uniform shifts, 181 um^2 on the seed's optics).
    """
    true = np.asarray(data.holdout.true_um, dtype=float)
    if true.size == 0:
        return float("nan")
    return float(((true - true.mean(axis=0)) ** 2).sum(axis=1).mean())


def learnt(ckpt: Mapping[str, Any]) -> bool:
    """False when the best held-out error is within 5 % of the constant guess's: a collapsed training.

    A collapsed network (constant output, as CoordConv gave at b = 5 before its head had BatchNorm)
    still yields finite, even small, D-frame σ and a lattice "correction"; this check is what tells
    the user that there is no estimator to compare with the CRB.
    """
    prior = float(ckpt.get("holdout_prior_mse_um2", float("nan")))
    return not (prior > 0 and float(ckpt["best_holdout_mse_um2"]) >= NOT_LEARNT_FRACTION * prior)


def _predict_keeping_rng(model: Localiser, ds: Any, grid: ClassGrid, device: torch.device) -> Predictions:
    """:func:`predict` during training: the evaluation must not perturb the training RNG stream."""
    rng_before = _rng_state()
    try:
        return predict(model, ds, grid, device=device)
    finally:
        _set_rng_state(rng_before)


def mse_um2(pred: Predictions) -> float:
    """Mean squared error (µm², x + y) of predictions against their true positions."""
    return float(((pred.pred_um - pred.true_um) ** 2).sum(axis=1).mean())


def _to_device(ds: TensorDataset, device: torch.device) -> TensorDataset:
    return TensorDataset(*(t.to(device) for t in ds.tensors))


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _resumed_config(saved: Mapping[str, Any], requested: TrainConfig) -> TrainConfig:
    """The config a ``--resume`` continues with: the checkpoint's, but ``requested``'s epoch total,
    DataLoader workers and, when given, device (where it runs, not what it learns)."""
    config = TrainConfig.from_dict(saved)
    config.epochs = requested.epochs
    config.num_workers = requested.num_workers
    if requested.device is not None:
        config.device = requested.device
    return config


def train_run(
    run_path: str | Path,
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the datasets of ``run_path`` and :func:`fit`; the checkpoint is written to ``out``."""
    if resume and Path(out).exists():
        config = _resumed_config(load_checkpoint(out)["config"], config)
    resolve_device(config.device)  # a bad --device fails now, not after the (slow) data build
    data, source = build_run_data(run_path, config)
    try:
        return fit(data, config, out, resume=resume, progress=progress)
    finally:
        source.close()


def train_repeats(
    run_path: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    n_repeats: int = 25,
    *,
    resume: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Train ``n_repeats`` models with initialisation seeds ``config.seed + i`` on the same data split.

    This is the paper's 25 random initialisations (Fig. 4b); evaluate them together with
    ``specklab evaluate OUT_DIR RUN.h5``.
    """
    out_dir = Path(out_dir)
    first = out_dir / f"{config.arch}_seed{config.seed:03d}.pt"
    if resume and first.exists():  # as train_run: the series goes on with the settings it was trained with
        config = _resumed_config(load_checkpoint(first)["config"], config)
    resolve_device(config.device)  # a bad --device fails now, not after the (slow) data build
    data, source = build_run_data(run_path, config)
    paths = []
    try:
        for i in range(n_repeats):
            cfg = TrainConfig.from_dict(config.to_dict())
            cfg.seed = config.seed + i
            path = out_dir / f"{cfg.arch}_seed{cfg.seed:03d}.pt"
            fit(data, cfg, path, resume=resume, progress=progress)
            paths.append(path)
    finally:
        source.close()
    return paths


def holdout_score(model_ckpt: Mapping[str, Any], data: BsbdData, device: torch.device) -> dict[str, Any]:
    """Mean squared error (µm², x + y) on the held-out S split: the grid-search criterion."""
    model = evaluation_model(model_ckpt, device)
    hold = predict(model, data.holdout, data.grid, device=device)
    err = hold.pred_um - hold.true_um
    return {"score": mse_um2(hold), "holdout_rmse_um": np.sqrt((err**2).mean(0)).tolist()}


def grid_search_run(
    run_path: str | Path,
    base: TrainConfig,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    max_parameters: int | None = None,
    progress: bool = False,
) -> list[GridResult]:
    """Grid search for ``base.arch`` on a run: train each point for ``base.epochs``, score on held-out MSE."""
    device = resolve_device(base.device)  # a bad --device fails now, not after the (slow) data build
    data, source = build_run_data(run_path, base)
    try:

        def objective(point: dict[str, Any]) -> dict[str, Any]:
            cfg = TrainConfig.from_dict(base.to_dict())
            for k, v in point.items():
                if k in TRAINING_KEYS:
                    setattr(cfg, k, v)
                else:
                    cfg.model_kwargs[k] = v
            ckpt = fit(data, cfg, None, progress=progress)
            out = holdout_score(ckpt, data, device)
            out["test_sigma_um"] = ckpt["history"][-1].get("sigma_um")
            return out

        return grid_search(
            base.arch,
            objective,
            HYPERPARAMETER_GRIDS[base.arch] if grid is None else grid,
            n_classes=data.grid.n_classes,
            max_parameters=max_parameters,
        )
    finally:
        source.close()


def evaluate_fitted(
    ckpt: Mapping[str, Any],
    data: BsbdData,
    crb: Sequence[float] | None = None,
    *,
    lattice_side: int = LATTICE_SIDE,
    lattice_frames: int | None = LATTICE_MAX_FRAMES,
) -> dict[str, Any]:
    """Evaluate an in-memory checkpoint on ``data``, bias-corrected with the calibration lattice.

    The lattice (:func:`models.data.build_calibration_lattice`) shifts the held-out S frames to a
    regular lattice around the D positions; see :func:`models.evaluate.evaluate_predictions`.
    """
    device = resolve_device(ckpt["config"].get("device"))
    model = evaluation_model(ckpt, device)
    return evaluate_model(
        model, data, device=device, crb=crb, lattice_side=lattice_side, lattice_frames=lattice_frames
    )
