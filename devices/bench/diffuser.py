"""Configuration 3: a DMD target imaged through a static ground-glass diffuser (seed 003).

Optics (seed 003 Methods): laser 532 nm, DMD at u = 16 cm before the lens, camera at
v = 10 cm behind it (magnification v/u = 0.625, a mirror images to 8.56 um), 5 mm iris.
We put the ground glass a distance z_d before the image plane and compute, on the camera
grid (spacing dx = camera pixel):

    E_cam = F^-1[ H(+z_d) F[ exp(i phi) F^-1[ P H(-z_d) F[ a ] ] ] ]

a = DMD amplitude resampled onto the image-plane grid (exact box overlap of the mirror
images with the grid cells), P the iris pupil (coherent cut-off (D/2)/(lambda v)), H the
Fresnel transfer function exp(-i pi lambda z f^2), phi a seeded Gaussian-correlated
random phase screen (correlation length, rms phase). This is a fixed linear map of the
field: the same picture gives the same speckle; distinct pictures give decorrelated
speckle (the scattering halo of ~0.5 mm rms mixes the whole target). Boundaries are
periodic (grid 3.5 mm, halo + target ~ 2 mm).

Grey levels: with ``gray_model='bitplanes'`` an 8-bit picture is shown as 8 bit-planes of
duration 2^k/255 (DMD PWM) and the camera sums their (mutually incoherent in time)
speckle intensities; 'amplitude' propagates sqrt(gray/255) once.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from devices.bench.config import BenchConfig


def _overlap_matrix(n_out: int, dx: float, n_in: int, p: float, start: float) -> np.ndarray:
    """(n_out, n_in): overlap length / dx of input cells [start + j p, start + (j+1) p] with output cells."""
    out_lo = np.arange(n_out)[:, None] * dx
    in_lo = start + np.arange(n_in)[None, :] * p
    ov = np.clip(np.minimum(out_lo + dx, in_lo + p) - np.maximum(out_lo, in_lo), 0.0, None)
    return ov / dx


class DiffuserModel:
    """Seed-003 bench: expected speckle photons for the DMD picture, cached per picture."""

    def __init__(self, cfg: BenchConfig, rng: np.random.Generator, cache_size: int = 16) -> None:
        self.cfg = cfg
        d = cfg.diffuser
        self.shape = (d.camera_rows, d.camera_cols)
        lam_um = d.wavelength_nm * 1e-3
        dx = d.camera_pixel_um
        mag = d.image_distance_mm / d.object_distance_mm
        self.mirror_image_um = cfg.dmd.pixel_um * mag
        n = d.illuminated_px
        self.r0 = cfg.dmd.rows // 2 - n // 2
        self.c0 = cfg.dmd.cols // 2 - n // 2
        span = n * self.mirror_image_um
        self._ry = _overlap_matrix(
            self.shape[0], dx, n, self.mirror_image_um, (self.shape[0] * dx - span) / 2
        )
        self._rx = _overlap_matrix(
            self.shape[1], dx, n, self.mirror_image_um, (self.shape[1] * dx - span) / 2
        )
        fy = sfft.fftfreq(self.shape[0], d=dx)[:, None]
        fx = sfft.fftfreq(self.shape[1], d=dx)[None, :]
        f2 = fy**2 + fx**2
        f_cut = (d.iris_diameter_mm * 1e3 / 2.0) / (lam_um * d.image_distance_mm * 1e3)
        z = d.diffuser_distance_mm * 1e3
        self.pupil = (f2 <= f_cut**2).astype(float)
        self._k1 = (self.pupil * np.exp(1j * np.pi * lam_um * z * f2)).astype(np.complex64)
        self._k2 = np.exp(-1j * np.pi * lam_um * z * f2).astype(np.complex64)
        white = rng.standard_normal(self.shape)
        # Gaussian kernel sigma = l/2 gives the phase autocorrelation exp(-r^2/l^2) (1/e length l)
        phi = ndimage.gaussian_filter(white, d.diffuser_corr_um / dx / 2.0, mode="wrap")
        self.phase = phi * (d.diffuser_phase_std_rad / phi.std())
        self._screen = np.exp(1j * self.phase).astype(np.complex64)
        full = self._ry @ np.ones((n, n)) @ self._rx.T
        self._scale = d.photons_per_s * self.shape[0] * self.shape[1] / float(np.sum(full**2))
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def _propagate(self, amp: np.ndarray) -> np.ndarray:
        """|E_cam|^2 for a DMD amplitude (n x n) in the illuminated region."""
        a = (self._ry @ amp @ self._rx.T).astype(np.complex64)
        e = sfft.ifft2(sfft.fft2(a, workers=1) * self._k1, workers=1)
        e *= self._screen
        e = sfft.ifft2(sfft.fft2(e, workers=1) * self._k2, workers=1)
        return (e.real.astype(float) ** 2) + (e.imag.astype(float) ** 2)

    def intensity(self, picture: np.ndarray | None) -> np.ndarray:
        """Speckle intensity (photons/s per pixel) for a DMD picture; LRU-cached."""
        n = self.cfg.diffuser.illuminated_px
        if picture is None:
            return np.zeros(self.shape)
        crop = np.ascontiguousarray(picture[self.r0 : self.r0 + n, self.c0 : self.c0 + n])
        key = crop.tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if not crop.any():
            out = np.zeros(self.shape)
        elif self.cfg.diffuser.gray_model == "amplitude" or np.all((crop == 0) | (crop == 255)):
            out = self._propagate(np.sqrt(crop / 255.0)) * self._scale
        else:
            out = np.zeros(self.shape)
            for k in range(8):
                plane = (crop >> k) & 1
                if plane.any():
                    out += (2**k / 255.0) * self._propagate(plane.astype(float))
            out *= self._scale
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def expected_photons(self, picture: np.ndarray | None, exposure_s: float) -> np.ndarray:
        return self.intensity(picture) * exposure_s

    def ground_truth(self) -> dict[str, np.ndarray]:
        d = self.cfg.diffuser
        return {
            "phase_screen_rad": self.phase.copy(),
            "pupil": self.pupil.copy(),
            "camera_pixel_um": np.asarray(d.camera_pixel_um),
            "mirror_image_um": np.asarray(self.mirror_image_um),
            "illuminated_region_rc": np.asarray([self.r0, self.c0, d.illuminated_px]),
        }
