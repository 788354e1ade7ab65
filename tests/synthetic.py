"""Tiny op-amp-like datasets written by the tests (never shipped, never used for benchmarks).

The formulas only give the data a plausible shape (positive metrics spanning decades, a
source->target shift); they are *not* a circuit model.  Rows with ``fail=True`` carry the
failure patterns the loader must drop: NaN, a ugf sentinel, a DC gain below one.
"""
from pathlib import Path

import numpy as np
import pandas as pd

X_COLS = ["w1", "w2", "w3", "l1", "l2", "l3", "ibias"]
Y_COLS = ["slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"]


def make_domain(n: int, *, seed: int, shift: float = 0.0, n_failed: int = 0):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({
        "w1": rng.choice(np.arange(1, 101) * 0.5, n), "w2": rng.choice(np.arange(1, 101) * 0.5, n),
        "w3": rng.choice(np.arange(1, 101) * 0.5, n), "l1": rng.choice([0.5, 1, 1.5, 2], n),
        "l2": rng.choice([0.5, 1, 1.5, 2], n), "l3": rng.choice([0.5, 1, 1.5, 2], n),
        "ibias": rng.choice([5e-6, 10e-6, 15e-6, 20e-6], n)})
    itail = x.ibias * x.w3 / 10.0
    gm = np.sqrt(2e-4 * (1 + shift) * x.w1 / x.l1 * itail)
    gds = itail * (0.1 / x.l1 + 0.08 / x.l2) * (1 + shift)
    y = pd.DataFrame({
        "slewrate_pos": itail / 1e-12,
        "dc_gain": gm / gds,
        "ugf": gm / (2 * np.pi * 1e-12),
        "phase_margin": 90 - np.degrees(np.arctan(x.w2 / (x.l2 * 20))) * (1 - shift),
        "cmrr": (gm / gds) * x.l3 * 40 * (1 + shift)})
    y *= np.exp(rng.normal(0, 0.02, size=y.shape))  # a little "simulator" noise
    if n_failed:
        rows = rng.choice(n, n_failed, replace=False)
        for k, r in enumerate(rows):
            if k % 3 == 0:
                y.loc[r, "ugf"] = np.nan
            elif k % 3 == 1:
                y.loc[r, "ugf"] = 1e10
            else:
                y.loc[r, "dc_gain"] = 0.5
    return x, y


def write_dataset(root, circuit: str = "5t_opamp", *, n_source: int = 300, n_target: int = 120,
                  n_failed: int = 6, seed: int = 0) -> Path:
    """Write ``root/circuit/{source,target}/{features,targets}.csv``; return ``root``."""
    root = Path(root)
    for domain, n, shift, s in (("source", n_source, 0.0, seed), ("target", n_target, 0.3, seed + 1)):
        x, y = make_domain(n, seed=s, shift=shift, n_failed=n_failed)
        folder = root / circuit / domain
        folder.mkdir(parents=True, exist_ok=True)
        x.to_csv(folder / "features.csv", index=False)
        y.to_csv(folder / "targets.csv", index=False)
    return root
