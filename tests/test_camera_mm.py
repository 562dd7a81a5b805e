"""MicroManagerCamera against Micro-Manager's real DemoCamera adapter (no mock of the core).

The adapters come from the ``mm-test-adapters`` PyPI package whose major version is
the device-interface version of the installed pymmcore (75 for pymmcore 12.5.1.75.x);
the core is started headless with pycromanager's python backend, in this process.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devices.base import Camera, DeviceError, DeviceRefused, DeviceTimeout
from devices.camera_mm import MicroManagerCamera, democam_adapter_path, write_democam_config

mm_test_adapters = pytest.importorskip("mm_test_adapters", reason="needs mm-test-adapters==<device API>.*")

# Small circular buffer: allocating pycromanager's default 1 GB dominates start-up time.
BUFFER_MB = 32


@pytest.fixture(scope="module")
def adapter_dir() -> str:
    return democam_adapter_path()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_democam_config(tmp_path_factory.mktemp("mm") / "MMConfig_democam.cfg")


@pytest.fixture(scope="module")
def shared_cam(adapter_dir: str, config_file: Path) -> Iterator[MicroManagerCamera]:
    cam = MicroManagerCamera(str(config_file), mm_app_path=adapter_dir, buffer_size_mb=BUFFER_MB)
    yield cam
    cam.close()


@pytest.fixture
def cam(shared_cam: MicroManagerCamera) -> MicroManagerCamera:
    """The shared DemoCamera, reset to full frame, binning 1, 10 ms, no sequence."""
    shared_cam.stop_sequence()
    shared_cam.set_binning(1)
    shared_cam.clear_roi()
    shared_cam.set_exposure(0.01)
    return shared_cam


def test_adapter_version_matches_pymmcore(adapter_dir: str) -> None:
    import pymmcore

    interface = int(pymmcore.__version__.split(".")[3])
    assert int(mm_test_adapters.__version__.split(".")[0]) == interface
    assert f"Device API version {interface}" in pymmcore.CMMCore().getAPIVersionInfo()
    assert (Path(adapter_dir) / "libmmgr_dal_DemoCamera.so.0").is_file()


def test_implements_camera_protocol_and_identity(cam: MicroManagerCamera) -> None:
    assert isinstance(cam, Camera)
    ident = cam.identity()
    assert ident["device_adapter"] == "DemoCamera"
    assert ident["device_name"] == "DCam"
    assert ident["camera_label"] == "Camera"
    assert ident["core_version"].startswith("MMCore version")
    assert "Device API version 75" in ident["device_api"]
    assert ident["pixel_type"] == "16bit"
    assert ident["bit_depth"] == "16"
    assert all(isinstance(v, str) for v in ident.values())
    assert cam.sensor_shape == (512, 512)


def test_snap_shape_dtype_and_exposure_round_trip(cam: MicroManagerCamera) -> None:
    cam.set_exposure(0.0125)
    assert cam.exposure_s == pytest.approx(0.0125)
    f1 = cam.snap()
    f2 = cam.snap()
    assert f1.image.shape == (512, 512)
    assert f1.image.dtype == np.uint16
    assert f1.image.max() > f1.image.min()  # the demo pattern, not a blank buffer
    assert f1.exposure_s == pytest.approx(0.0125)
    assert f2.frame_number == f1.frame_number + 1
    assert f2.timestamp_s > f1.timestamp_s
    with pytest.raises(DeviceRefused):
        cam.set_exposure(0.0)


def test_roi_gives_smaller_image(cam: MicroManagerCamera) -> None:
    cam.set_roi(10, 20, 100, 50)
    assert cam.roi == (10, 20, 100, 50)
    assert cam.snap().image.shape == (50, 100)
    cam.clear_roi()
    assert cam.roi == (0, 0, 512, 512)
    assert cam.snap().image.shape == (512, 512)
    with pytest.raises(DeviceRefused):
        cam.set_roi(500, 0, 100, 10)  # past the right edge


def test_binning_through_property_and_roi_in_sensor_pixels(cam: MicroManagerCamera) -> None:
    cam.set_binning(2)
    assert cam.binning == 2
    assert cam.core.get_property("Camera", "Binning") == "2"
    assert cam.snap().image.shape == (256, 256)
    assert cam.roi == (0, 0, 512, 512)  # unbinned pixels
    cam.set_roi(40, 60, 200, 100)
    assert cam.snap().image.shape == (50, 100)
    assert cam.roi == (40, 60, 200, 100)
    cam.set_binning(4)  # the requested ROI survives a binning change
    assert cam.snap().image.shape == (25, 50)
    assert cam.roi == (40, 60, 200, 100)
    with pytest.raises(DeviceRefused, match="allowed"):
        cam.set_binning(3)


def test_sequence_of_tagged_frames(cam: MicroManagerCamera) -> None:
    cam.set_exposure(0.005)
    first = cam.snap().frame_number
    n = 8
    cam.start_sequence(n, 0.0)
    frames = [cam.read_frame(timeout_s=5.0) for _ in range(n)]
    numbers = [f.frame_number for f in frames]
    times = [f.timestamp_s for f in frames]
    assert numbers == list(range(first + 1, first + 1 + n))
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    # camera-timed: consecutive frames at least about one exposure apart (ms resolution of the tag)
    assert min(np.diff(times)) >= 0.004
    assert all(f.image.shape == (512, 512) and f.image.dtype == np.uint16 for f in frames)
    assert frames[0].metadata["tags"]["ImageNumber"] == "0"
    assert frames[-1].metadata["tags"]["Camera"] == "Camera"
    with pytest.raises(DeviceTimeout):
        cam.read_frame(timeout_s=0.1)
    # numbering continues across sequences (Micro-Manager's ImageNumber restarts at 0)
    cam.start_sequence(2, 0.0)
    again = [cam.read_frame().frame_number for _ in range(2)]
    assert again == [numbers[-1] + 1, numbers[-1] + 2]


def test_sequence_with_roi_and_binning(cam: MicroManagerCamera) -> None:
    cam.set_binning(2)
    cam.set_roi(0, 0, 128, 64)
    cam.start_sequence(3, 0.0)
    shapes = {cam.read_frame().image.shape for _ in range(3)}
    assert shapes == {(32, 64)}


def test_read_frame_timeout_and_stop(cam: MicroManagerCamera) -> None:
    with pytest.raises(DeviceTimeout, match="no sequence"):
        cam.read_frame(timeout_s=0.05)
    cam.set_exposure(1.0)
    cam.start_sequence(3, 0.0)
    t = time.monotonic()
    with pytest.raises(DeviceTimeout, match="within 0.1"):
        cam.read_frame(timeout_s=0.1)
    assert time.monotonic() - t < 0.8
    with pytest.raises(DeviceRefused, match="already running"):
        cam.start_sequence(1, 0.0)
    cam.stop_sequence()
    assert not cam.core.is_sequence_running()
    cam.stop_sequence()  # safe when none runs


def test_settings_are_refused_while_a_sequence_runs(cam: MicroManagerCamera) -> None:
    """The core accepts them, but a ROI change under a running sequence ends it (or segfaults)."""
    cam.set_exposure(0.05)
    cam.start_sequence(100, 0.0)
    for change in (
        lambda: cam.set_exposure(0.02),
        lambda: cam.set_roi(0, 0, 100, 100),
        cam.clear_roi,
        lambda: cam.set_binning(2),
        cam.snap,
    ):
        with pytest.raises(DeviceRefused, match="while a sequence is running"):
            change()
    assert cam.exposure_s == pytest.approx(0.05)
    assert cam.roi == (0, 0, 512, 512)
    assert cam.read_frame(timeout_s=5.0).image.shape == (512, 512)  # the sequence is unharmed
    cam.stop_sequence()
    cam.set_exposure(0.02)  # accepted again once stopped
    assert cam.exposure_s == pytest.approx(0.02)


def test_missing_config_file_names_it(adapter_dir: str, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_config.cfg"
    with pytest.raises(DeviceError, match="no_such_config.cfg"):
        MicroManagerCamera(str(missing), mm_app_path=adapter_dir, buffer_size_mb=BUFFER_MB)


def test_broken_config_names_file_and_core_error(adapter_dir: str, tmp_path: Path) -> None:
    bad = tmp_path / "broken.cfg"
    bad.write_text("Device,Camera,NoSuchAdapter,DCam\n")
    with pytest.raises(DeviceError, match="broken.cfg") as err:
        MicroManagerCamera(str(bad), mm_app_path=adapter_dir, buffer_size_mb=BUFFER_MB)
    assert "NoSuchAdapter" in str(err.value)


def test_bad_adapter_folder_and_backend(config_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="not found"):
        MicroManagerCamera(str(config_file), mm_app_path=str(tmp_path / "nowhere"))
    with pytest.raises(DeviceRefused, match="backend"):
        MicroManagerCamera(str(config_file), backend="matlab")


def test_close_twice_stops_sequence_and_releases_core(adapter_dir: str, config_file: Path) -> None:
    from mmpycorex import launcher

    with MicroManagerCamera(str(config_file), mm_app_path=adapter_dir, buffer_size_mb=BUFFER_MB) as cam:
        core = cam.core
        assert any(c is core for c in launcher._PYMMCORES)
        cam.set_exposure(0.05)
        cam.start_sequence(100, 0.0)
        assert core.is_sequence_running()
        cam.close()
        assert not core.is_sequence_running()
        assert "Camera" not in list(core.getLoadedDevices())
        assert not any(c is core for c in launcher._PYMMCORES)
        cam.close()  # idempotent
        with pytest.raises(DeviceError, match="closed"):
            cam.snap()
    # __exit__ closed it a third time without complaint


@pytest.mark.skipif(shutil.which("java") is None, reason="needs a java executable")
def test_java_backend_without_micromanager_app_fails_clearly(config_file: Path, tmp_path: Path) -> None:
    """The Java backend needs Micro-Manager's jars; a folder without them gives a DeviceError, twice.

    The second attempt checks that the failed launch was forgotten (mmpycorex would
    otherwise report the ZMQ port as in use for the rest of the process).
    """
    for _ in range(2):
        with pytest.raises(DeviceError, match="plugins/Micro-Manager") as err:
            MicroManagerCamera(str(config_file), mm_app_path=str(tmp_path), backend="java", port=4999)
        assert "in use" not in str(err.value)
