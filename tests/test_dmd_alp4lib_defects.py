"""Each ALP4lib 1.1 defect, shown failing on the unmodified package, next to our driver's workaround.

If an ALP4lib upgrade fixes a defect, its "raw" assertion fails here: that is the signal to
revisit (and maybe drop) the workaround in devices/dmd_alp.py.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np
import pytest
from ALP4 import (
    ALP_AVAIL_MEMORY,
    ALP_DATA_BINARY_TOPDOWN,
    ALP_DATA_FORMAT,
    ALP_PROJ_PROGRESS,
    ALP_PROJ_STATE,
    ALPError,
)

from devices.base import DeviceProtocolError
from devices.bench.clock import SimClock
from devices.dmd_alp import AlpRefused, AlpUnknownCode, img_to_bitplane
from devices.dmd_sim import SimulatedDmd

SHAPE = (16, 48)


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def dmd(clock: SimClock) -> Iterator[SimulatedDmd]:
    with SimulatedDmd(clock, shape=SHAPE) as device:
        yield device


def patterns(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, *SHAPE)) < 0.5, 0, 255).astype(np.uint8)


def test_defect1_proj_inquire_passes_four_arguments(dmd: SimulatedDmd) -> None:
    dmd.upload(patterns(2), 0.01)
    dmd.start(continuous=True)
    # ALP4lib calls AlpProjInquire(dev, SequenceId, type, ptr): the library sees the sequence id
    # (0) as the inquire type and refuses it, even though the projection is running.
    with pytest.raises(ALPError, match="parameters is invalid"):
        dmd.alp.ProjInquire(ALP_PROJ_STATE, SequenceId=dmd.alp.Seqs[-1])
    assert dmd.is_projecting()
    dmd.halt()
    assert not dmd.is_projecting()


def test_defect2_proj_inquire_ex_calls_the_wrong_function(dmd: SimulatedDmd, clock: SimClock) -> None:
    dmd.upload(patterns(3), 0.01)
    dmd.start()
    clock.advance(0.015)
    # ALP4lib calls AlpProjInquire (not ...Ex) with a c_double: ALP_PROJ_PROGRESS is refused there.
    with pytest.raises(ALPError, match="parameters is invalid"):
        dmd.alp.ProjInquireEx(ALP_PROJ_PROGRESS)
    progress = dmd.progress()
    assert (progress.sequence_id, progress.iterations_left, progress.frames_left) == (0, 1, 2)
    assert (progress.frames_per_iteration, progress.picture_time_us) == (3, 10_000)


def test_defect3_img_to_bitplane_always_raises(dmd: SimulatedDmd, clock: SimClock) -> None:
    image = patterns(1)[0]
    with pytest.raises(TypeError):
        dmd.alp.ImgToBitPlane(image.ravel(), 0)
    packed = img_to_bitplane(image, 7)
    assert packed.shape == (SHAPE[0], SHAPE[1] // 8)
    np.testing.assert_array_equal(np.unpackbits(packed, axis=-1) * 255, image)
    assert img_to_bitplane(np.array([[0b10, 0b01, 0b11, 0, 0, 0, 0, 0b10]], np.uint8), 1).tolist() == [
        [0b10100001]
    ]
    # 1-bit uploads use it: packed top-down data (8x less to transfer) displays as uploaded.
    gray = np.random.default_rng(1).integers(0, 256, (2, *SHAPE), dtype=np.uint8)
    dmd.upload(gray, 0.01, bit_depth=1)
    assert dmd.alp.SeqInquire(ALP_DATA_FORMAT, SequenceId=dmd.alp.Seqs[-1]) == ALP_DATA_BINARY_TOPDOWN
    dmd.start()
    np.testing.assert_array_equal(dmd.displayed_pattern(clock.now()), np.where(gray[0] >= 128, 255, 0))


def test_defect4_sequence_id_zero_is_falsy(dmd: SimulatedDmd) -> None:
    alp, extras = dmd.alp, dmd.extras
    # Raw ALP4lib on the same device: the first sequence id is 0 ...
    seq0 = alp.SeqAlloc(nbImg=1, bitDepth=8)
    assert seq0.value == 0 and not seq0
    with pytest.raises(ValueError, match="No sequence"):
        alp.SetTiming(pictureTime=5000)  # "default to the last sequence" sees no sequence
    with pytest.raises(AttributeError, match="_raiseError"):
        alp.Run()
    seq1 = alp.SeqAlloc(nbImg=1, bitDepth=8)
    image = np.full(SHAPE, 200, np.uint8)
    alp.SeqPut(image.ravel(), SequenceId=seq0)  # lands in seq1: `if not SequenceId` replaced 0
    np.testing.assert_array_equal(extras.read_picture(dmd.device_id, 1, 0, SHAPE), image)
    assert not extras.read_picture(dmd.device_id, 0, 0, SHAPE).any()
    for seq in (seq0, seq1):
        alp.FreeSeq(SequenceId=seq)

    # The driver: upload to id 0 while ALP4lib's "last sequence" points at another one.
    dmd.upload(patterns(1), 0.01)
    assert dmd.sequence_id == 0
    other = alp.SeqAlloc(nbImg=1, bitDepth=1)
    assert other.value == 1 and alp._lastDDRseq is other
    new = patterns(1, seed=7)
    dmd.upload(new, 0.01)  # frees 0, allocates 0 again, puts into 0
    assert dmd.sequence_id == 0
    np.testing.assert_array_equal(extras.read_picture(dmd.device_id, 0, 0, SHAPE), new[0])
    assert not extras.read_picture(dmd.device_id, 1, 0, SHAPE).any()
    dmd.start()
    np.testing.assert_array_equal(dmd.displayed_pattern(0.0), new[0])


def test_defect5_unknown_error_code_raises_key_error(dmd: SimulatedDmd) -> None:
    assert dmd.extras.inject_error(dmd.serial, 0, 1017) == 0  # a code missing from ALP_ERRORS
    with pytest.raises(KeyError):
        dmd.alp.DevInquire(ALP_AVAIL_MEMORY)
    assert dmd.extras.inject_error(dmd.serial, 0, 1017) == 0
    with pytest.raises(
        AlpUnknownCode, match=r"halt \(AlpDevHalt\) failed: unknown ALP error code \(1017\)"
    ) as caught:
        dmd.halt()
    assert isinstance(caught.value, DeviceProtocolError) and caught.value.code == 1017


def test_defect6_free_seq_swallows_errors(dmd: SimulatedDmd) -> None:
    alp = dmd.alp
    seq = alp.SeqAlloc(nbImg=1, bitDepth=1)
    alp.SetTiming(SequenceId=seq, pictureTime=1000)
    alp.Run(SequenceId=seq, loop=True)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        alp.FreeSeq(SequenceId=seq)  # refused (in use), but only printed ...
    assert "currently in use" in printed.getvalue()
    assert seq not in alp.Seqs  # ... and forgotten, while the device still holds it
    assert alp.SeqInquire(ALP_DATA_FORMAT, SequenceId=seq) == 0
    alp.Halt()
    alp._ALPLib.AlpSeqFree(alp.ALP_ID, seq)

    dmd.upload(patterns(1), 0.01)
    assert dmd.extras.inject_error(dmd.serial, 1, 1008) == 0  # upload: AlpDevHalt ok, AlpSeqFree refused
    with pytest.raises(AlpRefused, match=r"upload \(AlpSeqFree\) failed: ALP_SEQ_IN_USE"):
        dmd.upload(patterns(1), 0.01)
    assert dmd.sequence_id == 0  # still known, so close() can free it
