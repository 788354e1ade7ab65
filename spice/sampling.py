"""Random designs from a circuit's design space (its file's ``[variables]``).  Design i depends
only on (seed, i), so any subset, order, chunking or number of workers gives the same designs,
and an interrupted run can resume by index.  Variables are drawn in the file's order.

The shipped circuits' space (units as in the feature columns):
  w      {0.5, 1.0, ..., 50} um        (uniform over the 100 grid values)
  l      {0.5, 1.0, 1.5, 2.0} um
  ibias  {5, 10, 15, 20} uA            (stored in A)
  cc     [0.1, 2] pF uniform           (stored in F)
  cr     [1k, 100k] ohm log-uniform
"""
import numpy as np
import pandas as pd

from spice.circuits import circuit


# The shipped circuits' grids, for inverse.snap's name-pattern table (until snapping reads the
# design space that travels with the data).  Read from the two-stage file, which has every kind.
_SHIPPED = circuit("two_stage_opamp").variables
W_GRID = _SHIPPED["w1"].values()
L_GRID = _SHIPPED["l1"].values()
IBIAS_GRID = _SHIPPED["ibias"].values()
CC_RANGE = (_SHIPPED["cc"].lo, _SHIPPED["cc"].hi)
CR_RANGE = (_SHIPPED["cr"].lo, _SHIPPED["cr"].hi)


def _one(variables, seed: int, i: int) -> list[float]:
    rng = np.random.default_rng([seed, i])
    return [v.draw(rng) for v in variables]  # fixed variable order -> fixed draw order


def sample_designs(opamp, seed: int, start: int, stop: int) -> pd.DataFrame:
    """Designs start..stop-1 of ``opamp`` (a name, circuit file or Circuit), indexed by design index."""
    c = circuit(opamp)
    variables = list(c.variables.values())
    idx = range(start, stop)
    return pd.DataFrame([_one(variables, seed, i) for i in idx], index=pd.Index(idx, name="index"),
                        columns=c.features)
