"""Preprocessing: log transforms, then standardisation, stored as plain numbers.

    x_model = (log(x) if col in log_x_cols else x - x_mean) / x_scale
    y_model = (log1p(y) if col in log_y_cols else y - y_mean) / y_scale

The log on features is natural for sizes/currents/capacitances that span decades; log1p on
metrics (seed: ``ugf``, ``cmrr``) tames their heavy tails.  ``Preprocessing`` holds only
lists and strings so it travels inside checkpoints (``to_dict``/``from_dict``) and a model
can be used without today's config.py or the original scaler files.

``inverse_y`` clips predictions in model space to the range seen in fitting data widened by
``CLIP_MARGIN`` of that range on each side: a log-space prediction far outside the data
would otherwise explode through expm1 and dominate physical-unit errors.
"""
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from core.errors import ToolkitError

CLIP_MARGIN = 0.25  # fraction of the fitted range added on each side before clipping predictions
DOMAIN_MARGIN = 0.05  # fraction of a feature's training range allowed beyond it before a design is out of domain


@dataclass
class Preprocessing:
    x_cols: list
    y_cols: list
    log_x_cols: list
    log_y_cols: list
    x_mean: list
    x_scale: list
    y_mean: list
    y_scale: list
    y_clip_lo: list   # model-space (scaled) lower clip per metric
    y_clip_hi: list   # model-space (scaled) upper clip per metric
    x_min: list = None   # physical range of each feature in the rows the models learned from (source +
    x_max: list = None   # target train/val inputs): the training domain; None in older checkpoints

    # ---- (de)serialisation
    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        optional = {"x_min", "x_max"}      # older checkpoints: no domain check
        missing = [k for k in cls.__dataclass_fields__ if k not in d and k not in optional]
        if missing:
            raise ToolkitError(f"Preprocessing record lacks {missing}; it was written by an incompatible version. "
                               f"Retrain the stage that made it.")
        return cls(**{k: (None if d.get(k) is None else list(d[k])) for k in cls.__dataclass_fields__})

    # ---- training domain
    def out_of_domain(self, x_raw) -> list | None:
        """Per design, ``""`` inside the training domain, else which features lie outside and by how much.

        Outside = beyond the feature's range in the training inputs (``x_min``..``x_max``) widened by
        ``DOMAIN_MARGIN`` of that range on each side (in log space for log-scaled features; a
        non-positive value of one is outside).  None when the record predates the ranges.
        """
        if self.x_min is None or self.x_max is None:
            return None
        x = self._as_array(x_raw, self.x_cols, "Design (x)")
        lo, hi = np.asarray(self.x_min, float), np.asarray(self.x_max, float)
        logs = self._mask(self.x_cols, self.log_x_cols)
        with np.errstate(divide="ignore", invalid="ignore"):
            xm = np.where(logs, np.log(np.where(x > 0, x, np.nan)), x)
            lo_m, hi_m = np.where(logs, np.log(lo), lo), np.where(logs, np.log(hi), hi)
        pad = DOMAIN_MARGIN * (hi_m - lo_m)
        outside = ~((xm >= lo_m - pad) & (xm <= hi_m + pad))          # NaN (or <= 0 on a log feature): outside
        out = []
        for i in range(len(x)):
            out.append("; ".join((f"{c}={x[i, j]:g} (data {lo[j]:g}..{hi[j]:g})" if not np.isnan(x[i, j])
                                  else f"{c} missing (nan)")
                                 for j, c in enumerate(self.x_cols) if outside[i, j]))
        return out

    # ---- column checks
    def _as_array(self, data, cols, what) -> np.ndarray:
        if isinstance(data, pd.DataFrame):
            got = [str(c) for c in data.columns]
            missing = [c for c in cols if c not in got]
            unseen = [c for c in got if c not in cols]
            if missing or unseen:
                raise ToolkitError(f"{what} columns do not match the model: missing {missing}, unexpected {unseen}. "
                                   f"Expected exactly {cols} (any order).")
            data = data[cols].to_numpy(dtype=float)  # reorders by name
        arr = np.asarray(data, dtype=float)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(cols):
            raise ToolkitError(f"{what} must have shape (N, {len(cols)}) for columns {cols}, got {arr.shape}.")
        return arr

    def _as_scaled(self, data, cols, what) -> np.ndarray:
        """Model-space input: (N, len(cols)) or one row (len(cols),); never silently broadcast (N, 1)."""
        arr = np.atleast_2d(np.asarray(data, dtype=float))
        if arr.ndim != 2 or arr.shape[1] != len(cols):
            raise ToolkitError(f"Scaled {what} must have shape (N, {len(cols)}) for columns {cols}, got "
                               f"{np.shape(data)}.")
        return arr

    def _mask(self, cols, log_cols):
        return np.array([c in log_cols for c in cols], dtype=bool)

    # ---- x
    def x_to_model_space(self, x_raw) -> np.ndarray:
        x = self._as_array(x_raw, self.x_cols, "Design (x)").copy()
        m = self._mask(self.x_cols, self.log_x_cols)
        if m.any():
            bad = x[:, m] <= 0
            if bad.any():
                col = str(np.array(self.x_cols)[m][np.argwhere(bad)[0][1]])   # str: not np.str_ in the message
                raise ToolkitError(f"Feature {col!r} is log-scaled and must be > 0, got {x[:, m][bad][0]:g}. "
                                   f"Give positive sizes or remove it from LOG_X_COLS.")
            x[:, m] = np.log(x[:, m])
        return x

    def transform_x(self, x_raw) -> np.ndarray:
        return ((self.x_to_model_space(x_raw) - np.asarray(self.x_mean)) / np.asarray(self.x_scale)).astype(np.float32)

    def inverse_x(self, x_scaled) -> np.ndarray:
        x = self._as_scaled(x_scaled, self.x_cols, "x") * np.asarray(self.x_scale) + np.asarray(self.x_mean)
        m = self._mask(self.x_cols, self.log_x_cols)
        x[:, m] = np.exp(x[:, m])
        return x

    # ---- y
    def y_to_model_space(self, y_raw) -> np.ndarray:
        y = self._as_array(y_raw, self.y_cols, "Metric (y)").copy()
        m = self._mask(self.y_cols, self.log_y_cols)
        if m.any():
            bad = y[:, m] <= -1
            if bad.any():
                col = str(np.array(self.y_cols)[m][np.argwhere(bad)[0][1]])
                raise ToolkitError(f"Metric {col!r} is in LOG_Y_COLS (log1p) and must be > -1, got "
                                   f"{y[:, m][bad][0]:g}. Remove it from LOG_Y_COLS or fix the data.")
            y[:, m] = np.log1p(y[:, m])
        return y

    def transform_y(self, y_raw) -> np.ndarray:
        return ((self.y_to_model_space(y_raw) - np.asarray(self.y_mean)) / np.asarray(self.y_scale)).astype(np.float32)

    def y_seen_lo(self) -> np.ndarray:
        """(M,) the lowest scaled value per metric among the rows the clip range was fitted on: the clip range
        without the margin ``fit_preprocessing`` adds (CLIP_MARGIN x max(span, 1e-6) on each side)."""
        lo, width = np.asarray(self.y_clip_lo, float), np.asarray(self.y_clip_hi, float) - np.asarray(self.y_clip_lo)
        tiny = 1e-6                                                    # fit_preprocessing's floor on the span
        span = np.where(width >= (1 + 2 * CLIP_MARGIN) * tiny, width / (1 + 2 * CLIP_MARGIN),
                        width - 2 * CLIP_MARGIN * tiny)
        return lo + CLIP_MARGIN * np.maximum(span, tiny)

    def log_y_never_negative(self) -> np.ndarray:
        """(M,) True for a log1p-scaled metric none of whose fitting rows was negative: a bound that expm1 puts
        below 0 (near the clip range's lower edge) is then none of its values."""
        seen = self.y_seen_lo() * np.asarray(self.y_scale) + np.asarray(self.y_mean)     # model space
        logged = self._mask(self.y_cols, self.log_y_cols)
        with np.errstate(over="ignore"):
            return logged & (np.expm1(seen) >= -1e-12)

    def clip_y_scaled(self, y_scaled) -> np.ndarray:
        return np.clip(self._as_scaled(y_scaled, self.y_cols, "y"), self.y_clip_lo, self.y_clip_hi)

    def inverse_y(self, y_scaled, *, clip: bool = True) -> np.ndarray:
        """Scaled predictions -> physical units (expm1 on log columns), clipped first when ``clip``."""
        y = self.clip_y_scaled(y_scaled) if clip else self._as_scaled(y_scaled, self.y_cols, "y")
        y = y * np.asarray(self.y_scale) + np.asarray(self.y_mean)
        m = self._mask(self.y_cols, self.log_y_cols)
        y[:, m] = np.expm1(y[:, m])
        return y

    def y_std_to_physical(self, y_scaled_mean, y_scaled_std) -> np.ndarray:
        """Propagate a model-space std to physical units (delta method through expm1 on log columns)."""
        std = self._as_scaled(y_scaled_std, self.y_cols, "y std") * np.asarray(self.y_scale)
        m = self._mask(self.y_cols, self.log_y_cols)
        if m.any():
            mean_model = self.clip_y_scaled(y_scaled_mean) * np.asarray(self.y_scale) + np.asarray(self.y_mean)
            std[:, m] = std[:, m] * np.exp(mean_model[:, m])  # d expm1(u)/du = e^u
        return std

    # ---- sklearn views (seed API compatibility: x_scaler / y_scaler objects)
    def _scaler(self, mean, scale) -> StandardScaler:
        s = StandardScaler()
        s.mean_, s.scale_ = np.asarray(mean, float), np.asarray(scale, float)
        s.var_, s.n_features_in_, s.n_samples_seen_ = s.scale_ ** 2, len(mean), 0
        return s

    def x_scaler(self) -> StandardScaler:
        return self._scaler(self.x_mean, self.x_scale)

    def y_scaler(self) -> StandardScaler:
        return self._scaler(self.y_mean, self.y_scale)


def fit_preprocessing(*, x_fit: pd.DataFrame, y_fit: pd.DataFrame, y_range: pd.DataFrame,
                      log_x_cols, log_y_cols, x_domain: pd.DataFrame | None = None) -> Preprocessing:
    """Fit on explicit data: ``x_fit`` rows for the x scaler, ``y_fit`` rows for the y scaler,
    ``y_range`` rows (no test rows!) for the prediction clip range, ``x_domain`` rows (default
    ``x_fit``) for the training domain ``x_min``/``x_max``."""
    x_cols, y_cols = [str(c) for c in x_fit.columns], [str(c) for c in y_fit.columns]
    pre = Preprocessing(x_cols, y_cols, [c for c in x_cols if c in log_x_cols],
                        [c for c in y_cols if c in log_y_cols], [], [], [], [], [], [])
    xs = StandardScaler().fit(pre.x_to_model_space(x_fit))
    ys = StandardScaler().fit(pre.y_to_model_space(y_fit))
    pre.x_mean, pre.x_scale = xs.mean_.tolist(), xs.scale_.tolist()
    pre.y_mean, pre.y_scale = ys.mean_.tolist(), ys.scale_.tolist()
    y_seen = (pre.y_to_model_space(y_range) - ys.mean_) / ys.scale_
    lo, hi = y_seen.min(axis=0), y_seen.max(axis=0)
    pad = CLIP_MARGIN * np.maximum(hi - lo, 1e-6)
    pre.y_clip_lo, pre.y_clip_hi = (lo - pad).tolist(), (hi + pad).tolist()
    dom = (x_fit if x_domain is None else x_domain)[x_cols].to_numpy(float)
    pre.x_min, pre.x_max = np.nanmin(dom, axis=0).tolist(), np.nanmax(dom, axis=0).tolist()
    return pre


def auto_log_columns(frame: pd.DataFrame, min_span: float) -> list:
    """Strictly positive columns whose max/min >= min_span (they span at least that ratio)."""
    out = []
    for col in frame.columns:
        v = frame[col].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v) and v.min() > 0 and v.max() / v.min() >= min_span:
            out.append(str(col))
    return out


OPTIONAL_KEYS = ("x_min", "x_max")   # absent from records written before the training domain was kept


def same_preprocessing(a: dict, b: dict) -> bool:
    """Whether two ``Preprocessing.to_dict()`` records transform data the same way (the one comparison:
    parents, ensemble members and reused baselines).  Numbers compare to rtol 1e-6; a key only one side
    has differs, except the optional training-domain ranges of older records."""
    keys = (set(a) | set(b)) - (set(OPTIONAL_KEYS) - (set(a) & set(b)))
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, list) and va and isinstance(va[0], (int, float)) and not isinstance(va[0], bool):
            if not isinstance(vb, list) or len(va) != len(vb) or not np.allclose(va, vb, rtol=1e-6, atol=1e-9):
                return False
        elif va != vb:
            return False
    return True
