"""Configuration 2: blind-SIM, random DMD masks -> speckle illumination of a fluorescent sample (seed 001).

Illumination: the DMD sits in a Fourier (pupil) plane of the sample. Each pupil sample
inside a circular aperture of radius f_c takes the mean of one DMD macro-pixel of the
random binary mask; the mean over the aperture (the zero order) is removed, as a
zero-order block does, and a static random phase (a fixed diffuser in the DMD
illumination) is applied, so the sample field is a sum of many random plane waves: fully
developed speckle (seed 001: "summing plane waves with random phases ... and a cutoff
spatial frequency" that sets d_sp). The speckle intensity correlation of a circular pupil
is the Airy pattern |2J1(v)/v|^2 (v = 2 pi f_c r), whose FWHM is 0.514/f_c, so
f_c = 0.514 / d_sp. Each mask's speckle is scaled to unit spatial mean (a power-stabilised
source): the mean over masks is then uniform illumination.

Emission rho(r) I_n(r) is blurred by the detection PSF, an Airy disk of FWHM
d_PSF = eta d_sp (seed 001 eq. 1), applied with its exact OTF (the autocorrelation of a
circular pupil of radius 0.514/d_PSF). Boundaries are periodic over the field of view.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from devices.bench.config import BenchConfig
from devices.bench.samples import make_sample, sample_rng

AIRY_FWHM = 0.514  # FWHM of |2 J1(v)/v|^2 in units of 1/f_c (lambda/NA): 0.514 lambda/NA


def airy_otf(shape: tuple[int, int], fwhm_px: float) -> np.ndarray:
    """rfft2-shaped OTF of an Airy PSF of the given FWHM: chat(f / 2 f_c), f_c = 0.514 / FWHM."""
    fc = AIRY_FWHM / fwhm_px
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    q = np.clip(np.sqrt(fy**2 + fx**2) / (2.0 * fc), 0.0, 1.0)
    return (2.0 / np.pi) * (np.arccos(q) - q * np.sqrt(1.0 - q * q))


class SpeckleSimModel:
    """Seed-001 bench: expected photons for the DMD mask shown at time t."""

    def __init__(self, cfg: BenchConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        s = cfg.speckle_sim
        self.shape = (s.camera_rows, s.camera_cols)
        self.pixel_um = s.pixel_at_sample_um
        self.d_sp_px = s.d_sp_um / self.pixel_um
        self.d_psf_px = s.eta * self.d_sp_px
        self.f_c = AIRY_FWHM / self.d_sp_px  # speckle pupil radius, cycles/px
        ky = np.rint(sfft.fftfreq(self.shape[0]) * self.shape[0]).astype(int)
        kx = np.rint(sfft.fftfreq(self.shape[1]) * self.shape[1]).astype(int)
        kyy, kxx = np.meshgrid(ky, kx, indexing="ij")
        inside = (kyy / self.shape[0]) ** 2 + (kxx / self.shape[1]) ** 2 <= self.f_c**2
        self._flat = np.flatnonzero(inside)
        self._ky, self._kx = kyy.ravel()[self._flat], kxx.ravel()[self._flat]
        if self._flat.size < 10:
            raise ValueError("speckle pupil holds < 10 samples: d_sp too large for the camera grid")
        mp = s.macropixel_dmd_px
        self.kmax_y, self.kmax_x = int(np.abs(self._ky).max()), int(np.abs(self._kx).max())
        if (2 * self.kmax_y + 1) * mp > cfg.dmd.rows or (2 * self.kmax_x + 1) * mp > cfg.dmd.cols:
            raise ValueError("the speckle pupil does not fit on the DMD: reduce macropixel_dmd_px")
        # static random phase over the pupil (a fixed diffuser in the DMD illumination): without it the
        # real DMD amplitude gives a Hermitian pupil and a centro-symmetric (twin-image) speckle
        self._pupil_phase = np.exp(2j * np.pi * rng.random(self._flat.size))
        self.otf = airy_otf(self.shape, self.d_psf_px)
        self._densities: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.sample = s.sample
        self.rho, self._rho_blur = self.densities(s.sample)

    def densities(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(rho, rho blurred by the detection PSF) of sample ``name``; a pure function of (seed, name)."""
        if name not in self._densities:
            s = self.cfg.speckle_sim
            rng = sample_rng(self.cfg.seed, name)
            rho = make_sample(name, self.shape, rng, s.siemens_spokes) + s.background
            blur = sfft.irfft2(sfft.rfft2(rho) * self.otf, s=self.shape)
            rho.flags.writeable = False
            blur.flags.writeable = False
            self._densities[name] = (rho, blur)
        return self._densities[name]

    def mount(self, name: str) -> None:
        """Image sample ``name`` from now on (seed 001: one sample per block of N masks)."""
        self.rho, self._rho_blur = self.densities(name)
        self.sample = name

    def pupil_amplitudes(self, picture: np.ndarray) -> np.ndarray:
        """The mask's amplitude (0..1) at each pupil sample |f| <= f_c: the mean of one macro-pixel.

        The central macro-pixels of the protocol's grid (multiples of mp from the DMD's corner), so a
        binary mask gives binary amplitudes rather than means over four straddled macro-pixels.
        """
        mp = self.cfg.speckle_sim.macropixel_dmd_px
        ny, nx = 2 * self.kmax_y + 1, 2 * self.kmax_x + 1
        r0 = (self.cfg.dmd.rows // 2 - (ny * mp) // 2) // mp * mp
        c0 = (self.cfg.dmd.cols // 2 - (nx * mp) // 2) // mp * mp
        crop = picture[r0 : r0 + ny * mp, c0 : c0 + nx * mp].astype(float) / 255.0
        blocks = crop.reshape(ny, mp, nx, mp).mean(axis=(1, 3))
        return blocks[self._ky + self.kmax_y, self._kx + self.kmax_x]

    def illumination(self, picture: np.ndarray | None) -> np.ndarray:
        """Speckle intensity I_n at the sample, unit spatial mean (zeros if nothing is projected)."""
        if picture is None:
            return np.zeros(self.shape)
        amp = self.pupil_amplitudes(picture)
        amp = amp - amp.mean()  # zero-order block
        if not np.any(amp):
            return np.zeros(self.shape)
        buf = np.zeros(self.shape[0] * self.shape[1], complex)
        buf[self._flat] = amp * self._pupil_phase
        field = sfft.ifft2(buf.reshape(self.shape), norm="forward")
        inten = np.abs(field) ** 2
        return inten / inten.mean()

    def expected_photons(self, picture: np.ndarray | None, exposure_s: float) -> np.ndarray:
        """photons_per_s * exposure * (PSF * (rho I_n))."""
        ill = self.illumination(picture)
        emis = self.rho * ill
        img = sfft.irfft2(sfft.rfft2(emis) * self.otf, s=self.shape)
        return np.maximum(img, 0.0) * (self.cfg.speckle_sim.photons_per_s * exposure_s)

    def ground_truth(self) -> dict[str, np.ndarray]:
        psf = np.fft.fftshift(sfft.irfft2(self.otf, s=self.shape))
        return {
            "sample": np.asarray(self.sample),
            "rho": self.rho.copy(),
            "rho_blurred": self._rho_blur.copy(),
            "psf": psf / psf.sum(),
            "pixel_um": np.asarray(self.pixel_um),
            "d_sp_um": np.asarray(self.d_sp_px * self.pixel_um),
            "d_psf_um": np.asarray(self.d_psf_px * self.pixel_um),
            "eta": np.asarray(self.cfg.speckle_sim.eta),
            "speckle_pupil_radius_cycles_per_px": np.asarray(self.f_c),
        }
