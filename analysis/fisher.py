"""Model-free Fisher information and Cramér–Rao bound from samples (Starshynov et al. 2025, Fig. 2).

Estimator (``docs/fisher.md`` has the derivations)
--------------------------------------------------
1. A fixed, invertible, θ-independent transform ``Y = T(X)`` (``analysis/decorrelation.py``) fitted once on
   the data pooled over all parameter values makes the components ``Y_k`` (close to) independent, so that
   ``J = Σ_k J_k``.
2. For a pair of datasets at ``θ0 ± Δ/2`` (and the central dataset at ``θ0`` when there is one), each
   component is binned with **equal-frequency bins**: ``B - 1`` edges at quantiles of the data pooled over
   the datasets of that pair. Bin probabilities ``p̂±`` are counts / n±.
3. ``Ĵ_k(Δ) = Σ_b (p̂₊ - p̂₋)² / (Δ² p̄_b)``, the finite-difference form of ``Σ_b (∂p_b/∂θ)² / p_b``.
   ``p̄_b`` is the central dataset's bin probability when the samples contain ``θ0`` (``denominator="center"``:
   truncation error O(Δ⁴) for location-type families, versus O(Δ²) otherwise) or the pooled frequency of the
   pair (``denominator="pooled"``).
4. Finite-sample bias: for θ-independent data the exact permutation mean of ``Σ_b (p̂₊-p̂₋)²/p̄_b`` with
   pooled equal-frequency bins is ``(B_k - 1)(1/n₊ + 1/n₋) N/(N-1)`` (``B_k`` = non-empty bins), i.e. the
   mean of a χ² homogeneity statistic; it is subtracted (divided by Δ²). With the central denominator the raw
   sum is first divided by ``E[p_b/p̂_0b] ≈ 1 + (B_k - 1)/n_0``.
5. Standard error: delta method with per-sample influence scores (each sample's contribution summed over all
   components, so dependence between components is kept) plus the χ² (quadratic) term that dominates near
   J = 0; an optional bootstrap over samples checks it.
6. ``Ĵ(Δ)`` is scanned over all available steps; the step is chosen by
   * ``"paper"``: the paper's stability criterion -- the smallest step above the first (scanning from large
     steps downwards) where |second derivative of Ĵ(Δ)| exceeds 10x its median over the largest steps;
   * ``"robust"`` (default): among the steps on the plateau (each consistent within 2 SE with the weighted
     mean of all smaller steps), the smallest such that it and every larger plateau step have relative
     standard error <= ``rel_tol``; the largest plateau step if none is that precise;
   * ``"richardson"``: weighted fit ``Ĵ(Δ) = J + cΔ²`` over steps in [Δ_robust, 4Δ_robust], J reported.
   All three are computed and reported; ``.method`` names the one behind ``.value``.

Multi-parameter: :func:`fisher_matrix` uses, on common bins, ``J_ij = Σ_b D_i D_j / p̄_b`` with
``D_i = (p̂(θ0 + Δ_i/2 e_i) - p̂(θ0 - Δ_i/2 e_i)) / Δ_i``; the off-diagonal needs no bias correction because
``D_i`` and ``D_j`` come from independent datasets. ``crb = sqrt(diag(J⁻¹))``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from analysis.decorrelation import Decorrelation, Method, fit_decorrelation, resolve_device

StepRule = Literal["robust", "paper", "richardson"]
STEP_RULES: tuple[str, ...] = ("robust", "paper", "richardson")


def default_bins(n: int) -> int:
    """Equal-frequency bins for ``n`` samples per dataset: Rice rule ``ceil(2 n^(1/3))`` in [4, 128].

    Why: binning discards a fraction ~c/B² of the information (Gaussian: 4 % at B=10, 1 % at B=32, 0.2 % at
    B=100), while after bias correction the extra noise from more bins grows only like sqrt(B)/n (the χ²
    term), which stays below the irreducible sampling noise ~1/(Δ sqrt(n J)). The cube-root rule keeps the
    discretisation loss ~n^(-2/3), i.e. below the statistical error, and >= ~n^(2/3)/2 samples per bin.
    """
    return int(np.clip(math.ceil(2.0 * max(n, 1) ** (1.0 / 3.0)), 4, 128))


# ---------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepChoice:
    """The step a criterion picked and the estimate there."""

    rule: str
    step: float
    value: float
    stderr: float
    index: int | None = None
    note: str = ""


@dataclass(frozen=True)
class FisherCurve:
    """Ĵ(Δ) over the scanned steps (bias corrected), with standard errors and the subtracted bias."""

    steps: np.ndarray
    values: np.ndarray
    stderrs: np.ndarray
    raw: np.ndarray
    bias: np.ndarray
    bins: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {
            "steps": self.steps.tolist(),
            "values": self.values.tolist(),
            "stderrs": self.stderrs.tolist(),
            "raw": self.raw.tolist(),
            "bias": self.bias.tolist(),
        }


@dataclass
class FisherResult:
    """Scalar Fisher information at ``theta0``; ``.value`` is chosen by ``.method`` (see module docstring)."""

    value: float
    stderr: float
    step: float
    curve: FisherCurve
    method: str
    theta0: float
    paper: StepChoice | None
    robust: StepChoice
    richardson: StepChoice | None
    denominator: str
    n_components: int
    decorrelation: Decorrelation
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def crb(self) -> float:
        """Cramér–Rao bound sqrt(1/J) (NaN when Ĵ <= 0)."""
        return 1.0 / math.sqrt(self.value) if self.value > 0 else math.nan


@dataclass
class FisherMatrixResult:
    """Fisher information matrix, its element standard errors and the Cramér–Rao bounds."""

    matrix: np.ndarray
    stderr: np.ndarray  # elementwise standard errors of .matrix
    crb: np.ndarray  # sqrt(diag(J^-1))
    crb_stderr: np.ndarray
    steps: np.ndarray  # step used along each axis
    theta0: np.ndarray
    method: str  # the rule behind the steps; "rule_x/rule_y" when the axes differ (see step_rules)
    denominator: str
    bins: int
    axes: list[FisherResult]  # the per-axis scans that chose the steps
    decorrelation: Decorrelation
    step_rules: list[str]  # per axis: the rule that chose its step
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# core: equal-frequency binning and the bias-corrected finite-difference estimate on common bins
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Binned:
    """Bin indices (K, n_s) of every dataset on common equal-frequency bins, and the bin counts (K, B)."""

    index: list[torch.Tensor]
    counts: list[torch.Tensor]
    n: list[int]
    bins: int


def _equal_frequency_bins(
    groups: Sequence[torch.Tensor], bins: int, torch_sort: bool | None = None
) -> _Binned:
    """Bin every component of every group on edges at quantiles of the data pooled over the groups.

    The bin of each value is ``searchsorted(edges, value, right=True)``; with ties, edges coincide and the
    bins between them stay empty -- such bins are excluded downstream (zero pooled count), and the bias
    correction uses the number of non-empty bins. A value equal to two or more coinciding edges (a tie) is
    put in the first bin between them, so it shares its bin neither with the values below nor with those
    above (otherwise a tie covering the top quantiles, as the zero count of sparse photon data does, would
    merge with everything above it and the component would carry no information). ``torch_sort``
    (default: on non-CPU devices) selects the device sort instead of NumPy's; both give the same edges.
    """
    pooled = torch.cat(list(groups), dim=0)
    n_tot, k = pooled.shape
    pos = [(j * n_tot) // bins for j in range(1, bins)]
    if torch_sort is None:
        torch_sort = pooled.device.type != "cpu"
    if not torch_sort:
        # NumPy's row sort of the transposed (contiguous) pool is ~7x faster than torch's CPU sort along
        # dim 0 (and faster than a many-kth partition); on CUDA the torch sort is fast and stays on device
        srt = np.sort(np.ascontiguousarray(pooled.numpy().T), axis=1)
        edges = torch.from_numpy(np.ascontiguousarray(srt[:, pos]))  # (K, B-1)
        del srt
    else:
        srt = torch.sort(pooled, dim=0).values
        edges = srt.index_select(0, torch.as_tensor(pos, device=pooled.device)).T.contiguous()
        del srt
    del pooled
    offs = (torch.arange(k, device=edges.device) * bins)[:, None]
    index, counts = [], []
    for g in groups:
        gt = g.T.contiguous()
        idx = torch.searchsorted(edges, gt, right=True)  # (K, n_s)
        # a value equal to >= 2 coinciding edges (a tie holding >= 1/B of the pool) gets the empty bin just
        # above the lowest of them: it must not share a bin with the values above it (with right=True a
        # tie at the top edges, e.g. the "0 photons" value of photon-starved frames, would swallow them all)
        left = torch.searchsorted(edges, gt, right=False)
        idx = torch.where(idx - left >= 2, left + 1, idx)
        index.append(idx)
        counts.append(torch.bincount((idx + offs).reshape(-1), minlength=k * bins).reshape(k, bins))
    return _Binned(index=index, counts=counts, n=[int(g.shape[0]) for g in groups], bins=bins)


@dataclass
class _Design:
    """Which group is θ0 ± Δ_i/2 along each axis i, and which one (if any) is the centre."""

    minus: list[int]
    plus: list[int]
    steps: list[float]
    center: int | None


def _estimate(binned: _Binned, design: _Design, counts: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Bias-corrected Ĵ (d x d), the subtracted bias, and the pieces the error propagation needs."""
    counts = binned.counts if counts is None else counts
    n = binned.n
    d = len(design.steps)
    p = [c.to(torch.float64) / ni for c, ni in zip(counts, n, strict=True)]
    pooled_counts = sum(c.to(torch.float64) for c in binned.counts)
    valid = pooled_counts > 0  # (K, B)
    n_tot = float(sum(n))
    b_eff = valid.sum(dim=1).to(torch.float64)  # non-empty bins per component
    if design.center is not None:
        pc = p[design.center]
        fallback = pooled_counts / n_tot
        denom = torch.where(pc > 0, pc, fallback)
        # E[p/p̂0] ≈ 1 + (1-p)/(n0 p) = 1 + (B-1)/n0 for equal-frequency bins: divide the raw sums by it
        inflation = 1.0 + (b_eff - 1.0) / n[design.center]
    else:
        denom = pooled_counts / n_tot
        inflation = torch.ones_like(b_eff)
    inv = torch.where(valid, 1.0 / torch.where(valid, denom, torch.ones_like(denom)), 0.0)
    diffs = [(p[design.plus[i]] - p[design.minus[i]]) / design.steps[i] for i in range(d)]
    raw = torch.zeros((d, d), dtype=torch.float64, device=inv.device)
    bias = torch.zeros((d, d), dtype=torch.float64, device=inv.device)
    for i in range(d):
        for j in range(i, d):
            per_comp = (diffs[i] * diffs[j] * inv).sum(dim=1) / inflation  # (K,)
            raw[i, j] = raw[j, i] = per_comp.sum()
        c_i = 1.0 / n[design.plus[i]] + 1.0 / n[design.minus[i]]
        perm = n_tot / (n_tot - 1.0)  # exact permutation mean of the χ² statistic: (B-1) N/(N-1)
        bias[i, i] = ((b_eff - 1.0).sum() * c_i * perm) / design.steps[i] ** 2
    return {"raw": raw, "bias": bias, "J": raw - bias, "diffs": diffs, "inv": inv, "b_eff": b_eff, "p": p}


def _covariance(binned: _Binned, design: _Design, est: dict[str, Any]) -> np.ndarray:
    """Covariance of the unique elements (i <= j) of Ĵ: delta method + χ² term (see docs/fisher.md).

    Per-sample influence scores ``S_s(x) = Σ_k g_s[k, bin_k(x)]`` with ``g_s = ∂Ĵ_ij/∂p̂_s`` give the
    linear term ``Σ_s Cov(S_s)/n_s``; they sum over components per sample, so correlations left between
    components after decorrelation are accounted for. Plugging noisy differences into ``g`` inflates the
    variance by twice the quadratic (χ²) term Q, whereas the true variance contains Q once: so
    ``Var = L_plugin - Q``, floored at Q (pure-noise limit, where the linear term vanishes).
    """
    d = len(design.steps)
    diffs, inv, b_eff = est["diffs"], est["inv"], est["b_eff"]
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    n = binned.n
    n_tot = float(sum(n))
    n_groups = len(binned.index)
    cov = np.zeros((len(pairs), len(pairs)))
    for s in range(n_groups):
        # weight of dataset s in the denominator p̄ (the centre alone, or the pooled frequency)
        w_s = float(s == design.center) if design.center is not None else n[s] / n_tot
        scores = []
        for i, j in pairs:
            g = torch.zeros_like(inv)
            if s == design.plus[i]:
                g += diffs[j] * inv / design.steps[i]
            if s == design.minus[i]:
                g -= diffs[j] * inv / design.steps[i]
            if s == design.plus[j]:
                g += diffs[i] * inv / design.steps[j]
            if s == design.minus[j]:
                g -= diffs[i] * inv / design.steps[j]
            if w_s:
                g -= w_s * diffs[i] * diffs[j] * inv * inv
            scores.append(torch.gather(g, 1, binned.index[s]).sum(dim=0))  # (n_s,)
        sc = torch.stack(scores)  # (n_pairs, n_s)
        sc = sc - sc.mean(dim=1, keepdim=True)
        cov += (sc @ sc.T).cpu().numpy() / max(n[s] - 1, 1) / n[s]
    for a, (i, j) in enumerate(pairs):
        c_i = 1.0 / n[design.plus[i]] + 1.0 / n[design.minus[i]]
        c_j = 1.0 / n[design.plus[j]] + 1.0 / n[design.minus[j]]
        q = float((b_eff - 1.0).sum()) * c_i * c_j / (design.steps[i] ** 2 * design.steps[j] ** 2)
        if i == j:
            q *= 2.0
        cov[a, a] = max(cov[a, a] - q, q)
    return cov


def _bootstrap_stderr(binned: _Binned, design: _Design, n_boot: int, rng: torch.Generator) -> np.ndarray:
    """Bootstrap over samples (rows) of each dataset with the bin edges held fixed; (d, d) std of Ĵ."""
    k, b = binned.counts[0].shape
    offs = (torch.arange(k, device=binned.index[0].device) * b)[:, None]
    reps = []
    for _ in range(n_boot):
        counts = []
        for idx, ni in zip(binned.index, binned.n, strict=True):
            pick = torch.randint(ni, (ni,), generator=rng).to(idx.device)
            sel = idx[:, pick]
            counts.append(torch.bincount((sel + offs).reshape(-1), minlength=k * b).reshape(k, b))
        reps.append(_estimate(binned, design, counts)["J"].cpu().numpy())
    return np.std(np.stack(reps), axis=0, ddof=1)


def _compute(
    groups: list[torch.Tensor], design: _Design, bins: int | None, stderr_method: str, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Ĵ, its element covariance, the raw sum and the bias on common bins for one design."""
    nb = bins if bins is not None else default_bins(min(int(g.shape[0]) for g in groups))
    binned = _equal_frequency_bins(groups, nb)
    est = _estimate(binned, design)
    cov = _covariance(binned, design, est)
    if stderr_method == "bootstrap":
        gen = torch.Generator().manual_seed(seed)
        sd = _bootstrap_stderr(binned, design, n_boot, gen)
        d = len(design.steps)
        pairs = [(i, j) for i in range(d) for j in range(i, d)]
        scale = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
        corr = cov / np.outer(scale, scale)
        new_sd = np.array([sd[i, j] for i, j in pairs])
        cov = corr * np.outer(new_sd, new_sd)
    elif stderr_method != "analytic":
        raise ValueError("stderr_method must be 'analytic' or 'bootstrap'")
    return est["J"].cpu().numpy(), cov, est["raw"].cpu().numpy(), est["bias"].cpu().numpy(), nb


# ---------------------------------------------------------------------------------------------------------
# step selection
# ---------------------------------------------------------------------------------------------------------


def second_derivative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Three-point second derivative on a non-uniform grid at the interior points (length n-2)."""
    h0 = np.diff(x)[:-1]
    h1 = np.diff(x)[1:]
    return 2.0 * ((y[2:] - y[1:-1]) / h1 - (y[1:-1] - y[:-2]) / h0) / (h0 + h1)


def choose_step_paper(
    steps: np.ndarray, values: np.ndarray, *, factor: float = 10.0, large_fraction: float = 1.0 / 3.0
) -> tuple[int | None, str]:
    """The paper's stability criterion; returns (index into ascending ``steps``, note).

    |Ĵ''(Δ)| is compared with its median over the largest-step third of the curve (where statistical noise
    is small and only the smooth truncation curvature remains). Scanning from large to small steps, the
    first point where it exceeds ``factor`` x that reference marks the onset of noise domination; the step
    just above it is Δ_thr. Needs >= 5 steps; returns (None, reason) otherwise.
    """
    if steps.size < 5:
        return None, "needs >= 5 steps"
    d2 = np.abs(second_derivative(steps, values))  # interior points 1..n-2
    n_large = max(2, int(round(large_fraction * d2.size)))
    ref = float(np.median(d2[-n_large:]))
    ref = max(ref, 1e-12 * float(np.max(np.abs(values))) / float(steps[-1]) ** 2)
    for i in range(d2.size - 1, -1, -1):  # interior point i corresponds to step index i+1
        if d2[i] > factor * ref:
            return min(i + 2, steps.size - 1), f"|J''| > {factor:g} x reference at step {steps[i + 1]:.6g}"
    return 0, "no instability found: smallest step"


def plateau_end(values: np.ndarray, stderrs: np.ndarray, *, z: float = 2.0) -> int:
    """Index of the largest step still statistically consistent with all smaller steps.

    Going up from the smallest step, each next estimate is compared with the inverse-variance weighted
    mean of the previous ones; the plateau ends before the first one differing by more than ``z``
    combined standard errors (truncation, i.e. the step is too large for the finite difference).
    """
    end = 0
    for i in range(1, values.size):
        w = 1.0 / np.maximum(stderrs[:i], 1e-300) ** 2
        mean = float(np.sum(w * values[:i]) / np.sum(w))
        se_mean = float(np.sqrt(1.0 / np.sum(w)))
        if abs(values[i] - mean) > z * math.hypot(stderrs[i], se_mean):
            break
        end = i
    return end


def choose_step_robust(
    values: np.ndarray, stderrs: np.ndarray, *, rel_tol: float = 0.02, z: float = 2.0
) -> tuple[int, str]:
    """Robust step: within the plateau (:func:`plateau_end`), the smallest step such that it and every
    larger plateau step have stderr/value <= ``rel_tol``; if no plateau step is that precise, the largest
    (least noisy) plateau step. Smallest-precise favours low truncation; the plateau bound keeps a curve
    that falls with Δ (truncation) from pushing the choice to the largest, most biased step.
    """
    end = plateau_end(values, stderrs, z=z)
    rel = np.where(values > 0, stderrs / np.where(values > 0, values, 1.0), np.inf)[: end + 1]
    ok = rel <= rel_tol
    if not ok[-1]:
        return end, f"plateau up to step #{end}; relative stderr never <= {rel_tol:g}: largest plateau step"
    i = end
    while i > 0 and ok[i - 1]:
        i -= 1
    return i, f"plateau up to step #{end}; relative stderr <= {rel_tol:g} from here up"


def richardson(
    steps: np.ndarray, values: np.ndarray, stderrs: np.ndarray, start: int, *, span: float = 4.0
) -> tuple[float, float] | None:
    """Weighted least-squares fit Ĵ(Δ) = J + cΔ² over steps in [Δ_start, span·Δ_start]; returns (J, se)."""
    sel = (steps >= steps[start]) & (steps <= span * steps[start] * (1 + 1e-12))
    if sel.sum() < 2:
        return None
    x = steps[sel] ** 2
    w = 1.0 / np.maximum(stderrs[sel], 1e-300) ** 2
    a = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.pinv(a.T @ (w[:, None] * a))
    coef = cov @ (a.T @ (w * values[sel]))
    return float(coef[0]), float(math.sqrt(max(cov[0, 0], 0.0)))


# ---------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------


def _pairs(
    keys: Sequence[float], theta0: float | None
) -> tuple[float, list[tuple[float, float]], float | None]:
    """Centre, the symmetric (minus, plus) key pairs sorted by step, and the centre key if present."""
    ks = sorted(float(k) for k in keys)
    if len(ks) < 2:
        raise ValueError("need samples at >= 2 parameter values")
    t0 = 0.5 * (ks[0] + ks[-1]) if theta0 is None else float(theta0)
    tol = 1e-9 * max(ks[-1] - ks[0], abs(t0), 1e-300)
    center = next((k for k in ks if abs(k - t0) <= tol), None)
    pairs = []
    for k in ks:
        if k < t0 - tol:
            partner = next((q for q in ks if abs(q - (2 * t0 - k)) <= tol), None)
            if partner is not None:
                pairs.append((k, partner))
    if not pairs:
        raise ValueError(f"no parameter values symmetric about theta0={t0}")
    pairs.sort(key=lambda ab: ab[1] - ab[0])
    return t0, pairs, center


def _pool(
    arrays: Sequence[np.ndarray | torch.Tensor], max_rows: int, seed: int, centre: bool = True
) -> np.ndarray:
    """Rows pooled over datasets (equal share per dataset when subsampling) for fitting the transform.

    With ``centre`` every dataset is shifted to the grand mean first, so the fit sees the *noise* (the
    within-θ fluctuations whose dependence the transform must remove) and not the between-θ mean shifts.
    This matters for ICA: on the raw pool, the mixture over θ is itself a non-Gaussian direction that
    FastICA latches onto, and the resulting components are dependent *given* θ, which made the summed
    marginal information on the x³ test swing from -9 % to +26 % with the span of θ values. The fitted map
    is still one fixed function applied to every dataset, so it stays θ-independent.
    """
    rng = np.random.default_rng(seed)
    per = max(1, max_rows // max(len(arrays), 1))
    parts = []
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        a = np.asarray(a.reshape(a.shape[0], -1), dtype=np.float64)
        if centre:
            a = a - a.mean(axis=0)
        if a.shape[0] > per:
            a = a[np.sort(rng.choice(a.shape[0], per, replace=False))]
        parts.append(a)
    pooled = np.concatenate(parts, axis=0)
    if centre:
        grand = np.mean([np.asarray(_mean(a)) for a in arrays], axis=0)
        pooled += grand
    return pooled


def _check_sizes(samples: Mapping[float, Any], bins: int | None) -> None:
    """Every dataset needs >= 2 samples (rows) and a histogram >= 2 bins: a clear error before the fit."""
    if bins is not None and bins < 2:
        raise ValueError(f"bins must be >= 2 (one bin carries no information), got {bins}")
    for k, v in samples.items():
        if len(v) < 2:
            raise ValueError(f"the dataset at {k:g} has {len(v)} sample(s): need >= 2 per parameter value")


def _mean(a: np.ndarray | torch.Tensor) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
    return np.asarray(a.reshape(a.shape[0], -1), dtype=np.float64).mean(axis=0)


def _fit_or_use(
    arrays: Sequence[np.ndarray | torch.Tensor],
    decorrelation: Method | Decorrelation,
    fit_max_samples: int,
    random_state: int,
    decorrelation_kwargs: Mapping[str, Any] | None,
    fit_centred: bool = True,
) -> Decorrelation:
    if isinstance(decorrelation, Decorrelation):
        return decorrelation
    pooled = _pool(arrays, fit_max_samples, random_state, centre=fit_centred)
    return fit_decorrelation(pooled, decorrelation, random_state=random_state, **(decorrelation_kwargs or {}))


def _select(
    steps: np.ndarray, values: np.ndarray, stderrs: np.ndarray, step_rule: StepRule, rel_tol: float
) -> tuple[StepChoice, StepChoice | None, StepChoice | None, StepChoice]:
    """All three criteria and the one ``step_rule`` picks."""
    if step_rule not in STEP_RULES:
        raise ValueError(f"unknown step_rule {step_rule!r}; choose one of {STEP_RULES}")
    ir, note_r = choose_step_robust(values, stderrs, rel_tol=rel_tol)
    robust = StepChoice("robust", float(steps[ir]), float(values[ir]), float(stderrs[ir]), ir, note_r)
    ip, note_p = choose_step_paper(steps, values)
    paper = (
        None
        if ip is None
        else StepChoice("paper", float(steps[ip]), float(values[ip]), float(stderrs[ip]), ip, note_p)
    )
    rich = richardson(steps, values, stderrs, ir)
    rich_c = (
        None
        if rich is None
        else StepChoice("richardson", float(steps[ir]), rich[0], rich[1], ir, "fit J + cΔ² on [Δr, 4Δr]")
    )
    chosen = {"robust": robust, "paper": paper, "richardson": rich_c}[step_rule]
    if chosen is None:
        chosen = robust
    return robust, paper, rich_c, chosen


def fisher_information(
    samples: Mapping[float, np.ndarray | torch.Tensor],
    *,
    decorrelation: Method | Decorrelation = "pca",
    theta0: float | None = None,
    bins: int | None = None,
    step_rule: StepRule = "robust",
    rel_tol: float = 0.02,
    use_center: bool = True,
    stderr_method: Literal["analytic", "bootstrap"] = "analytic",
    n_boot: int = 100,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float64,
    fit_max_samples: int = 250_000,
    fit_centred: bool = True,
    random_state: int = 0,
    decorrelation_kwargs: Mapping[str, Any] | None = None,
) -> FisherResult:
    """Model-free Fisher information for a scalar parameter from samples at θ0 ± Δ/2 for several Δ.

    Parameters
    ----------
    samples:
        parameter value -> (n_samples, n_features) array (or frames (n, H, W)). Values must come in pairs
        symmetric about ``theta0``; a dataset at ``theta0`` itself is used as the denominator when present.
    decorrelation:
        ``"pca" | "ica" | "gaussianize" | "none"`` fitted on all samples pooled, or a fitted
        :class:`~analysis.decorrelation.Decorrelation` (e.g. shared between the axes of a matrix).
    theta0:
        centre; defaults to the midpoint of the smallest and largest keys.
    bins:
        equal-frequency bins per component; default :func:`default_bins` of the smallest dataset.
    step_rule:
        which criterion sets ``.value`` (``"robust"`` default, ``"paper"``, ``"richardson"``).
    rel_tol:
        relative standard error required by the robust criterion.
    use_center:
        use the θ0 dataset as denominator when present (O(Δ⁴) truncation for location families).
    fit_centred:
        fit the transform on datasets shifted to a common mean (the noise only; see :func:`_pool`).
    stderr_method:
        ``"analytic"`` (delta method + χ² term) or ``"bootstrap"`` (``n_boot`` resamples, edges fixed).
    device, dtype:
        torch device (``"auto"``: CUDA if available) and precision for transform and binning.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    t0, pairs, center = _pairs(list(samples.keys()), theta0)
    used = sorted(
        {k for ab in pairs for k in ab} | ({center} if center is not None and use_center else set())
    )
    lookup = {float(k): v for k, v in samples.items()}
    _check_sizes({k: lookup[k] for k in used}, bins)
    transform = _fit_or_use(
        [lookup[k] for k in used],
        decorrelation,
        fit_max_samples,
        random_state,
        decorrelation_kwargs,
        fit_centred,
    )
    t_fit = time.perf_counter()
    ys = {k: transform.transform(lookup[k], device=dev, dtype=dtype) for k in used}
    t_tr = time.perf_counter()
    rows = []
    for a, b in pairs:
        groups = [ys[a], ys[b]]
        cidx = None
        if center is not None and use_center:
            groups.append(ys[center])
            cidx = 2
        design = _Design(minus=[0], plus=[1], steps=[b - a], center=cidx)
        j, cov, raw, bias, nb = _compute(groups, design, bins, stderr_method, n_boot, random_state)
        rows.append((b - a, j[0, 0], math.sqrt(cov[0, 0]), raw[0, 0], bias[0, 0], nb))
    arr = np.array(rows, dtype=np.float64)
    curve = FisherCurve(
        steps=arr[:, 0],
        values=arr[:, 1],
        stderrs=arr[:, 2],
        raw=arr[:, 3],
        bias=arr[:, 4],
        bins=arr[:, 5].astype(int),
    )
    robust, paper, rich, chosen = _select(curve.steps, curve.values, curve.stderrs, step_rule, rel_tol)
    t_end = time.perf_counter()
    return FisherResult(
        value=chosen.value,
        stderr=chosen.stderr,
        step=chosen.step,
        curve=curve,
        method=chosen.rule,
        theta0=t0,
        paper=paper,
        robust=robust,
        richardson=rich,
        denominator="center" if (center is not None and use_center) else "pooled",
        n_components=transform.n_components,
        decorrelation=transform,
        timings={
            "fit_s": t_fit - t_start,
            "transform_s": t_tr - t_fit,
            "histogram_s": t_end - t_tr,
            "total_s": t_end - t_start,
            "device": str(dev),  # type: ignore[dict-item]
        },
    )


def _crb_with_error(j: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sqrt(diag(J⁻¹)) and its delta-method standard error from the covariance of the unique elements."""
    d = j.shape[0]
    try:
        v = np.linalg.inv(j)
    except np.linalg.LinAlgError:
        return np.full(d, np.nan), np.full(d, np.nan)
    dv = np.diag(v)
    if np.any(dv <= 0) or np.any(np.linalg.eigvalsh(j) <= 0):
        return np.full(d, np.nan), np.full(d, np.nan)
    crb = np.sqrt(dv)
    pairs = [(a, b) for a in range(d) for b in range(a, d)]
    se = np.zeros(d)
    for i in range(d):
        grad = np.array(
            [-(v[i, a] * v[b, i] + (v[i, b] * v[a, i] if a != b else 0.0)) / (2.0 * crb[i]) for a, b in pairs]
        )
        se[i] = math.sqrt(max(float(grad @ cov @ grad), 0.0))
    return crb, se


def fisher_matrix(
    samples_x: Mapping[float, np.ndarray | torch.Tensor],
    samples_y: Mapping[float, np.ndarray | torch.Tensor],
    *more_axes: Mapping[float, np.ndarray | torch.Tensor],
    theta0: Sequence[float] | None = None,
    center: np.ndarray | torch.Tensor | None = None,
    decorrelation: Method | Decorrelation = "pca",
    bins: int | None = None,
    step_rule: StepRule = "robust",
    rel_tol: float = 0.02,
    stderr_method: Literal["analytic", "bootstrap"] = "analytic",
    n_boot: int = 100,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float64,
    fit_max_samples: int = 250_000,
    fit_centred: bool = True,
    random_state: int = 0,
    decorrelation_kwargs: Mapping[str, Any] | None = None,
) -> FisherMatrixResult:
    """Fisher information matrix for d >= 2 parameters from one-axis displacement scans.

    ``samples_x`` maps x values (y at its centre) to samples, ``samples_y`` maps y values (x at its
    centre), and so on for further axes. The centre dataset is ``center`` if given, otherwise the datasets at
    the axis centres (concatenated when they are different arrays, used once when they are the same one).

    Each axis is scanned like :func:`fisher_information` (same transform, fitted on everything pooled) to
    choose its step; then the full matrix is computed on bins common to the 2d (+1) datasets at the chosen
    steps: ``J_ij = Σ_k Σ_b D_i D_j / p̄`` (``D_i`` = finite-difference derivative of the bin probability
    along axis i), bias corrected on the diagonal. ``step_rule="richardson"`` uses the robust steps.
    """
    t_start = time.perf_counter()
    axes = [samples_x, samples_y, *more_axes]
    d = len(axes)
    dev = resolve_device(device)
    info = []
    for a, s in enumerate(axes):
        t0a = None if theta0 is None else theta0[a]
        info.append(_pairs(list(s.keys()), t0a))
    lookups = [{float(k): v for k, v in s.items()} for s in axes]
    for lk in lookups:
        _check_sizes(lk, bins)
    if center is not None:
        _check_sizes({0.0: center}, bins)
    if center is None:
        cands: list[Any] = []
        for (_, _, ck), lk in zip(info, lookups, strict=True):
            if ck is not None and not any(lk[ck] is c for c in cands):
                cands.append(lk[ck])
        if cands:
            center = (
                cands[0]
                if len(cands) == 1
                else np.concatenate(
                    [
                        c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c)
                        for c in cands
                    ]
                )
            )
    fit_arrays = [
        v for lk, (_, pr, _) in zip(lookups, info, strict=True) for ab in pr for v in (lk[ab[0]], lk[ab[1]])
    ]
    if center is not None:
        fit_arrays.append(center)
    transform = _fit_or_use(
        fit_arrays, decorrelation, fit_max_samples, random_state, decorrelation_kwargs, fit_centred
    )
    t_fit = time.perf_counter()

    yc = None if center is None else transform.transform(center, device=dev, dtype=dtype)
    axis_results: list[FisherResult] = []
    rules: list[str] = []
    chosen_pairs = []
    for lk, (t0a, _, _) in zip(lookups, info, strict=True):
        scan = dict(lk)
        if yc is not None:
            scan[t0a] = center  # type: ignore[assignment]
        res = fisher_information(
            scan,
            decorrelation=transform,
            theta0=t0a,
            bins=bins,
            step_rule=step_rule,
            rel_tol=rel_tol,
            stderr_method="analytic",
            device=dev,
            dtype=dtype,
            random_state=random_state,
        )
        axis_results.append(res)
        # the matrix is computed at a step, so a Richardson extrapolation is not what it holds
        rules.append("robust" if res.method == "richardson" else res.method)
        step = res.robust.step if step_rule == "richardson" else res.step
        chosen_pairs.append((t0a - step / 2, t0a + step / 2, step))

    groups: list[torch.Tensor] = []
    minus, plus, steps = [], [], []
    for a, (lo, hi, _) in enumerate(chosen_pairs):
        lk = lookups[a]
        k_lo = min(lk, key=lambda k, lo=lo: abs(k - lo))
        k_hi = min(lk, key=lambda k, hi=hi: abs(k - hi))
        minus.append(len(groups))
        groups.append(transform.transform(lk[k_lo], device=dev, dtype=dtype))
        plus.append(len(groups))
        groups.append(transform.transform(lk[k_hi], device=dev, dtype=dtype))
        steps.append(k_hi - k_lo)
    cidx = None
    if yc is not None:
        cidx = len(groups)
        groups.append(yc)
    design = _Design(minus=minus, plus=plus, steps=steps, center=cidx)
    j, cov, _, _, nb = _compute(groups, design, bins, stderr_method, n_boot, random_state)
    pairs = [(i, k) for i in range(d) for k in range(i, d)]
    se = np.zeros((d, d))
    for a, (i, k) in enumerate(pairs):
        se[i, k] = se[k, i] = math.sqrt(max(cov[a, a], 0.0))
    crb, crb_se = _crb_with_error(j, cov)
    if np.any(np.isnan(crb)):
        warnings.warn("estimated Fisher matrix is not positive definite: CRB undefined", stacklevel=2)
    t_end = time.perf_counter()
    return FisherMatrixResult(
        matrix=j,
        stderr=se,
        crb=crb,
        crb_stderr=crb_se,
        steps=np.array(steps),
        theta0=np.array([t for t, _, _ in info]),
        method=rules[0] if len(set(rules)) == 1 else "/".join(rules),
        denominator="center" if cidx is not None else "pooled",
        bins=nb,
        axes=axis_results,
        decorrelation=transform,
        timings={"fit_s": t_fit - t_start, "total_s": t_end - t_start},
        step_rules=rules,
    )
