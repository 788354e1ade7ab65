"""The failed-simulation rule.

Real SPICE sweeps contain designs that did not simulate: NaN/inf cells, a metric that must
be positive but is not, a sentinel (e.g. ugf >= 1e10 Hz written when the gain never crosses
one), a DC gain below one (the circuit does not amplify), or a simulator status other than
'ok'.  Such rows are dropped from every split *after* splitting (so a seed always selects
the same rows) and counted by reason; nothing is ever trained on them.

Each row gets the first reason it hits, in the order: status, nan/inf (by column, features first), positive, min,
max.
Rules that name metrics absent from the data are ignored.
"""
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FailureRule:
    positive: tuple = ()                         # metrics that must be > 0
    minimum: dict = field(default_factory=dict)  # metric -> bound; value < bound fails
    maximum: dict = field(default_factory=dict)  # metric -> sentinel; value >= sentinel fails

    def describe(self, y_cols=None) -> str:
        """The rule in words; with ``y_cols``, only the parts that name those metrics (the others do nothing)."""
        has = (lambda c: True) if y_cols is None else set(y_cols).__contains__
        parts = ["any NaN/inf cell", "simulator status other than 'ok' (when a status column exists)"]
        parts += [f"{c} <= 0" for c in self.positive if has(c)]
        parts += [f"{c} < {v:g}" for c, v in self.minimum.items() if has(c)]
        parts += [f"{c} >= {v:g}" for c, v in self.maximum.items() if has(c)]
        return "; ".join(parts)


def failure_reasons(features: pd.DataFrame, targets: pd.DataFrame, rule: FailureRule,
                    status: pd.Series | None = None) -> np.ndarray:
    """One string per row: '' for a good row, else the first rule it breaks."""
    n = len(targets)
    reasons = np.full(n, "", dtype=object)

    def mark(mask, why):
        mask = np.asarray(mask, dtype=bool) & (reasons == "")
        reasons[mask] = why

    if status is not None:
        s = status.astype(str).str.strip().str.lower().to_numpy()
        for value in sorted(set(s) - {"ok"}):
            mark(s == value, f"status={value}")
    for frame in (features, targets):          # by column: "nan/inf in cmrr" says which measurement failed
        finite = np.isfinite(frame.to_numpy(float))
        for j, col in enumerate(frame.columns):
            mark(~finite[:, j], f"nan/inf in {col}")
    with np.errstate(invalid="ignore"):
        for col in rule.positive:
            if col in targets:
                mark(targets[col].to_numpy() <= 0, f"{col} <= 0")
        for col, bound in rule.minimum.items():
            if col in targets:
                mark(targets[col].to_numpy() < bound, f"{col} < {bound:g}")
        for col, bound in rule.maximum.items():
            if col in targets:
                mark(targets[col].to_numpy() >= bound, f"{col} >= {bound:g} (sentinel)")
    return reasons


def count_reasons(reasons: np.ndarray) -> dict:
    values, counts = np.unique(reasons[reasons != ""], return_counts=True)
    return {str(v): int(c) for v, c in sorted(zip(values, counts), key=lambda t: -t[1])}
