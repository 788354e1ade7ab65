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
* ``integrated``: the batch that most shrinks the predictive variance over the whole design space, not at the
  picked designs themselves (Cohn 1996, "active learning Cohn", ALC): uncertainty sampling crowds the batch at the
  edges of the space, while the test designs (and the user's) are spread over all of it.  Needs the GP member
  (``gp_stack``): its posterior covariance ``C_j`` over a random subset of the pool says how much simulating
  design c lowers the variance at every other design r, exactly for a GP: ``C_j(r, c)^2 / (C_j(c, c) + s_j)``.
  Greedy batch: pick the c with the largest Σ_j mean_r C_j(r, c)^2 / (C_j(c, c) + s_j) / v_j (v_j as for
  ``uncertainty``), condition C on it (a rank-one update: the GP's posterior after that simulation, whatever its
  result), repeat; weighed by ``p_ok`` like the others.  The neural members learn from the same designs.
  Where the GP learns a metric in another space (a ratio through its sign, ``models.SignedRatio``: u, with
  log cmrr = log k - log|sinh u|), a unit of variance in u is worth g_j(r) = var_model / var_u at design r in
  the model space R² is reported in (the delta method, with the GP's own moments, so finite at u = 0): large
  near the spikes where the ratio's denominator crosses zero, ~0 far from them.  The integral is weighed by it
  (``sensitivity``); without it a unit of u variance counted alike at a spike and far from one.
* ``mixed``: half the batch a uniform draw (as ``random``), the other half ``diverse`` among the rest.
  Uncertainty alone moves the training rows away from the distribution the surrogate is used on and,
  before the first failures are seen, into regions where simulations fail (two_stage_opamp: a whole
  first batch); the random half bounds both.
* ``mixed_integrated``: half the batch a uniform draw, the other half ``integrated`` picks made after conditioning
  the covariance on the random half (``given``), so they go where the random half will not already teach.  The
  integrated rule minimises the GP member's variance, but the fused ensemble also leans on neural members that
  learn other metrics best (two_stage_opamp: slew, ugf, dc gain) and whose error is not where the GP's variance
  is; the uniform half keeps their training rows spread like the designs they are scored on.  Measured (5 seeds,
  docs/RESULTS.md#mixed-integrated): level with ``integrated`` on 5t_opamp and two_stage_opamp, with more failed
  simulations on the latter, so ``integrated`` stays the default.
"""
import warnings

import numpy as np

from core.errors import ToolkitError

RULES = ("random", "uncertainty", "diverse", "integrated", "mixed", "mixed_integrated", "spec")
GP_RULES = ("integrated", "mixed_integrated")   # the rules that need the GP member's posterior covariance
INTEGRATED_POOL = 1500   # pool designs the integrated rule chooses among and integrates over: its covariance is
                         # (metrics, N, N) float64, 90 MB for 5 metrics at 1500; a random subset of a uniform pool
                         # is itself uniform, so the integral stays over the design space
DIVERSE_FACTOR = 10    # candidates per batch slot handed to k-means (Zhdanov's beta)
LIKELY_FAIL_THRESHOLD = 0.9   # a candidate with P(OK) below this is ranked after the likelier ones ... (0.5 let
                               # the boundary designs through: replaying two_stage rounds 2-9, 31 failures vs 7)
LIKELY_FAIL_FACTOR = 1e-3      # ... by this score multiplier (unless its score is over 1,000 times theirs)


def spread(mean: np.ndarray) -> np.ndarray:
    """(M,) v_j = var_i(mean_ij) over the pool, 1 for a constant metric: each metric's scale in the scores."""
    v = np.asarray(mean, float).var(axis=0)
    return np.where(v > 0, v, 1.0)


def score(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N,) Σ_j std_ij² / v_j with v_j = var_i(mean_ij) over the pool (a constant metric counts 1)."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    if mean.shape != std.shape or mean.ndim != 2:
        raise ValueError(f"mean and std must both be (N, M), got {mean.shape} and {std.shape}")
    return (std ** 2 / spread(mean)).sum(axis=1)


def integrated(cov: np.ndarray, noise: np.ndarray, scale: np.ndarray, batch: int, weight=None,
               sensitivity=None, given=()) -> np.ndarray:
    """Greedy ``batch`` of the N designs (indices, pick order) that most reduce Σ_j mean_r g_j(r) var_j(r) / scale_j.

    ``cov`` (M, N, N): posterior covariance of the latent functions among the designs; ``noise`` (M,): the
    observation noise variance; ``weight`` (N,) multiplies each design's reduction (P(OK)); ``sensitivity``
    (M, N) g_j(r) >= 0, how much a unit of variance at design r in the GP's space is worth in the space the
    score is reported in (1 where they are the same: the default).  Each pick conditions ``cov`` on a noisy
    observation at it, C <- C - C[:, c] C[c, :] / (C[c, c] + s), so the next pick counts only what the batch
    has not already learned.  ``given``: designs already in the batch (chosen otherwise): ``cov`` is conditioned
    on them first, they are not picked again, and they are not in the result."""
    cov = np.array(cov, float)                         # a copy: updated in place
    noise, scale = np.asarray(noise, float), np.asarray(scale, float)
    m, n, n2 = cov.shape
    if n != n2 or noise.shape != (m,) or scale.shape != (m,):
        raise ValueError(f"cov must be (M, N, N) with noise and scale (M,), got {cov.shape}, {noise.shape}, "
                         f"{scale.shape}")
    weight = np.ones(n) if weight is None else np.asarray(weight, float)
    sens = np.ones((m, n)) if sensitivity is None else np.asarray(sensitivity, float)
    if sens.shape != (m, n) or not np.all(sens >= 0):
        raise ValueError(f"sensitivity must be (M, N) = {(m, n)} and >= 0, got {sens.shape}")
    given = [int(c) for c in given]
    if len(set(given)) != len(given) or any(not 0 <= c < n for c in given):
        raise ValueError(f"given must be distinct indices in [0, {n}), got {given}")
    for c in given:
        condition(cov, noise, c)
    picks = []
    for _ in range(min(batch, n - len(given))):
        denom = np.einsum("mii->mi", cov) + noise[:, None]                          # (M, N)
        reduction = np.matmul(sens[:, None, :], cov ** 2)[:, 0, :]                  # (M, N): Σ_r g(r) C(r, c)^2
        gain = (reduction / denom / scale[:, None]).sum(axis=0) / n                 # (N,)
        gain = gain * weight
        gain[picks + given] = -np.inf
        c = int(np.argmax(gain))
        condition(cov, noise, c)
        picks.append(c)
    return np.asarray(picks, int)


def condition(cov: np.ndarray, noise: np.ndarray, c: int) -> None:
    """``cov`` (M, N, N) in place: the GP posterior after a noisy observation at design c (rank one)."""
    u = cov[:, :, c] / np.sqrt(cov[:, c, c] + noise)[:, None]                        # (M, N)
    cov -= u[:, :, None] * u[:, None, :]


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


def ok_weight(p_ok) -> np.ndarray:
    """(N,) the factor a score is weighed by: P(OK), and a design with P(OK) < LIKELY_FAIL_THRESHOLD goes after
    every likelier one (only when nothing else is left)."""
    p_ok = np.asarray(p_ok, float)
    return p_ok * np.where(p_ok < LIKELY_FAIL_THRESHOLD, LIKELY_FAIL_FACTOR, 1.0)


def select(rule: str, x_scaled: np.ndarray, mean, std, *, batch: int, rng: np.random.Generator,
           p_ok=None, spec_bounds=None, gp_cov=None, sensitivity=None, given=(), uniform: int = 0) -> np.ndarray:
    """Indices (sorted by pick order, distinct) of ``min(batch, N)`` pool rows chosen by ``rule``; ``p_ok``
    (N,) weighs the score (``feasibility``; ``random`` ignores it: it is the control); ``spec_bounds`` =
    (lo, hi) model-space goal bounds, needed by ``spec``; ``gp_cov`` = (cov (M, N, N), noise (M,)) the GP
    member's posterior over these rows, needed by ``integrated``, with its ``sensitivity`` (``integrated``).
    ``given`` (GP rules only): rows simulated in this batch anyway (drawn otherwise): the GP's covariance is
    conditioned on them first, and they are neither picked nor returned.  ``uniform`` (< the batch): that many
    rows first, a uniform draw (a round's validation designs, ``active``), then the rule's picks among the others
    (the GP rules given the drawn ones)."""
    if rule not in RULES:
        raise ToolkitError(f"Unknown acquisition rule {rule!r}; choose from {list(RULES)}.")
    if rule == "spec" and spec_bounds is None:
        raise ToolkitError("The 'spec' rule needs a spec: --spec FILE.toml (docs/USAGE.md, as for inverse_opt).")
    n = len(x_scaled)
    if batch < 1 or n < 1:
        raise ToolkitError(f"Acquisition needs a batch >= 1 and a non-empty pool, got batch={batch}, pool={n}.")
    k = min(batch, n)
    if uniform:
        if not 0 < uniform < k:
            raise ValueError(f"uniform must leave the rule at least one of the {k} picks, got {uniform}")
        drawn = rng.choice(n, uniform, replace=False)
        kw = dict(batch=k - uniform, rng=rng, spec_bounds=spec_bounds, gp_cov=gp_cov, sensitivity=sensitivity)
        if rule in GP_RULES:   # the covariance is over all N rows: conditioned on the drawn ones instead
            return np.concatenate([drawn, select(rule, x_scaled, mean, std, p_ok=p_ok,
                                                 given=np.concatenate([np.asarray(given, int), drawn]), **kw)])
        rest = np.setdiff1d(np.arange(n), drawn)
        return np.concatenate([drawn, rest[select(rule, np.asarray(x_scaled)[rest], np.asarray(mean)[rest],
                                                  np.asarray(std)[rest],
                                                  p_ok=None if p_ok is None else np.asarray(p_ok)[rest], **kw)]])
    if rule == "random":
        return rng.choice(n, k, replace=False)
    if rule in GP_RULES:
        if gp_cov is None:
            raise ToolkitError(f"The {rule!r} rule needs the GP member's covariance: add gp_stack to "
                               "ACTIVE_MEMBERS (--members ...,gp_stack).")
        given = np.asarray(given, int)
        k = min(k, n - len(given))
        free = np.setdiff1d(np.arange(n), given)
        explore = (free[rng.choice(len(free), k // 2, replace=False)] if rule == "mixed_integrated"
                   else np.array([], int))
        return np.concatenate([explore, integrated(gp_cov[0], gp_cov[1], spread(mean), k - len(explore),
                                                   None if p_ok is None else ok_weight(p_ok), sensitivity,
                                                   given=np.concatenate([given, explore]))])
    if rule == "mixed":
        explore = rng.choice(n, k // 2, replace=False)
        rest = np.setdiff1d(np.arange(n), explore)
        if k - len(explore) == 0:
            return explore
        chosen = select("diverse", np.asarray(x_scaled)[rest], np.asarray(mean)[rest], np.asarray(std)[rest],
                        batch=k - len(explore), rng=rng, p_ok=None if p_ok is None else np.asarray(p_ok)[rest])
        return np.concatenate([rest[chosen], explore])
    s = spec_probability(mean, std, *spec_bounds) if rule == "spec" else score(mean, std)
    if rule == "spec" and not (s > 0).any():
        # no candidate is likely to meet the spec (every probability rounds to 0): exploring where the model is
        # least sure is all the rule can do, rather than k-means over zero weights
        warnings.warn("rule spec: no pool design has a nonzero probability of meeting the spec; this batch is "
                      "chosen by uncertainty (spread by k-means) instead", stacklevel=2)
        s = score(mean, std)
    if p_ok is not None:
        s = s * ok_weight(p_ok)
    order = np.argsort(-s, kind="stable")
    if rule == "uncertainty" or k == n:
        return order[:k]
    top = order[:min(n, DIVERSE_FACTOR * k)]
    from sklearn.cluster import KMeans
    labels = KMeans(n_clusters=k, n_init=3, random_state=int(rng.integers(2 ** 31 - 1))).fit(
        np.asarray(x_scaled, float)[top], sample_weight=s[top] if s[top].sum() > 0 else None).labels_
    picks = [top[labels == c][0] for c in range(k) if (labels == c).any()]   # top is sorted: [0] = best score
    if len(picks) < k:     # empty clusters (duplicate candidates): fill with the next best scores
        taken = set(picks)
        picks += [i for i in order if i not in taken][:k - len(picks)]
    picks = np.asarray(picks)
    return picks[np.argsort(-s[picks], kind="stable")]
