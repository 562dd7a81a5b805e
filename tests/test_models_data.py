"""Data pipeline of the localisers: shift labels, class grid, calibration, streaming datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.preprocessing import BackgroundModel
from models.data import (
    ArraySource,
    BlockShuffleSampler,
    ClassGrid,
    DataConfig,
    FramePipeline,
    build_calibration_lattice,
    build_datasets,
    fit_run_background,
    resolve_camera_um_per_px,
    shift_frames,
)
from models.synthetic import blob_run, write_run


def _centroid(img: np.ndarray) -> tuple[float, float]:
    img = np.clip(img - 0.3 * img.max(), 0, None)  # threshold: the offset would pull towards the centre
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return float((img * xx).sum() / img.sum()), float((img * yy).sum() / img.sum())


def test_shift_moves_content_by_dx_columns_and_dy_rows() -> None:
    f = np.zeros((2, 8, 8), np.float32)
    f[:, 2, 3] = 1.0
    for mode in ("roll", "zero"):
        out = shift_frames(f, np.array([[2, 1], [-3, -2]]), mode)
        assert out[0, 3, 5] == 1 and out[0].sum() == 1
        assert out[1, 0, 0] == 1 and out[1].sum() == 1
    wrapped = shift_frames(f, np.array([[6, 0], [0, 0]]), "roll")
    assert wrapped[0, 2, 1] == 1  # 3 + 6 = 9 -> column 1
    dropped = shift_frames(f, np.array([[6, 0], [0, 0]]), "zero")
    assert dropped[0].sum() == 0
    zero_band = shift_frames(np.ones((1, 4, 4)), np.array([[1, 0]]), "zero")
    assert zero_band[0, :, 0].sum() == 0 and zero_band[0, :, 1:].min() == 1


def test_class_grid_round_trips_and_one_class_per_pixel_by_default() -> None:
    g = ClassGrid(camera_um_per_px=0.4, centre_um=(1.0, -2.0))
    assert g.n_classes == 81 and g.step_px == 1.0
    shifts = np.array([[-40, 40], [0, 0], [7, -13]])
    k = g.shift_to_class(shifts)
    assert k.tolist() == [[0, 80], [40, 40], [47, 27]]
    np.testing.assert_allclose(g.class_to_um(k), [[-15.0, 14.0], [1.0, -2.0], [3.8, -7.2]])
    np.testing.assert_allclose(g.um_to_class(g.class_to_um(k)), k)
    coarse = ClassGrid(n_classes=21, camera_um_per_px=1.0)
    assert coarse.step_px == 4.0
    assert coarse.shift_to_class(np.array([[-40, 39]])).tolist() == [[0, 20]]
    assert ClassGrid.from_dict(g.to_dict()) == g
    flipped = ClassGrid(camera_um_per_px=0.5, axis_signs=(-1, 1))
    np.testing.assert_allclose(flipped.shift_to_um(np.array([[2, 2]])), [[-1.0, 1.0]])
    with pytest.raises(ValueError):
        ClassGrid(camera_um_per_px=float("nan"))


def test_shifted_training_frames_put_the_blob_where_the_label_says() -> None:
    src = blob_run(60, size=64, sigma_px=2.5, noise=5.0, camera_um_per_px=0.5)
    data = build_datasets(src, DataConfig(shift_max_px=12, n_classes=25, bin_factor=2))
    x, cls, true_um, pid = data.train.load(np.arange(len(data.train)))
    assert x.shape[1:] == (32, 32) and x.dtype == np.float32
    assert np.allclose(x.reshape(len(x), -1).max(axis=1), 1.0)
    assert (pid == -1).all()
    shifts = data.train.shifts
    assert np.abs(shifts).max() <= 12 and len(np.unique(shifts[:, 0])) > 8
    # the label in µm -> expected blob centre in binned pixels: 32 + shift (camera px) -> /2
    for img, um, k in zip(x, true_um, cls, strict=True):
        cx, cy = _centroid(img)
        sx, sy = data.grid.um_to_shift(um)
        assert cx == pytest.approx((32 + sx) / 2 - 0.25, abs=0.3)
        assert cy == pytest.approx((32 + sy) / 2 - 0.25, abs=0.3)
        np.testing.assert_array_equal(k, data.grid.shift_to_class(np.array([sx, sy])))


def test_splits_are_disjoint_and_test_labels_come_from_the_table() -> None:
    src = blob_run(100, size=32)
    data = build_datasets(src, DataConfig(holdout_fraction=0.2, bin_factor=1, seed=3))
    s_frames = src.indices("S")
    train, hold = set(data.train.frame_indices), set(data.holdout.frame_indices)
    assert not train & hold and train | hold == set(s_frames)
    assert len(hold) == 20
    np.testing.assert_array_equal(data.test.frame_indices, src.indices("D"))
    assert data.positions_um.shape == (25, 2) and data.meta["n_positions"] == 25
    d = src.table[src.indices("D")]
    np.testing.assert_allclose(data.test.true_um, np.column_stack([d["target_x_um"], d["target_y_um"]]))
    np.testing.assert_allclose(data.positions_um[data.test.pos_id], data.test.true_um, atol=1e-6)
    again = build_datasets(src, DataConfig(holdout_fraction=0.2, bin_factor=1, seed=3))
    assert again.meta["shifts_sha1"] == data.meta["shifts_sha1"]
    other = build_datasets(src, DataConfig(holdout_fraction=0.2, bin_factor=1, seed=4))
    assert other.meta["shifts_sha1"] != data.meta["shifts_sha1"]


def test_calibration_lattice_covers_the_d_positions_with_training_labels_and_held_out_frames() -> None:
    src = blob_run(200, size=64, sigma_px=2.5, step_px=4, camera_um_per_px=0.5, noise=5.0)
    src.table["target_x_um"] += 1.5  # the S target at (1.5, -0.5) µm: labels are S position + shift × µm/px
    src.table["target_y_um"] -= 0.5
    cfg = DataConfig(shift_max_px=16, n_classes=33, bin_factor=2, holdout_fraction=0.2, seed=2)
    data = build_datasets(src, cfg)
    lat = build_calibration_lattice(data, n_side=9, max_frames=30)
    # D shifts span ±8 px: step ceil(16 / 6) = 3 px, 9 points centred, one step of margin and more
    assert lat.shifts_x_px.tolist() == lat.shifts_y_px.tolist() == list(range(-12, 13, 3))
    assert lat.n_points == 81 and lat.meta["frames_per_point"] == 30 and lat.meta["n_holdout"] == 40
    d_lo, d_hi = data.positions_um.min(axis=0), data.positions_um.max(axis=0)
    lo, hi = lat.positions_um.min(axis=0), lat.positions_um.max(axis=0)
    assert np.all(lo <= d_lo - 3 * 0.5) and np.all(hi >= d_hi + 3 * 0.5)
    np.testing.assert_allclose(lat.meta["range_um"], np.column_stack([lo, hi]))
    # frames: held-out only (never a training frame), each at every lattice point
    assert set(lat.frame_indices) <= set(data.holdout.frame_indices)
    assert not set(lat.dataset.frame_indices) & set(data.train.frame_indices)
    x, cls, true_um, pid = lat.dataset.load(np.arange(len(lat.dataset)))
    assert len(lat.dataset) == 30 * 81 and np.bincount(pid).tolist() == [30] * 81
    # labels: shift × camera µm/px + S position, exactly as the training labels; classes too
    shifts = lat.dataset.shifts
    np.testing.assert_allclose(true_um, shifts * 0.5 + np.array([1.5, -0.5]), atol=1e-6)
    np.testing.assert_allclose(lat.positions_um[pid], true_um, atol=1e-6)
    np.testing.assert_array_equal(cls, data.grid.shift_to_class(shifts))
    # the image content moved where the label says (centre 32 px + shift, binned by 2)
    for i in range(0, len(x), 97):
        cx, cy = _centroid(x[i])
        assert cx == pytest.approx((32 + shifts[i, 0]) / 2 - 0.25, abs=0.3)
        assert cy == pytest.approx((32 + shifts[i, 1]) / 2 - 0.25, abs=0.3)
    # reproducible from the data seed; all held-out frames when the cap is not reached
    again = build_calibration_lattice(build_datasets(src, cfg), n_side=9, max_frames=30)
    assert again.meta["frames_sha1"] == lat.meta["frames_sha1"]
    cfg3 = DataConfig(**{**cfg.to_dict(), "seed": 3, "axis_signs": (1, 1)})
    other = build_calibration_lattice(build_datasets(src, cfg3), max_frames=30)
    assert other.meta["frames_sha1"] != lat.meta["frames_sha1"]
    full = build_calibration_lattice(data, n_side=5, max_frames=None)
    np.testing.assert_array_equal(full.frame_indices, np.sort(data.holdout.frame_indices))
    assert full.shifts_x_px.tolist() == [-16, -8, 0, 8, 16]
    with pytest.raises(ValueError, match="fewer than 4 lattice points"):
        build_calibration_lattice(data, n_side=4)  # step 16 px: -24, -8, 8, 24; ±24 lie beyond ±16
    with pytest.raises(ValueError, match=">= 4"):
        build_calibration_lattice(data, n_side=3)


def test_streamed_items_equal_the_materialised_set_and_reads_are_blockwise() -> None:
    src = blob_run(64, size=64)
    data = build_datasets(src, DataConfig(bin_factor=2, block=16))
    ds = data.train
    mem = ds.materialise(batch_size=10)
    items = [7, 0, 3, len(ds) - 1]
    got = ds.__getitems__(items)
    for i, (x, c, um, _pid) in zip(items, got, strict=True):
        assert x.shape == (1, 32, 32)
        np.testing.assert_array_equal(x.numpy(), mem.tensors[0][i].numpy())
        np.testing.assert_array_equal(c.numpy(), mem.tensors[1][i].numpy())
        np.testing.assert_array_equal(um.numpy(), mem.tensors[2][i].numpy())
    cache = ds._frames_cache()
    before = cache.reads
    ds.load(np.arange(len(ds)))
    assert cache.reads - before <= len(src.frames) // 16 + 1


def test_block_shuffle_sampler_is_a_seeded_permutation_per_epoch() -> None:
    blocks = np.repeat(np.arange(10), 5)
    s = BlockShuffleSampler(blocks, window_blocks=2, seed=1)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(0)
    assert list(s) == a
    assert sorted(a) == list(range(50))
    s.set_epoch(1)
    assert list(s) != a
    # each window of 10 consecutive items touches at most 2 blocks
    assert all(len(set(blocks[a[i : i + 10]])) <= 2 for i in range(0, 50, 10))


def test_camera_calibration_comes_from_the_bench_ground_truth_or_the_option() -> None:
    src = blob_run(4, size=16, camera_um_per_px=0.7)
    assert src.ground_truth["bench"]["um_per_camera_px"] == 0.7
    assert resolve_camera_um_per_px(src) == 0.7
    assert resolve_camera_um_per_px(src, 0.7) == 0.7
    with pytest.raises(ValueError, match="contradicts"):
        resolve_camera_um_per_px(src, 0.2)
    binned = ArraySource(
        src.frames, src.table, attrs={"full_config": json.dumps({"devices": {"camera": {"binning": 2}}})},
        ground_truth=src.ground_truth,
    )  # fmt: skip
    assert resolve_camera_um_per_px(binned) == pytest.approx(1.4)
    # a real run: no bench ground truth; um_per_px (the DMD pixel) and the bench config are not used
    bare = ArraySource(
        src.frames, src.table, attrs={"um_per_px": 2.466},
        bench_config={"reflection": {"camera_pixel_um": 6.5, "dmd_to_sample_magnification": 0.18,
                                     "dmd_to_camera_magnification": 2.9}},
        ground_truth={"plan": {"um_per_px": 2.466}},
    )  # fmt: skip
    assert resolve_camera_um_per_px(bare, 0.403) == 0.403
    with pytest.raises(ValueError, match="um_per_camera_px.*--camera-um-per-px"):
        resolve_camera_um_per_px(bare)
    with pytest.raises(ValueError, match="positive"):
        resolve_camera_um_per_px(bare, -1.0)


def test_background_is_subtracted_before_the_shift() -> None:
    marker = np.zeros((8, 8), np.float32)
    marker[:, :4] = 1.0  # a band that background subtraction removes
    bg = BackgroundModel(positions=np.array([0.0]), values=marker[None], window=0, polyorder=2)
    pipe = FramePipeline(background=bg, bin_factor=1)
    raw = np.ones((1, 8, 8), np.uint16)
    x = pipe(raw, np.array([5]), np.array([[2, 0]]))
    assert x[0, :, 2:6].sum() == 0 and x[0, :, 6:].min() == 1 and x[0, :, :2].min() == 1


def test_background_follows_a_drift_in_the_b_frames() -> None:
    src = blob_run(200, size=32, drift=400.0, noise=5.0)
    bg = fit_run_background(src)
    b_idx = src.indices("B")
    assert bg.window == b_idx.size - 1  # 200 B frames: the longest odd window
    d = src.indices("D")
    residual = bg.subtract(src.frames[d].astype(np.float32), d)
    blobless = residual[:, :4, :4]  # corner: no blob light, only drift + noise
    assert abs(float(blobless.mean())) < 2.0 and float(blobless.std()) < 8.0
    raw = src.frames[d][:, :4, :4].astype(np.float32)
    assert raw.std() > 50.0  # the drift pattern that was removed


def test_test_frames_are_preprocessed_exactly_as_the_crb_analysis_sees_them(tmp_path) -> None:
    """Training/evaluation (full-resolution background, then binning) vs ``analysis.crb`` (binned)."""
    from acquisition.reader import RunReader
    from analysis import crb

    path = write_run(blob_run(120, size=128, step_px=8, drift=300.0, noise=20.0), tmp_path / "run.h5")
    samples, _meta = crb.load_run_samples(path, role="D")
    with RunReader(path) as r:
        data = build_datasets(r, DataConfig(), run_path=path)
        x, _c, true_um, _pid = data.test.load(np.arange(len(data.test)))
    centre = np.all(np.isclose(true_um, samples.center_um), axis=1)
    assert centre.sum() == samples.center.shape[0] > 0
    np.testing.assert_allclose(x[centre].reshape(centre.sum(), -1), samples.center, rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shift_max_px": 0}, "shift_max_px must be >= 1"),
        ({"holdout_fraction": 1.0}, r"holdout_fraction must be in \[0, 1\)"),
        ({"holdout_fraction": -0.1}, r"holdout_fraction must be in \[0, 1\)"),
        ({"max_test": 0}, "max_test must be >= 1"),
    ],
)
def test_data_options_that_leave_nothing_to_learn_from_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        DataConfig(**options)


def test_a_split_that_leaves_no_training_frames_is_refused() -> None:
    src = blob_run(20, size=64)
    with pytest.raises(ValueError, match="0 S frames left for training"):
        build_datasets(src, DataConfig(bin_factor=2, max_train=0))
