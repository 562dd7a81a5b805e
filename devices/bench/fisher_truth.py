"""Analytic Fisher information of the target position.

Two exact statistical models of one (binned) camera pixel k, both with independent pixels, and the
linear Fisher information for correlated (pupil-limited) speckle, where no closed form exists (3.):

1. Shot noise (b = 0, free space): counts ~ Poisson(lambda_k) with lambda_k the expected
   photo-electrons (QE x photons), plus Gaussian read noise of variance sigma_r^2 per
   *read* pixel, folded in as the usual Gaussian-Poisson approximation (the variance adds
   in the denominator)::

       J_ij = sum_k (d lambda_k/d theta_i)(d lambda_k/d theta_j) / (lambda_k + n_read sigma_r^2)

   with n_read = binning^2 for software binning (an sCMOS reads every pixel). Exact for a
   pure Poisson sensor (sigma_r = 0); saturation and ADC quantisation are neglected.

2. Speckle + coherent part: the pixel (or bin) sums M independent speckle modes, each the
   coherent field plus a circular Gaussian field. The intensity S is then a scaled
   non-central chi-square with 2M degrees of freedom (M = 1: the modified-Rician intensity
   PDF)::

       p(S) = (1/d) (S/lam)^((M-1)/2) exp(-(S+lam)/d) I_{M-1}(2 sqrt(lam S)/d)

   lam = coherent intensity I_c (summed over the bin), d = diffuse mean per mode
   (D = M d is the bin's diffuse mean I_d). The 2x2 Fisher matrix in (lam, d) is computed by
   quadrature; it scales as F(lam, d) = F~(k = lam/d; M) / d^2, so F~ is tabulated once
   per M on a log grid of k and interpolated. The position information is
   J = g^T F g with g = (d lam/d theta, d d/d theta). Shot noise is neglected here (valid
   when d >> 1 photon per mode, always the case on the bench for b > 0.05); it can only
   lower the true information (data processing inequality), so this is an upper bound
   that is tight in the speckle-limited regime.

3. Correlated speckle (the bench's pupil speckle, grains spanning several pixels and bins):
   J_lin = mu'^T Sigma^-1 mu' with the exact mean and covariance of the binned frame
   (``binned_speckle_moments``). A lower bound on J for any distribution with these moments, so its
   CRB is an upper bound on the true one, attained by the locally linear unbiased estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import linalg, ndimage, special

_LOGK = np.linspace(-8.0, 5.0, 261)  # k = lam/d from 1e-8 to 1e5


def _rician_fisher_normalised(k: float, m: float, n_grid: int = 6000) -> np.ndarray:
    """F~(k; M): 2x2 Fisher matrix in (lam, d) at d = 1, by trapezoidal quadrature over S/d."""
    mean = k + m
    std = np.sqrt(m + 2.0 * k)
    lo = max(0.0, mean - 14.0 * std)
    hi = mean + 14.0 * std + 30.0
    x = np.linspace(lo, hi, n_grid)[1:]  # x = S/d > 0
    z = 2.0 * np.sqrt(k * x)
    i0 = special.ive(m - 1.0, z)
    ratio = special.ive(m, z) / np.maximum(i0, 1e-300)
    # log p (d = 1), with I_nu(z) = ive(nu, z) exp(z) and exp(z - x - k) = exp(-(sqrt x - sqrt k)^2)
    logp = 0.5 * (m - 1.0) * np.log(x / k) - (np.sqrt(x) - np.sqrt(k)) ** 2 + np.log(np.maximum(i0, 1e-300))
    p = np.exp(logp)
    s_lam = -1.0 + ratio * np.sqrt(x / k)
    s_d = -m + (x + k) - z * ratio
    w = p / np.trapezoid(p, x)  # renormalise the truncated grid
    f = np.empty((2, 2))
    f[0, 0] = np.trapezoid(w * s_lam * s_lam, x)
    f[0, 1] = f[1, 0] = np.trapezoid(w * s_lam * s_d, x)
    f[1, 1] = np.trapezoid(w * s_d * s_d, x)
    return f


@lru_cache(maxsize=32)
def rician_table(m: float) -> np.ndarray:
    """F~ on the log-k grid for M modes: array (len(_LOGK), 3) holding (F_ll, F_ld, F_dd)."""
    out = np.empty((_LOGK.size, 3))
    for i, lk in enumerate(_LOGK):
        f = _rician_fisher_normalised(10.0**lk, m)
        out[i] = (f[0, 0], f[0, 1], f[1, 1])
    return out


def rician_fisher(lam: np.ndarray, d: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel (F_ll, F_ld, F_dd) of the M-mode non-central-chi-square intensity, physical units.

    ``lam``: coherent intensity, ``d``: diffuse mean *per mode*; both > 0 where used.
    k outside [1e-8, 1e5] is clipped to the table (documented limitation).
    """
    table = rician_table(round(float(m), 3))
    lk = np.log10(np.clip(lam / d, 10.0 ** _LOGK[0], 10.0 ** _LOGK[-1]))
    inv_d2 = 1.0 / (d * d)
    return tuple(np.interp(lk, _LOGK, table[:, j]) * inv_d2 for j in range(3))  # type: ignore[return-value]


def poisson_fisher_matrix(
    lam: np.ndarray, dlam: tuple[np.ndarray, np.ndarray], read_var: float = 0.0
) -> np.ndarray:
    """2x2 J = sum_k dl_i dl_j / (lam_k + read_var): Poisson (+ Gaussian read noise) pixels."""
    denom = lam + read_var
    ok = denom > 0
    j = np.empty((2, 2))
    for a in range(2):
        for b in range(2):
            j[a, b] = np.sum(dlam[a][ok] * dlam[b][ok] / denom[ok])
    return j


def speckle_fisher_matrix(
    lam: np.ndarray,
    dlam: tuple[np.ndarray, np.ndarray],
    diff: np.ndarray,
    ddiff: tuple[np.ndarray, np.ndarray],
    m: float,
) -> np.ndarray:
    """2x2 J for pixels with coherent intensity ``lam`` and diffuse mean ``diff`` (= M d), M modes each."""
    ok = diff > 0
    lam_, dd = np.maximum(lam[ok], 0.0), diff[ok] / m
    fll, fld, fdd = rician_fisher(np.maximum(lam_, 1e-300), dd, m)
    g = [(dlam[a][ok], ddiff[a][ok] / m) for a in range(2)]
    j = np.empty((2, 2))
    for a in range(2):
        for b in range(2):
            la, da = g[a]
            lb, db = g[b]
            j[a, b] = np.sum(fll * la * lb + fld * (la * db + da * lb) + fdd * da * db)
    return j


def speckle_correlation(shape: tuple[int, int], pupil_indices: np.ndarray | None) -> np.ndarray:
    """mu(d): field correlation of unit-intensity speckle on the periodic camera grid (mu[0, 0] = 1).

    ``pupil_indices``: the flat DFT indices holding the speckle's spectrum (the bench draws its speckle
    there, ``medium.EvolvingSpeckle``); None = independent pixels (mu = delta).
    """
    if pupil_indices is None:
        mu = np.zeros(shape)
        mu[0, 0] = 1.0
        return mu
    spectrum = np.zeros(shape[0] * shape[1])
    spectrum[pupil_indices] = 1.0 / pupil_indices.size
    # a disc of DFT samples is symmetric under f -> -f (|f| < 1/2), so mu is real
    return np.real(np.fft.ifft2(spectrum.reshape(shape), norm="forward"))  # (1/n) sum_f exp(2 pi i f.d)


def signal_bins(
    field: np.ndarray,
    diffuse_amplitude: np.ndarray,
    wall_intensity: float,
    dmean: tuple[np.ndarray, np.ndarray],
    binning: int,
    counts_per_photon: float = 1.0,
    read_var: float = 0.0,
    margin_px: int = 8,
) -> np.ndarray:
    """(row, col) of the f x f bins holding all but 1e-3 of the position information, plus a margin.

    Arguments as for :func:`binned_speckle_moments`, which keeps only these bins. Ranked by dmean^2 over
    the per-pixel count variance (speckle, shot and read noise) summed per bin: the independent-bin
    information. Not by the derivative alone: a bright coherent image has Airy tails that move with theta
    across the whole frame but carry too little information to be worth a bigger covariance matrix; and
    not by the speckle variance alone, which at b = 0 (no speckle) would rank Airy-tail bins first. The
    chosen bins are then dilated by ``margin_px`` so that the correlated speckle next to the signal can be
    cancelled. Cheap (no covariance): callers that need other bins start from these.
    """
    f, q = binning, counts_per_photon
    diffuse = diffuse_amplitude**2 + wall_intensity
    intensity = np.abs(field) ** 2 + diffuse
    variance = (
        q * q * diffuse * (diffuse + 2.0 * np.abs(field) ** 2) + q * intensity + read_var / f**2 + 1e-300
    )
    info = (bin_image(dmean[0], f) ** 2 + bin_image(dmean[1], f) ** 2) * q * q / bin_image(variance, f)
    order = np.argsort(info, axis=None)[::-1]
    n = int(np.searchsorted(np.cumsum(info.ravel()[order]), (1.0 - 1e-3) * info.sum())) + 1
    chosen = np.zeros(info.size, bool)
    chosen[order[:n]] = True
    m = -(-margin_px // f)  # in bins, rounded up
    chosen = ndimage.binary_dilation(chosen.reshape(info.shape), np.ones((2 * m + 1, 2 * m + 1), bool))
    return np.argwhere(chosen)


@dataclass(frozen=True)
class BinnedSpeckleMoments:
    """First and second moments of the bins that carry the position information (counts per bin).

    ``bins``: (n, 2) bin (row, col); ``mean``: (n,); ``covariance``: (n, n); ``dmean``: (n, 2) = d mean/d
    theta (per um when the caller's derivative is).
    """

    bins: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    dmean: np.ndarray

    def _whitened_dmean(self) -> np.ndarray:
        return linalg.cho_solve(linalg.cho_factor(self.covariance), self.dmean)  # Sigma^-1 mu'

    def fisher(self) -> np.ndarray:
        """2x2 linear Fisher information mu'^T Sigma^-1 mu'."""
        j = self.dmean.T @ self._whitened_dmean()
        return 0.5 * (j + j.T)

    def distance(self, other: BinnedSpeckleMoments) -> float:
        """Mahalanobis distance between the two means under the pooled covariance (same bins needed)."""
        if not np.array_equal(self.bins, other.bins):
            raise ValueError("the two moments must be on the same bins")
        difference = other.mean - self.mean
        pooled = linalg.cho_factor(0.5 * (self.covariance + other.covariance))
        return float(np.sqrt(difference @ linalg.cho_solve(pooled, difference)))

    def estimator_weights(self) -> np.ndarray:
        """(2, n) W of the locally linear unbiased estimator theta0 + W (S - mean), covariance J^-1."""
        sw = self._whitened_dmean()
        return np.linalg.solve(self.dmean.T @ sw, sw.T)


def binned_speckle_moments(
    field: np.ndarray,
    diffuse_amplitude: np.ndarray,
    wall_intensity: float,
    dmean: tuple[np.ndarray, np.ndarray],
    correlation: np.ndarray,
    binning: int,
    counts_per_photon: float = 1.0,
    read_var: float = 0.0,
    margin_px: int = 8,
    bins: np.ndarray | None = None,
) -> BinnedSpeckleMoments:
    """Mean, exact covariance and mean derivative of binned speckle frames, for the linear Fisher information.

    The pixel field is ``field`` (the coherent target image, complex amplitude) plus a circular Gaussian
    diffuse field a_i u_i + w v_i: u (amplitude ``diffuse_amplitude`` = a) and v (``wall_intensity`` =
    w^2) independent unit speckles with the field correlation ``correlation`` (``speckle_correlation``,
    real). For such fields (Isserlis) the intensity covariance is C_ij^2 + 2 Re(E_i* E_j) C_ij with
    C_ij = (a_i a_j + w^2) mu(r_i - r_j); summing it over f x f bins gives the binned frame's Sigma, with
    every correlation between neighbouring bins. ``dmean`` = d(mean intensity)/d theta per pixel.

    Why linear: the exact likelihood of correlated speckle bins has no closed form, and J_lin is a lower
    bound on the Fisher information of any distribution with this mean and covariance (Cauchy-Schwarz on
    the score). So 1/sqrt(J_lin) is an *upper* bound on the true CRB, and it is reached by the locally
    linear unbiased estimator theta0 + J^-1 mu'^T Sigma^-1 (S - mu): no estimator has an excuse to be
    worse. For independent pixels it matches the exact non-central chi-square value (tested).

    The detector adds its noise exactly to these second moments: a bin counts photo-electrons
    N ~ Poisson(q S) given the intensity S (``counts_per_photon`` q = QE x exposure when ``field`` etc.
    are in photons/s), so Cov(N) = q^2 Sigma + diag(q mean) plus ``read_var`` per bin. Shot noise also
    makes unbinned frames well posed: a band-limited field has band-limited intensity, whose noise-free
    covariance is singular. Only the bins holding the information (and ``margin_px`` around them) enter;
    the others would only help to cancel correlated speckle, so J is then a slightly smaller, still
    valid, lower bound. ``bins`` ((n, 2) bin row, col) overrides that choice: comparing two target
    positions (``ReflectionModel.pair_distances``) needs the moments of both on the same bins.
    """
    f = binning
    q = counts_per_photon
    if bins is None:
        bins = signal_bins(field, diffuse_amplitude, wall_intensity, dmean, f, q, read_var, margin_px)
    within = np.argwhere(np.ones((f, f), bool))
    ys = (bins[:, None, 0] * f + within[None, :, 0]).ravel()  # pixels, bin by bin
    xs = (bins[:, None, 1] * f + within[None, :, 1]).ravel()
    e, a = field[ys, xs].astype(complex), diffuse_amplitude[ys, xs].astype(float)
    hh, ww = correlation.shape
    nb, k = len(bins), f * f
    cov = np.zeros((nb, nb))
    n_pix = nb * k
    rows_per_chunk = max(1, 4_000_000 // n_pix)  # ~4e6 pixel pairs in memory at a time
    for p0 in range(0, n_pix, rows_per_chunk):
        i = slice(p0, min(n_pix, p0 + rows_per_chunk))
        c = correlation[(ys[i, None] - ys[None, :]) % hh, (xs[i, None] - xs[None, :]) % ww]
        c *= np.multiply.outer(a[i], a) + wall_intensity  # C_ij
        c *= c + 2.0 * (np.multiply.outer(e[i].real, e.real) + np.multiply.outer(e[i].imag, e.imag))
        np.add.at(cov, np.arange(i.start, i.stop) // k, c.reshape(-1, nb, k).sum(axis=2))  # pixels -> bins
    mean = (np.abs(e) ** 2 + a * a + wall_intensity).reshape(nb, k).sum(axis=1)
    sigma = q * q * cov
    sigma[np.diag_indices_from(sigma)] += q * mean + read_var
    g = q * np.stack([d[ys, xs].reshape(nb, k).sum(axis=1) for d in dmean], axis=1)
    return BinnedSpeckleMoments(bins, q * mean, sigma, g)


def bin_image(img: np.ndarray, f: int) -> np.ndarray:
    """Sum f x f blocks (the edge remainder is dropped, as camera binning does)."""
    if f == 1:
        return img
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).sum(axis=(1, 3))
