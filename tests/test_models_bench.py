"""End to end on the simulated bench: ``specklab acquire`` → ``train`` → ``evaluate`` through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from acquisition import cli

ROOT = Path(__file__).resolve().parents[1]
SIM_BENCH = ROOT / "configs" / "sim-bench.toml"


# tiny models run slower with several threads on a shared 2-core CI box
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_acquire_train_evaluate_on_the_simulated_bench(tmp_path: Path, capsys) -> None:
    run, model = tmp_path / "b0.h5", tmp_path / "m.pt"
    argv = ["acquire", "--config", str(SIM_BENCH), "--protocol", "bsbd", "--set", "frames=800"]
    argv += ["--set", "bench.medium.optical_thickness=0", "--out", str(run), "--no-progress"]
    assert cli.main(argv) == 0
    capsys.readouterr()

    # a small CoordConv so that 180 training frames and 8 epochs learn the geometry in a few seconds
    argv = ["train", str(run), "--arch", "coordconv", "--epochs", "8", "--batch-size", "16", "--lr", "2e-3"]
    argv += ["--model-arg", "channels=[8,16,32]", "--model-arg", "hidden=64", "--out", str(model)]
    assert cli.main([*argv, "--no-progress"]) == 0
    trained = _json_out(capsys)
    assert trained["epoch"] == 8 and model.exists()
    ckpt = torch.load(model, weights_only=True)
    # calibration read from the run's bench ground truth: 6.5 µm x 0.18 / 2.9 per camera pixel
    assert ckpt["grid"]["camera_um_per_px"] == pytest.approx(6.5 * 0.18 / 2.9)

    assert cli.main(["evaluate", str(model), str(run), "--json"]) == 0
    res = _json_out(capsys)
    assert res["b"] == 0.0 and res["bias_corrected"] and res["n_test"] == 200
    for key in ("sigma_um", "bias_um", "bias_signed_um", "rms_error_um"):
        assert len(res[key]) == 2 and all(math.isfinite(v) for v in res[key]), key
    assert all(v > 0 for v in res["sigma_um"])
    pp = res["uncorrected"]["per_position"]
    assert len(pp) == 25 and {p["n"] for p in pp} == {8}
    true = np.array([p["true_um"] for p in pp])
    mean = np.array([p["mean_um"] for p in pp])
    assert np.ptp(true, axis=0) == pytest.approx([2 * 9.864, 2 * 9.864])  # the 5x5 grid, 4.93 µm steps
    for a in range(2):  # the network's mean prediction follows the physically moved target
        assert np.corrcoef(true[:, a], mean[:, a])[0, 1] > 0.9
        assert np.polyfit(true[:, a], mean[:, a], 1)[0] > 0.3


def test_train_without_a_recorded_calibration_asks_for_the_option(tmp_path: Path, capsys) -> None:
    from models.synthetic import blob_run, write_run

    src = blob_run(40, size=128)
    src.ground_truth = {}  # what a real bench records: no bench ground truth
    run = write_run(src, tmp_path / "real.h5")
    argv = ["train", str(run), "--epochs", "1", "--out", str(tmp_path / "m.pt"), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "um_per_camera_px" in err and "--camera-um-per-px" in err
    assert cli.main([*argv[:-1], "--camera-um-per-px", "0.4", "--no-progress"]) == 0
