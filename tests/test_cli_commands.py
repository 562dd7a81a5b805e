"""The ``specklab`` command: info --json, refusal of bad configs, plugin registration, PNG snaps."""

from __future__ import annotations

import json
import struct
import sys
import zlib

import numpy as np
import pytest
from test_engine_helpers import FakeCamera, FakeDmd, bsbd_plan, run_info

from acquisition import cli
from acquisition.engine import BenchEngine
from acquisition.runner import record
from devices.bench.clock import SimClock


@pytest.fixture
def run_file(tmp_path):
    plan = bsbd_plan(n_frames=48, n_positions=5)
    clock = SimClock()
    dmd = FakeDmd(clock)
    out = tmp_path / "run.h5"
    assert record(plan, BenchEngine(dmd, FakeCamera(clock, dmd)), run_info(plan), out).status == "complete"
    return out


def test_info_json_fields(run_file, capsys):
    assert cli.main(["info", str(run_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["protocol"] == "bsbd"
    assert info["status"] == "complete"
    assert info["frames"] == 48
    assert info["shape"] == [12, 16]
    assert info["dtype"] == "uint16"
    assert info["roles"] == {"B": 24, "S": 12, "D": 12}
    assert info["positions"]["count"] == 5
    assert len(info["positions"]["px"]) == 5 and all(len(p) == 2 for p in info["positions"]["px"])
    assert info["start_time"] and info["end_time"]


def test_info_human_and_errors(run_file, tmp_path, capsys):
    assert cli.main(["info", str(run_file)]) == 0
    out = capsys.readouterr().out
    assert "bsbd" in out and "complete" in out and "48 of 48" in out
    assert cli.main(["info", str(tmp_path / "nope.h5")]) == cli.EXIT_USAGE
    assert "no run file" in capsys.readouterr().err


def test_bad_config_refused_before_any_device(tmp_path, monkeypatch, capsys):
    opened = []
    import devices.factory

    monkeypatch.setattr(devices.factory, "open_bench", lambda cfg: opened.append(cfg))
    bad = tmp_path / "bad.toml"
    bad.write_text('[run]\nprotocol = "bsbd"\n[protocols.bsbd]\nexposure_s = -1\n')
    out = tmp_path / "run.h5"
    code = cli.main(["acquire", "--config", str(bad), "--out", str(out), "--no-progress"])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "exposure_s" in err
    assert not out.exists() and opened == []
    # an unknown --set key and an unknown protocol are refused the same way
    good = tmp_path / "good.toml"
    good.write_text("")
    assert cli.main(["acquire", "--config", str(good), "--set", "run.nonsense=1", "--out", str(out)]) == 2
    assert cli.main(["acquire", "--config", str(good), "--protocol", "nope", "--out", str(out)]) == 2
    assert not out.exists() and opened == []


@pytest.mark.parametrize("option", ["--block-size", "--flush-every"])
def test_non_positive_counts_are_usage_errors(option, tmp_path, monkeypatch, capsys):
    import devices.factory

    monkeypatch.setattr(devices.factory, "open_bench", lambda cfg: pytest.fail("device opened"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["acquire", "--out", str(tmp_path / "r.h5"), option, "0"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert f"argument {option}: must be an integer >= 1" in capsys.readouterr().err


def test_existing_output_refused(run_file, tmp_path, monkeypatch, capsys):
    import devices.factory

    monkeypatch.setattr(devices.factory, "open_bench", lambda cfg: pytest.fail("device opened"))
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    before = run_file.read_bytes()
    assert cli.main(["acquire", "--config", str(cfg), "--out", str(run_file), "--set", "frames=4"]) == 2
    assert "exists" in capsys.readouterr().err
    assert run_file.read_bytes() == before


def test_replay_command(run_file, tmp_path, capsys):
    copy = tmp_path / "copy.h5"
    assert cli.main(["replay", str(run_file), "--no-progress", "--to", str(copy)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "complete" and out["frames"] == 48
    assert out["roles"]["D"]["frames"] == 12
    assert cli.main(["info", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 48


def test_replay_never_overwrites_a_run_unasked(run_file, tmp_path, capsys):
    """``--to`` the replayed file itself used to truncate it before reading: the run was lost."""
    before = run_file.read_bytes()
    assert cli.main(["replay", str(run_file), "--no-progress", "--to", str(run_file)]) == cli.EXIT_USAGE
    assert "is the run being replayed" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    other.write_bytes(b"keep me")
    assert cli.main(["replay", str(run_file), "--no-progress", "--to", str(other)]) == cli.EXIT_USAGE
    assert "--overwrite" in capsys.readouterr().err
    assert other.read_bytes() == b"keep me" and run_file.read_bytes() == before
    assert cli.main(["replay", str(run_file), "--no-progress", "--to", str(other), "--overwrite"]) == 0
    capsys.readouterr()
    assert (
        cli.main(["replay", str(run_file), "--no-progress", "--to", str(other / "x.h5")]) == cli.EXIT_FAILED
    )
    assert "specklab replay: FileExistsError" in capsys.readouterr().err


@pytest.mark.parametrize("speed", ["0", "nan", "-1"])
def test_replay_bad_speed_is_a_usage_error(run_file, speed, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["replay", str(run_file), "--no-progress", "--speed", speed])
    assert stop.value.code == cli.EXIT_USAGE
    assert "argument --speed: must be a finite number > 0" in capsys.readouterr().err


def test_replay_ctrl_c_exits_as_aborted(run_file, monkeypatch, capsys):
    import os
    import signal

    from acquisition import sinks

    original = sinks.RoleSummarySink.frame

    def frame_then_ctrl_c(self, frame, event):
        original(self, frame, event)
        if event.index == 0:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sinks.RoleSummarySink, "frame", frame_then_ctrl_c)
    # paced (48 frames 10 ms apart, at half speed: ~1 s), so the Ctrl-C lands mid-replay
    assert cli.main(["replay", str(run_file), "--no-progress", "--speed", "0.5"]) == cli.EXIT_ABORTED
    assert json.loads(capsys.readouterr().out)["status"] == "aborted"


def test_device_refusing_its_settings_is_one_line_not_a_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[devices.camera]\nroi = [100, 0, 100, 10]\n")  # off the simulated 128x128 sensor
    out = tmp_path / "run.h5"
    args = ["--config", str(cfg), "--set", "frames=4"]
    assert cli.main(["acquire", *args, "--out", str(out), "--no-progress"]) == cli.EXIT_FAILED
    assert "DeviceRefused" in capsys.readouterr().err and not out.exists()
    assert cli.main(["snap", *args, "--out", str(tmp_path / "s.png")]) == cli.EXIT_FAILED
    assert "DeviceRefused" in capsys.readouterr().err


def test_unwritable_output_is_one_line_not_a_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = ["--config", str(cfg), "--set", "frames=4", "--no-progress"]
    assert cli.main(["acquire", *args, "--out", str(blocker / "run.h5")]) == cli.EXIT_FAILED
    assert "specklab acquire: FileExistsError" in capsys.readouterr().err
    assert cli.main(["acquire", *args, "--out", str(tmp_path), "--overwrite"]) == cli.EXIT_USAGE
    assert "is a folder" in capsys.readouterr().err


def test_plugins_registered_and_missing_ones_skipped(monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("analysis.cli")
    fake.register = lambda sub: calls.append(sub.add_parser("fake-analysis"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "analysis.cli", fake)
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("analysis.cli", "specklab_nonexistent_pkg.cli"))
    with pytest.raises(ModuleNotFoundError):  # a missing *parent* package is not "module not written yet"
        cli.build_parser()
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("analysis.cli", "models.cli_not_written_yet"))
    parser = cli.build_parser()
    assert calls and parser.parse_args(["fake-analysis"]).command == "fake-analysis"


def test_plugin_with_broken_import_is_not_swallowed(monkeypatch, tmp_path):
    pkg = tmp_path / "specklab_fakeplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("import specklab_missing_dependency_xyz\n\ndef register(sub):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("specklab_fakeplugin.cli",))
    with pytest.raises(ModuleNotFoundError, match="specklab_missing_dependency_xyz"):
        cli.build_parser()


def _read_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(tag + payload)
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif tag == b"IDAT":
            idat += payload
        pos += 12 + length
    w, h, depth = header[0], header[1], header[2]
    raw = zlib.decompress(idat)
    stride = w * depth // 8 + 1
    rows = [raw[r * stride + 1 : (r + 1) * stride] for r in range(h)]
    return np.frombuffer(b"".join(rows), dtype=">u2" if depth == 16 else "u1").reshape(h, w)


def test_write_png_round_trip(tmp_path):
    img = np.arange(12 * 7, dtype=np.uint16).reshape(12, 7) * 700
    cli.write_png(tmp_path / "a.png", img)
    np.testing.assert_array_equal(_read_png(tmp_path / "a.png"), img)
