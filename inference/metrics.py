"""Regression metrics in physical units, per metric column.

* MSE = mean((y - y_hat)^2), MAE = mean(|y - y_hat|)         (seed README formulas 1, 2)
* R^2 = 1 - SSE/SST, SST = sum((y - mean(y))^2)                (seed README formula 3)
* R^2_log: the same R^2 on log10 values, for metrics that are strictly positive in the data
  (every metric but phase_margin here); heavy-tailed metrics (dc_gain, cmrr) have a physical
  R^2 dominated by a handful of points, the log-space R^2 weighs every design alike.  A
  metric that can be <= 0 keeps its physical R^2 in this column.  Predictions of a positive
  metric are floored at ``floor`` (a positive value from the training data) before the log.
* MAPE = 100 * mean(|y - y_hat| / |y|) in percent (rows with y = 0 are skipped).
* ``mean``: over the metrics whose R^2 is defined (a metric with one value in every scored row has none); the mean
  MAPE also leaves out a metric that is not strictly positive (a phase margin crossing 0: its percentage errors
  near 0 run to thousands of percent and would make the mean say nothing about the others).
"""
import numpy as np

from core.errors import ToolkitError
from inference.calibration import varying


def r2_score_1d(y, y_hat) -> float:
    sst = float(np.sum((y - np.mean(y)) ** 2))
    sse = float(np.sum((y - y_hat) ** 2))
    return 1.0 - sse / sst if sst > 0 else float("nan")


def regression_report(y_true, y_pred, cols, *, floor=None) -> dict:
    """``{col: {mse, mae, r2, r2_log, mape, log_space}, ..., "mean": {...}}`` for (N, M) arrays."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(cols):
        raise ToolkitError(f"y_true and y_pred must both be (N, {len(cols)}); got {y_true.shape} and {y_pred.shape}.")
    floor = np.full(len(cols), 1e-30) if floor is None else np.asarray(floor, float)
    out = {}
    for j, col in enumerate(cols):
        y, p = y_true[:, j], y_pred[:, j]
        positive = bool(np.all(y > 0))
        nz = y != 0
        row = {"mse": float(np.mean((y - p) ** 2)), "mae": float(np.mean(np.abs(y - p))),
               "r2": r2_score_1d(y, p),
               "mape": float(100 * np.mean(np.abs(y[nz] - p[nz]) / np.abs(y[nz]))) if nz.any() else float("nan"),
               "log_space": positive}
        row["r2_log"] = (r2_score_1d(np.log10(y), np.log10(np.maximum(p, floor[j]))) if positive else row["r2"])
        out[col] = row
    defined = [c for c, keep in zip(cols, varying(y_true)) if keep]   # a constant metric: R^2 undefined, left out
    out["mean"] = {k: float(np.nanmean([out[c][k] for c in defined])) for k in ("r2", "r2_log")}
    positive = [c for c in defined if out[c]["log_space"]]
    out["mean"]["mape"] = float(np.nanmean([out[c]["mape"] for c in positive])) if positive else float("nan")
    return out


def format_report(report: dict, cols, title: str) -> str:
    """The seed's table: one line per metric, MSE / MAE / R2, plus R2_log and MAPE."""
    lines = [f"=== {title} ==="]
    for col in cols:
        r = report[col]
        lines.append(f"{col:<15} MSE={r['mse']:<11.4g} MAE={r['mae']:<11.4g} R2={r['r2']:<8.4f} "
                     f"R2_log={r['r2_log']:<8.4f} MAPE={r['mape']:.2f}%")
    m = report["mean"]
    lines.append(f"{'mean':<15} {'':<27} R2={m['r2']:<8.4f} R2_log={m['r2_log']:<8.4f} MAPE={m['mape']:.2f}%")
    return "\n".join(lines)
