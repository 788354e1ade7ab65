"""Random designs.  Design i depends only on (seed, i), so any subset, order, chunking or
number of workers gives the same designs, and an interrupted run can resume by index.

Ranges (units as in the feature columns):
  w      {0.5, 1.0, ..., 50} um        (uniform over the 100 grid values)
  l      {0.5, 1.0, 1.5, 2.0} um
  ibias  {5, 10, 15, 20} uA            (stored in A)
  cc     [0.1, 2] pF uniform           (stored in F)
  cr     [1k, 100k] ohm log-uniform
"""
import numpy as np
import pandas as pd

from spice.circuits import FEATURES

W_GRID = np.round(np.arange(1, 101) * 0.5, 1)
L_GRID = np.array([0.5, 1.0, 1.5, 2.0])
IBIAS_GRID = np.array([5e-6, 10e-6, 15e-6, 20e-6])
CC_RANGE = (0.1e-12, 2e-12)
CR_RANGE = (1e3, 1e5)

RANGES = {
    "w": {"values_um": W_GRID.tolist()[:2] + ["..."] + W_GRID.tolist()[-1:], "kind": "uniform grid, step 0.5 um"},
    "l": {"values_um": L_GRID.tolist(), "kind": "uniform grid"},
    "ibias": {"values_A": IBIAS_GRID.tolist(), "kind": "uniform grid"},
    "cc": {"range_F": list(CC_RANGE), "kind": "uniform"},
    "cr": {"range_ohm": list(CR_RANGE), "kind": "log-uniform"},
}


def _one(opamp: str, seed: int, i: int) -> list[float]:
    rng = np.random.default_rng([seed, i])
    row = []
    for col in FEATURES[opamp]:  # fixed column order -> fixed draw order
        if col.startswith("w"):
            row.append(float(rng.choice(W_GRID)))
        elif col.startswith("l"):
            row.append(float(rng.choice(L_GRID)))
        elif col == "ibias":
            row.append(float(rng.choice(IBIAS_GRID)))
        elif col == "cc":
            row.append(float(rng.uniform(*CC_RANGE)))
        elif col == "cr":
            row.append(float(10 ** rng.uniform(np.log10(CR_RANGE[0]), np.log10(CR_RANGE[1]))))
        else:
            raise AssertionError(col)
    return row


def sample_designs(opamp: str, seed: int, start: int, stop: int) -> pd.DataFrame:
    """Designs start..stop-1 as a DataFrame indexed by design index."""
    idx = range(start, stop)
    return pd.DataFrame([_one(opamp, seed, i) for i in idx], index=pd.Index(idx, name="index"),
                        columns=FEATURES[opamp])
