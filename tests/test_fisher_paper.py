"""The paper's known-answer tests (seed 000, Methods "Numerical simulations", Fig. 2b,c).

50-dim Gaussian, unit-variance i.i.d. entries with mean θ, mixed by the tridiagonal-ones matrix: J = 50
exactly (the mixing matrix is singular for N = 50, but its null vector is orthogonal to the ones vector, so
no information is lost; the zero-variance direction must be dropped). f(x) = x³ applied per component
preserves J = 50 (invertible per-component map).

Sizes: n = 100,000 per parameter value (the paper uses 125,000), steps 0.08, 0.12, 0.16 with a centre
dataset. The estimator's standard error at the chosen step is ~1.2-1.8 % (delta method; the curve's
scatter agrees), discretisation loss with ~93 bins ~0.3 %, truncation with the centre denominator <0.1 %:
so the 5 % tolerance is >= 2.8 standard errors plus the known biases, and the fixed seed makes it
deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.fisher import fisher_information

D = 50
N = 100_000
STEPS = (0.08, 0.12, 0.16)


def _mixing() -> np.ndarray:
    return np.eye(D) + np.eye(D, k=1) + np.eye(D, k=-1)


@pytest.fixture(scope="module")
def gaussian_samples() -> dict[float, np.ndarray]:
    rng = np.random.default_rng(2025)
    m = _mixing()
    out = {}
    for t in [0.0, *[s / 2 for s in STEPS], *[-s / 2 for s in STEPS]]:
        out[t] = ((rng.standard_normal((N, D)) + t) @ m.T).astype(np.float64)
    return out


def test_mixing_matrix_is_singular_but_information_is_50():
    m = _mixing()
    assert np.linalg.matrix_rank(m) == D - 1
    cov = m @ m.T
    mu = m @ np.ones(D)
    assert mu @ np.linalg.pinv(cov) @ mu == pytest.approx(50.0, rel=1e-9)


def test_gaussian_pca_within_5_percent(gaussian_samples):
    r = fisher_information(gaussian_samples, decorrelation="pca", device="cpu")
    assert r.n_components == D - 1  # the zero-variance direction was dropped
    assert r.denominator == "center" and r.method == "robust"
    assert r.value == pytest.approx(50.0, rel=0.05)
    assert r.stderr < 0.025 * 50.0
    assert abs(r.value - 50.0) < 4 * r.stderr + 0.01 * 50  # consistent with its own error bar
    assert r.theta0 == pytest.approx(0.0)
    assert list(r.curve.steps) == pytest.approx(list(STEPS))


def test_cubed_ica(gaussian_samples):
    """ICA on the x³ data. The paper reports a plateau at 1 (Fig. 2c); we could not reproduce a 5 % match
    with a *θ-independent* ICA: fitted on the noise (datasets centred, the default), the summed marginal
    information is 0.82-0.91 of the truth over seeds and FastICA non-linearities (a linear unmixing cannot
    make cubed correlated Gaussians independent); fitted on the raw pool it swings from 0.90 to 1.26 with
    the span of θ values (FastICA then also unmixes the θ-mixture). So this asserts the honest bracket,
    and gaussianisation (next test) is the method that meets 5 % on this case (docs/fisher.md).
    """
    cubed = {k: v**3 for k, v in gaussian_samples.items()}
    r = fisher_information(cubed, decorrelation="ica", device="cpu")
    info = r.decorrelation.info
    assert info["ica_converged"] and info["ica_n_iter"] <= info["ica_max_iter"]
    assert 0.75 * 50 < r.value < 1.05 * 50


def test_cubed_gaussianize_within_5_percent(gaussian_samples):
    cubed = {k: v**3 for k, v in gaussian_samples.items()}
    r = fisher_information(cubed, decorrelation="gaussianize", device="cpu")
    assert r.value == pytest.approx(50.0, rel=0.05)


def test_cubed_pca_is_not_enough(gaussian_samples):
    """PCA does not make x³ components independent: the paper's reason for ICA (a sanity check that the
    known-answer tests above can fail)."""
    cubed = {k: v**3 for k, v in gaussian_samples.items() if abs(k) in (0.0, 0.06)}
    r = fisher_information(cubed, decorrelation="pca", device="cpu")
    assert abs(r.value / 50.0 - 1.0) > 0.1
