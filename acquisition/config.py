"""The specklab config file (TOML, YAML accepted): validated completely before any device moves.

Sections: ``[bench]`` (the virtual bench, validated by ``devices.bench.config.BenchConfig`` when that
module exists), ``[devices.dmd|camera|pump]`` (driver choice by ``kind`` and driver arguments),
``[run]`` (output, flushing, realtime, which protocol) and ``[protocols.<name>]`` (parameters of each
protocol, see ``docs/protocols.md``). Every model forbids unknown keys, so a typo is reported instead
of silently running the default. ``--set key=value`` overrides use dotted keys with TOML scalar
values; ``frames=N`` is shorthand for the total frames of the chosen protocol.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from acquisition.events import Plan
from acquisition.protocols import PROTOCOLS, ProtocolParams, canonical_name
from acquisition.protocols import expand as expand_protocol


class ConfigError(ValueError):
    """A config that cannot be run; the message names the file, the key and the problem."""


class _Strict(BaseModel):
    # allow_inf_nan=False: ``gt=0`` lets ``inf`` through, and an infinite pump rate or timeout would
    # only fail once the devices are open
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- devices ------------------------------------------------------------------------------------------


class SimulatedDmdConfig(_Strict):
    """The ALP4lib driver on the simulated ``libalp43.so``; the DMD follows the bench clock."""

    kind: Literal["simulated"] = "simulated"
    shape: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = (768, 1024)


class AlpDmdConfig(_Strict):
    """A Vialux DMD through ALP4lib (``AlpDmd(version, lib_dir, device_number)``)."""

    kind: Literal["alp"]
    version: str = "4.3"
    lib_dir: str | None = None
    device_number: int | None = None
    shape: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = Field(
        default=(768, 1024), description="(rows, cols) expected; checked against the device when opened"
    )


_Offset = Annotated[int, Field(ge=0)]
_Extent = Annotated[int, Field(gt=0)]


class _CameraCommon(_Strict):
    roi: tuple[_Offset, _Offset, _Extent, _Extent] | None = Field(
        default=None, description="(x, y, width, height)"
    )
    binning: int = Field(default=1, ge=1)


class SimulatedCameraConfig(_CameraCommon):
    """The simulated sCMOS; its image comes from the virtual bench."""

    kind: Literal["simulated"] = "simulated"
    seed: int = 0
    sensor: dict[str, float] = Field(
        default_factory=dict,
        description="SensorModel constants replacing the Zyla 5.5 defaults (qe, read_noise_e, ...)",
    )

    @field_validator("sensor")
    @classmethod
    def _sensor_is_a_valid_model(cls, value: dict[str, float]) -> dict[str, float]:
        from devices.bench.sensor import SensorModel

        try:
            SensorModel(**value)
        except TypeError as exc:  # an unknown constant
            raise ValueError(f"unknown sensor constant: {exc}") from exc
        return value


class MicroManagerCameraConfig(_CameraCommon):
    """Micro-Manager camera: ``MicroManagerCamera(config_file, mm_app_path, backend, camera_label)``."""

    kind: Literal["micromanager"]
    config_file: str
    mm_app_path: str | None = None
    backend: Literal["python", "java"] = "python"
    camera_label: str | None = None


class _PumpCommon(_Strict):
    address: int = Field(default=0, ge=0, le=99)
    baudrate: int = Field(default=19200, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    diameter_mm: float = Field(default=14.5, gt=0, description="syringe inner diameter (10 ml BD: 14.5 mm)")
    rate_ml_per_h: float = Field(default=7.0, gt=0, description="seed 000: around 7 ml/h")
    direction: Literal["infuse", "withdraw"] = "infuse"


class SimulatedPumpConfig(_PumpCommon):
    """The NE-1000 pump simulator served on a pty, driven by the real New Era driver."""

    kind: Literal["simulated"] = "simulated"


class NewEraPumpConfig(_PumpCommon):
    """A New Era syringe pump (``NewEraPump(url, address, baudrate, timeout_s)``)."""

    kind: Literal["newera"]
    url: str = Field(description="pyserial URL or port, e.g. /dev/ttyUSB0 or socket://host:port")


DmdConfig = Annotated[SimulatedDmdConfig | AlpDmdConfig, Field(discriminator="kind")]
CameraConfig = Annotated[SimulatedCameraConfig | MicroManagerCameraConfig, Field(discriminator="kind")]
PumpConfig = Annotated[SimulatedPumpConfig | NewEraPumpConfig, Field(discriminator="kind")]


class DevicesConfig(_Strict):
    """One driver per device; a table without ``kind`` means the simulated device (the default bench)."""

    dmd: DmdConfig = Field(default_factory=SimulatedDmdConfig)
    camera: CameraConfig = Field(default_factory=SimulatedCameraConfig)
    pump: PumpConfig = Field(default_factory=SimulatedPumpConfig)

    @model_validator(mode="before")
    @classmethod
    def _simulated_by_default(cls, data: Any) -> Any:
        # A real driver always needs arguments (port, config file) that the simulated model forbids,
        # so a forgotten ``kind`` on a real bench still fails, naming the unknown key.
        if isinstance(data, dict):
            data = {
                k: ({"kind": "simulated", **v} if isinstance(v, dict) and "kind" not in v else v)
                for k, v in data.items()
            }
        return data


# --- run and protocols -------------------------------------------------------------------------------


class RunConfig(_Strict):
    protocol: str = Field(default="bsbd", description="the protocol this run executes")
    output_dir: str = "runs"
    flush_interval_s: float = Field(default=2.0, gt=0, description="HDF5 flush period (bounds data loss)")
    realtime: bool = Field(default=False, description="simulated bench follows the wall clock (live view)")

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        try:
            return canonical_name(v)
        except KeyError as e:
            raise ValueError(e.args[0]) from None


def _field_name(protocol: str) -> str:
    return protocol.replace("-", "_")


ProtocolsConfig: type[BaseModel] = create_model(  # one field per registered protocol, aliased to its name
    "ProtocolsConfig",
    __config__=ConfigDict(extra="forbid", frozen=True, populate_by_name=True),
    **{
        _field_name(name): (spec.params, Field(default_factory=spec.params, alias=name))
        for name, spec in PROTOCOLS.items()
    },  # type: ignore[call-overload]
)


class SpecklabConfig(_Strict):
    """The whole validated config. ``bench`` stays a dict (the bench owns its schema)."""

    bench: dict[str, Any] = Field(default_factory=dict)
    devices: DevicesConfig = Field(default_factory=DevicesConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    protocols: ProtocolsConfig = Field(default_factory=ProtocolsConfig)  # type: ignore[valid-type]

    def protocol_params(self, name: str | None = None) -> ProtocolParams:
        """Validated parameters of ``name`` (default: the run's protocol)."""
        return getattr(self.protocols, _field_name(canonical_name(name or self.run.protocol)))

    def protocol_config(self, name: str | None = None) -> dict[str, Any]:
        """The protocol's parameters as a plain JSON-able dict (what :func:`expand` and the run file take)."""
        return self.protocol_params(name).model_dump(mode="json")

    @property
    def dmd_shape(self) -> tuple[int, int]:
        return tuple(self.devices.dmd.shape)  # type: ignore[return-value]

    def plan(self, dmd_shape: tuple[int, int] | None = None) -> Plan:
        """Expand the run's protocol (pure); ``dmd_shape`` defaults to the configured DMD."""
        return expand_protocol(self.run.protocol, self.protocol_config(), dmd_shape or self.dmd_shape)

    def bench_config(self) -> Any:
        """The virtual bench's ``BenchConfig`` built from ``[bench]`` (imported here: physics on demand)."""
        from devices.bench.config import BenchConfig

        return BenchConfig.model_validate(self.bench)

    def to_dict(self) -> dict[str, Any]:
        """The full config as plain data, protocol names as in the file (for storing with a run)."""
        return self.model_dump(mode="json", by_alias=True)


# --- loading ------------------------------------------------------------------------------------------


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            data = {} if data is None else data
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {e}") from e
    except Exception as e:  # yaml.YAMLError without importing yaml at module level
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of sections, not {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b.c=value'`` -> (['a', 'b', 'c'], value); the value is a TOML scalar/array, else a bare string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected key=value with a dotted key, e.g. run.realtime=true")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # paths, names: writing them unquoted on a command line is the common case
    return [part.strip() for part in key.split(".")], value


def _set_in(data: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    node = data
    for i, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {text!r}: {'.'.join(keys[: i + 1])} is a value, not a table")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, str]:
    """Apply ``--set`` overrides in place; returns {dotted key: override text} for error messages.

    ``frames=N`` is applied last, to ``protocols.<run.protocol>.frames``, so that
    ``--set run.protocol=fisher-scan --set frames=100`` means 100 fisher-scan frames.
    """
    _normalise_protocol_keys(data)  # so that an override spelled either way lands in the file's table
    origin: dict[str, str] = {}
    frames: tuple[Any, str] | None = None
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["frames"]:
            frames = (value, text)
            continue
        keys = _canonical_keys(keys)
        _set_in(data, keys, value, text)
        origin[".".join(keys)] = text
    if frames is not None:
        run = data.get("run", {})
        name = run.get("protocol", RunConfig().protocol) if isinstance(run, dict) else RunConfig().protocol
        try:
            name = canonical_name(str(name))
        except KeyError as e:
            raise ConfigError(f"--set {frames[1]!r}: {e.args[0]} in run.protocol") from None
        keys = ["protocols", name, "frames"]
        _set_in(data, keys, frames[0], frames[1])
        origin[".".join(keys)] = frames[1]
    return origin


def _normalise_protocol_keys(data: dict[str, Any]) -> None:
    """Accept ``[protocols.speckle_sim]`` for ``[protocols.speckle-sim]`` (TOML users type either)."""
    table = data.get("protocols")
    if isinstance(table, dict):
        for key in list(table):
            alias = str(key).replace("_", "-")
            if alias != key and alias in PROTOCOLS and alias not in table:
                table[alias] = table.pop(key)


_DEVICE_KINDS = ("simulated", "alp", "micromanager", "newera")
_NO_INPUT_ECHO = ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found")


def _canonical_keys(keys: list[str]) -> list[str]:
    """``protocols.speckle_sim...`` as ``protocols.speckle-sim...`` (the registry's spelling)."""
    if len(keys) > 1 and keys[0] == "protocols" and keys[1].replace("_", "-") in PROTOCOLS:
        return ["protocols", keys[1].replace("_", "-"), *keys[2:]]
    return keys


def _origin_hint(key: str, origin: Mapping[str, str] | None) -> str:
    """`` [from --set ...]`` for each override that set ``key``, a table holding it or a value inside it.

    An error can sit above the overridden value (``protocols.bsbd``: interval shorter than exposure)
    or below it (``devices.camera.roi.0`` from ``--set devices.camera.roi=[...]``).
    """
    want = _canonical_keys(key.split("."))
    hits = []
    for k, text in (origin or {}).items():
        have = _canonical_keys(k.split("."))
        if have[: len(want)] == want or want[: len(have)] == have:
            hits.append(f" [from --set {text}]")
    return "".join(hits)


def format_validation_error(
    error: ValidationError, source: str, origin: Mapping[str, str] | None = None, prefix: str = ""
) -> str:
    """One readable message: every problem on its own line as ``key: problem (got value)``."""
    lines = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        if len(loc) > 2 and loc[0] == "devices" and loc[2] in _DEVICE_KINDS:
            del loc[2]  # pydantic puts the discriminated-union tag in the path; the file has no such key
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            if len(loc) == 2 and loc[0] == "protocols":
                msg = f"unknown protocol (known: {', '.join(sorted(PROTOCOLS))})"
            else:
                msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            loc.append("kind")
            msg = f"unknown kind {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
        elif err["type"] == "union_tag_not_found":
            loc.append("kind")
            msg = 'missing: say which driver, e.g. kind = "simulated"'
        key = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "(top level)"
        line = f"  {key}: {msg}"
        if err["type"] not in _NO_INPUT_ECHO and not isinstance(err.get("input"), dict):
            line += f" (got {err.get('input')!r})"
        lines.append(line + _origin_hint(key, origin))
    return f"{source}: invalid configuration\n" + "\n".join(lines)


def validate_config(
    data: Mapping[str, Any], source: str = "<config>", origin: Mapping[str, str] | None = None
) -> SpecklabConfig:
    """Validate plain data as a :class:`SpecklabConfig`, check ``[bench]`` and expand the run's protocol.

    Expanding is cheap (lazy) and catches what per-field checks cannot, e.g. a target that does not
    fit on the configured DMD, before any device is opened.
    """
    data = dict(data)
    _normalise_protocol_keys(data)
    try:
        cfg = SpecklabConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, origin)) from None
    if "configuration" not in cfg.bench:  # the virtual bench's physics: by default the protocol's own
        physics = PROTOCOLS[canonical_name(cfg.run.protocol)].simulated_bench
        cfg = cfg.model_copy(update={"bench": {"configuration": physics, **cfg.bench}})
    try:
        bench = cfg.bench_config()
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, origin, prefix="bench.")) from None
    cfg = cfg.model_copy(update={"bench": bench.model_dump(mode="json")})
    try:
        cfg.plan()
    except (ValueError, KeyError) as e:
        key = f"protocols.{cfg.run.protocol}"
        raise ConfigError(
            f"{source}: invalid configuration\n  {key}: {e}{_origin_hint(key, origin)}"
        ) from None
    # the simulated bench says what it would image wrongly
    from devices.factory import simulated_bench_problems

    problems = simulated_bench_problems(cfg)
    if problems:
        lines = [f"  {key}: {why}{_origin_hint(key, origin)}" for key, why in problems]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    return cfg


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> SpecklabConfig:
    """Read a TOML (or ``.yaml``/``.yml``) config, apply ``--set`` overrides and validate everything.

    ``path=None`` starts from the built-in defaults (the simulated bench). Pure: no device is touched.
    """
    source = str(path) if path is not None else "<defaults>"
    data = _read_file(Path(path)) if path is not None else {}
    origin = apply_overrides(data, list(overrides))
    return validate_config(data, source, origin)


__all__ = [
    "ConfigError", "SpecklabConfig", "DevicesConfig", "RunConfig", "ProtocolsConfig", "load_config",
    "validate_config", "apply_overrides", "parse_override", "format_validation_error",
    "SimulatedDmdConfig", "AlpDmdConfig", "SimulatedCameraConfig", "MicroManagerCameraConfig",
    "SimulatedPumpConfig", "NewEraPumpConfig",
]  # fmt: skip
