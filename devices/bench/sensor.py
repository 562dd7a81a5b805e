"""Noise model of the bench's sCMOS camera (photons in, 16-bit ADU out).

The simulated camera turns the bench's *expected* photon image into what a real
camera would record, so that analyses run on simulated data (Fisher information,
Cramér–Rao bounds, localiser training) see the same statistics as on the bench:

1. photo-electrons ~ Poisson(qe · photons)            (shot noise; QE as a binomial thinning)
2. the pixel well clips at ``full_well_e``            (physical saturation)
3. + Gaussian read noise of ``read_noise_e`` rms      (per read-out pixel)
4. · ``gain_adu_per_e`` + ``offset_adu``              (conversion and baseline clamp)
5. rounded to integers and clipped to [0, 2**bit_depth - 1]  (ADC, digital saturation)

Default constants: an Andor Zyla 5.5 sCMOS in its 16-bit "low noise and high well
capacity" (dual amplifier) mode, the configuration the bench's camera is run in.
Sources (Andor Zyla hardware manual v2.0, 2021, section 2.3 and table 4; Andor
product specification):

* ``qe = 0.6``: peak quantum efficiency of the front-illuminated CIS2521 sensor is
  about 60 % (near 560 nm); use the value at the bench's wavelength where known.
* ``gain_adu_per_e = 1 / 0.45``: table 4 gives a typical sensitivity of 0.45 e-/ADU
  in the 16-bit modes (rolling and global shutter), i.e. ≈ 2.22 ADU per electron.
* ``read_noise_e = 1.38``: median read noise at the fastest (560 MHz) read-out
  quoted in section 2.3; sCMOS read noise is a per-pixel distribution and the median
  is the customary single number (the 200 MHz read-out is lower, about 1 e-).
* ``offset_adu = 100``: Andor's baseline clamp puts the dark level at 100 counts, so
  read noise below zero is still recorded.
* ``full_well_e = 30000``: "effective pixel saturation limit" of the 16-bit modes.
* ``bit_depth = 16``.

With these numbers the ADC saturates first: 65535 ADU is reached at
(65535 - 100) / 2.22 ≈ 29 450 e-, just below the 30 000 e- well. Both clips are
modelled because a lower gain (or another camera) reverses the order.

Binning (see :meth:`SensorModel.expose` ``n_summed``): sCMOS cameras bin *digitally*
after each pixel has been read, so a b×b bin carries b² independent read noises
(σ_read · b) but still one baseline offset and one 16-bit output word.

How the draws are made (speed: a 128×128 frame must cost well under 0.3 ms, see
``benchmarks/bench_frames.py``; statistics: ``tests/test_camera_sensor.py``):

* shot noise is **exact Poisson** (numpy) for λ = qe·photons < ``normal_above_e`` electrons;
* for λ ≥ ``normal_above_e`` it is the **normal approximation** λ + √λ·z. Mean and variance
  are exact; the only difference is the Poisson skewness 1/√λ ≤ 0.03. The Fisher information
  about λ of N(λ, λ) is 1/λ + 1/(2λ²), i.e. 1 + 1/(2λ) ≤ 1.0005 times the Poisson value at
  the threshold (less with read noise); the test computes it for the full pipeline (read noise,
  gain, ADC) from the exact output distributions. ``normal_above_e = inf`` gives exact Poisson
  everywhere;
* for those pixels shot and read noise are one normal draw, λ + √(λ + nσ²)·z (a sum of
  independent normals). This applies the well clip after the read noise rather than before,
  so pixels whose λ + 8√λ reaches the well take separate draws (exact order);
* normals are float32 Box–Muller from 24-bit uniforms (exact transform, ~2× faster than
  numpy's ziggurat here): |z| ≤ 5.77, the tail beyond has probability 8·10⁻⁹.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Sensitivity of the Zyla 5.5 in 16-bit mode (Andor manual, table 4), electrons per ADU.
ZYLA55_SENSITIVITY_E_PER_ADU = 0.45


@dataclass(frozen=True)
class SensorModel:
    """Shot noise, read noise, gain, offset and saturation of one camera mode.

    Frozen so that one instance can be shared by the simulated camera, the bench's
    ground truth and the run file's metadata without anyone changing it under them.
    """

    qe: float = 0.6
    gain_adu_per_e: float = 1.0 / ZYLA55_SENSITIVITY_E_PER_ADU
    read_noise_e: float = 1.38
    offset_adu: float = 100.0
    full_well_e: float = 30000.0
    bit_depth: int = 16
    #: expected electrons from which shot noise is drawn as λ + √λ·N(0, 1) (exact Poisson below)
    normal_above_e: float = 1000.0

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a 10^5-frame run.
        if not 0.0 < self.qe <= 1.0:
            raise ValueError(f"qe must be in (0, 1], got {self.qe}")
        if self.gain_adu_per_e <= 0:
            raise ValueError(f"gain_adu_per_e must be positive, got {self.gain_adu_per_e}")
        if self.read_noise_e < 0:
            raise ValueError(f"read_noise_e must be >= 0, got {self.read_noise_e}")
        if self.full_well_e <= 0:
            raise ValueError(f"full_well_e must be positive, got {self.full_well_e}")
        if not 1 <= self.bit_depth <= 16:
            raise ValueError(f"bit_depth must be 1..16 (images are uint16), got {self.bit_depth}")
        if not self.normal_above_e >= 10.0:
            raise ValueError(f"normal_above_e must be >= 10 electrons (or inf), got {self.normal_above_e}")
        if not 0 <= self.offset_adu < self.adc_max:
            raise ValueError(f"offset_adu must be in [0, {self.adc_max}), got {self.offset_adu}")

    @property
    def adc_max(self) -> int:
        """Largest value the ADC can output (65535 for 16 bits): the digital saturation level."""
        return (1 << self.bit_depth) - 1

    def saturation_electrons(self, n_summed: int = 1) -> float:
        """Electrons at which the output stops growing (well or ADC, whichever comes first)."""
        adc_limit = (self.adc_max - self.offset_adu) / self.gain_adu_per_e
        return min(self.full_well_e * n_summed, adc_limit)

    def expose(self, photons: np.ndarray, rng: np.random.Generator, n_summed: int = 1) -> np.ndarray:
        """Draw one noisy uint16 image for the expected photon counts ``photons``.

        ``photons`` is the *mean* number of photons reaching each output pixel during
        the exposure (any shape, float, >= 0). ``n_summed`` is the number of physical
        pixels summed into each output pixel (b² for b×b binning): the sum of
        independent Poisson variables is Poisson with the summed mean, so summing the
        expectations first is exact for shot noise; read noise then has variance
        n_summed·σ² (sCMOS digital binning) and the well clip is applied to the sum
        at n_summed·full_well (exact unless only some pixels of a bin saturate).
        Shot noise is exact Poisson below ``normal_above_e`` electrons, normal above
        (see the module docstring).
        """
        photons = np.asarray(photons, dtype=np.float64)
        if n_summed < 1:
            raise ValueError(f"n_summed must be >= 1, got {n_summed}")
        if photons.size == 0:
            return np.zeros(photons.shape, np.uint16)
        hi = float(photons.max())  # NaN propagates through max; -inf and negatives fail the min
        if not (math.isfinite(hi) and photons.min() >= 0):
            raise ValueError("expected photon counts must be finite and >= 0")
        lam = self.qe * photons.ravel()  # expected electrons (a new float64 array)
        n = lam.size
        well = self.full_well_e * n_summed
        read_var = n_summed * self.read_noise_e**2
        z = standard_normal_f32(rng, n)
        # every pixel first as a normal pixel (shot + read noise in one draw) ...
        e = lam.astype(np.float32)
        sd = e + np.float32(read_var)
        np.sqrt(sd, out=sd)
        sd *= z
        e += sd
        # ... then the pixels near the well (clip before the read noise) ...
        near_well = (math.sqrt(well + 16.0) - 4.0) ** 2  # lambda + 8 sqrt(lambda) = well
        if self.qe * hi >= near_well:
            idx = np.flatnonzero(lam >= max(near_well, self.normal_above_e))
            if idx.size:
                lw = lam[idx]
                shot = np.minimum(lw + np.sqrt(lw) * z[idx], well)
                e[idx] = shot + math.sqrt(read_var) * standard_normal_f32(rng, idx.size)
        # ... and the exact Poisson pixels
        small = np.flatnonzero(lam < self.normal_above_e)
        if small.size:
            counts = rng.poisson(lam[small]).astype(np.float32)
            np.minimum(counts, well, out=counts)
            if read_var > 0:
                counts += math.sqrt(read_var) * z[small]
            e[small] = counts
        e *= np.float32(self.gain_adu_per_e)
        e += np.float32(self.offset_adu)
        np.rint(e, out=e)
        np.clip(e, 0, self.adc_max, out=e)
        return e.astype(np.uint16).reshape(photons.shape)

    def mean_adu(self, photons: np.ndarray | float, n_summed: int = 1) -> np.ndarray:
        """Expected ADU for ``photons`` (same shape), ignoring noise but honouring saturation.

        ``offset + gain · min(qe · photons, saturation)``: exact below saturation (the
        noise terms have zero mean and rounding is unbiased); at saturation it is the
        clip level, which is what a saturated pixel reads. In the few-σ band just below
        saturation the true mean of the clipped distribution is slightly lower.
        """
        electrons = self.qe * np.asarray(photons, dtype=np.float64)
        electrons = np.minimum(electrons, self.saturation_electrons(n_summed))
        return np.minimum(self.offset_adu + self.gain_adu_per_e * electrons, self.adc_max)

    def variance_adu(self, photons: np.ndarray | float, n_summed: int = 1) -> np.ndarray:
        """Expected ADU variance below saturation: gain² (qe·photons + n·σ_read²) + 1/12.

        The 1/12 ADU² term is the uniform quantisation noise of rounding to integers.
        Used by tests and by analyses that weight pixels by their noise.
        """
        electrons = self.qe * np.asarray(photons, dtype=np.float64)
        return self.gain_adu_per_e**2 * (electrons + n_summed * self.read_noise_e**2) + 1.0 / 12.0

    def as_dict(self) -> dict[str, float]:
        """The constants, for run-file metadata and camera identity."""
        return {
            "qe": self.qe,
            "gain_adu_per_e": self.gain_adu_per_e,
            "read_noise_e": self.read_noise_e,
            "offset_adu": self.offset_adu,
            "full_well_e": self.full_well_e,
            "bit_depth": self.bit_depth,
            "normal_above_e": self.normal_above_e,
        }


# ---------------------------------------------------------------------------------- random draws
_TWO_PI_F32 = np.float32(2.0 * math.pi)


def standard_normal_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` standard normal float32 by the Box–Muller transform of 24-bit uniforms.

    Exact transform of the uniforms; their 2^-24 resolution bounds |z| by
    sqrt(2·24·ln 2) = 5.77 (the normal tail beyond has probability 8·10⁻⁹).
    """
    h = (n + 1) // 2
    u = rng.random(2 * h, dtype=np.float32)
    r = u[:h]
    np.negative(r, out=r)
    np.log1p(r, out=r)  # log(1 - u), 1 - u in (0, 1]
    r *= np.float32(-2.0)
    np.sqrt(r, out=r)
    theta = u[h:]
    theta *= _TWO_PI_F32
    out = np.empty(2 * h, np.float32)
    np.cos(theta, out=out[:h])
    np.sin(theta, out=out[h:])
    out[:h] *= r
    out[h:] *= r
    return out[:n]
