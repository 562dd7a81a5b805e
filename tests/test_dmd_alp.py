"""AlpDmd / SimulatedDmd: the Dmd interface over ALP4lib on the simulated library, on a SimClock."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
from ALP4 import ALP_AVAIL_MEMORY

from devices.base import DeviceError, DeviceProtocolError, DeviceRefused, Dmd, TriggerMode
from devices.bench.clock import SimClock
from devices.dmd_alp import AlpDmd, AlpError, AlpRefused
from devices.dmd_sim import SimulatedDmd, simulated_library

SHAPE = (24, 40)


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def dmd(clock: SimClock) -> Iterator[SimulatedDmd]:
    with SimulatedDmd(clock, shape=SHAPE) as device:
        yield device


def patterns(n: int, seed: int = 0, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, *shape)) < 0.5, 0, 255).astype(np.uint8)


def test_simulated_dmd_is_a_dmd_with_identity(dmd: SimulatedDmd) -> None:
    assert isinstance(dmd, Dmd)
    assert dmd.shape == SHAPE
    identity = dmd.identity()
    assert identity["serial"] == str(dmd.serial)
    assert identity["library"].endswith("libalp43.so")
    assert identity["driver"].startswith("ALP4lib ")
    assert identity["shape"] == "24x40"


def test_default_shape_is_a_v7001(clock: SimClock) -> None:
    with SimulatedDmd(clock) as dmd:
        assert dmd.shape == (768, 1024)
        assert "V-7001" in dmd.identity()["model"]
        pattern = patterns(1, shape=(768, 1024))[0]
        dmd.show(pattern)
        np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), pattern)


def test_single_run_shows_each_picture_for_its_picture_time_then_nothing(
    dmd: SimulatedDmd, clock: SimClock
) -> None:
    clock.advance(1.0)
    frames = patterns(3)
    dmd.upload(frames, picture_time_s=0.010)
    assert dmd.sequence_id == 0  # the falsy id ALP4lib trips on (defect 4)
    dmd.start()
    assert dmd.is_projecting()
    for t, index in ((1.0, 0), (1.0099, 0), (1.010, 1), (1.025, 2)):
        np.testing.assert_array_equal(dmd.displayed_pattern(t), frames[index])
    assert dmd.displayed_pattern(1.030) is None
    clock.advance(0.015)
    progress = dmd.progress()
    assert (progress.frames_left, progress.picture_time_us, progress.idle) == (2, 10_000, False)
    dmd.wait()  # moves the bench clock to the end of the run
    assert clock.now() == pytest.approx(1.030)
    assert not dmd.is_projecting()
    assert dmd.progress().idle
    assert dmd.displayed_pattern(clock.now()) is None


def test_continuous_run_loops_and_halt_blanks_it(dmd: SimulatedDmd, clock: SimClock) -> None:
    frames = patterns(2, seed=1)
    dmd.upload(frames, picture_time_s=0.001)
    dmd.start(continuous=True)
    for k in (0, 1, 2, 51, 1000):
        np.testing.assert_array_equal(dmd.displayed_pattern(k * 0.001 + 0.0005), frames[k % 2])
    clock.advance(5.0)
    assert dmd.is_projecting()
    assert dmd.progress().indefinite
    with pytest.raises(DeviceRefused, match="continuous"):
        dmd.wait()
    dmd.halt()
    assert not dmd.is_projecting()
    assert dmd.displayed_pattern(5.0) is None
    dmd.halt()  # harmless when idle


def test_slave_mode_follows_triggers(dmd: SimulatedDmd, clock: SimClock) -> None:
    frames = patterns(2, seed=2)
    dmd.upload(frames, picture_time_s=0.001)
    dmd.start(trigger=TriggerMode.SLAVE)
    assert dmd.displayed_pattern(clock.now()) is None
    assert dmd.trigger()
    clock.advance(0.5)
    np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), frames[0])
    assert dmd.trigger()
    np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), frames[1])
    with pytest.raises(AlpRefused, match="ALP_NOT_IDLE"):
        dmd.wait()  # still inside the last picture; waiting for triggers would dead-lock
    clock.advance(0.001)
    assert not dmd.is_projecting()
    assert not dmd.trigger()  # ignored: nothing waits for a trigger
    dmd.upload(frames, picture_time_s=0.001)
    dmd.start()  # back to master mode
    np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), frames[0])


def test_show_binary_and_gray_patterns(dmd: SimulatedDmd, clock: SimClock) -> None:
    binary = patterns(1, seed=3)[0]
    dmd.show(binary)
    assert dmd.bit_depth == 1
    clock.advance(10.0)
    np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), binary)
    gray = np.random.default_rng(4).integers(0, 256, SHAPE, dtype=np.uint8)
    dmd.show(gray)
    assert dmd.bit_depth == 8
    np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), gray)
    dmd.show(np.ones(SHAPE, dtype=bool))
    assert (dmd.displayed_pattern(clock.now()) == 255).all()


def test_upload_replaces_and_frees_the_previous_sequence(dmd: SimulatedDmd) -> None:
    free = dmd.alp.DevInquire(ALP_AVAIL_MEMORY)
    dmd.upload(patterns(5), picture_time_s=0.005, bit_depth=8)
    assert dmd.alp.DevInquire(ALP_AVAIL_MEMORY) == free - 40
    dmd.start(continuous=True)
    dmd.upload(patterns(2), picture_time_s=0.001)  # halts the running loop first
    assert dmd.alp.DevInquire(ALP_AVAIL_MEMORY) == free - 2
    assert (dmd.sequence_id, dmd.n_pictures, dmd.picture_time_s) == (0, 2, 0.001)
    assert not dmd.is_projecting()


def test_upload_takes_numpy_scalars(dmd: SimulatedDmd) -> None:
    """A bit depth read from a config array or a picture time from a float32 widget are valid values."""
    dmd.upload(patterns(2), picture_time_s=np.float32(0.005), bit_depth=np.int64(8))
    assert (dmd.n_pictures, dmd.bit_depth, dmd.picture_time_s) == (2, 8, 0.005)
    assert type(dmd.bit_depth) is int


@pytest.mark.parametrize(
    ("frames", "picture_time_s", "bit_depth", "message"),
    [
        (np.zeros((2, 24, 41), np.uint8), 0.01, 1, r"shape \(n, 24, 40\)"),
        (np.zeros((0, 24, 40), np.uint8), 0.01, 1, r"n >= 1"),
        (np.zeros((1, 24, 40), np.float64), 0.01, 1, "uint8"),
        (np.zeros((1, 24, 40), np.uint8), 0.01, 9, "bit_depth"),
        (np.zeros((1, 24, 40), np.uint8), float("nan"), 1, "picture_time_s"),
        (np.zeros((1, 24, 40), np.uint8), -1.0, 1, "picture_time_s"),
    ],
)
def test_upload_refuses_bad_arguments_clearly(
    dmd: SimulatedDmd, frames: np.ndarray, picture_time_s: float, bit_depth: int, message: str
) -> None:
    with pytest.raises(DeviceRefused, match=message):
        dmd.upload(frames, picture_time_s, bit_depth)
    assert dmd.sequence_id is None


def test_picture_time_out_of_range_names_the_alp_error_and_the_limits(dmd: SimulatedDmd) -> None:
    free = dmd.alp.DevInquire(ALP_AVAIL_MEMORY)
    with pytest.raises(AlpRefused) as caught:
        dmd.upload(patterns(2), picture_time_s=10e-6)
    error = caught.value
    assert (error.code, error.alp_name, error.function, error.operation) == (
        1005,
        "ALP_PARM_INVALID",
        "AlpSeqTiming",
        "upload",
    )
    assert "picture time 10 µs" in str(error) and "44..10000000" in str(error)
    assert dmd.alp.DevInquire(ALP_AVAIL_MEMORY) == free  # the half-made sequence was freed
    assert dmd.sequence_id is None
    with pytest.raises(AlpRefused, match="3448"):
        dmd.upload(patterns(1), picture_time_s=0.001, bit_depth=8)


def test_start_without_upload_and_use_after_close_are_refused(clock: SimClock) -> None:
    dmd = SimulatedDmd(clock, shape=SHAPE)
    with pytest.raises(DeviceRefused, match="upload"):
        dmd.start()
    dmd.close()
    dmd.close()  # idempotent
    dmd.halt()  # harmless
    with pytest.raises(DeviceError, match="closed"):
        dmd.upload(patterns(1), 0.01)
    with pytest.raises(DeviceError, match="closed"):
        dmd.displayed_pattern(0.0)
    clock.advance(1.0)  # the clock listener of a closed DMD is inert


def test_close_frees_a_projecting_device_and_unplugs_it(clock: SimClock) -> None:
    with SimulatedDmd(clock, shape=SHAPE) as dmd:
        dmd.upload(patterns(2), 0.01)
        dmd.start(continuous=True)
        serial = dmd.serial
    assert dmd.extras.unplug_device(serial) == 1001  # ALP_NOT_ONLINE: already unplugged


def test_open_fails_cleanly_for_a_missing_library_or_unit(tmp_path: object) -> None:
    with pytest.raises(DeviceError, match="cannot load the ALP-4.3 library"):
        AlpDmd(lib_dir=str(tmp_path))
    folder, _ = simulated_library()
    with pytest.raises(AlpError, match="ALP_NOT_ONLINE") as caught:
        AlpDmd(lib_dir=str(folder), device_number=4242)
    assert caught.value.operation == "open"


def test_failure_after_allocation_frees_the_device(clock: SimClock) -> None:
    """AlpDevAlloc succeeds, the next call fails: the half-open device must be released."""
    folder, extras = simulated_library()
    serial = 99_001
    assert extras.plug_device(serial, 40, 24) == 0
    try:
        assert extras.inject_error(serial, 1, 1011) == 0  # ALP_ERROR_COMM after AlpDevAlloc
        with pytest.raises(AlpError, match="ALP_ERROR_COMM") as caught:
            AlpDmd(lib_dir=str(folder), device_number=serial)
        assert not isinstance(caught.value, DeviceRefused)
        with AlpDmd(lib_dir=str(folder), device_number=serial) as again:  # it was freed
            assert again.shape == (24, 40)
    finally:
        assert extras.unplug_device(serial) == 0


def test_hardware_failure_mid_run_is_a_device_error_and_close_still_frees(
    dmd: SimulatedDmd, caplog: pytest.LogCaptureFixture
) -> None:
    dmd.upload(patterns(2), 0.01)
    assert dmd.extras.inject_error(dmd.serial, 1, 1012) == 0  # AlpDevHalt ok, then ALP_DEVICE_REMOVED
    with pytest.raises(
        AlpError, match=r"start \(AlpProjControl\) failed: ALP_DEVICE_REMOVED \(1012\)"
    ) as caught:
        dmd.start()
    assert not isinstance(caught.value, (DeviceRefused, DeviceProtocolError))
    assert dmd.extras.inject_error(dmd.serial, 0, 1011) == 0  # the first close step fails too
    with caplog.at_level(logging.WARNING):
        dmd.close()
    assert "AlpDevHalt" in caplog.text
    assert dmd.extras.unplug_device(dmd.serial) == 1001  # closed and unplugged anyway


def test_realtime_clock_runs_on_the_wall_clock() -> None:
    clock = SimClock(realtime=True)
    with SimulatedDmd(clock, shape=SHAPE) as dmd:
        frames = patterns(3, seed=5)
        dmd.upload(frames, picture_time_s=0.200)
        before = clock.now()
        dmd.start()
        after = clock.now()  # the projection started somewhere in [before, after]
        assert after - before < 0.1
        # mid-picture: 0.25..0.35 s after the start, never on a picture boundary
        np.testing.assert_array_equal(dmd.displayed_pattern(after + 0.250), frames[1])
        dmd.wait()
        assert clock.now() - before >= 0.6 - 1e-3
        assert not dmd.is_projecting()
        assert dmd.displayed_pattern(clock.now()) is None


def test_displayed_pictures_are_cached_read_only_and_follow_new_uploads(dmd: SimulatedDmd) -> None:
    frames = patterns(2, seed=11)
    dmd.upload(frames, picture_time_s=0.001)
    dmd.start(continuous=True)
    first = dmd.displayed_pattern(0.0005)
    assert first is not None and not first.flags.writeable
    assert dmd.displayed_pattern(0.0025) is first  # same picture again: the same cached object
    np.testing.assert_array_equal(dmd.displayed_pattern(0.0015), frames[1])
    assert dmd.displayed_index(0.0015) == (dmd.sequence_id, 1)
    new = patterns(2, seed=12)
    dmd.upload(new, picture_time_s=0.001)  # same sequence id and indices, new content
    dmd.start(continuous=True)
    t = dmd.extras.get_time(dmd.device_id) / 1e6
    shown = dmd.displayed_pattern(t)
    assert shown is not first
    np.testing.assert_array_equal(shown, new[0])
    dmd.halt()
    assert dmd.displayed_index(t) is None


def test_library_errors_while_reading_the_displayed_picture_name_the_call(
    dmd: SimulatedDmd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dmd.extras, "displayed_key", lambda device, t_us: (1003, -1, -1, 0))
    for read in (dmd.displayed_pattern, dmd.displayed_index):
        with pytest.raises(AlpError, match=r"\(SimAlpGetDisplayedEx\) failed: ALP_NOT_AVAILABLE \(1003\)"):
            read(0.0)
