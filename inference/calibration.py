"""Variance calibration: a closed-form temperature per metric, fitted on held-out data only.

All quantities live in *model space* (log1p on LOG_Y_COLS, standardised), where the members
make their Gaussian assumption ``y ~ N(mean, var)``.

* Temperature (closed form, the maximiser of the Gaussian likelihood over a common scale
  of the variance, cf. gpleiss/temperature_scaling):
      T_j^2 = mean_i( (y_ij - mean_ij)^2 / var_ij )          per metric j
  calibrated variance = T_j^2 * var.  Fit on target_val only, never on target_test.
* Coverage-matched temperature (the final, post-fusion step; ``fit_coverage_temperature``):
      T_j = argmin_T  sum_{L in (0.68, 0.95)} (coverage_L(T) - L)^2      on target_val
  where coverage_L(T) = mean_i(|z_ij| <= z_L * T), z = (y - mean)/sqrt(var); T on a log grid
  0.05..20 (the middle of the minimising range).  Residuals with heavier tails than a Gaussian
  make the closed-form T (driven by the largest errors) over-cover the 68 % interval; this one
  targets the two intervals reported.
* NLL (constant included):
      NLL_j = mean_i( 0.5*log(2*pi*var_ij) + (y_ij - mean_ij)^2 / (2*var_ij) )
* Coverage of the central interval of probability ``level``:
      fraction of i with |y - mean| / sqrt(var) <= z,   z = Phi^-1(0.5 + level/2)
  (68 % <-> z = 0.994, 95 % <-> z = 1.960).
* Interval multipliers (split conformal on normalised residuals, ``fit_interval_z``): per
  metric and level (every level of the calibration curve), z_L = the ceil((n+1)L)-th smallest
  |y - mean|/sqrt(var) on target_val; a level between two fitted ones interpolates linearly.
  The interval mean +- z_L*sqrt(var) then holds >= L of new exchangeable rows on average,
  whatever the tails of the residuals: one temperature cannot match 68 % and 95 % at once
  when the errors are heavier-tailed than a Gaussian, these multipliers can.
"""
import math
from statistics import NormalDist

import numpy as np

from core.errors import ToolkitError

VAR_FLOOR = 1e-12                       # model-space variance floor (standardised units)
LEVELS = (0.68, 0.95)                   # the two intervals reported everywhere
CURVE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95, 0.99)  # calibration plot


def _check(y, mean, var):
    y, mean, var = (np.asarray(a, dtype=float) for a in (y, mean, var))
    if not (y.shape == mean.shape == var.shape) or y.ndim != 2:
        raise ToolkitError(f"y, mean and var must all be (N, M) with the same shape; got {y.shape}, "
                           f"{mean.shape}, {var.shape}.")
    if len(y) == 0:
        raise ToolkitError("Cannot calibrate on 0 rows; the validation split is empty.")
    return y, mean, np.maximum(var, VAR_FLOOR)


def z_of(level: float) -> float:
    """Half-width in standard deviations of the central interval holding ``level``."""
    if not 0 < level < 1:
        raise ToolkitError(f"Interval level must be in (0, 1), got {level}.")
    return NormalDist().inv_cdf(0.5 + level / 2)


def fit_temperature(y, mean, var) -> np.ndarray:
    """Per-metric T (M,) with T^2 = mean((y - mean)^2 / var); multiply var by T^2 to calibrate."""
    y, mean, var = _check(y, mean, var)
    return np.sqrt(np.mean((y - mean) ** 2 / var, axis=0))


def fit_coverage_temperature(y, mean, var, levels=LEVELS) -> np.ndarray:
    """Per-metric T (M,) whose scaled intervals best match the nominal ``levels`` on (y, mean, var)."""
    y, mean, var = _check(y, mean, var)
    z = np.abs(y - mean) / np.sqrt(var)                                  # (N, M)
    grid = np.geomspace(0.05, 20.0, 600)                                 # (G,)
    loss = np.zeros((len(grid), z.shape[1]))
    for lv in levels:
        cov = np.mean(z[None, :, :] <= z_of(lv) * grid[:, None, None], axis=1)   # (G, M)
        loss += (cov - lv) ** 2
    out = []
    for j in range(z.shape[1]):
        best = np.flatnonzero(loss[:, j] <= loss[:, j].min() + 1e-12)
        out.append(float(np.sqrt(grid[best[0]] * grid[best[-1]])))      # geometric middle of the flat minimum
    return np.asarray(out)


def gaussian_nll(y, mean, var) -> np.ndarray:
    """Per-metric mean Gaussian NLL (M,), the 0.5*log(2*pi) constant included."""
    y, mean, var = _check(y, mean, var)
    return np.mean(0.5 * np.log(2 * math.pi * var) + (y - mean) ** 2 / (2 * var), axis=0)


def fit_interval_z(y, mean, var, levels=LEVELS) -> dict:
    """``{str(level): [z_L per metric]}``: split-conformal half-widths in units of sqrt(var)."""
    y, mean, var = _check(y, mean, var)
    z = np.sort(np.abs(y - mean) / np.sqrt(var), axis=0)                # (N, M) ascending
    n = len(z)
    out = {}
    for lv in levels:
        rank = min(int(math.ceil((n + 1) * lv)), n) - 1                  # finite-sample conformal rank
        out[str(lv)] = z[rank].tolist()
    return out


def interval_multiplier(interval_z: dict | None, level: float):
    """Per-metric half-widths (in stds) for ``level`` from fitted multipliers ``{str(level): [z per metric]}``: the
    fitted ones, linear in the level between the two fitted levels around it, or None (Gaussian ``z_of``) outside
    the fitted levels or without any."""
    if not interval_z:
        return None
    if str(level) in interval_z:
        return np.asarray(interval_z[str(level)], float)
    fitted = sorted((float(k), np.asarray(v, float)) for k, v in interval_z.items())
    below = [(lv, z) for lv, z in fitted if lv < level]
    above = [(lv, z) for lv, z in fitted if lv > level]
    if not below or not above:
        return None
    (l0, z0), (l1, z1) = below[-1], above[0]
    return z0 + (z1 - z0) * (level - l0) / (l1 - l0)


def coverage(y, mean, var, level: float, z=None) -> np.ndarray:
    """Per-metric fraction (M,) of rows inside the central ``level`` interval.

    ``z``: per-metric half-widths (from ``fit_interval_z``); Gaussian ``z_of(level)`` when None.
    """
    y, mean, var = _check(y, mean, var)
    half = z_of(level) if z is None else np.asarray(z, float)
    return np.mean(np.abs(y - mean) / np.sqrt(var) <= half, axis=0)


def calibration_summary(y, mean, var, cols, interval_z: dict | None = None) -> dict:
    """``{col: {nll, cov68, cov95}, ..., "mean": {...}}`` (coverages as fractions 0..1).

    With ``interval_z`` the intervals use those multipliers instead of the Gaussian ones.
    """
    nll = gaussian_nll(y, mean, var)
    covs = {f"cov{round(100 * lv)}": coverage(y, mean, var, lv, (interval_z or {}).get(str(lv)))
            for lv in LEVELS}
    out = {c: {"nll": float(nll[j]), **{k: float(v[j]) for k, v in covs.items()}} for j, c in enumerate(cols)}
    keep = varying(y)
    out["mean"] = {"nll": float(np.mean(nll[keep])), **{k: float(np.mean(v[keep])) for k, v in covs.items()}}
    return out


def varying(y) -> np.ndarray:
    """(M,) the metrics that take more than one value in ``y`` (N, M); all of them when none does.  Means over
    metrics leave a constant one out, as the mean R^2 does (its R^2 is undefined, its interval says nothing)."""
    y = np.asarray(y, float)
    keep = np.ptp(y, axis=0) > 0
    return keep if keep.any() else np.ones(y.shape[1], bool)


def coverage_curve(y, mean, var, levels=CURVE_LEVELS, interval_z: dict | None = None) -> list:
    """Observed coverage (pooled over the metrics that vary) at each expected level: for the calibration plot.
    With ``interval_z`` the intervals use those multipliers (``interval_multiplier``), as the ensemble's do."""
    keep = varying(y)
    return [float(np.mean(coverage(y, mean, var, lv, interval_multiplier(interval_z, lv))[keep])) for lv in levels]
