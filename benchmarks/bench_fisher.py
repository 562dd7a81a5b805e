"""Timing of the model-free Fisher estimator at the paper's size (125,000 frames of 32x32 = 1024 pixels).

    python benchmarks/bench_fisher.py                      # paper size, pca + ica + gaussianize, CPU (+GPU)
    python benchmarks/bench_fisher.py --frames 20000 --methods pca

Synthetic speckle-like data: a spatially correlated Gaussian field (3-pixel smoothing on the 32x32 grid),
exponentiated (log-normal, heavy tailed, non-Gaussian) plus a θ-dependent target pattern; 25 parameter
values (centre and ±k·δ, k = 1..12) with frames / 25 frames each, like 25 positions x 5,000 frames.
Prints, per decorrelation method, the fit, transform and histogram times on the CPU and, when CUDA is
present, on the GPU and the CPU/GPU ratio. Set the CPU thread count with --threads (default: torch's).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from analysis.fisher import fisher_information


def make_data(frames: int, side: int, n_values: int, seed: int = 0) -> dict[float, np.ndarray]:
    """θ -> (frames/n_values, side²) float32 speckle-like samples."""
    rng = np.random.default_rng(seed)
    per = frames // n_values
    k = np.fft.fftfreq(side)
    filt = np.exp(-0.5 * (k[:, None] ** 2 + k[None, :] ** 2) * (2 * np.pi * 1.5) ** 2)
    yy, xx = np.mgrid[:side, :side]
    half = (n_values - 1) // 2
    delta = 0.05
    out = {}
    for i in range(-half, half + 1):
        theta = i * delta
        target = np.exp(-((xx - side / 2 - theta) ** 2 + (yy - side / 2) ** 2) / 8.0)
        z = rng.standard_normal((per, side, side)).astype(np.float32)
        field = np.fft.ifft2(np.fft.fft2(z) * filt).real
        field /= field.std()
        x = np.exp(0.5 * field) + 0.5 * target[None]
        out[round(theta, 10)] = x.reshape(per, -1).astype(np.float32)
    return out


def run(samples: dict[float, np.ndarray], method: str, device: str) -> dict[str, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fisher_information(samples, decorrelation=method, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    info = r.decorrelation.info
    return {
        "total_s": round(total, 2),
        "fit_s": round(r.timings["fit_s"], 2),
        "transform_s": round(r.timings["transform_s"], 2),
        "histogram_s": round(r.timings["histogram_s"], 2),
        "J": round(r.value, 4),
        "stderr": round(r.stderr, 4),
        "step": r.step,
        "ica_n_iter": info.get("ica_n_iter"),
        "ica_converged": info.get("ica_converged"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=125_000)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--values", type=int, default=25)
    p.add_argument("--methods", default="pca,ica,gaussianize")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    samples = make_data(args.frames, args.side, args.values)
    print(
        f"data: {args.frames} frames x {args.side**2} px, {len(samples)} values, "
        f"generated in {time.perf_counter() - t:.1f} s; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    for method in args.methods.split(","):
        cpu = run(samples, method, "cpu")
        line = {"method": method, "cpu": cpu}
        if torch.cuda.is_available():
            run(samples, method, "cuda")  # warm-up (kernels, allocator)
            gpu = run(samples, method, "cuda")
            line["gpu"] = gpu
            line["gpu_name"] = torch.cuda.get_device_name()
            line["cpu_over_gpu_total"] = round(cpu["total_s"] / max(gpu["total_s"], 1e-9), 2)
            line["cpu_over_gpu_histogram"] = round(cpu["histogram_s"] / max(gpu["histogram_s"], 1e-9), 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
