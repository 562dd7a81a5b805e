"""Training: learning a tiny synthetic localisation task, checkpoints and exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import DataConfig, build_datasets
from models.synthetic import blob_run
from models.train import (
    TrainConfig,
    evaluate_fitted,
    fit,
    holdout_prior_mse_um2,
    learnt,
    load_checkpoint,
    load_model,
)

# tiny models run slower with several threads on a shared 2-core CI box
pytestmark = pytest.mark.usefixtures("one_torch_thread")


DATA = DataConfig(n_classes=33, shift_max_px=16, bin_factor=2, holdout_fraction=0.2)


@pytest.fixture(scope="module")
def blob_data():
    src = blob_run(1000, size=64, sigma_px=3.0, step_px=4, camera_um_per_px=0.5, noise=30.0)
    return build_datasets(src, DATA)


def test_training_reduces_error_and_tracks_positions(blob_data, tmp_path: Path) -> None:
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [64]}, lr=2e-3, epochs=10, batch_size=64,
                      data=DATA, snapshot_epochs=(1,))  # fmt: skip
    ckpt = fit(blob_data, cfg, tmp_path / "m.pt", progress=False)
    hist = ckpt["history"]
    assert len(hist) == 10 and (tmp_path / "m.pt").exists()
    rms = [np.hypot(*h["rms_error_um"]) for h in hist]
    assert rms[-1] < 0.4 * rms[0], rms
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 1.0
    # per-position mean predictions follow the 25 true positions (span ±4 µm)
    result = evaluate_fitted(ckpt, blob_data, lattice_frames=50)
    assert result["bias_corrected"] and result["lattice"]["frames_per_point"] == 50
    pp = result["uncorrected"]["per_position"]
    assert len(pp) == 25
    true = np.array([p["true_um"] for p in pp])
    mean = np.array([p["mean_um"] for p in pp])
    for a in range(2):
        slope, _ = np.polyfit(true[:, a], mean[:, a], 1)
        assert 0.7 < slope < 1.3
        assert np.corrcoef(true[:, a], mean[:, a])[0, 1] > 0.98
    assert max(result["uncorrected"]["bias_um"]) < 0.6
    assert set(ckpt["snapshots"]) == {"1", "10"}


def test_resume_continues_from_the_saved_epoch_with_identical_state(blob_data, tmp_path: Path) -> None:
    kw = {"channels": [4, 8], "hidden": 16}
    base = TrainConfig(
        arch="coordconv",
        model_kwargs=kw,
        lr=1e-3,
        epochs=2,
        batch_size=128,
        seed=5,
        data=DATA,
        in_memory=True,
    )
    straight = fit(blob_data, base, tmp_path / "a.pt", progress=False)

    first = TrainConfig.from_dict(base.to_dict())
    first.epochs = 1
    fit(blob_data, first, tmp_path / "b.pt", progress=False)
    saved = load_checkpoint(tmp_path / "b.pt")
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    assert saved["config"]["seed"] == 5 and "torch" in saved["rng"] and saved["optimizer_state"]["state"]
    resumed = fit(blob_data, base, tmp_path / "b.pt", resume=True, progress=False)
    assert resumed["epoch"] == 2 and [h["epoch"] for h in resumed["history"]] == [1, 2]
    for k, v in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][k], v, rtol=0, atol=0, msg=k)
    assert resumed["history"][1]["train_loss"] == straight["history"][1]["train_loss"]
    torch.testing.assert_close(resumed["rng"]["torch"], straight["rng"]["torch"])

    model, ck = load_model(tmp_path / "b.pt")
    assert not model.training and ck["grid"]["n_classes"] == 33
    again = fit(blob_data, first, tmp_path / "b.pt", resume=True, progress=False)  # already past epoch 1
    assert again["epoch"] == 2


def test_resume_refuses_a_different_data_split(blob_data, tmp_path: Path) -> None:
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, epochs=1, batch_size=256, data=DATA)
    fit(blob_data, cfg, tmp_path / "m.pt", progress=False)
    src = blob_run(30, size=64)
    other = build_datasets(src, DataConfig(**{**DATA.to_dict(), "seed": 9, "axis_signs": (1, 1)}))
    cfg.epochs = 2
    with pytest.raises(ValueError, match="different data"):
        fit(other, cfg, tmp_path / "m.pt", resume=True, progress=False)


def test_a_checkpoint_of_another_version_is_refused_with_a_clear_error(blob_data, tmp_path: Path) -> None:
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, epochs=1, batch_size=256, data=DATA)
    ckpt = fit(blob_data, cfg, tmp_path / "m.pt", progress=False)
    torch.save({**ckpt, "version": 1}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="version 1 .*train it again"):
        load_model(tmp_path / "old.pt")


def test_the_epoch_with_the_lowest_held_out_error_is_the_one_evaluated(blob_data, tmp_path: Path) -> None:
    from models.train import evaluation_state

    cfg = TrainConfig(
        arch="dense", model_kwargs={"hidden": [32]}, lr=5e-3, epochs=4, batch_size=64, data=DATA
    )
    fit(blob_data, cfg, tmp_path / "m.pt", progress=False)
    cfg.epochs = 6
    ckpt = fit(blob_data, cfg, tmp_path / "m.pt", resume=True, progress=False)
    mse = [h["holdout_mse_um2"] for h in ckpt["history"]]
    assert len(mse) == 6 and all(np.isfinite(mse))
    assert ckpt["best_epoch"] == 1 + int(np.argmin(mse))  # tracked across the resume
    assert ckpt["best_holdout_mse_um2"] == pytest.approx(min(mse))
    state, epoch = evaluation_state(ckpt)
    assert epoch == ckpt["best_epoch"]
    model, _ = load_model(tmp_path / "m.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    last = {**ckpt, "config": {**ckpt["config"], "select_best": False}}
    assert evaluation_state(last)[1] == 6


def test_a_last_batch_of_one_frame_is_skipped_not_fatal(blob_data) -> None:
    """The hidden layers' BatchNorm1d cannot normalise a single frame; such a last batch is skipped."""
    n = len(blob_data.train)
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, epochs=1, batch_size=n - 1, data=DATA)
    ckpt = fit(blob_data, cfg, None, progress=False)
    assert ckpt["epoch"] == 1 and np.isfinite(ckpt["history"][0]["train_loss"])


def test_a_training_that_did_not_learn_is_flagged(blob_data, caplog) -> None:
    """lr 0 keeps the initial near-uniform output: held-out error at the prior's, a warning, learnt False."""
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, lr=0.0, epochs=1, batch_size=256, data=DATA)
    with caplog.at_level("WARNING", logger="models.train"):
        ckpt = fit(blob_data, cfg, None, progress=False)
    prior = holdout_prior_mse_um2(blob_data)
    true = blob_data.holdout.true_um
    assert prior == pytest.approx(float(true.var(axis=0).sum()), rel=1e-6)
    assert ckpt["holdout_prior_mse_um2"] == prior
    assert not learnt(ckpt) and "did not learn" in caplog.text


def test_a_training_that_learnt_is_not_flagged(blob_data, caplog) -> None:
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [64]}, lr=5e-3, epochs=3, batch_size=64,
                      data=DATA)  # fmt: skip
    with caplog.at_level("WARNING", logger="models.train"):
        ckpt = fit(blob_data, cfg, None, progress=False)
    assert learnt(ckpt) and "did not learn" not in caplog.text
    assert ckpt["best_holdout_mse_um2"] < 0.5 * ckpt["holdout_prior_mse_um2"]


def test_resume_may_continue_on_another_device(blob_data, tmp_path: Path) -> None:
    """A checkpoint trained with ``--device cuda`` resumes where CUDA is missing with ``--device cpu``.

    The device is where the training runs, not what it learns: ``--resume --device`` overrides the saved
    one (and the checkpoint records the device used); without the option the saved device is kept and an
    unusable one is a clear ValueError, not a torch assertion.
    """
    from models.train import train_run

    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, epochs=1, batch_size=256, data=DATA)
    ckpt = fit(blob_data, cfg, tmp_path / "m.pt", progress=False)
    torch.save({**ckpt, "config": {**ckpt["config"], "device": "cuda:7"}}, tmp_path / "m.pt")
    src = blob_run(1000, size=64, sigma_px=3.0, step_px=4, camera_um_per_px=0.5, noise=30.0)
    if not torch.cuda.is_available():
        again = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 2})
        with pytest.raises(ValueError, match="cuda:7"):
            train_run(src, again, tmp_path / "m.pt", resume=True, progress=False)
    on_cpu = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 2, "device": "cpu"})
    resumed = train_run(src, on_cpu, tmp_path / "m.pt", resume=True, progress=False)
    assert resumed["epoch"] == 2 and resumed["device"] == "cpu" and resumed["config"]["device"] == "cpu"


def test_an_unreadable_checkpoint_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("garbage.pt", "empty.pt"):
        with pytest.raises(ValueError, match="not a readable specklab localiser checkpoint"):
            load_checkpoint(tmp_path / name)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a specklab localiser checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_an_unusable_device_or_batch_size_is_a_value_error() -> None:
    from analysis.decorrelation import resolve_device

    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(batch_size=1)  # every batch of one frame is skipped: nothing would be trained


def test_cuda_rng_states_of_a_machine_with_more_gpus_restore_those_present(monkeypatch) -> None:
    """A checkpoint from a 2-GPU machine resumes on a 1-GPU one (only existing devices are set)."""
    from models import train

    restored: list[int] = []

    def set_rng_state(state: torch.Tensor, device: int = 0) -> None:
        if device >= 1:
            raise RuntimeError(f"invalid device {device}")
        restored.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(8, dtype=torch.uint8)] * 2)
    state = train._rng_state()
    assert len(state["cuda"]) == 2
    train._set_rng_state(state)
    assert restored == [0]


def test_streaming_training_resumes_exactly_and_workers_do_not_change_it(tmp_path: Path) -> None:
    """``--streaming`` (DataLoader + BlockShuffleSampler): resume is exact, and DataLoader workers (which
    inherit an in-memory source, there being no run path to reopen) give the same weights."""
    data = build_datasets(blob_run(200, size=64), DATA)
    base = TrainConfig(arch="dense", model_kwargs={"hidden": [16], "dropout": 0.3}, epochs=2, batch_size=64,
                       data=DATA, in_memory=False, seed=3)  # fmt: skip
    straight = fit(data, base, None, progress=False)
    fit(data, TrainConfig.from_dict({**base.to_dict(), "epochs": 1}), tmp_path / "s.pt", progress=False)
    resumed = fit(data, base, tmp_path / "s.pt", resume=True, progress=False)
    workers = fit(data, TrainConfig.from_dict({**base.to_dict(), "num_workers": 2}), None, progress=False)
    for k, v in straight["model_state"].items():
        assert torch.equal(resumed["model_state"][k], v), k
        assert torch.equal(workers["model_state"][k], v), k


def test_resume_refuses_data_built_with_other_settings(tmp_path: Path) -> None:
    """``fit`` refuses to resume on data built with other settings than its checkpoint's (the CLI resumes
    with the checkpoint's own settings, see the next test).

    Same shifts (same seed and range) but 17 classes: before, the 33-class weights failed to load with
    a size-mismatch traceback; ``--no-background`` silently resumed on differently preprocessed frames.
    """
    src = blob_run(200, size=64)
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, epochs=1, batch_size=64, data=DATA)
    fit(build_datasets(src, DATA), cfg, tmp_path / "m.pt", progress=False)
    for change in ({"n_classes": 17}, {"background": False}):
        other = DataConfig.from_dict({**DATA.to_dict(), **change})
        again = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 2, "data": other})
        with pytest.raises(ValueError, match=f"other data settings \\({next(iter(change))}\\)"):
            fit(build_datasets(src, other), again, tmp_path / "m.pt", resume=True, progress=False)


def test_resumed_repeats_go_on_with_their_own_settings(tmp_path: Path) -> None:
    """``train --repeats N --resume`` takes the series' settings from its first checkpoint, as a single
    ``--resume`` does, instead of refusing the command line's defaults."""
    from models.synthetic import write_run
    from models.train import train_repeats

    run = write_run(blob_run(200, size=64), tmp_path / "run.h5")
    cfg = TrainConfig(arch="dense", model_kwargs={"hidden": [8]}, epochs=1, batch_size=64, data=DATA)
    first = train_repeats(run, cfg, tmp_path / "series", 2, progress=False)
    defaults = TrainConfig(arch="dense", epochs=2)  # what a command line without the data options gives
    again = train_repeats(run, defaults, tmp_path / "series", 2, resume=True, progress=False)
    assert again == first
    for path in again:
        ckpt = load_checkpoint(path)
        assert ckpt["epoch"] == 2 and ckpt["config"]["data"] == DATA.to_dict()
        assert ckpt["config"]["model_kwargs"] == {"hidden": [8]}
