"""RunReader on finished runs: several readers of one file in one process stay correct."""

from __future__ import annotations

import numpy as np

from acquisition.reader import RunReader
from models.synthetic import blob_run, write_run


def test_two_readers_of_a_finished_run_both_read_the_stored_frames(tmp_path) -> None:
    path = write_run(blob_run(n_cycles=10, size=32, seed=3), tmp_path / "run.h5")
    with RunReader(path) as first, RunReader(path) as second:
        expected = np.asarray(first.frames[:])
        assert expected.any()  # the synthetic run is not blank, so zeros would be caught
        second.refresh()
        first.refresh()
        np.testing.assert_array_equal(np.asarray(first.frames[:]), expected)
        np.testing.assert_array_equal(np.asarray(second.frames[:]), expected)
