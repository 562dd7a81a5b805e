"""SimulatedCamera: sensor statistics, ROI/binning, bench-clock timing, determinism."""

from __future__ import annotations

import time

import numpy as np
import pytest

from devices.base import Camera, DeviceRefused, DeviceTimeout
from devices.bench.clock import SimClock
from devices.bench.sensor import SensorModel
from devices.camera_sim import SimulatedCamera


class UniformSource:
    """``rate`` photons per pixel per second everywhere; records every request."""

    def __init__(self, shape: tuple[int, int] = (256, 320), rate: float = 1e5) -> None:
        self.sensor_shape = shape
        self.rate = rate
        self.calls: list[tuple[float, float]] = []

    def expected_photons(self, t_s: float, exposure_s: float) -> np.ndarray:
        self.calls.append((t_s, exposure_s))
        return np.full(self.sensor_shape, self.rate * exposure_s)


class GradientSource(UniformSource):
    """Photons proportional to (column + 1): every pixel of a row is distinguishable."""

    def expected_photons(self, t_s: float, exposure_s: float) -> np.ndarray:
        self.calls.append((t_s, exposure_s))
        cols = np.arange(self.sensor_shape[1], dtype=np.float64) + 1
        return np.broadcast_to(cols * self.rate * exposure_s, self.sensor_shape).copy()


def make(source: UniformSource | None = None, realtime: bool = False, **kw: object) -> SimulatedCamera:
    return SimulatedCamera(source or UniformSource(), SimClock(realtime=realtime), **kw)


def test_implements_camera_protocol() -> None:
    cam = make()
    assert isinstance(cam, Camera)
    ident = cam.identity()
    assert ident["serial"] == "sim-seed-0" and "Zyla" in ident["model"]
    assert cam.sensor_shape == (256, 320)
    assert cam.roi == (0, 0, 320, 256)


def test_mean_and_variance_match_sensor_model() -> None:
    source = UniformSource(rate=1e5)  # 1000 photons per pixel in 10 ms
    cam = make(source)
    cam.set_exposure(0.01)
    raw = cam.snap().image
    assert raw.dtype == np.uint16 and raw.shape == (256, 320)
    img = raw.astype(np.float64)
    s = cam.sensor
    n = img.size
    var = s.variance_adu(1000.0)
    assert abs(img.mean() - s.mean_adu(1000.0)) < 5 * np.sqrt(var / n)
    assert img.var(ddof=1) == pytest.approx(var, rel=5 * np.sqrt(2 / n) + 0.005)


def test_saturation_clips_at_adc_max() -> None:
    cam = make(UniformSource(rate=1e9))
    img = cam.snap().image
    assert img.dtype == np.uint16
    assert np.all(img == 65535)


def test_roi_crops_the_right_pixels() -> None:
    source = GradientSource(rate=1e4)  # column c gets 100 (c + 1) photons in 10 ms
    cam = make(source, sensor=SensorModel(read_noise_e=0.0))
    cam.set_roi(100, 10, 40, 30)
    assert cam.roi == (100, 10, 40, 30)
    img = cam.snap().image.astype(np.float64)
    assert img.shape == (30, 40)
    expected = cam.sensor.mean_adu(100.0 * (np.arange(100, 140) + 1))
    col_means = img.mean(axis=0)
    col_sd = np.sqrt(cam.sensor.variance_adu(100.0 * (np.arange(100, 140) + 1)) / 30)
    assert np.all(np.abs(col_means - expected) < 5 * col_sd)
    cam.clear_roi()
    assert cam.snap().image.shape == (256, 320)
    with pytest.raises(DeviceRefused):
        cam.set_roi(300, 0, 40, 10)


def test_binning_sums_photons_before_noise() -> None:
    source = UniformSource(rate=1e4)  # 100 photons per pixel in 10 ms
    cam = make(source)
    cam.set_binning(2)
    cam.set_roi(0, 0, 201, 101)  # odd sizes: remainder row/column dropped
    img = cam.snap().image.astype(np.float64)
    assert img.shape == (50, 100)
    s = cam.sensor
    var = s.variance_adu(400.0, n_summed=4)  # 4 pixels' photons, 4 read noises, one offset
    assert abs(img.mean() - s.mean_adu(400.0, n_summed=4)) < 5 * np.sqrt(var / img.size)
    assert img.var(ddof=1) == pytest.approx(var, rel=0.1)
    assert cam.roi == (0, 0, 201, 101)  # ROI stays in unbinned sensor pixels
    cam.clear_roi()
    cam.set_binning(4)
    assert cam.snap().image.shape == (64, 80)
    for bad in (0, 2.5, float("nan"), float("inf"), "2"):
        with pytest.raises(DeviceRefused, match="binning must be a positive integer"):
            cam.set_binning(bad)


def test_same_seed_same_frames_other_seed_differs() -> None:
    frames = []
    for seed in (7, 7, 8):
        cam = make(GradientSource(rate=1e3), seed=seed)
        cam.start_sequence(3, 0.02)
        frames.append(np.stack([cam.read_frame().image for _ in range(3)]))
    assert np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])


def test_snap_advances_clock_by_exposure_and_counts_frames() -> None:
    source = UniformSource()
    clock = SimClock()
    cam = SimulatedCamera(source, clock)
    cam.set_exposure(0.02)
    f0 = cam.snap()
    f1 = cam.snap()
    assert (f0.timestamp_s, f1.timestamp_s) == (0.0, pytest.approx(0.02))
    assert clock.now() == pytest.approx(0.04)
    assert (f0.frame_number, f1.frame_number) == (0, 1)
    assert source.calls == [(0.0, 0.02), (pytest.approx(0.02), 0.02)]
    assert f1.exposure_s == 0.02


def test_sequence_timestamps_spaced_by_interval() -> None:
    source = UniformSource()
    clock = SimClock()
    cam = SimulatedCamera(source, clock)
    cam.set_exposure(0.01)
    cam.snap()  # frame 0, clock -> 0.01
    seen: list[float] = []
    clock.subscribe(seen.append)
    cam.start_sequence(5, 0.1)
    frames = [cam.read_frame() for _ in range(5)]
    t0 = 0.01
    assert [f.timestamp_s for f in frames] == pytest.approx([t0 + 0.1 * k for k in range(5)])
    assert [f.frame_number for f in frames] == [1, 2, 3, 4, 5]
    assert clock.now() == pytest.approx(t0 + 0.4 + 0.01)
    # the bench saw each frame's start and end, and was asked for exactly those exposures
    assert pytest.approx(t0 + 0.3) in seen and pytest.approx(t0 + 0.31) in seen
    assert [c[0] for c in source.calls[1:]] == pytest.approx([t0 + 0.1 * k for k in range(5)])
    with pytest.raises(DeviceTimeout):
        cam.read_frame()


def test_interval_shorter_than_exposure_runs_at_exposure_rate() -> None:
    cam = make()
    cam.set_exposure(0.05)
    cam.start_sequence(3, 0.0)
    times = [cam.read_frame().timestamp_s for _ in range(3)]
    assert np.diff(times) == pytest.approx([0.05, 0.05])


def test_settings_refused_during_sequence_and_stop() -> None:
    cam = make()
    cam.start_sequence(3, 0.01)
    for change in (lambda: cam.set_exposure(0.02), lambda: cam.set_binning(2), cam.snap):
        with pytest.raises(DeviceRefused, match="sequence"):
            change()
    with pytest.raises(DeviceRefused):
        cam.start_sequence(2, 0.01)
    cam.read_frame()
    cam.stop_sequence()
    cam.stop_sequence()  # safe when none runs
    with pytest.raises(DeviceTimeout):
        cam.read_frame()
    cam.set_exposure(0.02)  # allowed again
    assert cam.exposure_s == 0.02


def test_realtime_frames_arrive_at_the_interval_pace() -> None:
    cam = make(UniformSource(shape=(16, 16)), realtime=True)
    cam.set_exposure(0.01)
    t = time.monotonic()
    cam.start_sequence(3, 0.05)
    frames = [cam.read_frame() for _ in range(3)]
    elapsed = time.monotonic() - t
    assert elapsed >= 0.10  # frame 2 ends at 0.11 s
    assert np.diff([f.timestamp_s for f in frames]) == pytest.approx([0.05, 0.05], abs=0.02)
    # next frame far in the future: read_frame waits timeout_s then gives up
    cam.start_sequence(2, 1.0)
    cam.read_frame()
    t = time.monotonic()
    with pytest.raises(DeviceTimeout, match="not within"):
        cam.read_frame(timeout_s=0.05)
    assert 0.04 <= time.monotonic() - t < 0.5


def test_close_is_idempotent_and_final() -> None:
    with make() as cam:
        cam.start_sequence(2, 0.0)
    cam.close()
    with pytest.raises(DeviceRefused, match="closed"):
        cam.snap()


def test_bad_exposure_and_source_shape_refused() -> None:
    cam = make()
    for bad in (0.0, -1.0, float("nan"), 31.0):
        with pytest.raises(DeviceRefused):
            cam.set_exposure(bad)

    class Liar(UniformSource):
        def expected_photons(self, t_s: float, exposure_s: float) -> np.ndarray:
            return np.zeros((2, 2))

    with pytest.raises(DeviceRefused, match="photon image"):
        make(Liar()).snap()
