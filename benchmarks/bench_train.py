"""Training throughput of the localisers: images/s per architecture and the epoch time for 1.25x10^5 images.

Usage::

    python benchmarks/bench_train.py [--batch-size 256] [--steps 30] [--device cuda] [--baseline-steps 5]

For each architecture (default sizes, N_h = 81) it times full training steps (forward, cross-entropy,
backward, Adam) on random 32x32 batches already on the device, after warm-up, and reports:

* images/s on the current device (CUDA when available, else CPU with all threads);
* the extrapolated epoch time for the paper's 1.25x10^5 training images;
* the ratio against a baseline measured in the same run: the same model on CPU with one thread.

It also times the numpy preprocessing path (shift + 4x4 binning + max normalisation of 128x128 frames)
so the data pipeline can be compared with the model throughput.  Prints one table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from analysis.decorrelation import resolve_device
from models.architectures import ARCHITECTURES, build_model, count_parameters, localisation_loss
from models.data import FramePipeline

EPOCH_IMAGES = 125_000
N_CLASSES = 81


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_throughput(arch: str, device: torch.device, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Images per second of training steps for ``arch`` on ``device``."""
    torch.manual_seed(0)
    model = build_model(arch, N_CLASSES).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, 32, 32, device=device)
    c = torch.randint(0, N_CLASSES, (batch_size, 2), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        localisation_loss(model(x), c, N_CLASSES).backward()
        opt.step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def preprocessing_throughput(n: int = 512) -> float:
    """Images per second of shift + bin + normalise on 128x128 frames (the training pipeline's
    :class:`models.data.FramePipeline` without background subtraction; numpy, one process)."""
    rng = np.random.default_rng(0)
    frames = rng.random((n, 128, 128), dtype=np.float32)
    shifts = rng.integers(-40, 41, size=(n, 2))
    pipeline = FramePipeline(background=None, bin_factor=4)
    t0 = time.perf_counter()
    pipeline(frames, np.arange(n), shifts)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--baseline-steps", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--arch", nargs="*", default=sorted(ARCHITECTURES))
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    rows = []
    threads = torch.get_num_threads()
    for arch in args.arch:
        ips = train_throughput(arch, device, args.batch_size, args.steps)
        torch.set_num_threads(1)
        base = train_throughput(arch, torch.device("cpu"), args.batch_size, args.baseline_steps, warmup=1)
        torch.set_num_threads(threads)
        rows.append(
            {
                "arch": arch,
                "params": count_parameters(build_model(arch, N_CLASSES)),
                "images_per_s": ips,
                "epoch_s_125k": EPOCH_IMAGES / ips,
                "baseline_cpu1_images_per_s": base,
                "speedup_vs_cpu1": ips / base,
            }
        )
    prep = preprocessing_throughput()
    print(f"device: {name}   batch {args.batch_size}   epoch = {EPOCH_IMAGES} images")
    print(
        f"{'arch':10s} {'params':>8s} {'img/s':>10s} {'epoch (s)':>10s} {'cpu1 img/s':>11s} {'speed-up':>9s}"
    )
    for r in rows:
        print(
            f"{r['arch']:10s} {r['params']:8d} {r['images_per_s']:10.0f} {r['epoch_s_125k']:10.1f} "
            f"{r['baseline_cpu1_images_per_s']:11.0f} {r['speedup_vs_cpu1']:9.2f}"
        )
    print(
        f"preprocessing (shift+bin+normalise, numpy): {prep:.0f} img/s -> "
        f"{EPOCH_IMAGES / prep:.1f} s per epoch"
    )
    print(
        json.dumps(
            {"device": name, "batch_size": args.batch_size, "rows": rows, "preprocess_images_per_s": prep}
        )
    )


if __name__ == "__main__":
    main()
