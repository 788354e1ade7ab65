"""Fusing K calibrated Gaussian members into one prediction, per sample and per metric.

Model space throughout.  For member k, metric j, sample i with calibrated variance
``v_kij = T_kj^2 * var_kij`` and validation MSE ``e_kj`` (of its mean, on target_val):

    log w_kij = -beta_j * log v_kij - gamma_j * log e_kj,    w_kij = softmax_k(log w_kij)
    mean_ij   = sum_k w_kij * mu_kij
    var_ij    = T_fj^2 * sum_k w_kij * (v_kij + (mu_kij - mean_ij)^2)

i.e. precision weights (1/v)^beta times per-metric MSE weights (1/e)^gamma, normalised over
members; the variance is that of the mixture sum_k w_k N(mu_k, v_k) (members' own variance
plus their disagreement), rescaled by a final per-metric temperature ``T_f`` fitted on
target_val after fusing: ``final="coverage"`` (default) matches the 68 % and 95 % interval
coverage (``calibration.fit_coverage_temperature``), ``final="nll"`` uses the closed form
T^2 = mean((y - mean)^2 / var), ``final="none"`` keeps T_f = 1.  ``beta`` in {0, 1} and ``gamma`` in {0, 1, 2, 4, 8} are chosen per
metric on target_val (lowest MSE of the fused mean; the seed's choice beta = gamma = 1 wins
ties): beta = gamma = 0 is the plain average, large gamma approaches "best member only".

How that choice is scored (``selection``):

* ``"val"`` (default): everything fitted and scored in-sample on target_val.  Ten candidate weightings
  leave little room to fit val by chance, and on the shipped circuits and the dev set it ties or beats
  ``"cv"`` in 16 of 18 replayed cells (docs/DECISIONS.md).
* ``"cv"``: K-fold cross-fitting over the target_val rows (``CV_FOLDS``, seeded).  For
  each fold the temperatures and member MSEs are fitted on the other folds and the fused mean is
  scored on the held-out fold; beta, gamma are those with the lowest out-of-fold MSE, and the
  final temperature and interval multipliers are fitted on the out-of-fold fused predictions.
  Scoring a weighting on the rows that fitted it favours the member whose val error is lowest
  *by chance* on those rows (and the members early-stopped on them); out-of-fold scores pay for
  that, so a weighting that merely fits noise loses to a flatter one.  Its weakness: a few val rows that
  every member misses by far (a cmrr pole) dominate the out-of-fold MSE of whichever fold holds them, and
  the member ranking fitted without them differs, so the choice follows those rows.

Either way the parameters ``fuse`` uses (temperatures, val MSE) are then fitted on all
target_val rows.

``fuse`` is torch-only and differentiable w.r.t. the members' outputs (inverse design
optimises through it); ``fit_fusion`` works on NumPy arrays from target_val.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

from core.errors import ToolkitError
from data_loader.split import fold_ids
from inference.calibration import (CURVE_LEVELS, VAR_FLOOR, fit_coverage_temperature, fit_interval_z,
                                   fit_temperature)

BETA_GRID = (1.0, 0.0)                     # exponent of the precision weight 1/v (first = default)
GAMMA_GRID = (1.0, 0.0, 2.0, 4.0, 8.0)      # exponent of the per-metric MSE weight 1/e (first = default)
FINAL_METHODS = ("coverage", "nll", "none")  # how the fused variance's final temperature is fitted
CANDIDATES = tuple((b, g) for b in BETA_GRID for g in GAMMA_GRID)   # (beta, gamma) pairs tried, default first
SELECTIONS = ("val", "cv")                 # how beta/gamma are scored: in-sample or out-of-fold on target_val
CV_FOLDS = 5                               # folds of target_val for selection="cv"
CV_MIN_ROWS = 20                           # fewer target_val rows: "cv" falls back to "val" (folds too small)


@dataclass
class FusionParams:
    """Everything ``fuse`` needs, fitted on target_val; plain lists so it travels in JSON."""
    members: list          # member names, order of the K axis
    val_mse: list          # (K, M) model-space val MSE of each member's mean
    temperatures: list     # (K, M) member temperatures T_kj
    beta: list             # (M,)
    gamma: list            # (M,)
    final_temperature: list  # (M,) T_fj applied to the fused variance
    final_method: str = "coverage"  # how T_f was fitted: coverage | nll | none
    interval_z: dict = None  # {"0.68": (M,), ...} conformal half-widths in fused stds per level; None = Gaussian
    selection: str = "val"   # how beta/gamma were scored: cv (out-of-fold on target_val) | val (in-sample)

    def to_dict(self) -> dict:
        return {k: (np.asarray(v).tolist() if not isinstance(v, list) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FusionParams":
        optional = {"final_method", "interval_z", "selection"}
        missing = [k for k in cls.__dataclass_fields__ if k not in d and k not in optional]
        if missing:
            raise ToolkitError(f"Fusion record lacks {missing}; rerun python -m inference.infer_ensemble.")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def fuse(means: torch.Tensor, variances: torch.Tensor, *, val_mse, beta, gamma, final_temperature=None):
    """Fused ``(mean, var)``, each (N, M), from ``means``/``variances`` (K, N, M), calibrated variances.

    ``val_mse`` (K, M), ``beta``/``gamma``/``final_temperature`` (M,) may be tensors or lists.
    Returns also the weights (K, N, M).
    """
    if means.shape != variances.shape or means.ndim != 3:
        raise ToolkitError(f"means and variances must both be (K, N, M); got {tuple(means.shape)} and "
                           f"{tuple(variances.shape)}.")
    k, _, m = means.shape
    as_t = lambda a: torch.as_tensor(a, dtype=means.dtype, device=means.device)  # noqa: E731
    val_mse, beta, gamma = as_t(val_mse), as_t(beta), as_t(gamma)
    if val_mse.shape != (k, m) or beta.shape != (m,) or gamma.shape != (m,):
        raise ToolkitError(f"val_mse must be ({k}, {m}) and beta/gamma ({m},); got {tuple(val_mse.shape)}, "
                           f"{tuple(beta.shape)}, {tuple(gamma.shape)}.")
    v = variances.clamp_min(VAR_FLOOR)                                  # (K, N, M)
    logits = -beta * v.log() - (gamma * val_mse.clamp_min(VAR_FLOOR).log())[:, None, :]  # (K, N, M)
    w = torch.softmax(logits, dim=0)                                    # (K, N, M), sums to 1 over K
    mean = (w * means).sum(0)                                           # (N, M)
    var = (w * (v + (means - mean) ** 2)).sum(0)                        # (N, M) mixture variance
    if final_temperature is not None:
        var = var * as_t(final_temperature) ** 2
    return mean, var, w


def _np_fuse(means, variances, val_mse, beta, gamma, final_temperature=None):
    with torch.no_grad():
        mean, var, w = fuse(torch.as_tensor(np.ascontiguousarray(means, float)), torch.as_tensor(np.ascontiguousarray(variances, float)),
                            val_mse=val_mse, beta=beta, gamma=gamma, final_temperature=final_temperature)
    return mean.numpy(), var.numpy(), w.numpy()


def _member_fit(means, vars_, y):
    """Per-member temperatures (K, M) and val MSE (K, M) on these rows."""
    temps = np.stack([fit_temperature(y, means[i], vars_[i]) for i in range(len(means))])
    return temps, np.mean((means - y) ** 2, axis=1)


def _fused_per_candidate(means_fit, vars_fit, y_fit, means_out, vars_out):
    """Fit members on (means_fit, y_fit); fused (mean, var) on the ``*_out`` rows for every candidate."""
    m = y_fit.shape[1]
    temps, val_mse = _member_fit(means_fit, vars_fit, y_fit)
    cal_out = vars_out * temps[:, None, :] ** 2
    out = []
    for b, g in CANDIDATES:
        mean, var, _ = _np_fuse(means_out, cal_out, val_mse, np.full(m, b), np.full(m, g))
        out.append((mean, var))
    return out


def fit_fusion(members, means_val, vars_val, y_val, *, final: str = "coverage", selection: str = "val",
               folds: int = CV_FOLDS) -> FusionParams:
    """Fit temperatures, exponents and the final temperature on validation data.

    ``means_val``/``vars_val``: (K, N, M) *uncalibrated* member outputs, ``y_val`` (N, M).
    ``selection``: "val" (in-sample) or "cv" (out-of-fold scoring), see the module docstring.
    """
    means_val, vars_val, y_val = (np.asarray(a, float) for a in (means_val, vars_val, y_val))
    if means_val.ndim != 3 or means_val.shape != vars_val.shape or means_val.shape[1:] != y_val.shape:
        raise ToolkitError(f"Expected means/vars (K, N, M) and y (N, M); got {means_val.shape}, {vars_val.shape}, "
                           f"{y_val.shape}.")
    if final not in FINAL_METHODS:
        raise ToolkitError(f"Final calibration must be one of {FINAL_METHODS}, got {final!r}.")
    if selection not in SELECTIONS:
        raise ToolkitError(f"Fusion selection must be one of {SELECTIONS}, got {selection!r}.")
    _, n, m = means_val.shape
    if selection == "cv" and n < max(CV_MIN_ROWS, 2 * folds):
        selection = "val"          # a fold of 3 rows scores nothing; say so in the record
    if selection == "cv":
        ids = fold_ids(n, folds)
        oof = [(np.empty((n, m)), np.empty((n, m))) for _ in CANDIDATES]     # per candidate (mean, var)
        for f in range(folds):
            fit_rows, out_rows = ids != f, ids == f
            fused = _fused_per_candidate(means_val[:, fit_rows], vars_val[:, fit_rows], y_val[fit_rows],
                                         means_val[:, out_rows], vars_val[:, out_rows])
            for c, (mean, var) in enumerate(fused):
                oof[c][0][out_rows], oof[c][1][out_rows] = mean, var
        scored = oof
    else:
        scored = _fused_per_candidate(means_val, vars_val, y_val, means_val, vars_val)
    beta, gamma = np.ones(m), np.ones(m)
    best, chosen = np.full(m, np.inf), np.zeros(m, dtype=int)
    for c, (b, g) in enumerate(CANDIDATES):
        err = np.mean((scored[c][0] - y_val) ** 2, axis=0)
        better = err < best * (1 - 1e-9)             # strict: the earlier (the seed's beta = gamma = 1) wins ties
        beta[better], gamma[better], best[better], chosen[better] = b, g, err[better], c
    # the predictions the final calibration is fitted on: out-of-fold ("cv") or in-sample ("val")
    mean = np.stack([scored[chosen[j]][0][:, j] for j in range(m)], axis=1)
    var = np.stack([scored[chosen[j]][1][:, j] for j in range(m)], axis=1)
    final_t = {"coverage": fit_coverage_temperature, "nll": fit_temperature,
               "none": lambda y, mu, v: np.ones(y.shape[1])}[final](y_val, mean, var)
    temps, val_mse = _member_fit(means_val, vars_val, y_val)
    return FusionParams(members=list(members), val_mse=val_mse.tolist(), temperatures=temps.tolist(),
                        beta=beta.tolist(), gamma=gamma.tolist(), final_temperature=final_t.tolist(),
                        final_method=final,
                        # every level of the calibration curve: predict_interval(level) covers what it says there too
                        interval_z=fit_interval_z(y_val, mean, var * final_t ** 2, levels=CURVE_LEVELS),
                        selection=selection)


def apply_fusion(params: FusionParams, means, variances, *, final: bool = True):
    """NumPy: fused (mean, var, weights) for uncalibrated member outputs (K, N, M)."""
    cal = np.asarray(variances, float) * np.asarray(params.temperatures)[:, None, :] ** 2
    return _np_fuse(means, cal, params.val_mse, params.beta, params.gamma,
                    params.final_temperature if final else None)
