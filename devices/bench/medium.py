"""The flowing TiO2/glycerol suspension: transport fractions and the time-evolving speckle.

Transport (one crossing of the cuvette has optical thickness b = L/l, seed 000):

* ballistic (unscattered) intensity after the *double pass* of the reflection geometry
  (in to the DMD target behind the cuvette, and back out): exp(-2b) (Beer-Lambert twice);
* total (ballistic + diffuse) transmission of one crossing of a non-absorbing slab,
  two-stream / diffusion estimate: T(b) = 1 / (1 + 3(1-g) b / 4);
* back-scatter of the suspension itself (what the camera sees with the DMD all off):
  R(b) = 1 - T(b) (no absorption: glycerol and rutile are transparent at 532 nm);
* target light scattered at least once on the way: T(b)^2 - exp(-2b).

The speckle field is a circular complex Gaussian random field whose realisation evolves
as an Ornstein-Uhlenbeck process: u(t+dt) = rho u(t) + sqrt(1 - rho^2) n with
rho = exp(-dt/tau), so the *field* correlation is rho and the *intensity* correlation
rho^2 (Siegert relation). tau = 30 ms at 7 ml/h (seed 000 Methods) and tau ~ 1/flow
(decorrelation by shear/advection scales with the flow speed); flow 0 freezes it.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from devices.bench.config import MediumConfig


def ballistic_fraction(b: float) -> float:
    """Unscattered intensity fraction after the reflection double pass: exp(-2b)."""
    return math.exp(-2.0 * b)


def total_transmission(b: float, g: float) -> float:
    """One crossing of a non-absorbing slab: T = 1/(1 + 3 b (1-g)/4) (two-stream estimate).

    It is >= exp(-b) for every b >= 0 and g in [0, 1), so the diffuse share is never negative.
    """
    return 1.0 / (1.0 + 0.75 * (1.0 - g) * b)


def backscatter_fraction(b: float, g: float) -> float:
    """Fraction of the incident light the suspension sends back (DMD all off): 1 - T(b)."""
    return 1.0 - total_transmission(b, g)


def scattered_target_fraction(b: float, g: float) -> float:
    """Target light that was scattered at least once in the double pass: T^2 - exp(-2b)."""
    return max(0.0, total_transmission(b, g) ** 2 - ballistic_fraction(b))


def envelope_sigma_um(cfg: MediumConfig, b: float) -> float:
    """Lateral spread (Gaussian sigma) of scattered target light at the camera's object plane.

    kappa * L * (1 - exp(-b)) at optical thickness ``b``: a few forward scattering events displace
    light by a fraction of L at small b; in the diffusive regime the spread saturates at ~L.
    """
    return cfg.envelope_spread * cfg.cuvette_path_um * (1.0 - math.exp(-b))


def correlation_time_s(cfg: MediumConfig, flow_ml_h: float) -> float:
    """Field decorrelation time: tau_ref * flow_ref / flow; infinite when the flow stops."""
    if flow_ml_h <= 0.0:
        return math.inf
    return cfg.tau_ref_s * cfg.flow_ref_ml_h / flow_ml_h


def circular_pupil_indices(shape: tuple[int, int], cutoff_cycles_per_px: float) -> np.ndarray:
    """Flat indices of the 2-D DFT grid inside |f| <= cutoff (cycles per pixel)."""
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.fftfreq(shape[1])[None, :]
    inside = (fy**2 + fx**2) <= cutoff_cycles_per_px**2
    return np.flatnonzero(inside)


class EvolvingSpeckle:
    """A unit-mean-intensity circular Gaussian speckle field that decorrelates in time.

    ``pupil_indices`` = DFT samples of the imaging pupil: the state is kept as these
    Fourier coefficients (the field is their inverse DFT), which is both the physics
    (the speckle at the camera is band-limited by the NA) and the fast path: only ~11 %
    of the grid needs fresh random numbers per frame. ``pupil_indices=None`` gives one
    independent value per pixel (white speckle).
    """

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, pupil_indices: np.ndarray | None):
        self.shape = shape
        self._rng = rng
        self._idx = pupil_indices
        n = shape[0] * shape[1] if pupil_indices is None else pupil_indices.size
        if n == 0:
            raise ValueError(
                "the speckle pupil holds no DFT sample; numerical aperture too small for the grid"
            )
        # with norm="forward" the inverse DFT is an unnormalised sum: scale so <|u|^2> = 1
        self._scale = 1.0 if pupil_indices is None else 1.0 / math.sqrt(n)
        self._state = self._draw(n)
        self._field: np.ndarray | None = None
        if pupil_indices is not None:
            # Pruned inverse DFT: only the grid rows holding pupil samples (~49 of 128 at the
            # seed-000 NA) need the transform along x; then all columns along y. Same sums as
            # a full ifft2, ~20 % less work and no full-grid scatter.
            rows_used, compact_row = np.unique(pupil_indices // shape[1], return_inverse=True)
            self._rows_used = rows_used
            self._compact_idx = compact_row * shape[1] + pupil_indices % shape[1]

    def _draw(self, n: int) -> np.ndarray:
        """n standard circular complex Gaussians (E|z|^2 = 1)."""
        z = self._rng.standard_normal(2 * n).view(np.complex128)
        z *= math.sqrt(0.5)
        return z

    def advance(self, rho: float) -> None:
        """u <- rho u + sqrt(1-rho^2) n; rho = 1 is a no-op (frozen medium)."""
        if rho >= 1.0:
            return
        new = self._draw(self._state.size)
        if rho <= 1e-12:
            self._state = new
        else:
            self._state *= rho
            self._state += math.sqrt(1.0 - rho * rho) * new
        self._field = None

    @property
    def field(self) -> np.ndarray:
        """The current field on the grid, complex64, <|u|^2> = 1."""
        if self._field is None:
            if self._idx is None:
                self._field = self._state.reshape(self.shape).astype(np.complex64)
            else:
                rows, cols = self.shape
                n_rows = self._rows_used.size
                buf = np.zeros(n_rows * cols, np.complex64)
                buf[self._compact_idx] = self._state * self._scale
                part = sfft.ifft(
                    buf.reshape(n_rows, cols), axis=1, norm="forward", workers=1, overwrite_x=True
                )
                grid = np.zeros(self.shape, np.complex64)
                grid[self._rows_used] = part
                self._field = sfft.ifft(grid, axis=0, norm="forward", workers=1, overwrite_x=True).astype(
                    np.complex64, copy=False
                )
        return self._field
