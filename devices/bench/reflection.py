"""Configuration 1: a reflective DMD target hidden behind the flowing medium (seed 000).

Geometry (seed 000 Methods): the DMD (13.7 um mirrors) is imaged onto the back of the
cuvette with magnification 0.18 (2.466 um per mirror at the sample); the whole chain
L2-MO-L3 images the DMD onto the camera with magnification 2.9, so the sample is imaged
onto the camera with 2.9/0.18 = 16.1 and one 6.5 um Zyla pixel is 0.403 um at the sample
(6.11 camera pixels per mirror; the 5x5 target is 30.6 px wide, the D grid step of two
mirrors 12.2 px, consistent with the seed's +-40 px shift augmentation of 128 px frames).

Per camera pixel r (photons/s before the exposure factor), with A = DMD amplitude map:

* coherent (ballistic) field   E_c(r) = sqrt(N0 R_dmd e^{-2b}) (A * h)(r), h the coherent
  PSF of a circular pupil of radius NA/lambda, computed exactly as a band-limited field
  from the analytic Fourier transform of the mirror squares (no pixelisation error, any
  sub-pixel target position);
* scattered target light (mean) I_t(r) = N0 R_dmd NA^2 (T^2 - e^{-2b}) (|A|^2 * G_env)(r),
  G_env a Gaussian of sigma_env (medium.envelope_sigma_um); NA^2 = share of a Lambertian
  return inside the collection cone;
* back-scatter of the suspension I_bg = N0 NA^2 (1 - T), of which a share w is the wall
  speckle (slow drift) and 1 - w the flowing speckle.

Frame intensity: I = |E_c + sqrt(I_t + (1-w) I_bg) u_flow + sqrt(w I_bg) u_wall|^2, u unit
circular Gaussian speckle fields (sum of independent circular Gaussian fields = one field
with the summed mean intensity). Pixels sample the intensity at their centres.

Mechanical vibration (``reflection.vibration_rms_um`` = s): every frame the target's terms
(E_c and I_t, hence the flowing-field amplitude) are moved by delta ~ N(0, s^2) per axis,
drawn from the bench's generator; the back-scatter and the wall speckle stay put. Both moves
are exact: a phase ramp on the cached band-limited spectrum of E_c (pruned inverse DFT onto
the FOV) and shifted centres in the erf product of I_t. s = 0 draws nothing.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import linalg, ndimage, special

from devices.bench import fisher_truth as ft
from devices.bench import medium as med
from devices.bench.config import LIGHT_SPEED_M_S, PLANCK_J_S, BenchConfig

_PAD = 64  # camera pixels around the FOV in the (periodic) coherent FFT grid: Airy tails of objects
# outside the FOV and the seam of the periodic window stay >= 64 px (~26 um) away from the FOV


def _split_runs(idx: np.ndarray) -> list[tuple[slice, slice]]:
    """(position in ``idx``, grid slice) of each run of consecutive grid indices in sorted ``idx``."""
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, idx.size]
    return [
        (slice(int(a), int(b)), slice(int(idx[a]), int(idx[b - 1]) + 1))
        for a, b in zip(starts, ends, strict=True)
    ]


class _EdgeProfile:
    """One envelope axis: 0.5 [erf((u - left)/(sqrt2 sigma)) - erf((u - right)/(sqrt2 sigma))] per mirror.

    Mirror edges shared by neighbours are evaluated once (a run of n 'on' mirrors has n + 1 edges).
    """

    def __init__(self, mirror_idx: np.ndarray, to_camera: Callable[[np.ndarray], np.ndarray], n: int) -> None:
        keys = np.unique(np.concatenate([mirror_idx, mirror_idx + 1]))  # edge k sits at mirror k - 1/2
        self.edges = np.asarray(to_camera(keys - 0.5), dtype=float)
        self.left = np.searchsorted(keys, mirror_idx)
        self.right = np.searchsorted(keys, mirror_idx + 1)
        self.u = np.arange(n, dtype=float)[:, None]

    def profile(self, shift: float, sigma: float) -> np.ndarray:
        """(n, mirrors): the blurred unit boxes moved by ``shift`` px (exact)."""
        e = special.erf((self.u - (self.edges + shift)) * (1.0 / (math.sqrt(2.0) * sigma)))
        return 0.5 * (e[:, self.left] - e[:, self.right])


@dataclass(frozen=True, eq=False)
class _Terms:
    """Per-picture terms: the static images and what moving the target (vibration) needs.

    ``spec``: sqrt(k_coh) x the padded-grid spectrum of E_c on the rows/columns holding pupil
    samples (None: no coherent target light); ``env``: the envelope's erf factors along y and x
    (:class:`_EdgeProfile`) and k_target |A|^2 on the non-zero DMD rows/columns (None: no scattered
    target light).
    """

    ec: np.ndarray  # complex64 (H, W), sqrt(photons/s)
    a_flow: np.ndarray  # float32 (H, W): sqrt(I_t + (1 - w) I_bg)
    mean: np.ndarray  # float64 (H, W), photons/s
    spec: np.ndarray | None
    env: tuple[_EdgeProfile, _EdgeProfile, np.ndarray] | None

    @property
    def movable(self) -> bool:
        return self.spec is not None or self.env is not None

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.ec, self.a_flow, self.mean)


class ReflectionModel:
    """The seed-000 bench: expected photons per camera pixel, cached per DMD picture."""

    def __init__(self, cfg: BenchConfig, rng: np.random.Generator, cache_size: int = 128) -> None:
        self.cfg = cfg
        r = cfg.reflection
        self.shape = (r.camera_rows, r.camera_cols)
        self.sample_mag = r.dmd_to_camera_magnification / r.dmd_to_sample_magnification
        self.um_per_px = r.camera_pixel_um / self.sample_mag  # at the sample
        self.um_per_mirror = cfg.dmd.pixel_um * r.dmd_to_sample_magnification  # at the sample
        self.px_per_mirror = self.um_per_mirror / self.um_per_px
        if r.dmd_center_px is None:
            self.dmd_center = ((cfg.dmd.cols - 1) / 2.0, (cfg.dmd.rows - 1) / 2.0)
        else:
            self.dmd_center = r.dmd_center_px
        self.cam_center = ((self.shape[1] - 1) / 2.0, (self.shape[0] - 1) / 2.0)
        # pupil cut-off in cycles per camera pixel (object side: NA/lambda)
        self.f_cut = r.numerical_aperture / (r.wavelength_nm * 1e-3) * self.um_per_px
        if self.f_cut >= 0.25:
            raise ValueError(
                f"NA {r.numerical_aperture} needs a pupil of {self.f_cut:.3f} cycles/px: the intensity would"
                " be aliased on this pixel grid (needs < 0.25)"
            )
        self.n0 = self.photon_rate_per_px()
        self._set_thickness(cfg.medium.optical_thickness)
        self._pad_shape = (self.shape[0] + 2 * _PAD, self.shape[1] + 2 * _PAD)
        fy = sfft.fftfreq(self._pad_shape[0])
        fx = sfft.fftfreq(self._pad_shape[1])
        self._fy, self._fx = fy, fx
        self._pupil = ((fy[:, None] ** 2 + fx[None, :] ** 2) <= self.f_cut**2).astype(float)
        # pruned inverse DFT of the coherent field onto the FOV (moving the target): only the grid
        # rows/columns holding pupil samples, and only the output rows/columns inside the FOV
        self._ky = np.flatnonzero(np.abs(fy) <= self.f_cut)
        self._kx = np.flatnonzero(np.abs(fx) <= self.f_cut)
        self._fky, self._fkx = fy[self._ky], fx[self._kx]
        self._ifft_slices = tuple(_split_runs(k) for k in (self._ky, self._kx))
        self._ifft_bufs = (
            np.zeros((self._ky.size, self._pad_shape[1]), np.complex64),
            np.zeros((self._pad_shape[0], self.shape[1]), np.complex64),
        )
        self.vibration_um = r.vibration_rms_um
        self.vibration_px = r.vibration_rms_um / self.um_per_px
        self._rng = rng
        self._cache: OrderedDict[bytes, _Terms] = OrderedDict()
        self._cache_size = cache_size
        # picture *object* -> terms, for read-only pictures (the simulated DMD serves each
        # displayed picture as one shared read-only array): no crop, copy or hash per frame
        self._by_object: OrderedDict[int, tuple[weakref.ref, _Terms]] = OrderedDict()
        self._terms_off: _Terms | None = None
        idx = None
        if cfg.medium.speckle_model == "pupil":
            idx = med.circular_pupil_indices(self.shape, self.f_cut)
        self.flow_speckle = med.EvolvingSpeckle(self.shape, rng, idx)
        self.wall_speckle = med.EvolvingSpeckle(self.shape, rng, idx)
        self._t_last: float | None = None
        self._t_wall: float | None = None
        self._wall_term: np.ndarray | None = None
        self._static: tuple[np.ndarray, np.ndarray] | None = None  # (E_c, E_c + wall field)

    # ------------------------------------------------------------------ budget and fractions
    def photon_rate_per_px(self) -> float:
        """N0: photons/s reaching the camera per pixel for a unit-reflectance, scatter-free sample.

        Laser photon rate x (pixel area at the sample / flat-top spot area at the sample) x
        optical efficiency. Spot: 8 mm on the DMD x 0.18 = 1.44 mm at the sample.
        """
        r = self.cfg.reflection
        photon_rate = r.laser_power_w * (r.wavelength_nm * 1e-9) / (PLANCK_J_S * LIGHT_SPEED_M_S)
        spot_um = r.illumination_diameter_dmd_mm * 1e3 * r.dmd_to_sample_magnification
        area_frac = self.um_per_px**2 / (math.pi * (spot_um / 2.0) ** 2)
        return photon_rate * area_frac * r.optical_efficiency

    def _set_thickness(self, b: float) -> None:
        m, r = self.cfg.medium, self.cfg.reflection
        na2 = r.numerical_aperture**2
        self.b = b
        self.k_coh = self.n0 * r.dmd_reflectance * med.ballistic_fraction(b)
        self.k_target = self.n0 * r.dmd_reflectance * na2 * med.scattered_target_fraction(b, m.anisotropy_g)
        bg = self.n0 * na2 * med.backscatter_fraction(b, m.anisotropy_g) if b > 0 else 0.0
        self.i_wall = m.wall_fraction * bg
        self.i_flow_bg = bg - self.i_wall
        self.sigma_env_px = med.envelope_sigma_um(m, b) / self.um_per_px

    # ------------------------------------------------------------------ geometry
    def dmd_to_camera(self, x_dmd: np.ndarray | float, y_dmd: np.ndarray | float) -> tuple:
        """Camera pixel coordinates (x, y) of DMD mirror-centre coordinates (x = col, y = row)."""
        s = self.px_per_mirror
        return (
            self.cam_center[0] + (np.asarray(x_dmd) - self.dmd_center[0]) * s,
            self.cam_center[1] + (np.asarray(y_dmd) - self.dmd_center[1]) * s,
        )

    def _crop_bounds(self) -> tuple[int, int, int, int]:
        """DMD rows/cols that can send light into the FOV (coherently or via the envelope)."""
        half_fov = max(self.shape) / 2.0 / self.px_per_mirror
        sig_max = self.cfg.medium.envelope_spread * self.cfg.medium.cuvette_path_um / self.um_per_mirror
        half_coherent = max(self._pad_shape) / 2.0 / self.px_per_mirror + 1.0  # fill the FFT period
        half = int(math.ceil(max(half_fov + 4.0 * sig_max + 3.0, half_coherent)))
        cx, cy = self.dmd_center
        r0, r1 = max(0, int(round(cy)) - half), min(self.cfg.dmd.rows, int(round(cy)) + half + 1)
        c0, c1 = max(0, int(round(cx)) - half), min(self.cfg.dmd.cols, int(round(cx)) + half + 1)
        return r0, r1, c0, c1

    # ------------------------------------------------------------------ per-picture images
    def _coherent_field(
        self, amp: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(A * h) on the camera grid (unit-reflectance amplitude 1), exact band-limited field.

        Also returns its padded-grid spectrum on the rows/columns holding pupil samples (None when
        dark), from which :meth:`_moved_field` computes the field of the moved target.
        """
        xs, ys = self.dmd_to_camera(cols, rows)
        ey = self._mirror_spectra(ys + _PAD, self._fy, self._pad_shape[0])
        ex = self._mirror_spectra(xs + _PAD, self._fx, self._pad_shape[1])
        if not amp.any():
            return np.zeros(self.shape, np.complex64), None
        spec = (ey @ amp) @ ex.T
        spec *= self._pupil
        return self._crop_ifft(spec).astype(np.complex64), spec[np.ix_(self._ky, self._kx)]

    def _moved_field(self, spec: np.ndarray, dx: float, dy: float) -> np.ndarray:
        """E(x - dx, y - dy) on the FOV (complex64, C-contiguous) from a compact spectrum, dx, dy in px.

        Exact for the periodic band-limited field of the padded grid: a phase ramp exp(-2 pi i f.delta)
        on its spectrum, then the inverse DFT pruned to the pupil rows (input) and the FOV columns
        (output): 1-D FFTs along x of the ~97 rows holding pupil samples, then along y of the FOV's
        columns. FFTs (one thread) rather than matrix products: a multi-threaded BLAS on these small
        products stalls for tens of ms on a loaded machine. The target stays >= _PAD - |delta| px
        from the period's seam.
        """
        px = np.exp(-2j * np.pi * self._fkx * dx).astype(np.complex64)
        py = np.exp(-2j * np.pi * self._fky * dy).astype(np.complex64)
        buf_x, buf_y = self._ifft_bufs  # zero outside the pupil columns/rows, which are overwritten here
        # the pupil indices are [0, n) and [N - n + 1, N): two slices (views, no fancy-index copies)
        for src, dst in self._ifft_slices[1]:
            np.multiply(spec[:, src], px[None, src], out=buf_x[:, dst])
        part = sfft.ifft(buf_x, axis=1, workers=1)[:, _PAD : _PAD + self.shape[1]]
        for src, dst in self._ifft_slices[0]:
            np.multiply(part[src], py[src, None], out=buf_y[dst])
        return sfft.ifft(buf_y, axis=0, workers=1)[_PAD : _PAD + self.shape[0]]

    def _envelope(
        self,
        env: tuple[_EdgeProfile, _EdgeProfile, np.ndarray],
        dx: float = 0.0,
        dy: float = 0.0,
        dtype: type = np.float32,
    ) -> np.ndarray:
        """k_target (|A|^2 * G_env)(x - dx, y - dy): the erf product with (shifted) mirror edges.

        Exact for square mirrors; the erf factors in float64, the final rank-n product in ``dtype``
        (float32 per vibrating frame, the precision A_flow is kept in; float64 for the cached image at
        rest).
        """
        py, px, inten = env
        gy = (py.profile(dy, self.sigma_env_px) @ inten).astype(dtype)
        return gy @ px.profile(dx, self.sigma_env_px).T.astype(dtype)

    def _mirror_spectra(self, centres: np.ndarray, freqs: np.ndarray, period: int) -> np.ndarray:
        """(len(freqs), len(centres)) 1-D Fourier transforms of the mirror boxes, clipped to [0, period).

        Clipping makes the mirrors tile one period of the FFT grid exactly (no double count
        and no gap at the seam of the periodic window); mirrors outside it contribute 0.
        """
        h = self.px_per_mirror / 2.0
        lo = np.clip(centres - h, 0.0, period)
        hi = np.clip(centres + h, 0.0, period)
        w, c = hi - lo, 0.5 * (hi + lo)
        return (
            w[None, :]
            * np.sinc(w[None, :] * freqs[:, None])
            * np.exp(-2j * np.pi * freqs[:, None] * c[None, :])
        )

    def picture_terms(self, picture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(E_c, A_flow, I_mean) for a DMD picture, in sqrt(photons/s) and photons/s; LRU-cached.

        Grey levels are taken as intensity reflectance gray/255 (field sqrt of it): exact
        for the binary 0/255 pictures of seed 000, an approximation of DMD PWM otherwise.
        These are the terms of the target at rest (no vibration).
        """
        return self._terms(picture).as_tuple()

    def _terms(self, picture: np.ndarray | None) -> _Terms:
        """The cached :class:`_Terms` of a picture.

        Two cache levels: by picture *object* for read-only arrays that own their data (treated
        as immutable; the simulated DMD's displayed pictures are such arrays, one object per
        displayed picture), and by the content of the DMD region that can reach the camera.
        """
        if picture is None:
            if self._terms_off is None:
                self._terms_off = self._terms_by_content(None)
            return self._terms_off
        if picture.flags.writeable or not picture.flags.owndata:
            return self._terms_by_content(picture)
        key = id(picture)
        hit = self._by_object.get(key)
        if hit is not None and hit[0]() is picture:
            self._by_object.move_to_end(key)
            return hit[1]
        terms = self._terms_by_content(picture)
        self._by_object[key] = (weakref.ref(picture), terms)
        if len(self._by_object) > self._cache_size:
            self._by_object.popitem(last=False)
        return terms

    def _terms_by_content(self, picture: np.ndarray | None) -> _Terms:
        r0, r1, c0, c1 = self._crop_bounds()
        if picture is None:
            crop = np.zeros((r1 - r0, c1 - c0), np.uint8)
        else:
            crop = np.ascontiguousarray(picture[r0:r1, c0:c1])
        key = crop.tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        rows = np.arange(r0, r1, dtype=float)
        cols = np.arange(c0, c1, dtype=float)
        inten = crop.astype(float) / 255.0
        spec = env = None
        if inten.any() and self.k_coh > 0:
            ec, spec = self._coherent_field(np.sqrt(inten), rows, cols)
            ec *= np.float32(math.sqrt(self.k_coh))
            if spec is not None:
                spec = (spec * math.sqrt(self.k_coh)).astype(np.complex64)
        else:
            ec = np.zeros(self.shape, np.complex64)
        i_t = np.zeros(self.shape)
        if self.k_target > 0 and self.sigma_env_px > 0 and inten.any():
            r_on, c_on = np.flatnonzero(inten.any(axis=1)), np.flatnonzero(inten.any(axis=0))
            prof_y = _EdgeProfile(rows[r_on], lambda v: self.dmd_to_camera(0.0, v)[1], self.shape[0])
            prof_x = _EdgeProfile(cols[c_on], lambda v: self.dmd_to_camera(v, 0.0)[0], self.shape[1])
            env = (prof_y, prof_x, self.k_target * inten[np.ix_(r_on, c_on)])
            i_t = self._envelope(env, dtype=np.float64)
        a_flow = np.sqrt(i_t + self.i_flow_bg).astype(np.float32)
        mean = (np.abs(ec) ** 2 + i_t + self.i_flow_bg + self.i_wall).astype(float)
        out = _Terms(ec, a_flow, mean, spec, env)
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    # ------------------------------------------------------------------ frames
    def _advance_medium(self, t_s: float, flow_ml_h: float) -> None:
        """Evolve the speckle to bench time t_s; earlier times than the last one are clamped (no rewind)."""
        if self._t_last is None:
            self._t_last = self._t_wall = t_s
        dt = t_s - self._t_last
        if dt > 0:
            tau = med.correlation_time_s(self.cfg.medium, flow_ml_h)
            if math.isfinite(tau):
                self.flow_speckle.advance(math.exp(-dt / tau))
            self._t_last = t_s
        dtw = t_s - self._t_wall
        if dtw >= self.cfg.medium.wall_update_s:
            self.wall_speckle.advance(math.exp(-dtw / self.cfg.medium.wall_tau_s))
            self._t_wall = t_s
            self._wall_term = None

    def _draw_vibration(self) -> tuple[float, float] | None:
        """This frame's target displacement (dx, dy) in camera px, or None without vibration (no draw)."""
        if self.vibration_px <= 0.0:
            return None
        dx, dy = self._rng.standard_normal(2) * self.vibration_px
        return float(dx), float(dy)

    def moved_terms(self, picture: np.ndarray | None, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
        """(E_c, A_flow) of the picture's target moved by (dx, dy) camera px (the background stays put)."""
        return self._moved(self._terms(picture), dx, dy)

    def _moved(self, terms: _Terms, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
        ec = terms.ec if terms.spec is None else self._moved_field(terms.spec, dx, dy)
        if terms.env is None:
            return ec, terms.a_flow
        a_flow = self._envelope(terms.env, dx, dy)
        a_flow += np.float32(self.i_flow_bg)
        return ec, np.sqrt(a_flow, out=a_flow)

    @staticmethod
    def _intensity(e: np.ndarray, exposure_s: float) -> np.ndarray:
        """|e|^2 x exposure as float64, squaring the C-contiguous complex64 ``e`` in place."""
        parts = e.view(np.float32)  # (H, 2W): re, im interleaved
        parts *= parts
        inten = np.add(parts[:, 0::2], parts[:, 1::2], dtype=np.float64)
        inten *= exposure_s
        return inten

    def expected_photons(
        self, t_s: float, exposure_s: float, picture: np.ndarray | None, flow: float
    ) -> np.ndarray:
        """Mean photons per pixel during an exposure starting at t_s (speckle frozen during it).

        With vibration, one displacement is drawn per call (= per frame) before the medium advances.
        """
        terms = self._terms(picture)
        shift = self._draw_vibration()
        if shift is not None and not terms.movable:
            shift = None
        if shift is None:
            ec, a_flow = terms.ec, terms.a_flow
        else:
            ec, a_flow = self._moved(terms, *shift)
        if self.b <= 0.0:
            if shift is None:
                return terms.mean * exposure_s
            return self._intensity(ec, exposure_s)  # no medium: |E_c|^2 of the moved target
        self._advance_medium(t_s, flow)
        if self._wall_term is None:
            self._wall_term = self.wall_speckle.field * np.float32(math.sqrt(self.i_wall))
            self._static = None
        e = a_flow * self.flow_speckle.field
        if shift is None:
            # E_c + wall field changes only with the picture or the wall step (0.5 s): cached
            if self._static is None or self._static[0] is not ec:
                self._static = (ec, ec + self._wall_term)
            e += self._static[1]
        else:
            e += ec
            e += self._wall_term
        return self._intensity(e, exposure_s)

    # ------------------------------------------------------------------ analytic Fisher
    def target_images(self, target_px: tuple[float, float]) -> tuple[np.ndarray, tuple, np.ndarray, tuple]:
        """(E_c, dI_c/dtheta, I_t, dI_t/dtheta) for a square target at continuous position.

        E_c: the coherent (ballistic) field, complex, |E_c|^2 = I_c in photons/s; I_t: the scattered
        target light in photons/s.

        ``target_px`` = target centre (x = col, y = row) in DMD mirrors; derivatives are per
        camera pixel of displacement at the camera ((d/dx, d/dy)).
        """
        spec, centre, side = self._target_spectrum(target_px)
        fy, fx = self._fy[:, None], self._fx[None, :]
        e = self._crop_ifft(spec)
        dex = self._crop_ifft(-2j * np.pi * fx * spec)
        dey = self._crop_ifft(-2j * np.pi * fy * spec)
        dic = (2 * self.k_coh * np.real(np.conj(e) * dex), 2 * self.k_coh * np.real(np.conj(e) * dey))
        it, dit = self._target_envelope(centre, side)
        return math.sqrt(self.k_coh) * e, dic, it, dit

    def _target_spectrum(
        self, target_px: tuple[float, float]
    ) -> tuple[np.ndarray, tuple[float, float], float]:
        """(pupil-filtered spectrum of the square target, its centre (x, y) on the padded grid, side) in
        camera pixels: what the coherent image and the envelope of ``target_images`` start from.

        The spectrum is that of one period of the padded grid, as the bench draws it: a target outside
        that period (the FOV and ``_PAD`` px around it) would wrap into the FOV here while the bench
        clips it away (``_mirror_spectra``), so it is refused.
        """
        xc, yc = self.dmd_to_camera(target_px[0], target_px[1])
        xc, yc = float(xc) + _PAD, float(yc) + _PAD
        a = self.cfg.reflection.target_size_px * self.px_per_mirror
        (ny, nx) = self._pad_shape
        if not (a / 2 <= xc <= nx - a / 2 and a / 2 <= yc <= ny - a / 2):
            raise ValueError(
                f"target centre {tuple(target_px)} (DMD mirrors) images to camera pixel"
                f" ({xc - _PAD:.1f}, {yc - _PAD:.1f}): the analytic model covers targets within {_PAD} px of"
                f" the {self.shape[1]}x{self.shape[0]} field of view"
            )
        fy, fx = self._fy[:, None], self._fx[None, :]
        spec = (
            (a * a)
            * np.sinc(a * fy)
            * np.sinc(a * fx)
            * np.exp(-2j * np.pi * (fy * yc + fx * xc))
            * self._pupil
        )
        return spec, (xc, yc), a

    def _crop_ifft(self, spectrum: np.ndarray) -> np.ndarray:
        """The field of a padded-grid spectrum over the camera's field of view."""
        return sfft.ifft2(spectrum, workers=1)[_PAD : _PAD + self.shape[0], _PAD : _PAD + self.shape[1]]

    def _target_envelope(self, centre: tuple[float, float], side: float) -> tuple[np.ndarray, tuple]:
        """(I_t, dI_t/dtheta): the scattered target light, the square blurred by the diffusive envelope."""
        if not (self.k_target > 0 and self.sigma_env_px > 0):
            it = np.zeros(self.shape)
            return it, (it, it)
        s = self.sigma_env_px

        def prof(u: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = (u - c + side / 2) / s, (u - c - side / 2) / s
            g = 0.5 * (special.erf(lo / math.sqrt(2)) - special.erf(hi / math.sqrt(2)))
            dg = -(np.exp(-0.5 * lo**2) - np.exp(-0.5 * hi**2)) / (math.sqrt(2 * math.pi) * s)
            return g, dg

        gx, dgx = prof(np.arange(self.shape[1], dtype=float) + _PAD, centre[0])
        gy, dgy = prof(np.arange(self.shape[0], dtype=float) + _PAD, centre[1])
        it = self.k_target * np.outer(gy, gx)
        return it, (self.k_target * np.outer(gy, dgx), self.k_target * np.outer(dgy, gx))

    def _exposure(self, exposure_s: float | None) -> float:
        """The exposure of the analytic models: ``exposure_s``, or the configured one when None; > 0."""
        exp_s = self.cfg.reflection.exposure_s if exposure_s is None else float(exposure_s)
        if not (math.isfinite(exp_s) and exp_s > 0.0):
            raise ValueError(f"exposure_s must be finite and > 0 s, got {exposure_s}")
        return exp_s

    def coherence_area_px(self) -> float:
        """Speckle coherence area sum_r |mu(r)|^2 in pixels (1 for independent pixels): the grain size."""
        if self.cfg.medium.speckle_model == "independent":
            return 1.0
        return 1.0 / (math.pi * self.f_cut**2)

    def fisher_matrix(
        self,
        target_px: tuple[float, float],
        binning: int = 1,
        method: str = "auto",
        qe: float = 1.0,
        read_noise_e: float = 0.0,
        exposure_s: float | None = None,
    ) -> np.ndarray:
        """2x2 Fisher matrix of the target centre, in 1/um^2 at the sample (see fisher_truth).

        ``method``: 'poisson' (shot + read noise, the model at b = 0); 'speckle' (b > 0): the exact
        non-central chi-square value for independent-pixel speckle, the exact linear Fisher information
        for pupil speckle; 'linear': the linear Fisher information for either speckle model; 'auto'.
        """
        exp_s = self._exposure(exposure_s)
        if method == "auto":
            method = "poisson" if self.b == 0 else "speckle"
        ec, dic, it, dit = self.target_images(target_px)
        ic = np.abs(ec) ** 2
        px = 1.0 / self.um_per_px  # d/dtheta_um = d/dx_px * px
        if method == "poisson":
            scale = exp_s * qe
            lam = (ic + it + self.i_flow_bg + self.i_wall) * scale
            dl = tuple(ft.bin_image((dic[i] + dit[i]) * scale * px, binning) for i in range(2))
            j = ft.poisson_fisher_matrix(ft.bin_image(lam, binning), dl, binning**2 * read_noise_e**2)
            return j
        if method not in ("speckle", "linear"):
            raise ValueError(f"method must be 'auto', 'poisson', 'speckle' or 'linear', not {method!r}")
        if self.b == 0:
            raise ValueError(
                f"the {method} model needs b > 0 (at b = 0 there is no diffuse light: use 'poisson')"
            )
        independent = self.cfg.medium.speckle_model == "independent"
        if method == "speckle" and independent:
            # exact: every bin sums f^2 independent modes (non-central chi-square)
            diff = it + self.i_flow_bg + self.i_wall
            lam = ft.bin_image(ic, binning)
            dlam = tuple(ft.bin_image(dic[i] * px, binning) for i in range(2))
            dd = ft.bin_image(diff, binning)
            ddd = tuple(ft.bin_image(dit[i] * px, binning) for i in range(2))
            return ft.speckle_fisher_matrix(lam, dlam, dd, ddd, float(binning**2))
        # pupil speckle: neighbouring pixels and bins are correlated; no closed-form likelihood
        return self.speckle_moments(target_px, binning, qe, read_noise_e, exp_s).fisher()

    def speckle_moments(
        self,
        target_px: tuple[float, float],
        binning: int = 1,
        qe: float = 1.0,
        read_noise_e: float = 0.0,
        exposure_s: float | None = None,
        bins: np.ndarray | None = None,
    ) -> ft.BinnedSpeckleMoments:
        """Exact mean and covariance (photo-electrons) of the informative bins, d mean/d theta per um.

        What the linear Fisher information and the locally linear estimator are built from (b > 0).
        ``bins`` ((n, 2) row, col) replaces the informative bins of this position.
        """
        exp_s = self._exposure(exposure_s)
        ec, amplitude, dmean = self._speckle_terms(target_px)
        independent = self.cfg.medium.speckle_model == "independent"
        pupil = None if independent else med.circular_pupil_indices(self.shape, self.f_cut)
        return ft.binned_speckle_moments(
            ec,
            amplitude,
            self.i_wall,
            dmean,
            ft.speckle_correlation(self.shape, pupil),
            binning,
            counts_per_photon=exp_s * qe,
            read_var=binning**2 * read_noise_e**2,
            bins=bins,
        )

    def _speckle_terms(self, target_px: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(E_c, flowing diffuse amplitude, d mean/d theta per um) of the speckle model at ``target_px``."""
        ec, dic, it, dit = self.target_images(target_px)
        px = 1.0 / self.um_per_px
        return ec, np.sqrt(it + self.i_flow_bg), ((dic[0] + dit[0]) * px, (dic[1] + dit[1]) * px)

    def mean_counts(
        self,
        target_px: tuple[float, float],
        binning: int = 1,
        qe: float = 1.0,
        exposure_s: float | None = None,
    ) -> np.ndarray:
        """Expected photo-electrons per bin of the frame with the target at ``target_px`` (whole frame).

        The mean of the speckle model (|E_c|^2 + I_t + I_bg + I_wall): what a likelihood over many
        candidate positions needs, without the covariance that ``speckle_moments`` also computes.
        """
        exp_s = self._exposure(exposure_s)
        spec, centre, side = self._target_spectrum(target_px)  # no derivative images: one FFT
        ic = self.k_coh * np.abs(self._crop_ifft(spec)) ** 2
        it, _ = self._target_envelope(centre, side)
        return exp_s * qe * ft.bin_image(ic + it + self.i_flow_bg + self.i_wall, binning)

    def informative_bins(
        self,
        target_px: tuple[float, float],
        binning: int = 1,
        qe: float = 1.0,
        read_noise_e: float = 0.0,
        reach_bins: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """The informative bins (row, col) of ``target_px``, dilated by ``reach_bins`` (rows, cols) both ways.

        The bins ``speckle_moments`` keeps by default at the configured exposure, found without computing
        their covariance. Dilated, they hold the light of targets moved off ``target_px`` as well, so that
        likelihoods and bounds over several positions compare the frames on common bins; the dilation stops
        at the frame's edge.
        """
        ec, amplitude, dmean = self._speckle_terms(target_px)
        q = self.cfg.reflection.exposure_s * qe
        nominal = ft.signal_bins(ec, amplitude, self.i_wall, dmean, binning, q, binning**2 * read_noise_e**2)
        if not any(reach_bins):
            return nominal
        chosen = np.zeros(np.array(self.shape) // binning, bool)
        chosen[tuple(nominal.T)] = True
        rectangle = np.ones((2 * reach_bins[0] + 1, 2 * reach_bins[1] + 1), bool)
        return np.argwhere(ndimage.binary_dilation(chosen, structure=rectangle))

    def _bins_reaching(
        self,
        target_px: tuple[float, float],
        reach_um: float,
        axis: int,
        binning: int,
        qe: float,
        read_noise_e: float,
    ) -> np.ndarray:
        """The informative bins of ``target_px`` widened by ``reach_um`` both ways along ``axis`` (0 = x)."""
        reach = int(np.ceil(reach_um / self.um_per_px / binning))
        reach_bins = (0, reach) if axis == 0 else (reach, 0)  # bins are (row, col): x moves along columns
        return self.informative_bins(target_px, binning, qe, read_noise_e, reach_bins)

    def _target_moved_by(
        self, target_px: tuple[float, float], offset_um: float, axis: int
    ) -> tuple[float, float]:
        moved = np.array(target_px, dtype=float)
        moved[axis] += offset_um / self.um_per_mirror
        return (float(moved[0]), float(moved[1]))

    def pair_distances(
        self,
        target_px: tuple[float, float],
        shifts_um: np.ndarray,
        axis: int,
        binning: int = 1,
        qe: float = 1.0,
        read_noise_e: float = 0.0,
    ) -> np.ndarray:
        """Mahalanobis distance between frames of the target at -h/2 and +h/2 along ``axis``, per shift h.

        What the Ziv-Zakai bound is built from (analysis/ziv_zakai.py). Both positions' exact moments on
        the same bins: the informative bins of ``target_px``, widened along the axis to hold both images.
        The covariance is the two positions' mean (pooled), so d -> sqrt(J) h for small h with J the
        linear Fisher information of the analytic CRB: the bound follows that CRB's Gaussian model of the
        frames into the threshold regime. ``axis``: 0 = x (columns), 1 = y (rows); shifts in um.
        """
        shifts = np.asarray(shifts_um, dtype=float)
        moments = {"binning": binning, "qe": qe, "read_noise_e": read_noise_e}
        bins = self._bins_reaching(target_px, shifts.max() / 2, axis, binning, qe, read_noise_e)
        out = np.empty(shifts.size)
        for i, h in enumerate(shifts):
            pair = [
                self.speckle_moments(self._target_moved_by(target_px, s * h / 2, axis), bins=bins, **moments)
                for s in (-1, 1)
            ]
            out[i] = pair[0].distance(pair[1])
        return out

    def mean_difference_gram(
        self,
        target_px: tuple[float, float],
        offsets_um: np.ndarray,
        axis: int,
        binning: int = 1,
        qe: float = 1.0,
        read_noise_e: float = 0.0,
    ) -> np.ndarray:
        """G_ij = (mu_i - mu_0)^T Sigma_0^-1 (mu_j - mu_0) for the target moved by offsets h_i along ``axis``.

        What the Barankin bound is built from (analysis/barankin.py): mu_i the exact mean frame at each
        test point, Sigma_0 the exact covariance at ``target_px``, on its informative bins widened to hold
        every test point's image. G_ii = h_i^2 J for small h_i (the linear Fisher information of the CRB).
        """
        offsets = np.asarray(offsets_um, dtype=float)
        bins = self._bins_reaching(target_px, np.abs(offsets).max(), axis, binning, qe, read_noise_e)
        at_target = self.speckle_moments(target_px, binning, qe, read_noise_e, bins=bins)
        rows, cols = at_target.bins.T
        moved = np.array(
            [
                self.mean_counts(self._target_moved_by(target_px, h, axis), binning, qe)[rows, cols]
                for h in offsets
            ]
        )
        chol = linalg.cholesky(at_target.covariance, lower=True)
        white = linalg.solve_triangular(chol, (moved - at_target.mean).T, lower=True)
        return white.T @ white

    def with_thickness(self, b: float) -> Callable[[], None]:
        """Temporarily set b (returns a restore callable); used by analytic_crb_um(b=...)."""
        if not (math.isfinite(b) and b >= 0.0):
            raise ValueError(f"optical thickness b must be finite and >= 0, got {b}")
        old = self.b
        self._set_thickness(b)
        return lambda: self._set_thickness(old)
