"""Building the simulated ALP library: caching, rebuild on change, concurrent builders, failures."""

from __future__ import annotations

import ctypes as ct
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devices.alp_sim.build import LIBRARY_NAME, SOURCE, AlpSimBuildError, build_dir, build_library

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECKLAB_CACHE", str(tmp_path))
    return tmp_path / "alp_sim"


def test_build_uses_cache_dir_and_exports_the_alp_api(cache: Path) -> None:
    folder = build_library()
    assert folder == cache == build_dir()
    library = ct.CDLL(str(folder / LIBRARY_NAME))
    for name in ("AlpDevAlloc", "AlpSeqPutEx", "AlpProjInquireEx", "SimAlpGetDisplayed", "SimAlpSetTime"):
        assert hasattr(library, name), name


def test_current_library_is_not_rebuilt(cache: Path) -> None:
    library = build_library() / LIBRARY_NAME
    before = library.stat()
    build_library()
    after = library.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_rebuilds_when_source_is_newer_or_changed(cache: Path) -> None:
    library = build_library() / LIBRARY_NAME
    os.utime(library, (SOURCE.stat().st_mtime - 100, SOURCE.stat().st_mtime - 100))
    old_inode = library.stat().st_ino
    build_library()
    assert library.stat().st_mtime >= SOURCE.stat().st_mtime
    assert library.stat().st_ino != old_inode  # a new file was renamed into place

    stamp = cache / (LIBRARY_NAME + ".sha256")
    stamp.write_text("stale\n")
    old_inode = library.stat().st_ino
    build_library()
    assert library.stat().st_ino != old_inode
    assert stamp.read_text().strip() != "stale"


def test_concurrent_forced_builds_leave_a_loadable_library(cache: Path) -> None:
    """Four processes rebuild at once; each then loads it through ALP4lib and opens the device."""
    script = textwrap.dedent(
        """
        import contextlib, io
        from ALP4 import ALP4
        from devices.alp_sim.build import build_library
        folder = build_library(force=True)
        with contextlib.redirect_stdout(io.StringIO()):
            alp = ALP4(version="4.3", libDir=str(folder))
            alp.Initialize()
        print(alp.nSizeX, alp.nSizeY)
        alp.Free()
        """
    )
    env = {**os.environ, "SPECKLAB_CACHE": str(cache.parent), "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0]
    assert all(output.strip().endswith("1024 768") for output in outputs)
    assert not list(cache.glob("*.tmp")), "temporary build files were left behind"


def test_compiler_failure_is_a_build_error_with_its_output(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", f"{sys.executable} -c 'import sys; sys.stderr.write(\"boom\"); sys.exit(3)'")
    with pytest.raises(AlpSimBuildError, match="boom"):
        build_library(force=True)
    assert not (cache / LIBRARY_NAME).exists()
    assert not list(cache.glob("*.tmp"))
