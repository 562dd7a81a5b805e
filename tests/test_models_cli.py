"""``specklab train / evaluate / report``: round trip on a tiny synthetic run file in the RunReader layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cli import register
from models.synthetic import blob_run, write_run

# tiny models run slower with several threads on a shared 2-core CI box
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specklab")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


def test_register_adds_the_subcommands() -> None:
    p = _parser()
    args = p.parse_args(["train", "r.h5", "--arch", "dense", "--out", "m.pt", "--epochs", "3", "--resume"])
    assert (args.arch, args.out, args.epochs, args.resume) == ("dense", "m.pt", 3, True)
    args = p.parse_args(["evaluate", "m.pt", "r.h5", "--json", "--crb", "c.json"])
    assert args.json and args.crb == "c.json"
    with pytest.raises(SystemExit):
        p.parse_args(["train", "r.h5", "--arch", "resnet", "--out", "m.pt"])


def test_train_evaluate_report_round_trip(tmp_path: Path, capsys) -> None:
    run = write_run(blob_run(800, size=64, step_px=4, camera_um_per_px=0.5, noise=30.0), tmp_path / "run.h5")
    model = tmp_path / "m.pt"
    common = ["--arch", "dense", "--model-arg", "hidden=[64]", "--lr", "5e-3", "--batch-size", "64",
              "--shift-max-px", "16", "--n-classes", "33", "--no-progress"]  # fmt: skip
    assert _run(["train", str(run), "--out", str(model), "--epochs", "6", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epoch"] == 6 and model.exists()
    assert out["learnt"] is True and 1 <= out["best_epoch"] <= 6
    assert out["best_holdout_mse_um2"] < out["holdout_prior_mse_um2"]

    # resume to 8 epochs
    assert _run(["train", str(run), "--out", str(model), "--epochs", "8", "--resume", *common]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 8

    crb = tmp_path / "crb.json"
    crb.write_text(json.dumps({"crb_um": [0.05, 0.05]}))
    assert (
        _run(
            ["evaluate", str(model), str(run), "--json", "--crb", str(crb), "--out", str(tmp_path / "e.json")]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert len(res["sigma_um"]) == 2 and len(res["bias_um"]) == 2
    assert len(res["per_position"]) == 25 and res["bias_corrected"] and res["last_epoch"] == 8
    # the evaluated weights are those of the epoch with the lowest held-out error (early stopping)
    hist = torch.load(model, weights_only=True)["history"]
    assert res["epoch"] == 1 + int(np.argmin([h["holdout_mse_um2"] for h in hist]))
    assert res["sigma_over_crb"] == pytest.approx([s / 0.05 for s in res["sigma_um"]])
    assert max(res["uncorrected"]["bias_um"]) < 1.2  # the D grid spans ±4 µm: predictions track it
    # bias correction from the calibration lattice: 80 held-out frames at each of 9 x 9 shifts (±12 px)
    lat = res["lattice"]
    assert lat["shape"] == [9, 9] and lat["n_points"] == 81 and lat["frames_per_point"] == 80
    assert lat["shifts_x_px"] == list(range(-12, 13, 3)) and lat["n_holdout"] == 80
    assert lat["range_um"] == [[-6.0, 6.0], [-6.0, 6.0]]  # covers the D grid's ±4 µm plus a step
    assert len(lat["bias_rms_um"]) == 2 and all(v >= 0 for v in lat["bias_rms_um"])
    assert lat["inversion"]["n_unsolved"] == 0
    assert res["clipped_fraction"] == 0 and "warnings" not in res
    assert all(0.5 < m < 1.5 for m in res["uncorrected"]["response_slope"])  # tracks the D grid
    assert lat["residual_rms_um"] == pytest.approx(lat["se_rms_um"], rel=0.2)  # s = Σ SE² is met
    # sanity only (the known-answer test is in test_models_evaluate): this tiny model's σ (~0.07 µm) is far
    # below the 0.5 µm pixel, its bias has pixel-scale structure that no smooth field resolves
    assert all(c < 1.3 * u for c, u in zip(res["sigma_um"], res["uncorrected"]["sigma_um"], strict=True))
    assert max(res["bias_um"]) < 0.5

    figs = {
        "training": ["training", str(model), "--crb", str(crb)],
        "histograms": ["histograms", str(model)],
        "violins": ["violins", str(tmp_path / "e.json"), str(tmp_path / "e.json"), "--labels", "0,2.5"],
    }
    for name, argv in figs.items():
        png = tmp_path / f"{name}.png"
        assert _run(["report", *argv, "--out", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    capsys.readouterr()

    assert (
        _run(["evaluate", str(model), str(run), "--json", "--lattice-side", "5", "--lattice-frames", "20"])
        == 0
    )
    lat = json.loads(capsys.readouterr().out)["lattice"]
    assert lat["shape"] == [5, 5] and lat["frames_per_point"] == 20 and lat["n_holdout"] == 80
    assert _run(["evaluate", str(model), str(run), "--json", "--no-bias-correction"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert not raw["bias_corrected"] and "lattice" not in raw
    assert raw["sigma_um"] == pytest.approx(res["uncorrected"]["sigma_um"])

    assert _run(["evaluate", str(model), str(run), "--lattice-side", "5", "--lattice-frames", "20"]) == 0
    line = capsys.readouterr().out  # the human-readable summary
    assert line.startswith("σ = (") and "uncorrected σ/m′ = (" in line and "clipped 0.0%" in line

    unwritable = str(tmp_path / "no-such-folder" / "e.json")  # the output refused: 1, as for acquire
    assert _run(["evaluate", str(model), str(run), "--no-bias-correction", "--out", unwritable]) == 1
    assert "cannot write --out" in capsys.readouterr().err

    assert _run(["evaluate", str(tmp_path / "missing.pt"), str(run), "--json"]) == 2


def test_main_specklab_parser_has_the_model_subcommands() -> None:
    from acquisition import cli

    parser = cli.build_parser()
    args = parser.parse_args(["evaluate", "m.pt", "r.h5", "--json"])
    assert args.func.__module__ == "models.cli"


@pytest.mark.parametrize(
    ("option", "value"),
    [("--repeats", "0"), ("--epochs", "0"), ("--lr", "-1"), ("--workers", "-1"), ("--batch-size", "1")],
)
def test_counts_and_rates_out_of_range_are_usage_errors(option: str, value: str, capsys) -> None:
    """``--repeats 0`` used to train one model silently: argparse refuses it, naming the option."""
    from acquisition import cli

    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(["train", "r.h5", "--out", "m.pt", option, value])
    assert stop.value.code == 2 and f"argument {option}: must be" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return write_run(blob_run(40, size=64), tmp_path_factory.mktemp("run") / "run.h5")


def _fails_cleanly(argv: list[str], capsys, message: str) -> None:
    """Exit 2 with one ``specklab CMD: ...`` line naming the problem, no traceback."""
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"specklab {argv[0]}: ") and message in err and "Traceback" not in err, err


def test_bad_inputs_give_a_clear_error_not_a_traceback(tmp_path: Path, small_run: Path, capsys) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"garbage")
    (tmp_path / "corrupt.h5").write_bytes(b"garbage")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "zero.json").write_text('{"crb_um": [0, 0.1]}')
    src = blob_run(40, size=64)
    src.table["role"][src.table["role"] == "D"] = "F"  # e.g. a fisher-scan run: no D frames
    no_d = write_run(src, tmp_path / "no_d.h5")
    train = ["train", "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--no-progress"]
    bad = [
        ([*train, str(no_d)], "a bsbd run is needed"),
        ([*train, str(tmp_path / "corrupt.h5")], "cannot be opened as HDF5"),
        ([*train, str(tmp_path / "missing.h5")], "no run file"),
        ([*train, str(small_run), "--model-arg", "bogus=1"], "bogus"),
        ([*train, str(small_run), "--device", "gpu"], "not a torch device"),
        (["train", str(small_run), "--out", str(tmp_path / "corrupt.pt"), "--resume"], "not a readable"),
        (["evaluate", str(tmp_path / "corrupt.pt"), str(small_run), "--json"], "not a readable"),
        (["evaluate", str(tmp_path / "corrupt.pt"), str(small_run), "--crb", str(tmp_path / "list.json")],
         "crb_um"),
        (["evaluate", str(tmp_path / "corrupt.pt"), str(small_run), "--crb", str(tmp_path / "zero.json")],
         "crb_um"),
        (["report", "training", str(tmp_path / "corrupt.pt"), "--out", str(tmp_path / "f.png")],
         "not a readable"),
        (["report", "violins", str(tmp_path / "list.json"), "--out", str(tmp_path / "f.png")],
         "not an evaluation JSON"),
        (["report", "violins", str(tmp_path / "corrupt.pt"), "--out", str(tmp_path / "f.png")],
         "not an evaluation JSON"),
        (["grid-search", str(tmp_path / "missing.h5"), "--no-progress"], "no run file"),
    ]  # fmt: skip
    for argv, message in bad:
        _fails_cleanly(argv, capsys, message)


def test_bad_device_is_reported_before_any_data_work(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--device gpu`` / ``cuda`` without CUDA: exit 2 naming the device before the (slow) data build."""
    import models.train

    def no_data(*args, **kwargs):
        raise AssertionError("the run data were built before the device was checked")

    monkeypatch.setattr(models.train, "build_run_data", no_data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "m.pt").write_bytes(b"never read")
    run = str(tmp_path / "run.h5")  # never opened either
    train = ["train", run, "--out", str(tmp_path / "out.pt"), "--no-progress"]
    for device, message in (("gpu", "not a torch device"), ("cuda", "CUDA is not available")):
        for argv in (
            [*train, "--device", device],
            [*train, "--device", device, "--repeats", "2"],
            ["grid-search", run, "--no-progress", "--device", device],
            ["evaluate", str(tmp_path / "m.pt"), run, "--device", device],
        ):
            assert _run(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.startswith(f"specklab {argv[0]}: device {device!r}") and message in err, err
