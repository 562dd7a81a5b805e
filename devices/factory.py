"""Build the bench's devices from a validated config, and always close them again.

``with open_bench(config) as bench:`` yields a :class:`Bench` holding the DMD, camera and
pump (plus, for a simulated bench, the shared :class:`SimClock`, the
:class:`~devices.bench.bench.VirtualBench` and the pump simulator). Every device that was
opened is closed on exit in reverse order, also when opening a later one fails, so a
half-built bench never leaves a pump running or a pty open.

Simulated wiring (docs/architecture.md, "How the simulated devices meet the bench"): one
SimClock shared by everything; the SimulatedDmd; a SimulatedPumpServer on a pty driven by
the *real* NewEraPump driver; the VirtualBench reading the picture on the DMD
(``pattern_source = dmd.displayed_pattern``) and the pump model's flow
(``flow_source = server.flow_ml_per_h``); the SimulatedCamera imaging the VirtualBench.
Each device is chosen by its ``kind`` in ``[devices.*]``, so a real DMD can be combined
with a simulated pump for bench debugging. Driver modules are imported only when their
kind is used: a simulated run needs neither ALP4lib's DLL nor Micro-Manager.

Samples (speckle-SIM images one sample per block of masks): the bench's ``sample_holder`` is a
:class:`~devices.sample_holder.SimulatedSampleHolder` when the camera images the virtual bench (it
switches the bench's density), else a :class:`~devices.sample_holder.ManualSampleHolder` that asks
the operator (on the terminal when one is attached; a GUI sets ``bench.sample_holder.confirm``).
:func:`simulated_bench_problems` says, at config load, how the virtual bench would image a run
wrongly (another protocol's physics or DMD, samples it cannot mount, masks on another grid, targets
beyond its lit area).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devices.base import Camera, DeviceRefused, Dmd, Pump, SampleHolder

if TYPE_CHECKING:  # pragma: no cover
    from acquisition.config import SpecklabConfig
    from devices.bench.clock import SimClock

log = logging.getLogger(__name__)


@dataclass
class Bench:
    """Open devices of one bench; ``virtual`` / ``clock`` / ``pump_server`` only when simulated."""

    dmd: Dmd
    camera: Camera
    pump: Pump | None = None
    clock: SimClock | None = None
    virtual: Any = None  # devices.bench.bench.VirtualBench
    pump_server: Any = None  # devices.pump_sim.SimulatedPumpServer
    kinds: dict[str, str] = field(default_factory=dict)
    sample_holder: SampleHolder | None = None  # mounts the next sample (speckle-sim), see module doc

    @property
    def simulated(self) -> bool:
        """True when the camera images the virtual bench (the data are simulated)."""
        return self.virtual is not None

    def identities(self) -> dict[str, dict[str, str]]:
        out = {"dmd": dict(self.dmd.identity()), "camera": dict(self.camera.identity())}
        if self.pump is not None:
            out["pump"] = dict(self.pump.identity())
        return out

    def frame_shape(self) -> tuple[int, int]:
        """(rows, cols) of the frames the camera delivers with its current ROI and binning."""
        _, _, w, h = self.camera.roi
        b = self.camera.binning
        return (h // b, w // b)

    def ground_truth(self) -> dict[str, Any]:
        """What the virtual bench knows to be true (empty for a real bench).

        Includes the simulated camera's sensor constants (``sensor``), which the analytic Fisher
        information of a run depends on, as numbers rather than only inside the camera's identity text.
        """
        if self.virtual is None or not hasattr(self.virtual, "ground_truth"):
            return {}
        truth = dict(self.virtual.ground_truth())
        sensor = getattr(self.camera, "sensor", None)
        if sensor is not None:
            truth["sensor"] = sensor.as_dict()
        return truth

    def sample_ground_truth(self, names: Iterable[str]) -> dict[str, Any]:
        """Per-sample truth (``{name: {"rho", "rho_blurred"}}``) from the virtual bench; {} for a real one."""
        if self.virtual is None or not hasattr(self.virtual, "sample_ground_truth"):
            return {}
        return dict(self.virtual.sample_ground_truth(list(names)))


def simulated_bench_problems(config: SpecklabConfig) -> list[tuple[str, str]]:
    """(config key, why) for each way the virtual bench would image the run wrongly; [] for a real camera.

    Pure: called by config validation, before any device is opened. Each of these used to give valid
    run files of no protocol's physics, or a failure at the first frame:
    * the bench set up for another protocol's physics (speckle-SIM masks on the reflection bench);
    * a DMD of another shape than the one the bench maps onto the camera;
    * speckle-SIM samples the bench cannot mount, or masks of another macro-pixel than the bench's pupil
      sample (they would reach it as grey averages the protocol never shows);
    * generalisation targets larger than the area the diffuser bench lights (the rest recorded as dark).
    """
    if config.devices.camera.kind != "simulated":
        return []
    from acquisition.protocols import PROTOCOLS, canonical_name
    from devices.bench.samples import SAMPLE_NAMES

    protocol = canonical_name(config.run.protocol)
    params, bench, key = config.protocol_params(), config.bench_config(), f"protocols.{config.run.protocol}"
    problems = []
    wanted = PROTOCOLS[protocol].simulated_bench
    if bench.configuration != wanted:
        problems.append(
            (
                "bench.configuration",
                f"the simulated bench is set up for {bench.configuration!r}, but {protocol} is imaged by its"
                f" {wanted!r} configuration: leave bench.configuration out (it follows run.protocol) or"
                f" --set bench.configuration={wanted}; the control panel keeps the physics it opened with:"
                f" start it with --set run.protocol={protocol}",
            )
        )
    if tuple(config.dmd_shape) != (bench.dmd.rows, bench.dmd.cols):
        rows, cols = config.dmd_shape
        problems.append(
            (
                "devices.dmd.shape",
                f"the DMD is {rows}x{cols} mirrors but the simulated bench images a {bench.dmd.rows}x"
                f"{bench.dmd.cols} one (bench.dmd.rows, bench.dmd.cols): set both to the same shape",
            )
        )
    unknown = [str(n) for n in getattr(params, "samples", []) if n not in SAMPLE_NAMES]
    if unknown:
        problems.append(
            (
                f"{key}.samples",
                f"{', '.join(map(repr, unknown))} cannot be mounted on the simulated bench (its samples:"
                f" {', '.join(sorted(SAMPLE_NAMES))}; devices/bench/samples.py)",
            )
        )
    if protocol == "speckle-sim" and params.macro_pixel_px != bench.speckle_sim.macropixel_dmd_px:
        problems.append(
            (
                f"{key}.macro_pixel_px",
                f"masks of {params.macro_pixel_px}-mirror macro-pixels on a simulated bench that samples"
                f" {bench.speckle_sim.macropixel_dmd_px}-mirror blocks (bench.speckle_sim.macropixel_dmd_px):"
                " set both to the same size",
            )
        )
    if protocol == "generalisation" and params.canvas_px * params.block_px > bench.diffuser.illuminated_px:
        side, lit = params.canvas_px * params.block_px, bench.diffuser.illuminated_px
        problems.append(
            (
                f"{key}.block_px",
                f"{params.canvas_px}x{params.canvas_px} target pixels at block_px={params.block_px} cover"
                f" {side}x{side} mirrors, more than the {lit}x{lit} the simulated bench lights"
                " (bench.diffuser.illuminated_px)",
            )
        )
    return problems


def _console_or_none() -> Any:
    """Ask the operator on the terminal when there is one; headless runs get None (mounting then fails)."""
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached stdin
        interactive = False
    if not interactive:
        return None
    from devices.sample_holder import console_confirm

    return console_confirm


def _open_dmd(cfg: Any, clock: SimClock | None) -> Dmd:
    if cfg.kind == "simulated":
        from devices.dmd_sim import SimulatedDmd

        return SimulatedDmd(clock, shape=tuple(cfg.shape))
    if cfg.kind == "alp":
        from devices.dmd_alp import AlpDmd

        dmd = AlpDmd(version=cfg.version, lib_dir=cfg.lib_dir, device_number=cfg.device_number)
        if tuple(dmd.shape) != tuple(cfg.shape):
            dmd.close()
            raise DeviceRefused(f"the DMD is {dmd.shape} (rows, cols), the config expects {tuple(cfg.shape)}")
        return dmd
    raise ValueError(f"unknown DMD kind {cfg.kind!r}")


def _stop_quietly(pump: Pump) -> None:
    try:
        pump.stop()
    except Exception:  # noqa: BLE001 - closing must go on; the engine already tried and logged
        log.exception("stopping the pump while closing the bench failed")


def _configure_camera(camera: Camera, cfg: Any) -> None:
    if cfg.roi is not None:
        camera.set_roi(*cfg.roi)
    if cfg.binning != 1:
        camera.set_binning(cfg.binning)


@contextlib.contextmanager
def open_bench(config: SpecklabConfig) -> Iterator[Bench]:
    """Open every device of ``config`` (validated); close all of them on exit, whatever happens."""
    devices = config.devices
    with contextlib.ExitStack() as stack:
        needs_clock = "simulated" in (devices.dmd.kind, devices.camera.kind, devices.pump.kind)
        clock = None
        if needs_clock:
            from devices.bench.clock import SimClock

            clock = SimClock(realtime=bool(config.run.realtime))

        dmd = _open_dmd(devices.dmd, clock)
        stack.callback(dmd.close)

        pump: Pump | None = None
        server = None
        pcfg = devices.pump
        from devices.pump_newera import NewEraPump

        if pcfg.kind == "simulated":
            from devices.pump_sim import PumpModel, SimulatedPumpServer

            server = SimulatedPumpServer(PumpModel(clock, address=pcfg.address))
            url = server.start()
            stack.callback(server.stop)
        else:
            url = pcfg.url
        pump = NewEraPump(url, address=pcfg.address, baudrate=pcfg.baudrate, timeout_s=pcfg.timeout_s)
        stack.callback(pump.close)
        stack.callback(_stop_quietly, pump)  # runs before close: a bench never closes with the pump flowing

        virtual = None
        ccfg = devices.camera
        if ccfg.kind == "simulated":
            from devices.bench.bench import VirtualBench
            from devices.bench.sensor import SensorModel
            from devices.camera_sim import SimulatedCamera

            virtual = VirtualBench(
                config.bench_config(),
                clock,
                pattern_source=getattr(dmd, "displayed_pattern", None),
                flow_source=server.flow_ml_per_h if server is not None else None,
            )
            camera: Camera = SimulatedCamera(
                source=virtual, clock=clock, sensor=SensorModel(**ccfg.sensor), seed=ccfg.seed
            )
        else:
            from devices.camera_mm import MicroManagerCamera

            camera = MicroManagerCamera(
                config_file=ccfg.config_file,
                mm_app_path=ccfg.mm_app_path,
                backend=ccfg.backend,
                camera_label=ccfg.camera_label,
            )
        stack.callback(camera.close)
        _configure_camera(camera, ccfg)

        from devices.sample_holder import ManualSampleHolder, SimulatedSampleHolder

        holder: SampleHolder = (
            SimulatedSampleHolder(virtual) if virtual is not None else ManualSampleHolder(_console_or_none())
        )

        yield Bench(
            dmd=dmd,
            camera=camera,
            pump=pump,
            clock=clock,
            virtual=virtual,
            pump_server=server,
            kinds={"dmd": devices.dmd.kind, "camera": ccfg.kind, "pump": pcfg.kind},
            sample_holder=holder,
        )
