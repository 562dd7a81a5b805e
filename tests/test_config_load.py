"""Config loading: the shipped configs validate, overrides apply, bad configs are refused by key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from acquisition.config import ConfigError, load_config, parse_override
from acquisition.protocols import PROTOCOLS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sim_bench_config_is_all_simulated() -> None:
    cfg = load_config(CONFIGS / "sim-bench.toml")
    assert {cfg.devices.dmd.kind, cfg.devices.camera.kind, cfg.devices.pump.kind} == {"simulated"}
    bench = cfg.bench_config()
    assert (bench.configuration, bench.seed, bench.medium.optical_thickness) == ("reflection", 1, 0.0)
    assert cfg.run.protocol == "bsbd"
    assert cfg.protocol_params("speckle-sim").samples == ["siemens_star", "cells"]
    assert len(cfg.plan()) == 4000


def test_real_bench_example_validates() -> None:
    cfg = load_config(CONFIGS / "real-bench.example.toml")
    assert (cfg.devices.dmd.kind, cfg.devices.camera.kind, cfg.devices.pump.kind) == (
        "alp", "micromanager", "newera",
    )  # fmt: skip
    assert cfg.devices.pump.url == "COM3"
    assert cfg.devices.camera.roi == (1216, 1016, 128, 128)
    assert cfg.protocol_params().frames == 500_000


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg.run.protocol == "bsbd" and cfg.protocol_params().exposure_s == 200e-6


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_frames_shorthand_for_every_protocol(name: str) -> None:
    extra = ["protocols.generalisation.n_train=3", "protocols.generalisation.n_test=1"]
    cfg = load_config(CONFIGS / "sim-bench.toml", [f"run.protocol={name}", "frames=37", *extra])
    assert cfg.run.protocol == name
    assert cfg.protocol_params().frames == 37
    plan = cfg.plan()
    assert len(plan) == 37 and plan.events[-1].index == 36
    # order of --set does not matter: frames follows the final run.protocol
    cfg = load_config(None, ["frames=11", f"run.protocol={name}", *extra])
    assert len(cfg.plan()) == 11


def test_set_overrides_parse_toml_scalars(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "run.realtime=true",
            "run.output_dir=/data/runs",  # bare string
            "protocols.bsbd.exposure_s=1e-3",
            "protocols.fisher-scan.offsets_px=[3, 1]",
            "protocols.speckle-sim.samples=['x', 'y']",
            "devices.pump.rate_ml_per_h=5",
        ],
    )
    assert cfg.run.realtime is True and cfg.run.output_dir == "/data/runs"
    assert cfg.protocol_params("bsbd").exposure_s == 1e-3
    assert cfg.protocol_params("fisher-scan").offsets_px == [1, 3]
    assert cfg.protocol_params("speckle_sim").samples == ["x", "y"]
    assert cfg.devices.pump.rate_ml_per_h == 5.0
    assert parse_override("a.b = 'q'") == (["a", "b"], "q")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_yaml_accepted(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "run:\n  protocol: speckle_sim\nprotocols:\n  speckle-sim:\n    n_masks: 4\n", "c.yaml"
    )
    cfg = load_config(p, [])
    assert cfg.run.protocol == "speckle-sim" and len(cfg.plan()) == 4


def test_underscore_section_name_and_frames(tmp_path: Path) -> None:
    p = _write(tmp_path, '[run]\nprotocol = "speckle-sim"\n[protocols.speckle_sim]\nn_masks = 5\n')
    cfg = load_config(p, ["frames=3"])
    assert cfg.protocol_params().n_masks == 5 and cfg.protocol_params().frames == 3


@pytest.mark.parametrize(
    ("text", "overrides", "key", "problem"),
    [
        ("[run]\nprotocl = 'bsbd'\n", [], "run.protocl", "unknown key"),
        ("[protocols.bsbd]\nexposure_s = -1.0\n", [], "protocols.bsbd.exposure_s", "greater than 0"),
        ("", ["frames=0"], "protocols.bsbd.frames", "greater than or equal to 1"),
        ("[run]\nprotocol = 'sim'\n", [], "run.protocol", "unknown protocol 'sim'"),
        ("[protocols.nope]\nx = 1\n", [], "protocols.nope", "unknown protocol"),
        ("[devices.camera]\nkind = 'alp'\n", [], "devices.camera.kind", "unknown kind 'alp'"),
        ("[devices.pump]\nkind = 'newera'\n", [], "devices.pump.url", "Field required"),
        ("[protocols.bsbd]\ninterval_s = 1e-4\n", [], "protocols.bsbd", "shorter than exposure_s"),
        ("[protocols.bsbd]\ncentre_px = [1, 1]\n", [], "protocols.bsbd", "does not fit"),
        ("", ["protocols.generalisation.case=9"], "protocols.generalisation.case", "'1', '2'"),
    ],
)
def test_bad_configs_name_file_key_and_problem(
    tmp_path: Path, text: str, overrides: list[str], key: str, problem: str
) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p, overrides)
    msg = str(info.value)
    assert str(p) in msg
    assert f"{key}:" in msg
    assert problem in msg


def test_override_origin_is_named() -> None:
    with pytest.raises(ConfigError, match=r"\[from --set frames=-5\]"):
        load_config(None, ["frames=-5"])


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[run\n"))
    with pytest.raises(ConfigError, match="is a value, not a table"):
        load_config(None, ["run.realtime=true", "run.realtime.x=1"])
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[run]\noutput_dir = "d\xe9j\xe0"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin1)


def test_bench_validated_by_the_bench_model(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[bench]\nseed = 4\n"))
    assert cfg.bench_config().seed == 4 and cfg.bench == cfg.bench_config().model_dump(mode="json")
    with pytest.raises(ConfigError, match=r"bench\.seedd: unknown key"):
        load_config(_write(tmp_path, "[bench]\nseedd = 4\n"))


@pytest.mark.parametrize(
    ("protocol", "physics"), [(n, s.simulated_bench) for n, s in sorted(PROTOCOLS.items())]
)
def test_the_bench_images_each_protocol_with_its_own_physics(protocol: str, physics: str) -> None:
    """Left out, bench.configuration follows the protocol; set to another, the run is refused, since the
    frames would be valid files of no protocol's physics (speckle-SIM masks on the reflection bench)."""
    extra = ["protocols.generalisation.n_train=3", "protocols.generalisation.n_test=1"]
    cfg = load_config(CONFIGS / "sim-bench.toml", [f"run.protocol={protocol}", *extra])
    assert cfg.bench_config().configuration == physics
    other = "diffuser" if physics != "diffuser" else "reflection"
    with pytest.raises(ConfigError, match=rf"bench\.configuration: .*--set bench\.configuration={physics}"):
        load_config(CONFIGS / "sim-bench.toml", [f"run.protocol={protocol}", f"bench.configuration={other}"])
    real_camera = ["devices.camera.kind=micromanager", "devices.camera.config_file=x.cfg"]
    load_config(None, [f"run.protocol={protocol}", f"bench.configuration={other}", *extra, *real_camera])


def test_speckle_sim_masks_must_match_the_simulated_bench_grid() -> None:
    base = ["run.protocol=speckle-sim", "protocols.speckle-sim.macro_pixel_px=4"]
    load_config(None, [*base, "bench.speckle_sim.macropixel_dmd_px=4"])
    with pytest.raises(ConfigError, match=r"protocols\.speckle-sim\.macro_pixel_px: masks of 4-mirror"):
        load_config(None, base)


def test_generalisation_targets_must_fit_the_lit_area_of_the_simulated_bench() -> None:
    """The diffuser bench lights ~128x128 mirrors (seed 003): case 5's 128-pixel field at block_px 2
    would leave its shifted test regions in the dark."""
    base = ["run.protocol=generalisation", 'protocols.generalisation.case="5"']
    load_config(None, base)
    with pytest.raises(ConfigError, match=r"generalisation\.block_px: .*256x256 mirrors.*128x128"):
        load_config(None, [*base, "protocols.generalisation.block_px=2"])
    real_camera = ["devices.camera.kind=micromanager", "devices.camera.config_file=x.cfg"]
    load_config(None, [*base, "protocols.generalisation.block_px=2", *real_camera])


def test_to_dict_uses_file_spelling() -> None:
    d = load_config(CONFIGS / "sim-bench.toml").to_dict()
    assert set(d["protocols"]) == set(PROTOCOLS)
    assert d["protocols"]["speckle-sim"]["n_masks"] == 600


def test_device_table_without_kind_is_simulated_and_real_arguments_refused() -> None:
    cfg = load_config(None, ["devices.pump.rate_ml_per_h=3"])
    assert cfg.devices.pump.kind == "simulated" and cfg.devices.pump.rate_ml_per_h == 3.0
    with pytest.raises(ConfigError, match=r"devices\.pump\.url: unknown key"):
        load_config(None, ["devices.pump.url=COM3"])


def test_simulated_sensor_constants_are_validated_and_reach_the_camera() -> None:
    from devices.factory import open_bench

    cfg = load_config(None, ["devices.camera.sensor.read_noise_e=0", "frames=4"])
    with open_bench(cfg) as bench:
        assert bench.camera.identity()["sensor_model"].startswith("qe=0.6,")
        assert "read_noise_e=0," in bench.camera.identity()["sensor_model"]
        assert bench.ground_truth()["sensor"]["read_noise_e"] == 0.0  # stored as numbers for the analysis
    with pytest.raises(ConfigError, match=r"devices\.camera\.sensor.*bogus"):
        load_config(None, ["devices.camera.sensor.bogus=1"])
    with pytest.raises(ConfigError, match=r"qe must be in"):
        load_config(None, ["devices.camera.sensor.qe=2"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("devices.pump.rate_ml_per_h=inf", "devices.pump.rate_ml_per_h"),
        ("devices.pump.timeout_s=inf", "devices.pump.timeout_s"),
        ("devices.camera.sensor.read_noise_e=nan", "devices.camera.sensor.read_noise_e"),
        ("protocols.bsbd.interval_s=inf", "protocols.bsbd.interval_s"),
        ("protocols.bsbd.magnification=inf", "protocols.bsbd.magnification"),
        ("bench.diffuser.photons_per_s=inf", "bench.diffuser.photons_per_s"),
        ("bench.medium.cuvette_path_um=nan", "bench.medium.cuvette_path_um"),
    ],
)
def test_non_finite_numbers_refused(override: str, key: str) -> None:
    """``gt=0`` lets ``inf`` through: it must be refused at load, not when the pump or camera gets it."""
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: Input should be a finite number"):
        load_config(None, [override])


def test_camera_roi_must_be_on_the_sensor_side_of_zero() -> None:
    with pytest.raises(ConfigError, match=r"devices\.camera\.roi\.0: .*\[from --set devices\.camera\.roi="):
        load_config(None, ["devices.camera.roi=[-1, 0, 10, 10]"])
    with pytest.raises(ConfigError, match=r"devices\.camera\.roi\.2: Input should be greater than 0"):
        load_config(None, ["devices.camera.roi=[0, 0, 0, 10]"])


def test_set_names_the_override_behind_a_table_level_error() -> None:
    with pytest.raises(
        ConfigError, match=r"shorter than exposure_s .*\[from --set protocols\.bsbd\.exposure_s=1\]"
    ):
        load_config(None, ["protocols.bsbd.exposure_s=1"])


def test_set_spelled_unlike_the_file_lands_in_the_files_table(tmp_path: Path) -> None:
    p = _write(tmp_path, "[run]\nprotocol = 'speckle-sim'\n[protocols.speckle-sim]\nn_masks = 7\nseed = 3\n")
    cfg = load_config(p, ["protocols.speckle_sim.n_masks=2"])
    assert cfg.protocol_params().n_masks == 2 and cfg.protocol_params().seed == 3


def test_frames_shorthand_when_protocols_is_not_a_table() -> None:
    with pytest.raises(ConfigError, match="protocols is a value, not a table"):
        load_config(None, ["protocols=1", "frames=3"])
