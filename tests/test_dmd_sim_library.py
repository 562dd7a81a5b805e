"""The simulated libalp43.so driven through the *unmodified* ALP4lib (and raw ALP calls).

These tests pin the library's ALP behaviour: geometry and inquiries, sequence storage and bit
depth, timing validation, which picture is shown when (master, continuous, repeat, first/last
frame, slave triggers), ProjWait in both clock modes, progress, and the real error codes.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import io
import itertools
import time
from collections.abc import Iterator

import numpy as np
import pytest
from ALP4 import (
    ALP4,
    ALP_AVAIL_MEMORY,
    ALP_BITNUM,
    ALP_DATA_BINARY_BOTTOMUP,
    ALP_DATA_FORMAT,
    ALP_DATA_LSB_ALIGN,
    ALP_DEV_DMDTYPE,
    ALP_DEVICE_NUMBER,
    ALP_FIRSTFRAME,
    ALP_LASTFRAME,
    ALP_MIN_PICTURE_TIME,
    ALP_PICTURE_TIME,
    ALP_PROJ_INVERSION,
    ALP_PROJ_MODE,
    ALP_PROJ_PROGRESS,
    ALP_PROJ_STATE,
    ALP_PROJ_UPSIDE_DOWN,
    ALP_SEQ_REPEAT,
    ALP_SLAVE,
    ALPError,
    tAlpProjProgress,
)

from devices.alp_sim.extras import (
    SIMALP_CLOCK_WALL,
    SIMALP_NOT_DISPLAYED,
    SIMALP_TIME_UNKNOWN,
    SIMALP_TRIGGER_IGNORED,
    SimAlpExtras,
)
from devices.dmd_alp import ALP_PROJ_ACTIVE, ALP_PROJ_IDLE, _typed_function
from devices.dmd_sim import simulated_library

ROWS, COLS = 16, 32
ALP_OK, NOT_ONLINE, NOT_IDLE, NOT_AVAILABLE, NOT_READY = 0, 1001, 1002, 1003, 1004
PARM_INVALID, MEMORY_FULL, SEQ_IN_USE = 1005, 1007, 1008
_serials = itertools.count(91001)


def _quiet_alp(folder: str) -> ALP4:
    with contextlib.redirect_stdout(io.StringIO()):
        return ALP4(version="4.3", libDir=folder)


class Bench:
    """A raw ALP4 object on a freshly plugged small unit, plus the extras and a typed ProjInquire."""

    def __init__(self, folder: str, extras: SimAlpExtras, rows: int = ROWS, cols: int = COLS) -> None:
        self.extras = extras
        self.serial = next(_serials)
        assert extras.plug_device(self.serial, cols, rows) == ALP_OK
        self.alp = _quiet_alp(folder)
        with contextlib.redirect_stdout(io.StringIO()):
            self.alp.Initialize(self.serial)
        self.lib = self.alp._ALPLib
        self.shape = (rows, cols)
        self._proj_inquire = _typed_function(
            self.lib, "AlpProjInquire", ct.c_ulong, ct.c_long, ct.POINTER(ct.c_long)
        )

    @property
    def dev(self) -> int:
        return self.alp.ALP_ID.value

    def proj_inquire(self, inquire_type: int) -> int:
        value = ct.c_long(0)
        assert self._proj_inquire(self.alp.ALP_ID, inquire_type, ct.byref(value)) == ALP_OK
        return value.value

    def at(self, t_us: int) -> int:
        """Advance the device's virtual time to t_us."""
        assert self.extras.set_time(self.dev, t_us) == ALP_OK
        return t_us

    def shown(self, t_us: int) -> tuple[int, np.ndarray, int]:
        rc, picture, _, index = self.extras.displayed(self.dev, t_us, self.shape)
        return rc, picture, index

    def upload(self, pictures: np.ndarray, bit_depth: int = 1, picture_us: int = 1000) -> ct.c_long:
        seq = self.alp.SeqAlloc(nbImg=len(pictures), bitDepth=bit_depth)
        self.alp.SetTiming(SequenceId=seq, pictureTime=picture_us)
        self.alp._lastDDRseq = seq  # ALP4lib defect 4 (falsy id 0); see test_dmd_alp4lib_defects.py
        self.alp.SeqPut(np.ascontiguousarray(pictures).ravel(), SequenceId=seq)
        return seq

    def close(self) -> None:
        self.lib.AlpDevHalt(self.alp.ALP_ID)
        if hasattr(self.alp, "_ALPLib"):
            self.alp.Free()
        assert self.extras.unplug_device(self.serial) == ALP_OK


@pytest.fixture(scope="module")
def library() -> tuple[str, SimAlpExtras]:
    folder, extras = simulated_library()
    return str(folder), extras


@pytest.fixture
def bench(library: tuple[str, SimAlpExtras]) -> Iterator[Bench]:
    b = Bench(*library)
    yield b
    b.close()


def binary_pictures(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, ROWS, COLS)) < 0.5, 0, 255).astype(np.uint8)


def test_unmodified_alp4lib_opens_the_default_v7001(library: tuple[str, SimAlpExtras]) -> None:
    alp = _quiet_alp(library[0])
    assert alp._ALPLib._name.endswith("/libalp43.so")
    with contextlib.redirect_stdout(io.StringIO()):
        alp.Initialize()
    try:
        assert (alp.nSizeX, alp.nSizeY) == (1024, 768)
        assert alp.DevInquire(ALP_DEV_DMDTYPE) == 4  # ALP_DMDTYPE_XGA_07A
        assert alp.DevInquire(ALP_DEVICE_NUMBER) == 70010
        assert alp.DevInquire(ALP_AVAIL_MEMORY) == (4 << 30) * 8 // (1024 * 768)
        seq = alp.SeqAlloc(nbImg=10, bitDepth=8)
        assert alp.DevInquire(ALP_AVAIL_MEMORY) == (4 << 30) * 8 // (1024 * 768) - 80
        alp.FreeSeq(SequenceId=seq)
    finally:
        alp.Free()


def test_master_single_run_honours_picture_time_order_repeat_and_frame_range(bench: Bench) -> None:
    pictures = binary_pictures(4)
    seq = bench.upload(pictures, picture_us=1000)
    bench.alp.SeqControl(ALP_FIRSTFRAME, 1, SequenceId=seq)
    bench.alp.SeqControl(ALP_LASTFRAME, 2, SequenceId=seq)
    bench.alp.SeqControl(ALP_SEQ_REPEAT, 2, SequenceId=seq)
    start = bench.at(5000)
    bench.alp.Run(SequenceId=seq, loop=False)
    expected = {0: 1, 999: 1, 1000: 2, 2500: 1, 3999: 2}
    for offset, index in expected.items():
        rc, shown, shown_index = bench.shown(start + offset)
        assert (rc, shown_index) == (ALP_OK, index), offset
        np.testing.assert_array_equal(shown, pictures[index])
    bench.at(start + 3999)
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_ACTIVE
    bench.at(start + 4000)
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_IDLE
    assert bench.shown(start + 4000)[0] == SIMALP_NOT_DISPLAYED  # a finished run shows nothing
    assert bench.shown(start - 1)[0] == SIMALP_TIME_UNKNOWN


def test_continuous_projection_loops_until_halted(bench: Bench) -> None:
    pictures = binary_pictures(3, seed=1)
    seq = bench.upload(pictures, picture_us=500)
    bench.alp.Run(SequenceId=seq, loop=True)
    for k in (0, 1, 2, 3, 7, 1000):
        rc, shown, index = bench.shown(k * 500 + 250)
        assert (rc, index) == (ALP_OK, k % 3)
        np.testing.assert_array_equal(shown, pictures[k % 3])
    bench.at(10_000_000)
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_ACTIVE
    bench.alp.Halt()
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_IDLE
    assert bench.shown(10_000_000)[0] == SIMALP_NOT_DISPLAYED
    assert bench.shown(9_999_999)[0] == ALP_OK  # before the halt the loop was still showing


def test_slave_mode_advances_one_picture_per_trigger(bench: Bench) -> None:
    pictures = binary_pictures(2, seed=2)
    seq = bench.upload(pictures, picture_us=1000)
    bench.alp.ProjControl(ALP_PROJ_MODE, ALP_SLAVE)
    bench.alp.Run(SequenceId=seq, loop=False)
    assert bench.shown(0)[0] == SIMALP_NOT_DISPLAYED  # nothing until the first trigger
    assert bench.extras.trigger(bench.dev) == ALP_OK
    bench.at(50_000)  # a slave picture stays until the next trigger, whatever the picture time
    assert bench.shown(50_000)[2] == 0
    assert bench.extras.trigger(bench.dev) == ALP_OK
    assert bench.shown(50_000)[2] == 1
    assert bench.shown(49_999)[2] == 0
    assert bench.extras.trigger(bench.dev) == SIMALP_TRIGGER_IGNORED  # the run has no third picture
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_ACTIVE
    bench.at(51_000)  # the last picture ends after its picture time
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_IDLE
    assert bench.shown(51_000)[0] == SIMALP_NOT_DISPLAYED


def test_bit_depths_and_data_formats_render_as_the_mirrors_show_them(bench: Bench) -> None:
    gray = np.tile(np.arange(COLS, dtype=np.uint8) * 8, (ROWS, 1))[None]  # 0..248
    ramp = np.array([[[127, 128, 0, 255] * (COLS // 4)] * ROWS], dtype=np.uint8)

    seq = bench.upload(ramp, bit_depth=1)  # 1 bit: pixel >= 128 is on
    assert bench.extras.read_picture(bench.dev, seq.value, 0, bench.shape)[0, :4].tolist() == [0, 255, 0, 255]
    bench.lib.AlpSeqFree(bench.alp.ALP_ID, seq)

    seq = bench.upload(gray, bit_depth=8, picture_us=5000)  # 8 bit: gray levels as uploaded
    bench.alp.Run(SequenceId=seq, loop=True)
    np.testing.assert_array_equal(bench.shown(0)[1], gray[0])
    bench.alp.Halt()
    bench.alp.SeqControl(ALP_BITNUM, 2, SequenceId=seq)  # show only the 2 MSBs: levels 0, 85, 170, 255
    bench.alp.ProjControl(ALP_PROJ_INVERSION, 1)
    bench.alp.ProjControl(ALP_PROJ_UPSIDE_DOWN, 1)
    bench.alp.Run(SequenceId=seq, loop=True)
    expected = 255 - (gray[0] >> 6).astype(np.int32) * 85
    np.testing.assert_array_equal(bench.shown(0)[1], expected[::-1])
    bench.alp.Halt()
    bench.alp.ProjControl(ALP_PROJ_INVERSION, 0)
    bench.alp.ProjControl(ALP_PROJ_UPSIDE_DOWN, 0)
    bench.lib.AlpSeqFree(bench.alp.ALP_ID, seq)

    seq = bench.alp.SeqAlloc(nbImg=1, bitDepth=4)  # LSB-aligned 4-bit data
    bench.alp.SeqControl(ALP_DATA_FORMAT, ALP_DATA_LSB_ALIGN, SequenceId=seq)
    bench.alp._lastDDRseq = seq
    bench.alp.SeqPut(np.full(ROWS * COLS, 15, np.uint8), SequenceId=seq)
    assert (bench.extras.read_picture(bench.dev, seq.value, 0, bench.shape) == 255).all()
    bench.lib.AlpSeqFree(bench.alp.ALP_ID, seq)

    picture = binary_pictures(1, seed=3)[0]  # packed binary, bottom row first
    seq = bench.alp.SeqAlloc(nbImg=1, bitDepth=1)
    bench.alp.SeqControl(ALP_DATA_FORMAT, ALP_DATA_BINARY_BOTTOMUP, SequenceId=seq)
    bench.alp._lastDDRseq = seq
    bench.alp.SeqPut(np.packbits(picture[::-1] >= 128, axis=-1).ravel(), SequenceId=seq)
    np.testing.assert_array_equal(bench.extras.read_picture(bench.dev, seq.value, 0, bench.shape), picture)


def test_seq_put_ex_updates_only_the_given_lines(bench: Bench) -> None:
    seq = bench.upload(np.zeros((2, ROWS, COLS), np.uint8), bit_depth=8, picture_us=5000)
    bench.alp.SeqPutEx(
        np.full((1, 3, COLS), 200, np.uint8).ravel(),
        LineOffset=4,
        LineLoad=3,
        SequenceId=seq,
        PicOffset=1,
        PicLoad=1,
    )
    picture = bench.extras.read_picture(bench.dev, seq.value, 1, bench.shape)
    assert (picture[4:7] == 200).all() and (picture[:4] == 0).all() and (picture[7:] == 0).all()
    assert not bench.extras.read_picture(bench.dev, seq.value, 0, bench.shape).any()


def test_timing_is_validated_against_the_bit_depth(bench: Bench) -> None:
    one_bit = bench.alp.SeqAlloc(nbImg=1, bitDepth=1)
    assert bench.alp.SeqInquire(ALP_MIN_PICTURE_TIME, SequenceId=one_bit) == 44
    lib, dev = bench.lib, bench.alp.ALP_ID
    timing = [ct.c_long(v) for v in (0, 43, 0, 0, 0)]
    assert lib.AlpSeqTiming(dev, one_bit, *timing) == PARM_INVALID
    assert lib.AlpSeqTiming(dev, one_bit, ct.c_long(0), ct.c_long(44), *[ct.c_long(0)] * 3) == ALP_OK
    assert (
        lib.AlpSeqTiming(dev, one_bit, ct.c_long(2000), ct.c_long(1000), *[ct.c_long(0)] * 3) == PARM_INVALID
    )
    assert (
        lib.AlpSeqTiming(dev, one_bit, ct.c_long(0), ct.c_long(10_000_001), *[ct.c_long(0)] * 3)
        == PARM_INVALID
    )
    assert lib.AlpSeqTiming(dev, one_bit, ct.c_long(0), ct.c_long(-5), *[ct.c_long(0)] * 3) == PARM_INVALID
    assert bench.alp.SeqInquire(ALP_PICTURE_TIME, SequenceId=one_bit) == 44
    eight_bit = bench.alp.SeqAlloc(nbImg=1, bitDepth=8)
    with pytest.raises(ALPError):
        bench.alp.SetTiming(SequenceId=eight_bit, pictureTime=1000)  # 8-bit gray needs >= 3448 µs
    bench.alp.SetTiming(SequenceId=eight_bit, pictureTime=3448)


def test_bad_calls_return_the_real_alp_error_codes(bench: Bench, library: tuple[str, SimAlpExtras]) -> None:
    lib, dev = bench.lib, bench.alp.ALP_ID
    value = ct.c_long(0)
    assert lib.AlpDevInquire(ct.c_ulong(12345), ALP_DEVICE_NUMBER, ct.byref(value)) == NOT_AVAILABLE
    device = ct.c_ulong(0)
    assert lib.AlpDevAlloc(ct.c_long(bench.serial), 0, ct.byref(device)) == NOT_READY  # already allocated
    assert lib.AlpDevAlloc(ct.c_long(4242), 0, ct.byref(device)) == NOT_ONLINE  # no such serial
    assert lib.AlpDevInquire(dev, 9999, ct.byref(value)) == PARM_INVALID
    free_memory = bench.alp.DevInquire(ALP_AVAIL_MEMORY)
    seq = ct.c_ulong(0)
    assert lib.AlpSeqAlloc(dev, ct.c_long(1), ct.c_long(free_memory + 1), ct.byref(seq)) == MEMORY_FULL
    assert lib.AlpSeqAlloc(dev, ct.c_long(9), ct.c_long(1), ct.byref(seq)) == PARM_INVALID
    assert (
        lib.AlpSeqControl(dev, ct.c_ulong(63), ALP_SEQ_REPEAT, ct.c_long(1)) == PARM_INVALID
    )  # no such sequence

    running = bench.upload(binary_pictures(2), picture_us=1000)
    assert lib.AlpSeqControl(dev, running, ALP_SEQ_REPEAT, ct.c_long(0)) == PARM_INVALID
    assert lib.AlpProjStartCont(dev, running) == ALP_OK
    assert lib.AlpSeqFree(dev, running) == SEQ_IN_USE
    data = np.zeros(ROWS * COLS, np.uint8)
    assert (
        lib.AlpSeqPut(dev, running, ct.c_long(0), ct.c_long(0), data.ctypes.data_as(ct.c_void_p))
        == SEQ_IN_USE
    )
    assert lib.AlpProjControl(dev, ALP_PROJ_MODE, ct.c_long(ALP_SLAVE)) == NOT_IDLE
    assert lib.AlpProjStart(dev, running) == NOT_IDLE
    assert lib.AlpDevFree(dev) == NOT_IDLE
    assert lib.AlpProjWait(dev) == PARM_INVALID  # a continuous projection never ends
    assert lib.AlpProjHalt(dev) == ALP_OK
    assert lib.AlpSeqFree(dev, running) == ALP_OK
    assert lib.AlpSeqFree(dev, running) == PARM_INVALID  # already freed


def test_proj_wait_moves_virtual_time_to_the_end_and_refuses_to_deadlock_in_slave_mode(bench: Bench) -> None:
    seq = bench.upload(binary_pictures(3), picture_us=2000)
    start = bench.at(1_000)
    bench.alp.Run(SequenceId=seq, loop=False)
    bench.alp.Wait()
    assert bench.extras.get_time(bench.dev) == start + 3 * 2000
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_IDLE

    bench.alp.ProjControl(ALP_PROJ_MODE, ALP_SLAVE)
    bench.alp.Run(SequenceId=seq, loop=False)
    assert bench.lib.AlpProjWait(bench.alp.ALP_ID) == NOT_IDLE  # triggers only we could send


def test_proj_wait_sleeps_in_wall_clock_mode(bench: Bench) -> None:
    offset_us = round(time.monotonic() * 1e6)  # device time 0 = now
    assert bench.extras.set_clock_mode(bench.dev, SIMALP_CLOCK_WALL, offset_us) == ALP_OK
    seq = bench.upload(binary_pictures(5), picture_us=20_000)
    began = time.monotonic()
    bench.alp.Run(SequenceId=seq, loop=False)
    assert bench.extras.set_time(bench.dev, 10**9) == PARM_INVALID  # wall mode ignores pushed time
    bench.alp.Wait()
    elapsed = time.monotonic() - began
    assert 0.099 <= elapsed < 5.0  # upper bound only catches a hang
    assert bench.proj_inquire(ALP_PROJ_STATE) == ALP_PROJ_IDLE


def test_progress_struct_is_filled_by_proj_inquire_ex(bench: Bench) -> None:
    seq = bench.upload(binary_pictures(4), picture_us=1000)
    bench.alp.SeqControl(ALP_SEQ_REPEAT, 3, SequenceId=seq)
    bench.alp.Run(SequenceId=seq, loop=False)
    bench.at(5_500)  # picture 5 of 12: iteration 1 (0-based), frame 1
    progress = tAlpProjProgress()
    assert bench.lib.AlpProjInquireEx(bench.alp.ALP_ID, ALP_PROJ_PROGRESS, ct.byref(progress)) == ALP_OK
    assert (progress.SequenceId, progress.nSequenceCounter, progress.nFrameCounter) == (seq.value, 2, 3)
    assert (progress.nPictureTime, progress.nFramesPerSubSequence, progress.nFlagse) == (1000, 4, 0)
    bench.at(12_000)
    assert bench.lib.AlpProjInquireEx(bench.alp.ALP_ID, ALP_PROJ_PROGRESS, ct.byref(progress)) == ALP_OK
    assert progress.nFlagse == 1  # ALP_FLAG_QUEUE_IDLE
