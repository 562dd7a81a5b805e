"""generalisation (seed 003): each training-set case produces what the paper describes."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from test_run_helpers import record_simulated

from acquisition.protocols import expand
from acquisition.protocols.generalisation import apply_fluctuation, centre_crop, enlarge, fluctuation
from acquisition.protocols.targets import TargetSetSpec, make_target_set, read_idx, square_resize, write_idx

DMD = (768, 1024)


def _plan(case: str, **kw):
    return expand("generalisation", {"case": case, "n_train": 6, "n_test": 3, **kw}, DMD)


def _digit(bank, index: int) -> np.ndarray:
    return (square_resize(bank.sets["digits"].image(index), 64) >= 0.5).astype(float)


def test_sets_and_shapes_case_2() -> None:
    plan = _plan("2")
    labels = [e.sample for e in plan.events]
    assert labels == ["train"] * 6 + ["test-dense"] * 3 + ["test-digits"] * 3
    assert {e.role for e in plan.events} == {"T"}
    bank = plan.patterns
    assert bank.target_shape == (64, 64)
    t = bank.target_image(0)
    assert t.shape == (64, 64) and t.dtype == np.uint8
    assert set(np.unique(t)) <= {0, 255}  # digits are binary
    train = {e.extra["source_index"] for e in plan.events if e.sample == "train"}
    test = {e.extra["source_index"] for e in plan.events if e.sample == "test-digits"}
    assert not train & test  # held-out test digits
    face = bank.target_image(6)
    assert len(np.unique(face)) > 50  # dense grayscale


def test_default_digits_leave_the_mnist_black_edge() -> None:
    """seed 003 Fig. 1b: superposing all MNIST digits leaves a black edge (20x20 box in a 28x28 frame)."""
    digits = make_target_set(TargetSetSpec(source="digits"))
    shown = np.array([square_resize(digits.image(i), 64) >= 0.5 for i in range(len(digits))])
    lit = shown.any(axis=0)
    edge = 64 * 4 // 28  # MNIST's 4-pixel border at 64x64
    assert not lit[:edge].any() and not lit[-edge:].any()
    assert not lit[:, :edge].any() and not lit[:, -edge:].any()
    assert lit[32 - 16 : 32 + 16, 32 - 16 : 32 + 16].mean() > 0.9  # the digit box itself is covered


def test_case_1_trains_on_dense_images() -> None:
    plan = _plan("1")
    assert plan.events[0].extra["source"] == "faces"
    assert len(np.unique(plan.patterns.target_image(0))) > 50


def test_dmd_pattern_blocks_centred() -> None:
    plan = _plan("2", block_px=4)
    img = plan.patterns.pattern(0)
    t = plan.patterns.target_image(0)
    assert img.shape == DMD
    r0, c0 = (768 - 256) // 2, (1024 - 256) // 2
    np.testing.assert_array_equal(img[r0 : r0 + 256 : 4, c0 : c0 + 256 : 4], t)
    np.testing.assert_array_equal(img[r0 + 3 : r0 + 256 : 4, c0 + 3 : c0 + 256 : 4], t)
    assert img.sum() == t.astype(int).sum() * 16  # nothing outside the target area
    assert (plan.events[0].target_x_px, plan.events[0].target_y_px) == (c0 + 127.5, r0 + 127.5)


def test_case_3_enlarges_then_crops() -> None:
    plan = _plan("3")
    bank = plan.patterns
    idx = plan.events[0].extra["source_index"]
    d = _digit(bank, idx)
    expected = (centre_crop(enlarge(d, 96), 64) >= 0.5) * 255
    np.testing.assert_array_equal(bank.target_image(0), expected)
    assert (bank.target_image(0) > 0).sum() > (d > 0).sum()  # enlarged: more effective pixels


def test_fluctuation_formula_and_amplitude() -> None:
    p = fluctuation(96, 0.7, 2 * np.pi / 16, 2 * np.pi / 24, 0.3, 1.1)
    assert p.max() - p.min() == pytest.approx(4 * 0.7, rel=0.02)
    assert p[0, 1] == pytest.approx(0.7 * (np.sin(2 * np.pi / 16 + 0.3) + np.sin(1.1)))
    ones = np.ones_like(p)
    m = apply_fluctuation(ones, p, 0.7, "multiply")
    assert m.min() >= 0.3 - 1e-12 and m.max() <= 1 + 1e-12
    assert m.max() - m.min() == pytest.approx(0.7, rel=0.02)
    assert not apply_fluctuation(np.zeros_like(p), p, 0.7, "multiply").any()  # dark stays dark


@pytest.mark.parametrize("case", ["4a", "4b"])
def test_case_4_modulates_enlarged_digit(case: str) -> None:
    plan = _plan(case)
    bank = plan.patterns
    amps = []
    for e in plan.events[:6]:
        x = e.extra
        assert 2 * np.pi / x["kx"] in (16.0, 24.0) and 2 * np.pi / x["ky"] in (16.0, 24.0)
        assert 0 <= x["phase_x"] < 2 * np.pi and 0 <= x["phase_y"] < 2 * np.pi
        amps.append(x["amplitude"])
        d = _digit(bank, x["source_index"])
        big = (enlarge(d, 96) >= 0.5).astype(float)
        p = fluctuation(96, x["amplitude"], x["kx"], x["ky"], x["phase_x"], x["phase_y"])
        expected = np.rint(centre_crop(apply_fluctuation(big, p, x["amplitude"], "multiply"), 64) * 255)
        np.testing.assert_array_equal(bank.target_image(e.pattern_id), expected)
        on = bank.target_image(e.pattern_id)[centre_crop(big, 64) > 0]
        assert on.min() >= np.floor(255 * (1 - x["amplitude"])) - 1
    if case == "4a":
        assert amps == [1.0] * 6
    else:
        assert all(0 < a <= 1 for a in amps) and len(set(amps)) == 6
    # grayscale, not binary any more
    assert len(np.unique(bank.target_image(0))) > 10


def test_case_4c_superposes_two_digits() -> None:
    plan = _plan("4c")
    bank = plan.patterns
    for e in plan.events[:6]:
        x = e.extra
        assert x["source_index"] != x["source_index_2"]
        both = np.clip(_digit(bank, x["source_index"]) + _digit(bank, x["source_index_2"]), 0, 1)
        support = centre_crop(enlarge(both, 96) >= 0.5, 64)
        shown = bank.target_image(e.pattern_id)
        assert not shown[~support].any()  # nothing outside the union of the two digits
        assert support.sum() > centre_crop(enlarge(_digit(bank, x["source_index"]), 96) >= 0.5, 64).sum()


def test_case_5_shifted_test_regions() -> None:
    plan = _plan("5", shifts_px=[[32, 0], [-16, 24]])
    bank = plan.patterns
    assert bank.target_shape == (128, 128)
    by_set = {}
    for e in plan.events:
        by_set.setdefault(e.sample, []).append(e)
    assert set(by_set) == {
        "train", "test-dense", "test-digits", "test-dense-shift1", "test-digits-shift1",
        "test-dense-shift2", "test-digits-shift2",
    }  # fmt: skip
    assert by_set["train"][0].extra["source"] == "faces"
    centre = by_set["test-digits"][0]
    shifted = by_set["test-digits-shift2"][0]
    assert (centre.extra["x0"], centre.extra["y0"]) == (32, 32)
    assert (shifted.extra["x0"], shifted.extra["y0"]) == (16, 56)
    assert shifted.extra["source_index"] == centre.extra["source_index"]  # same digit, moved
    a, b = bank.target_image(centre.pattern_id), bank.target_image(shifted.pattern_id)
    np.testing.assert_array_equal(np.roll(a, (24, -16), axis=(0, 1)), b)
    assert shifted.target_x_px - centre.target_x_px == -16  # one mirror per target pixel (block_px 1)
    assert shifted.target_y_px - centre.target_y_px == 24


def test_random_placement_inside_field() -> None:
    plan = expand("generalisation", {"case": "random", "n_train": 30, "n_test": 5}, DMD)
    bank = plan.patterns
    positions = set()
    for e in plan.events:
        x0, y0 = e.extra["x0"], e.extra["y0"]
        assert 0 <= x0 <= 64 and 0 <= y0 <= 64
        t = bank.target_image(e.pattern_id)
        assert t.shape == (128, 128)
        outside = t.copy()
        outside[y0 : y0 + 64, x0 : x0 + 64] = 0
        assert not outside.any() and t.any()
        positions.add((x0, y0))
    assert len(positions) > 25  # really random, not one place
    xs = [p[0] for p in positions]
    assert min(xs) < 20 and max(xs) > 44  # spread across the field


def test_binary_display_and_frames_wrap() -> None:
    plan = expand(
        "generalisation", {"case": "1", "n_train": 2, "n_test": 1, "display": "binary", "frames": 7}, DMD
    )
    assert len(plan) == 7
    assert set(np.unique(plan.patterns.target_image(0))) == {0, 255}
    assert plan.events[4].pattern_id == 0 and plan.events[4].extra["repeat"] == 1


def test_target_too_big_for_dmd() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        expand("generalisation", {"case": "5", "block_px": 8}, DMD)


def test_mnist_idx_round_trip_and_protocol(tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    raw = tmp_path / "t10k-images-idx3-ubyte"
    raw.write_bytes(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 5, 28, 28) + imgs.tobytes())  # by hand
    gz = tmp_path / "images.gz"
    with gzip.open(gz, "wb") as f:
        f.write(raw.read_bytes())
    np.testing.assert_array_equal(read_idx(raw), imgs)
    np.testing.assert_array_equal(read_idx(gz), imgs)
    other = tmp_path / "w.idx.gz"
    write_idx(other, imgs)
    np.testing.assert_array_equal(read_idx(other), imgs)
    s = make_target_set(TargetSetSpec(source="mnist", path=str(gz)))
    assert len(s) == 5
    np.testing.assert_allclose(s.image(3), imgs[3] / 255.0)
    plan = expand(
        "generalisation",
        {"case": "2", "n_train": 3, "n_test": 1, "digit_set": {"source": "mnist", "path": str(raw)}},
        DMD,
    )
    assert plan.events[0].extra["source"] == "mnist"
    assert plan.patterns.target_image(0).shape == (64, 64)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(bad)


def test_image_folder_and_bundled_images(tmp_path) -> None:
    from skimage.io import imsave

    imsave(tmp_path / "b.png", np.full((40, 30), 200, np.uint8), check_contrast=False)
    imsave(tmp_path / "a.tif", np.zeros((20, 20, 3), np.uint8), check_contrast=False)
    (tmp_path / "notes.txt").write_text("ignored")
    s = make_target_set(TargetSetSpec(source="folder", path=str(tmp_path)))
    assert [p.name for p in s.files] == ["a.tif", "b.png"]
    assert s.image(1).max() == pytest.approx(200 / 255)
    assert square_resize(s.image(1), 64).shape == (64, 64)
    imgs = make_target_set(TargetSetSpec(source="images", count=20))
    assert len(imgs) == 20 and imgs.image(19).min() >= 0 and imgs.image(19).max() <= 1
    assert imgs.image(19).shape[0] == imgs.image(19).shape[1]  # random square crop
    with pytest.raises(ValueError, match="needs a 'path'"):
        TargetSetSpec(source="mnist")


def test_run_on_the_diffuser_bench_stores_the_target_of_every_frame(tmp_path) -> None:
    """seed 003: "the target shown is stored with each frame" (/entry/targets + events/target_index)."""
    import h5py

    from acquisition.config import load_config
    from acquisition.reader import RunReader

    cfg = load_config(
        None,
        [
            'bench.configuration="diffuser"',
            'bench.diffuser.gray_model="amplitude"',  # one propagation per frame: a fast test
            "run.protocol=generalisation",
            "protocols.generalisation.case=4b",
            "protocols.generalisation.n_train=3",
            "protocols.generalisation.n_test=1",
            "frames=7",  # 5 targets, then the first two again: rows are per target, not per frame
        ],
    )
    out = tmp_path / "gen.h5"
    plan = record_simulated(cfg, out)
    shown = np.stack([plan.patterns.target_image(e.pattern_id) for e in plan.events])
    assert shown.dtype == np.uint8 and len({e.pattern_id for e in plan.events}) == 5
    with RunReader(out) as r:
        assert r.has_targets and r.n_frames == 7
        np.testing.assert_array_equal(r.targets(np.arange(7)), shown)
        for i in range(7):
            np.testing.assert_array_equal(r.targets(i), shown[i])
        np.testing.assert_array_equal(r.targets([6, 0, 3, 0]), shown[[6, 0, 3, 0]])
        assert r.targets(-1).shape == (64, 64) and r.targets([]).shape == (0, 64, 64)
        with pytest.raises(IndexError):
            r.targets(7)
        assert r.table["pattern_id"].tolist() == [0, 1, 2, 3, 4, 0, 1]
    with h5py.File(out, "r") as f:
        images = f["entry/targets/images"]
        assert images.shape == (5, 64, 64) and images.dtype == np.uint8
        np.testing.assert_array_equal(f["entry/targets/pattern_id"][:], np.arange(5))
        np.testing.assert_array_equal(f["entry/events/target_index"][:], [0, 1, 2, 3, 4, 0, 1])
        # the picture on the DMD is the stored target, block_px x block_px per target pixel
        pattern = plan.patterns.pattern(3)
        k = cfg.protocol_params().block_px
        r0, c0 = (768 - 64 * k) // 2, (1024 - 64 * k) // 2
        np.testing.assert_array_equal(pattern[r0 : r0 + 64 * k : k, c0 : c0 + 64 * k : k], images[3])


def test_recorded_frames_follow_the_diffusers_linear_field_map(tmp_path) -> None:
    """End to end: with ``bench.configuration`` left out the run is imaged by the diffuser bench, and its
    frames carry the statistics of a fixed random linear map of the DMD field E = T a: the same target
    repeats its frame up to shot noise, and two targets' speckles correlate as |<a, b>|^2 / (|a|^2 |b|^2)
    of their stored amplitudes (a = sqrt(gray / 255)), which is small only for targets that barely overlap.
    The defaults (block_px = 1, the bench's photon budget at the protocol's exposure) keep the whole
    64x64 target in the bench's illuminated 128x128 mirrors and the speckle peaks below saturation."""
    from scipy import ndimage

    from acquisition.config import load_config
    from acquisition.reader import RunReader

    cfg = load_config(
        None,
        [
            'bench.diffuser.gray_model="amplitude"',  # one propagation per frame: a fast test
            "run.protocol=generalisation",
            "protocols.generalisation.n_train=6",
            "protocols.generalisation.n_test=2",
            "frames=13",  # 10 targets, then the first three again
        ],
    )
    assert cfg.bench_config().configuration == "diffuser"
    out = tmp_path / "gen.h5"
    record_simulated(cfg, out)
    with RunReader(out) as r:
        sensor = r.ground_truth["bench"]["sensor"]
        raw = np.asarray(r.frames[:])
        amps = np.sqrt(r.targets(np.arange(r.n_frames)) / 255.0).reshape(r.n_frames, -1)
    adc_max = 2 ** int(sensor["bit_depth"]) - 1
    well_adu = float(sensor["offset_adu"]) + float(sensor["full_well_e"]) * float(sensor["gain_adu_per_e"])
    assert raw.max() < min(adc_max, well_adu)  # unclipped speckle
    frames = raw.astype(float) - float(sensor["offset_adu"])

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    for i in range(3):  # the static diffuser: the same target gives the same speckle
        assert np.array_equal(amps[i], amps[10 + i])
        assert corr(frames[i], frames[10 + i]) > 0.97
    core = (slice(128, 384), slice(128, 384))  # where the halo envelope is bright
    speckle = [(f / ndimage.gaussian_filter(f, 8) - 1)[core] for f in frames[:10]]
    measured, predicted = [], []
    for i in range(10):
        for j in range(i + 1, 10):
            measured.append(corr(speckle[i], speckle[j]))
            a, b = amps[i], amps[j]
            predicted.append((a @ b) ** 2 / ((a @ a) * (b @ b)))
    measured, predicted = np.array(measured), np.array(predicted)
    assert corr(measured, predicted) > 0.95
    assert np.abs(measured - predicted).mean() < 0.08
