"""The virtual bench: one seeded, deterministic physical model behind every simulated device.

The simulated camera asks ``expected_photons(t_s, exposure_s)`` (mean photons per pixel
of the full sensor, float64) and applies its own sensor model (shot noise, read noise,
gain, ADC); the bench reads the DMD picture shown at ``t_s`` through ``pattern_source``
and the pump flow through ``flow_source``. Determinism: every random draw comes from one
``numpy.random.Generator`` seeded by ``BenchConfig.seed``, and the flowing medium is a
Markov process advanced forward in bench time, so the same seed and the same sequence of
requests give the same frames.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable

import numpy as np

from devices.bench import medium as med
from devices.bench.clock import SimClock
from devices.bench.config import BenchConfig
from devices.bench.diffuser import DiffuserModel
from devices.bench.reflection import ReflectionModel
from devices.bench.samples import SAMPLE_NAMES
from devices.bench.speckle_sim import SpeckleSimModel

log = logging.getLogger(__name__)

PatternSource = Callable[[float], "np.ndarray | None"]
FlowSource = Callable[[], float]


def _check_binning(binning: int, shape: tuple[int, int]) -> None:
    """Refuse a software binning that leaves no whole bin on the sensor (or is not a positive integer)."""
    if not (isinstance(binning, int | np.integer) and 1 <= binning <= min(shape)):
        raise ValueError(f"binning must be an integer from 1 to {min(shape)}, got {binning!r}")


class VirtualBench:
    """Seeded physical model of the optical bench for one configuration.

    Args:
        config: the validated bench configuration.
        clock: the shared :class:`SimClock` (kept for devices that want bench time).
        pattern_source: ``t_s -> uint8 (rows, cols) | None``: the DMD picture at bench time
            ``t_s``; None (or no source) = nothing projected, all mirrors off.
        flow_source: ``() -> ml/h`` of the pump (0 = stopped); no source = the seed's 7 ml/h.
    """

    def __init__(
        self,
        config: BenchConfig,
        clock: SimClock,
        pattern_source: PatternSource | None = None,
        flow_source: FlowSource | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.pattern_source = pattern_source
        self.flow_source = flow_source
        self._lock = threading.Lock()  # the camera may call from its own thread
        rng = np.random.default_rng(config.seed)
        self._model: ReflectionModel | SpeckleSimModel | DiffuserModel
        if config.configuration == "reflection":
            self._model = ReflectionModel(config, rng)
        elif config.configuration == "speckle_sim":
            self._model = SpeckleSimModel(config, rng)
        else:
            self._model = DiffuserModel(config, rng)
        self._sample = config.speckle_sim.sample

    # ------------------------------------------------------------------ contract
    @property
    def sensor_shape(self) -> tuple[int, int]:
        """(rows, cols) of the full simulated sensor."""
        return self._model.shape

    def _picture(self, t_s: float) -> np.ndarray | None:
        if self.pattern_source is None:
            return None
        pic = self.pattern_source(t_s)
        if pic is None:
            return None
        expected = (self.config.dmd.rows, self.config.dmd.cols)
        if pic.shape != expected:
            raise ValueError(f"DMD picture has shape {pic.shape}, the bench's DMD is {expected}")
        return pic

    def flow_ml_h(self) -> float:
        """Current pump flow; the seed's 7 ml/h when no pump is attached."""
        if self.flow_source is None:
            return self.config.medium.flow_ref_ml_h
        return float(self.flow_source())

    def expected_photons(self, t_s: float, exposure_s: float) -> np.ndarray:
        """Mean photons per camera pixel during an exposure of ``exposure_s`` starting at ``t_s``.

        float64 (H, W), full sensor. The speckle is frozen during the exposure (200 us << 30 ms,
        seed 000). Requests must come in non-decreasing ``t_s`` for the medium to evolve; an
        earlier time gets the medium as it was at the latest request (no rewind).
        """
        if not (math.isfinite(exposure_s) and exposure_s >= 0):
            raise ValueError(f"exposure must be finite and >= 0 s, got {exposure_s}")
        if not math.isfinite(t_s):  # a NaN first request would freeze the medium for good
            raise ValueError(f"bench time must be finite, got {t_s}")
        with self._lock:
            pic = self._picture(t_s)
            m = self._model
            if isinstance(m, ReflectionModel):
                return m.expected_photons(t_s, exposure_s, pic, self.flow_ml_h())
            return m.expected_photons(pic, exposure_s)

    # ------------------------------------------------------------------ samples (speckle_sim)
    @property
    def sample_names(self) -> frozenset[str]:
        """Samples this bench can mount (``devices/bench/samples.py``)."""
        return SAMPLE_NAMES

    @property
    def sample(self) -> str:
        """The sample under the microscope (initially ``speckle_sim.sample`` of the config)."""
        return self._sample

    def mount_sample(self, name: str) -> None:
        """Put sample ``name`` under the microscope: rho is re-derived (seeded by bench seed and name).

        Only the ``speckle_sim`` configuration images a fluorescent sample; in the others the name is
        recorded and the images do not change (logged).
        """
        if name not in SAMPLE_NAMES:
            raise ValueError(f"unknown sample {name!r}; the virtual bench has {sorted(SAMPLE_NAMES)}")
        with self._lock:  # the camera may be asking for photons on its own thread
            if isinstance(self._model, SpeckleSimModel):
                self._model.mount(name)
            elif name != self._sample:
                log.warning(
                    "sample %r mounted on the %r virtual bench: only 'speckle_sim' images a sample",
                    name,
                    self.config.configuration,
                )
            self._sample = name

    def sample_ground_truth(self, names: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        """``{name: {"rho", "rho_blurred"}}`` for each sample (speckle_sim only; empty otherwise)."""
        m = self._model
        if not isinstance(m, SpeckleSimModel):
            return {}
        out: dict[str, dict[str, np.ndarray]] = {}
        with self._lock:
            for name in names:
                rho, blur = m.densities(name)
                out[name] = {"rho": rho.copy(), "rho_blurred": blur.copy()}
        return out

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Arrays the run file stores as ground truth (all numpy; scalars as 0-d arrays)."""
        m = self._model
        if isinstance(m, ReflectionModel):
            cfg = self.config.medium
            b = cfg.optical_thickness
            return {
                "um_per_camera_px": np.asarray(m.um_per_px),
                "um_per_dmd_px": np.asarray(m.um_per_mirror),
                "camera_px_per_dmd_px": np.asarray(m.px_per_mirror),
                # camera (x, y) = A @ (dmd_x, dmd_y, 1)
                "dmd_to_camera": np.array(
                    [
                        [m.px_per_mirror, 0.0, m.cam_center[0] - m.dmd_center[0] * m.px_per_mirror],
                        [0.0, m.px_per_mirror, m.cam_center[1] - m.dmd_center[1] * m.px_per_mirror],
                    ]
                ),
                "optical_thickness": np.asarray(b),
                "ballistic_fraction": np.asarray(med.ballistic_fraction(b)),
                "scattered_target_fraction": np.asarray(med.scattered_target_fraction(b, cfg.anisotropy_g)),
                "backscatter_fraction": np.asarray(med.backscatter_fraction(b, cfg.anisotropy_g)),
                "envelope_sigma_um": np.asarray(med.envelope_sigma_um(cfg, b)),
                "photons_per_s_per_px_n0": np.asarray(m.n0),
                "background_mean_photons_per_s": np.full(m.shape, m.i_flow_bg + m.i_wall),
                "speckle_coherence_area_px": np.asarray(m.coherence_area_px()),
                "vibration_rms_um": np.asarray(m.vibration_um),
            }
        return m.ground_truth()

    # ------------------------------------------------------------------ analytic truth (reflection)
    def _reflection(self) -> ReflectionModel:
        if not isinstance(self._model, ReflectionModel):
            raise ValueError(
                f"analytic Fisher information exists for the 'reflection' configuration only,"
                f" this bench is {self.config.configuration!r}"
            )
        return self._model

    def analytic_fisher(
        self,
        target_px: tuple[float, float] | None = None,
        binning: int = 1,
        *,
        b: float | None = None,
        method: str = "auto",
        qe: float = 1.0,
        read_noise_e: float = 0.0,
        exposure_s: float | None = None,
        vibration_um: float | None = None,
    ) -> np.ndarray:
        """2x2 Fisher matrix (1/um^2 at the sample) of the target centre (x, y).

        ``target_px``: target centre in DMD mirrors (x = col, y = row; default the DMD point on
        the camera centre); ``binning``: software binning factor; ``b``: optical thickness
        (default the configured one); ``method``: 'poisson' (shot + read noise; the only
        photon noise at b = 0), 'speckle' (b > 0: non-central chi-square for independent-pixel
        speckle, the exact linear Fisher information for the default pupil speckle), 'linear' or
        'auto'. ``qe``, ``read_noise_e``, ``exposure_s`` enter the Poisson and linear models (the
        non-central chi-square one is scale-free). See devices/bench/fisher_truth.py and
        docs/bench-model.md.

        ``vibration_um``: RMS per axis s of the per-frame target displacement (None = the configured
        ``reflection.vibration_rms_um``, 0 = the static optics). With J0 the static-optics matrix,
        J = (J0^-1 + s^2 I)^-1: the frame informs on theta + delta with J0, and delta ~ N(0, s^2 I)
        adds s^2 to the covariance. This is exact for a linear-Gaussian model (mean linear in the
        position, position-independent Gaussian noise; Woodbury) and, for the real frames, a Gaussian
        approximation that is exact in both limits: J0 >> 1/s^2 (the frame pins theta + delta, whose
        spread s is then the whole error: b = 0 on this bench, J -> 1/s^2) and J0 << 1/s^2 (the
        displacement is lost in the frame's own noise: J -> J0). In between, J^-1 is still a lower bound
        on the covariance of every estimator unbiased over the whole field of view (docs/bench-model.md).
        """
        m = self._reflection()
        _check_binning(binning, m.shape)
        s = m.vibration_um if vibration_um is None else float(vibration_um)
        if not s >= 0:
            raise ValueError(f"vibration_um must be >= 0, got {vibration_um}")
        tp = target_px if target_px is not None else m.dmd_center
        with self._lock:
            restore = m.with_thickness(self.config.medium.optical_thickness if b is None else b)
            try:
                j0 = m.fisher_matrix(tp, binning, method, qe, read_noise_e, exposure_s)
            finally:
                restore()
        if s == 0.0:
            return j0
        # (J0^-1 + s^2 I)^-1 = J0 (I + s^2 J0)^-1: defined for a singular J0 as well
        j = j0 @ np.linalg.inv(np.eye(2) + s * s * j0)
        return 0.5 * (j + j.T)

    def pair_distances(
        self,
        shifts_um: np.ndarray,
        axis: int = 0,
        target_px: tuple[float, float] | None = None,
        binning: int = 1,
        *,
        b: float | None = None,
        qe: float = 1.0,
        read_noise_e: float = 0.0,
    ) -> np.ndarray:
        """Distances d(h) between frames of targets h um apart along ``axis`` (0 = x), static optics.

        The input of the Ziv-Zakai bound (``analysis.ziv_zakai.gaussian_zzb``), which follows the analytic
        CRB's frame model into the threshold regime (ReflectionModel.pair_distances; docs/precision.md).
        """
        shifts = np.asarray(shifts_um, dtype=float)
        if shifts.ndim != 1 or shifts.size == 0 or np.any(shifts <= 0):
            raise ValueError("shifts_um must be a non-empty 1-D array of positive shifts")
        return self._static_model_call(
            "pair_distances", shifts, axis, target_px, binning, b, qe, read_noise_e
        )

    def mean_difference_gram(
        self,
        offsets_um: np.ndarray,
        axis: int = 0,
        target_px: tuple[float, float] | None = None,
        binning: int = 1,
        *,
        b: float | None = None,
        qe: float = 1.0,
        read_noise_e: float = 0.0,
    ) -> np.ndarray:
        """Gram matrix of the whitened mean-frame changes for test offsets (um) along ``axis``, static optics.

        The input of the Barankin bound (``analysis.barankin.gaussian_barankin_variance``): the variance
        floor of estimators unbiased at every offset (ReflectionModel.mean_difference_gram).
        """
        offsets = np.asarray(offsets_um, dtype=float)
        if offsets.ndim != 1 or offsets.size == 0 or np.any(offsets == 0):
            raise ValueError("offsets_um must be a non-empty 1-D array of non-zero offsets")
        return self._static_model_call(
            "mean_difference_gram", offsets, axis, target_px, binning, b, qe, read_noise_e
        )

    def _static_model_call(
        self,
        method: str,
        offsets: np.ndarray,
        axis: int,
        target_px: tuple[float, float] | None,
        binning: int,
        b: float | None,
        qe: float,
        read_noise_e: float,
    ) -> np.ndarray:
        """Run a ReflectionModel method over target offsets at thickness ``b`` (default the configured)."""
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 (x) or 1 (y), got {axis}")
        m = self._reflection()
        _check_binning(binning, m.shape)
        tp = target_px if target_px is not None else m.dmd_center
        with self._lock:
            restore = m.with_thickness(self.config.medium.optical_thickness if b is None else b)
            try:
                return getattr(m, method)(tp, offsets, axis, binning, qe, read_noise_e)
            finally:
                restore()

    def analytic_crb_um(
        self,
        b: float | None = None,
        target_px: tuple[float, float] | None = None,
        binning: int = 1,
        **kwargs: object,
    ) -> tuple[float, float]:
        """Cramer-Rao bound (sigma_x, sigma_y) in um at the sample: sqrt(diag(J^-1)).

        ``kwargs`` go to :meth:`analytic_fisher` (``method``, ``qe``, ``read_noise_e``, ``exposure_s``,
        ``vibration_um``: 0 for the static optics); with vibration CRB^2 = CRB0^2 + s^2 per axis when
        J0 is diagonal.
        """
        j = self.analytic_fisher(target_px, binning, b=b, **kwargs)  # type: ignore[arg-type]
        inv = np.linalg.inv(j)
        return float(np.sqrt(inv[0, 0])), float(np.sqrt(inv[1, 1]))
