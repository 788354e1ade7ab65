"""Specs: per-metric goals in physical units, their parsing, their model-space form and the goal loss.

Goal words (one per metric, in the metric column order):
    min     y >= target                        (a lower-bound spec, e.g. gain >= 200)
    max     y <= target                        (an upper-bound spec)
    target  y ~= target; met when |y - t| <= TARGET_TOL * |t|
    range   lo <= y <= hi; the band comes from --ugf-band / --pm-band / --band metric=lo:hi,
            else target * (1 -/+ RANGE_TOL)

Every metric transform of the data loader (log1p on LOG_Y_COLS, then standardising) is
increasing, so a bound maps to model space bound-for-bound and the inequalities survive.

Goal loss per design (model space, standardised units; w = --weights; k = kappa;
s = tau = SOFT_TAU; m = MARGIN):
    min     w * s * softplus((lo + m - (mean - k std)) / s)
    max     w * s * softplus(((mean + k std) - hi + m) / s)
    range   both of the above
    target  w * (mean - t)^2
a smooth hinge: ~0 once the pessimistic prediction clears the bound by the margin, ~linear
in the violation otherwise.
"""
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ToolkitError

GOALS = ("min", "max", "target", "range")
TARGET_TOL = 0.05     # 'target' is met within +-5 % of the target value
RANGE_TOL = 0.10      # 'range' without a band: target +-10 %
SOFT_TAU = 0.05       # softplus temperature of the hinge (standardised units)
MARGIN = 0.05         # aim this far (standardised units) inside each bound while optimising
BIG = 1e6             # stands in for an open bound in model space
BAND_ALIASES = {"ugf": "--ugf-band", "phase_margin": "--pm-band"}


def _floats(text: str, what: str, n: int, cols, example: str) -> np.ndarray:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != n:
        raise ToolkitError(f"{what} needs {n} comma-separated values (one per metric {list(cols)}), got "
                           f"{len(parts)}: {text!r}. Example: {example}")
    out = []
    for col, p in zip(cols, parts):
        try:
            v = float(p)
        except ValueError:
            raise ToolkitError(f"{what}: {p!r} (for {col}) is not a number. Example: {example}") from None
        if not np.isfinite(v):
            raise ToolkitError(f"{what}: {p!r} (for {col}) must be finite.")
        out.append(v)
    return np.asarray(out, float)


def parse_y_target(text: str, y_cols) -> np.ndarray:
    """'2.5e8,200,1.5e6,65,20000' -> physical values in the metric column order."""
    return _floats(text, "--y-target", len(y_cols), y_cols, ",".join(["1"] * len(y_cols)))


def parse_weights(text, y_cols) -> np.ndarray:
    if text is None:
        return np.ones(len(y_cols))
    w = _floats(text, "--weights", len(y_cols), y_cols, ",".join(["1"] * len(y_cols)))
    if (w < 0).any() or w.sum() <= 0:
        raise ToolkitError(f"--weights must be >= 0 with a positive sum, got {text!r}.")
    return w


def parse_goals(text: str, y_cols) -> list:
    words = [g.strip().lower() for g in str(text).split(",")]
    if len(words) != len(y_cols):
        raise ToolkitError(f"--goal needs {len(y_cols)} words (one per metric {list(y_cols)}), got {len(words)}: "
                           f"{text!r}. Example: --goal {','.join(['min'] * len(y_cols))}")
    for col, g in zip(y_cols, words):
        if g not in GOALS:
            raise ToolkitError(f"--goal: unknown goal {g!r} for {col}; expected one of {list(GOALS)}.")
    return words


def parse_band(text: str, flag: str):
    try:
        lo_s, hi_s = str(text).split(":")
        lo, hi = float(lo_s), float(hi_s)
    except ValueError:
        raise ToolkitError(f"{flag} must be lo:hi with two numbers, e.g. 8e5:2e6, got {text!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise ToolkitError(f"{flag} {text!r}: lo must be < hi (both finite).")
    return lo, hi


def parse_bands(y_cols, *, ugf_band=None, pm_band=None, bands=()) -> dict:
    """metric -> (lo, hi) from --ugf-band, --pm-band and repeated --band metric=lo:hi."""
    out = {}
    for metric, text in (("ugf", ugf_band), ("phase_margin", pm_band)):
        if text is not None:
            if metric not in y_cols:
                raise ToolkitError(f"{BAND_ALIASES[metric]} given but this model has no {metric!r} metric "
                                   f"(metrics: {list(y_cols)}).")
            out[metric] = parse_band(text, BAND_ALIASES[metric])
    for item in bands or ():
        if "=" not in item:
            raise ToolkitError(f"--band must be metric=lo:hi, e.g. --band ugf=8e5:2e6, got {item!r}.")
        metric, text = item.split("=", 1)
        metric = metric.strip()
        if metric not in y_cols:
            raise ToolkitError(f"--band {item!r}: unknown metric {metric!r}; expected one of {list(y_cols)}.")
        out[metric] = parse_band(text, f"--band {metric}")
    return out


def quantity_text(value, unit: str = "", *, db: bool = True) -> str:
    """'125.9 V/V (42.0 dB)' (a positive V/V ratio, with ``db``), '1.5e+07 Hz', '3.2' (no unit known)."""
    value = float(value)
    text = f"{value:.4g}" + (f" {unit}" if unit else "")
    if db and unit == "V/V" and value > 0 and np.isfinite(value):
        text += f" ({20 * np.log10(value):.1f} dB)"
    return text


@dataclass
class Spec:
    """A design spec in physical units: per metric a goal word and its pass interval [lo, hi]."""
    y_cols: list
    goals: list
    target: np.ndarray
    weights: np.ndarray
    lo: np.ndarray = field(default=None)
    hi: np.ndarray = field(default=None)
    units: dict = field(default_factory=dict)   # {metric: data unit} where known ("V/V", "Hz", ...): for printing

    @classmethod
    def build(cls, y_cols, goals, target, *, weights=None, bands=None, target_tol=TARGET_TOL,
              range_tol=RANGE_TOL, warn=print) -> "Spec":
        target = np.asarray(target, float)
        weights = np.ones(len(y_cols)) if weights is None else np.asarray(weights, float)
        bands = dict(bands or {})
        lo, hi = np.full(len(y_cols), -np.inf), np.full(len(y_cols), np.inf)
        for j, (col, g) in enumerate(zip(y_cols, goals)):
            t = target[j]
            if col in bands and g != "range":
                warn(f"warning: a band is given for {col} but its goal is {g!r}; the band is ignored "
                     f"(use goal 'range' to apply it).")
            if g == "min":
                lo[j] = t
            elif g == "max":
                hi[j] = t
            elif t == 0 and (g == "target" or (g == "range" and col not in bands)):   # 'target' ignores bands
                # the tolerance is relative (+-5 % / +-10 % of |t|): at 0 no value could ever pass
                raise ToolkitError(f"Goal {g!r} for {col} at 0 has no width: its tolerance is a fraction of "
                                   f"|target|. Give the interval instead: goal 'range' with --band {col}=LO:HI "
                                   f"(a spec file: {col} = \"LO .. HI\").")
            elif g == "target":
                lo[j], hi[j] = t - target_tol * abs(t), t + target_tol * abs(t)
            else:  # range
                lo[j], hi[j] = bands.get(col, (t - range_tol * abs(t), t + range_tol * abs(t)))
        return cls(list(y_cols), list(goals), target, weights, lo, hi)

    @property
    def bounded(self) -> np.ndarray:
        """(M,) True where a goal bounds the metric (a finite lo or hi); False for 'any' (free)."""
        return np.isfinite(self.lo) | np.isfinite(self.hi)

    @property
    def free(self) -> bool:
        """True when no goal bounds any metric (every one 'any'): every design meets the spec."""
        return not self.bounded.any()

    def meets(self, y_phys) -> np.ndarray:
        """(N, M) booleans: each metric inside its pass interval (NaN never passes)."""
        y = np.atleast_2d(np.asarray(y_phys, float))
        with np.errstate(invalid="ignore"):
            return (y >= self.lo) & (y <= self.hi)

    def value_text(self, col: str, value, *, db: bool = True) -> str:
        """``value`` of metric ``col`` with its data unit ('126 V/V (42.0 dB)' with ``db``, '1.5e+07 Hz')."""
        return quantity_text(value, self.units.get(col, ""), db=db)

    def goal_text(self, col: str) -> str:
        """The pass interval of ``col`` as a designer reads it: '>= 126 V/V (42.0 dB)', '1.5e+07 .. 2.5e+07 Hz',
        '<= 1e-05 A' or 'any' (left free)."""
        j = self.y_cols.index(col)
        lo, hi, unit = self.lo[j], self.hi[j], self.units.get(col, "")
        if np.isfinite(lo) and np.isfinite(hi):
            return f"{quantity_text(lo, '', db=False)} .. {quantity_text(hi, unit)}"
        if np.isfinite(lo):
            return f">= {quantity_text(lo, unit)}"
        if np.isfinite(hi):
            return f"<= {quantity_text(hi, unit)}"
        return "any"

    def describe(self) -> str:
        """One line: every metric's pass interval with units (what the search and the verification check)."""
        return "; ".join(f"{c} {self.goal_text(c)}" for c in self.y_cols)

    def to_dict(self, units: bool = True) -> dict:
        """Per metric: goal, target, lo, hi, weight, and for a reader (``units``) its unit where known and
        ``free: true`` for a metric no goal bounds (its target is only the MDN's condition); a run key that must equal
        one written before those were recorded leaves them out."""
        def num(v):
            return None if not np.isfinite(v) else float(v)
        return {c: {"goal": g, "target": float(t), "lo": num(lo), "hi": num(hi), "weight": float(w)}
                | ({"unit": self.units[c]} if units and c in self.units else {})
                | ({"free": True} if units and not bounded else {})   # 'any': no bound
                for c, g, t, lo, hi, w, bounded in zip(self.y_cols, self.goals, self.target, self.lo, self.hi,
                                                       self.weights, self.bounded)}

    def model_space(self, pre) -> "ModelSpec":
        """Bounds and targets through the (increasing) metric transform of ``pre``."""
        def to_model(v):
            v = np.array(v, float)
            out = np.empty_like(v)
            for j, col in enumerate(self.y_cols):
                x = v[j]
                if not np.isfinite(x):
                    out[j] = np.sign(x) * BIG
                    continue
                if col in pre.log_y_cols and x <= -1:
                    out[j] = -BIG   # below log1p's domain: every prediction is above it
                    continue
                x = np.log1p(x) if col in pre.log_y_cols else x
                out[j] = (x - pre.y_mean[j]) / pre.y_scale[j]
            return out
        if list(pre.y_cols) != list(self.y_cols):
            raise ToolkitError(f"spec metrics {self.y_cols} differ from the model's {pre.y_cols}.")
        codes = [GOALS.index(g) for g in self.goals]
        return ModelSpec(lo=torch.tensor(to_model(self.lo), dtype=torch.float32),
                         hi=torch.tensor(to_model(self.hi), dtype=torch.float32),
                         target=torch.tensor(to_model(self.target), dtype=torch.float32),
                         is_target=torch.tensor([c == 2 for c in codes]),
                         weights=torch.tensor(self.weights, dtype=torch.float32))


@dataclass
class ModelSpec:
    lo: torch.Tensor          # (M,) model-space lower bound (-BIG when open)
    hi: torch.Tensor          # (M,) upper bound (+BIG when open)
    target: torch.Tensor      # (M,)
    is_target: torch.Tensor   # (M,) bool: squared error instead of the hinge
    weights: torch.Tensor     # (M,)


def goal_loss(mean, std, spec: ModelSpec, *, kappa: float = 1.0, tau: float = SOFT_TAU,
              margin: float = MARGIN) -> torch.Tensor:
    """Per-design goal loss (N,) from model-space mean and std (N, M).  Formula in the module docstring."""
    if mean.shape != std.shape or mean.ndim != 2 or mean.shape[1] != len(spec.lo):
        raise ValueError(f"mean and std must both be (N, {len(spec.lo)}), got {tuple(mean.shape)} and "
                         f"{tuple(std.shape)}")
    low = mean - kappa * std                                                # (N, M) pessimistic for 'min'
    high = mean + kappa * std                                               # (N, M) pessimistic for 'max'
    hinge = tau * (F.softplus((spec.lo + margin - low) / tau)
                   + F.softplus((high - spec.hi + margin) / tau))          # (N, M)
    sq = (mean - spec.target) ** 2                                          # (N, M)
    per = torch.where(spec.is_target, sq, hinge)                            # (N, M)
    return (per * spec.weights).sum(dim=1)                                  # (N,)


def pessimistic_fails(mean, std, spec: ModelSpec, *, kappa: float = 1.0) -> torch.Tensor:
    """(N,) number of goals whose pessimistic prediction (mean -/+ k std) misses the bound."""
    fail = ((mean - kappa * std) < spec.lo) | ((mean + kappa * std) > spec.hi)
    return fail.sum(dim=1)
