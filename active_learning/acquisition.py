"""Acquisition rules: which ``batch`` designs of a candidate pool to simulate next.

    pick = select("diverse", x_scaled, mean, std, batch=25, rng=np.random.default_rng([seed, round]))

Inputs are in the ensemble's model space (``Ensemble.predict_scaled``): ``x_scaled`` (N, D) the
candidates' scaled features, ``mean`` / ``std`` (N, M) the calibrated fused prediction per metric.

* ``random``: a uniform draw from the pool (the control; the same code path as the others).
* ``uncertainty``: the largest ``score`` = Σ_j std_ij² / v_j, v_j the variance of the predicted mean of
  metric j over the pool.  Dividing by v_j normalises each metric by its own spread, so the score is the
  expected squared error of a design relative to the metric's variance: the term a design adds to
  Σ_j SSE_j / SST_j, i.e. to the loss in mean R² the toolkit reports.
* both weigh the score by ``p_ok``, the probability that the design simulates at all (``feasibility``),
  and rank a design with a failure risk above 10 % after all others:
  the most uncertain designs are often at the edges of the space where simulations fail (5t_opamp,
  M2 at its minimum width: 38 of 150 designs failed without it), and a failed simulation teaches
  the forward model nothing while it costs the budget.
* ``diverse``: the ``DIVERSE_FACTOR`` × batch highest scores, clustered into ``batch`` groups by k-means
  weighted by the score in scaled feature space (scikit-learn); from each group the highest score.
  A batch then covers several uncertain regions instead of crowding into one (Zhdanov 2019, "Diverse
  mini-batch active learning").
* ``spec``: for inverse design, simulate where a spec is likely met: the score is P(every goal met) under the
  calibrated prediction (independent normals per metric, model space: Π_j [Φ((hi_j − μ_ij)/σ_ij) −
  Φ((lo_j − μ_ij)/σ_ij)], ``spec_probability``), weighed by ``p_ok`` and spread by k-means as ``diverse``.
  The B data grow where the designer will search, and the designs found are candidates themselves.
* ``mixed``: half the batch a uniform draw (as ``random``), the other half ``diverse`` among the rest.
  Uncertainty alone moves the training rows away from the distribution the surrogate is used on and,
  before the first failures are seen, into regions where simulations fail (two_stage_opamp: a whole
  first batch); the random half bounds both.
"""
import numpy as np

from core.errors import ToolkitError

RULES = ("random", "uncertainty", "diverse", "mixed", "spec")
DIVERSE_FACTOR = 10    # candidates per batch slot handed to k-means (Zhdanov's beta)
LIKELY_FAIL_THRESHOLD = 0.9   # a candidate with P(OK) below this is ranked after every likelier one ... (0.5 let
                               # the boundary designs through: replaying two_stage rounds 2-9, 31 failures vs 7)
LIKELY_FAIL_FACTOR = 1e-3      # ... by this score multiplier


def score(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N,) Σ_j std_ij² / v_j with v_j = var_i(mean_ij) over the pool (a constant metric counts 1)."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    if mean.shape != std.shape or mean.ndim != 2:
        raise ValueError(f"mean and std must both be (N, M), got {mean.shape} and {std.shape}")
    spread = mean.var(axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    return (std ** 2 / spread).sum(axis=1)


def spec_probability(mean: np.ndarray, std: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(N,) P(lo_j <= y_j <= hi_j for every metric j) with y_ij ~ N(mean_ij, std_ij²) independent across metrics;
    ``lo``/``hi`` (M,) model-space bounds (``inverse.goals.ModelSpec``, +-BIG when open)."""
    from scipy.stats import norm
    mean, std = np.asarray(mean, float), np.maximum(np.asarray(std, float), 1e-12)
    p = norm.cdf((np.asarray(hi, float) - mean) / std) - norm.cdf((np.asarray(lo, float) - mean) / std)
    return np.clip(p, 0.0, 1.0).prod(axis=1)


def feasibility(x_seen: np.ndarray, ok: np.ndarray, x_pool: np.ndarray) -> np.ndarray:
    """(N,) P(simulation OK) of the pool designs from the designs simulated so far (scaled features, their
    status): L2-regularised logistic regression (scikit-learn); 1 everywhere until at least 2 designs have
    failed and 2 have not (nothing to learn a boundary from)."""
    ok = np.asarray(ok, bool)
    if (~ok).sum() < 2 or ok.sum() < 2:
        return np.ones(len(x_pool))
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(np.asarray(x_seen, float), ok.astype(int))
    return clf.predict_proba(np.asarray(x_pool, float))[:, 1]


def select(rule: str, x_scaled: np.ndarray, mean, std, *, batch: int, rng: np.random.Generator,
           p_ok=None, spec_bounds=None) -> np.ndarray:
    """Indices (sorted by pick order, distinct) of ``min(batch, N)`` pool rows chosen by ``rule``; ``p_ok``
    (N,) weighs the score (``feasibility``; ``random`` ignores it: it is the control); ``spec_bounds`` =
    (lo, hi) model-space goal bounds, needed by ``spec``."""
    if rule not in RULES:
        raise ToolkitError(f"Unknown acquisition rule {rule!r}; choose from {list(RULES)}.")
    if rule == "spec" and spec_bounds is None:
        raise ToolkitError("The 'spec' rule needs a spec: --spec FILE.toml (docs/USAGE.md, as for inverse_opt).")
    n = len(x_scaled)
    if batch < 1 or n < 1:
        raise ToolkitError(f"Acquisition needs a batch >= 1 and a non-empty pool, got batch={batch}, pool={n}.")
    k = min(batch, n)
    if rule == "random":
        return rng.choice(n, k, replace=False)
    if rule == "mixed":
        explore = rng.choice(n, k // 2, replace=False)
        rest = np.setdiff1d(np.arange(n), explore)
        if k - len(explore) == 0:
            return explore
        chosen = select("diverse", np.asarray(x_scaled)[rest], np.asarray(mean)[rest], np.asarray(std)[rest],
                        batch=k - len(explore), rng=rng, p_ok=None if p_ok is None else np.asarray(p_ok)[rest])
        return np.concatenate([rest[chosen], explore])
    s = spec_probability(mean, std, *spec_bounds) if rule == "spec" else score(mean, std)
    if p_ok is not None:
        p_ok = np.asarray(p_ok, float)
        # weighted by P(OK); a design with P(OK) < LIKELY_FAIL_THRESHOLD only when nothing else is left
        s = s * p_ok * np.where(p_ok < LIKELY_FAIL_THRESHOLD, LIKELY_FAIL_FACTOR, 1.0)
    order = np.argsort(-s, kind="stable")
    if rule == "uncertainty" or k == n:
        return order[:k]
    top = order[:min(n, DIVERSE_FACTOR * k)]
    from sklearn.cluster import KMeans
    labels = KMeans(n_clusters=k, n_init=3, random_state=int(rng.integers(2 ** 31 - 1))).fit(
        np.asarray(x_scaled, float)[top], sample_weight=s[top]).labels_
    picks = [top[labels == c][0] for c in range(k) if (labels == c).any()]   # top is sorted: [0] = best score
    if len(picks) < k:     # empty clusters (duplicate candidates): fill with the next best scores
        taken = set(picks)
        picks += [i for i in order if i not in taken][:k - len(picks)]
    picks = np.asarray(picks)
    return picks[np.argsort(-s[picks], kind="stable")]
