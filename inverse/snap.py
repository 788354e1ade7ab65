"""The buildable design grid: bounds for the optimiser and snapping of its results.

One small table, ``GRID``, matched against each feature name in order (first match wins).
Add a row to support a new kind of feature; a feature that matches no row keeps its
continuous value and gets its bounds from the data (see ``feature_bounds``).

    name pattern   rule                              bounds (physical units)    source
    w\\d*           multiple of 0.5 um                [0.5, 50] um               spice/sampling.W_GRID
    l\\d*           one of {0.5, 1, 1.5, 2} um        [0.5, 2] um                spice/sampling.L_GRID
    ibias          one of {5, 10, 15, 20} uA         [5, 20] uA                 spice/sampling.IBIAS_GRID
    cc             multiple of 0.01 pF               [0.1, 2] pF                spice/sampling.CC_RANGE
    cr             3 significant digits (log grid)   [1k, 100k] ohm             spice/sampling.CR_RANGE
"""
import math
import re
from dataclasses import dataclass

import numpy as np

from spice.sampling import CC_RANGE, CR_RANGE, IBIAS_GRID, L_GRID, W_GRID


@dataclass(frozen=True)
class Rule:
    pattern: str                  # regular expression matched against the whole feature name
    kind: str                     # 'step' (multiples of step), 'set' (nearest of values), 'sig' (significant digits)
    lo: float
    hi: float
    step: float = 0.0             # 'step'
    values: tuple = ()            # 'set'
    digits: int = 3               # 'sig'
    describe: str = ""

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None

    def snap(self, v: np.ndarray) -> np.ndarray:
        v = np.clip(np.asarray(v, float), self.lo, self.hi)
        if self.kind == "step":
            # round to the step, staying inside [lo, hi] on the grid
            k = np.clip(np.round(v / self.step), math.ceil(self.lo / self.step - 1e-9),
                        math.floor(self.hi / self.step + 1e-9))
            return np.round(k * self.step, 15)
        if self.kind == "set":
            vals = np.asarray(self.values, float)
            return vals[np.abs(v[:, None] - vals[None, :]).argmin(axis=1)] if v.ndim else \
                vals[np.abs(v - vals).argmin()]
        if self.kind == "sig":
            exp = np.floor(np.log10(v))
            scale = 10.0 ** (exp - (self.digits - 1))
            return np.clip(np.round(v / scale) * scale, self.lo, self.hi)
        raise AssertionError(self.kind)


GRID = [
    Rule(r"w\d*", "step", float(W_GRID.min()), float(W_GRID.max()), step=0.5,
         describe="multiple of 0.5 um in [0.5, 50]"),
    Rule(r"l\d*", "set", float(L_GRID.min()), float(L_GRID.max()), values=tuple(L_GRID.tolist()),
         describe="one of {0.5, 1, 1.5, 2} um"),
    Rule(r"ibias", "set", float(IBIAS_GRID.min()), float(IBIAS_GRID.max()),
         values=tuple(IBIAS_GRID.tolist()), describe="one of {5, 10, 15, 20} uA"),
    Rule(r"cc", "step", CC_RANGE[0], CC_RANGE[1], step=0.01e-12, describe="multiple of 0.01 pF in [0.1, 2] pF"),
    Rule(r"cr", "sig", CR_RANGE[0], CR_RANGE[1], digits=3, describe="3 significant digits in [1k, 100k] ohm"),
]


def rule_for(name: str, grid=None):
    """The first rule of ``grid`` (default ``GRID``) matching ``name``, or None."""
    return next((r for r in (GRID if grid is None else grid) if r.matches(name)), None)


def snap_designs(x_phys: np.ndarray, x_cols, grid=None) -> np.ndarray:
    """Snap each column of physical designs (N, D) to its rule; unmatched columns are unchanged."""
    x = np.array(x_phys, dtype=float, copy=True)
    if x.ndim != 2 or x.shape[1] != len(x_cols):
        raise ValueError(f"designs must have shape (N, {len(x_cols)}) for {list(x_cols)}, got {x.shape}")
    for j, name in enumerate(x_cols):
        rule = rule_for(name, grid)
        if rule is not None:
            x[:, j] = rule.snap(x[:, j])
    return x


def feature_bounds(x_cols, *, data_lo=None, data_hi=None, grid=None):
    """Physical (lo, hi) per feature: the grid rule's box, else the data's min/max.

    A feature with no rule and no data range is an error (the optimiser needs a box).
    """
    lo, hi = [], []
    for j, name in enumerate(x_cols):
        rule = rule_for(name, grid)
        if rule is not None:
            lo.append(rule.lo)
            hi.append(rule.hi)
        elif data_lo is not None and data_hi is not None:
            lo.append(float(data_lo[j]))
            hi.append(float(data_hi[j]))
        else:
            raise ValueError(f"feature {name!r} matches no row of inverse.snap.GRID and no data range was given")
    return np.asarray(lo, float), np.asarray(hi, float)


def describe_grid(x_cols, grid=None) -> dict:
    return {c: (rule_for(c, grid).describe if rule_for(c, grid) else "continuous (no grid rule)") for c in x_cols}
