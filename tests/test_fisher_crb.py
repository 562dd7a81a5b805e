"""CRB of the target position: the array core (known answer) and the ``specklab crb`` wiring end to end."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from analysis.crb import crb_from_samples, split_axes


def test_crb_core_on_arrays_known_answer():
    """Gaussian 'frames' whose mean moves linearly with (x, y) in µm: CRB = sqrt(diag(J⁻¹)) exactly."""
    rng = np.random.default_rng(0)
    d, n = 8, 20_000
    ax = rng.standard_normal(d) * 0.15
    ay = rng.standard_normal(d) * 0.15
    cov = np.eye(d) * 0.5 + 0.2
    chol = np.linalg.cholesky(cov)
    ci = np.linalg.inv(cov)
    j_true = np.array([[ax @ ci @ ax, ax @ ci @ ay], [ay @ ci @ ax, ay @ ci @ ay]])
    crb_true = np.sqrt(np.diag(np.linalg.inv(j_true)))
    offsets = [-2.0, -1.0, 1.0, 2.0]  # µm, both axes, like a fisher-scan with k = 1, 2 (x 0.5 ... not in px)
    pos = [(0.0, 0.0)] + [(o, 0.0) for o in offsets] + [(0.0, o) for o in offsets] + [(1.0, 1.0)]
    frames, where = [], []
    for x, y in pos:
        frames.append(rng.standard_normal((n, d)) @ chol.T + x * ax + y * ay)
        where.append(np.tile([x, y], (n, 1)))
    s = split_axes(np.concatenate(where), np.concatenate(frames).reshape(-1, 2, 4))
    assert s.center_um == (0.0, 0.0)
    assert sorted(s.x_axis) == [-2.0, -1.0, 0.0, 1.0, 2.0] and sorted(s.y_axis) == sorted(s.x_axis)
    assert s.frames_used == 9 * n  # the off-axis position is ignored
    r = crb_from_samples(s, device="cpu")
    assert np.all(np.abs(r.crb - crb_true) < 4 * r.crb_stderr + 0.03 * crb_true), (r.crb, crb_true)
    assert np.all(r.steps > 0)


@pytest.mark.slow
def test_specklab_crb_cli_on_simulated_fisher_scan(tmp_path, capsys):
    """Acquire a tiny fisher-scan on the simulated bench and run ``specklab crb --json`` on it."""
    from acquisition import cli

    out = tmp_path / "fs.h5"
    code = cli.main(
        [
            "acquire",
            "--config",
            "configs/sim-bench.toml",
            "--protocol",
            "fisher-scan",
            "--set",
            "frames=1040",
            "--set",
            "bench.medium.optical_thickness=4.2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert cli.main(["crb", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("crb_um", "fisher", "step_um", "frames_used", "crb_stderr_um", "method"):
        assert key in res
    assert len(res["crb_um"]) == 2 and np.array(res["fisher"]).shape == (2, 2)
    assert res["frames_used"] == 520 and res["role"] == "F"
    assert res["fisher"][0][1] == res["fisher"][1][0]
    assert cli.main(["crb", str(tmp_path / "missing.h5")]) == 2
    with h5py.File(tmp_path / "other.h5", "w") as f:  # another program's HDF5 file: bad input, as for info
        f["x"] = 1
    assert cli.main(["crb", str(tmp_path / "other.h5")]) == 2


@pytest.mark.parametrize(
    "bad",
    [
        ["--rel-tol", "-1"],  # was accepted: "never precise", the largest plateau step
        ["--rel-tol", "0"],
        ["--rel-tol", "nan"],
        ["--rel-tol", "inf"],
        ["--polyorder", "-1"],  # was numpy's "expected deg >= 0", exit 1, after loading the run
        ["--window", "0"],
        ["--window", "-5"],  # was a silent constant-mean background
        ["--bins", "1"],
        ["--bin-factor", "0"],
        ["--bin-factor", "x"],
    ],
)
def test_specklab_crb_refuses_bad_numeric_options_as_usage_errors(tmp_path, capsys, bad):
    """A bad numeric option is an argparse usage error (exit 2) naming the option, before the run is read."""
    from acquisition import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["crb", str(tmp_path / "never-read.h5"), *bad])
    assert exc.value.code == 2
    assert f"argument {bad[0]}:" in capsys.readouterr().err


def test_specklab_crb_reports_a_bad_device_before_reading_the_run(tmp_path, capsys, monkeypatch):
    """``--device gpu`` (or cuda without CUDA) fails with exit 2 before the run is loaded and fitted."""
    import torch

    import analysis.crb
    from acquisition import cli

    def no_run(*args, **kwargs):
        raise AssertionError("the run was loaded before the device was checked")

    monkeypatch.setattr(analysis.crb, "crb_from_run", no_run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("gpu", "cuda"):
        assert cli.main(["crb", str(tmp_path / "never-read.h5"), "--device", device]) == 2
        assert capsys.readouterr().err.startswith(f"specklab crb: device {device!r}")
    # the defaults still parse (and mean what they did)
    args = cli.build_parser().parse_args(["crb", "r.h5"])
    assert (args.rel_tol, args.bins, args.bin_factor, args.window, args.polyorder) == (
        0.02,
        None,
        4,
        None,
        None,
    )


def test_split_axes_names_frames_that_are_not_a_scan():
    """Frames at one position (e.g. the S role of a bsbd run) or along one axis only: a clear error."""
    frames = np.zeros((6, 4))
    with pytest.raises(ValueError, match="along x"):
        split_axes(np.zeros((6, 2)), frames)
    with pytest.raises(ValueError, match="along y"):
        split_axes(np.array([[0.0, 0], [0, 0], [-1, 0], [-1, 0], [1, 0], [1, 0]]), frames)


def test_crb_json_without_analytic_reference_has_nulls():
    """A real run has no bench to compare with: the analytic keys are there and null (docs/fisher.md)."""
    from analysis.crb import CrbResult

    rng = np.random.default_rng(1)
    mu = np.array([1.0, 0.5, -0.5, 0.2])
    pos = [(0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0)]
    frames = np.concatenate([rng.standard_normal((500, 4)) + x * mu + y * mu[::-1] for x, y in pos])
    where = np.repeat(np.array(pos), 500, axis=0)
    s = split_axes(where, frames)
    out = CrbResult(crb_from_samples(s, device="cpu"), {}, s.frames_used).as_dict()
    for key in ("analytic_crb_um", "crb_ratio", "analytic_fisher", "analytic"):
        assert key in out and out[key] is None, key
    assert out["step_rule"] == out["method"] == "robust" and all(out["step_notes"])
    assert out["step_rules"] == ["robust", "robust"]
    json.dumps(out, allow_nan=False)
