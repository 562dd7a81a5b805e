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
:func:`check_samples` refuses, at config load, sample names the configured bench cannot mount;
:func:`check_bench_configuration`, :func:`check_dmd_shape`, :func:`check_mask_grid` and
:func:`check_target_area` refuse a simulated run whose bench would image it with another protocol's
physics or another DMD, sample its masks on another grid, or leave part of its targets unlit.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devices.base import Camera, Dmd, Pump, SampleHolder

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


def mountable_samples(config: SpecklabConfig) -> frozenset[str] | None:
    """Sample names the configured bench can mount; None = any (a real bench: the operator mounts it)."""
    if config.devices.camera.kind == "simulated":
        from devices.bench.samples import SAMPLE_NAMES

        return SAMPLE_NAMES
    return None


def check_bench_configuration(config: SpecklabConfig) -> None:
    """Refuse (ValueError) a simulated run whose virtual bench is set up for another protocol's physics.

    Pure, like :func:`check_samples`. Speckle-SIM masks shown on the reflection bench would record
    frames of a reflective target behind a flowing medium: valid files whose statistics belong to
    no protocol.
    """
    if config.devices.camera.kind != "simulated":
        return
    from acquisition.protocols import PROTOCOLS, canonical_name

    protocol = canonical_name(config.run.protocol)
    wanted = PROTOCOLS[protocol].simulated_bench
    have = config.bench_config().configuration
    if have != wanted:
        raise ValueError(
            f"the simulated bench is set up for {have!r}, but {protocol} is imaged by its {wanted!r}"
            f" configuration (--set bench.configuration={wanted})"
        )


def check_dmd_shape(config: SpecklabConfig) -> None:
    """Refuse (ValueError) a simulated DMD of another shape than the one the virtual bench images.

    The bench maps mirrors to the camera with its own ``bench.dmd`` geometry: a picture of any other
    shape would fail at the first frame, after the run file was created.
    """
    if config.devices.camera.kind != "simulated":
        return
    dmd = config.bench_config().dmd
    if tuple(config.dmd_shape) != (dmd.rows, dmd.cols):
        rows, cols = config.dmd_shape
        raise ValueError(
            f"the DMD is {rows}x{cols} mirrors but the simulated bench images a {dmd.rows}x{dmd.cols} one"
            " (bench.dmd.rows, bench.dmd.cols): set both to the same shape"
        )


def check_mask_grid(config: SpecklabConfig) -> None:
    """Refuse (ValueError) speckle-SIM masks whose macro-pixel differs from the simulated bench's.

    The speckle-SIM bench takes one pupil sample per ``bench.speckle_sim.macropixel_dmd_px`` block of
    the DMD: masks of another macro-pixel would reach it as grey averages the protocol never shows.
    """
    from acquisition.protocols import canonical_name

    if config.devices.camera.kind != "simulated" or canonical_name(config.run.protocol) != "speckle-sim":
        return
    bench = config.bench_config().speckle_sim.macropixel_dmd_px
    masks = config.protocol_params().macro_pixel_px
    if masks != bench:
        raise ValueError(
            f"masks of {masks}-mirror macro-pixels on a simulated bench that samples {bench}-mirror blocks"
            f" (bench.speckle_sim.macropixel_dmd_px): set both to the same size"
        )


def check_target_area(config: SpecklabConfig) -> None:
    """Refuse (ValueError) generalisation targets larger than the simulated diffuser bench's lit area.

    The bench illuminates only the central ``bench.diffuser.illuminated_px`` mirrors (seed 003: ~128x128);
    the rest of a larger target would be recorded as darkness, and a shifted test region as a black frame.
    """
    from acquisition.protocols import canonical_name

    if config.devices.camera.kind != "simulated" or canonical_name(config.run.protocol) != "generalisation":
        return
    lit = config.bench_config().diffuser.illuminated_px
    p = config.protocol_params()
    side = p.canvas_px * p.block_px
    if side > lit:
        raise ValueError(
            f"{p.canvas_px}x{p.canvas_px} target pixels at block_px={p.block_px} cover {side}x{side} mirrors,"
            f" more than the {lit}x{lit} the simulated bench lights (bench.diffuser.illuminated_px)"
        )


def check_samples(config: SpecklabConfig) -> None:
    """Refuse (ValueError naming them) the run protocol's ``samples`` that the bench cannot mount.

    Pure: called by config validation, before any device is opened. A protocol images physical
    samples when its parameters have a ``samples`` list (speckle-sim).
    """
    names = config.protocol_config().get("samples") or []
    known = mountable_samples(config)
    if known is None:
        return
    unknown = [str(n) for n in names if n not in known]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise ValueError(
            f"sample{'s' if len(unknown) > 1 else ''} {listed} cannot be mounted on the simulated bench"
            f" (its samples: {', '.join(sorted(known))}; devices/bench/samples.py)"
        )


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
            raise ValueError(f"the DMD is {dmd.shape} (rows, cols), the config expects {tuple(cfg.shape)}")
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
