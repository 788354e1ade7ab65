"""The buildable design grid: bounds for the optimiser and snapping of its results.

The grid comes from ``--design-space FILE`` (a circuit .toml or a meta.json), else from the design
space the forward model's checkpoint recorded from its data, else from the one that travels with the
data (``design_space`` in the target folder's meta.json, written by ``spice.generate`` from the
circuit file): ``grid_for`` turns it into one rule per variable.  Data with no design space get no
snapping and the box of the data (a feature never matched by name, so a user's ``w1`` in metres is
not clamped to our micrometre box).  A design space that does not describe the model's data (a feature
it does not declare, or data more than 10x outside a declared range: metres against um) is refused
before the search (``check_data_against_space``).  A step grid is ``lo + k * step``, the generator's points.

``GRID`` below is the shipped circuits' grid written as name patterns; the design space of the
shipped data gives the same rules (a test pins it).  It is never applied by default: a caller that
passes no grid gets no snapping and no name-based box.

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
from pathlib import Path

import numpy as np

from core.errors import ToolkitError
from data_loader.layout import check_design_space, check_features_in_space, meta_design_space
from spice.circuit_file import load_circuit
from spice.sampling import CC_RANGE, CR_RANGE, IBIAS_GRID, L_GRID, W_GRID


@dataclass(frozen=True)
class Rule:
    pattern: str                  # regular expression matched against the whole feature name
    kind: str                     # 'step' (multiples of step), 'set' (nearest of values), 'sig' (significant
                                  # digits), 'range' (continuous, only bounded)
    lo: float
    hi: float
    step: float = 0.0             # 'step'
    values: tuple = ()            # 'set'
    digits: int = 3               # 'sig'
    describe: str = ""
    unit: str = ""                # of lo/hi (named when data are refused against the rule)

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None

    def snap(self, v: np.ndarray) -> np.ndarray:
        v = np.clip(np.asarray(v, float), self.lo, self.hi)
        if self.kind == "step":
            # the generator's points lo + k*step (spice.circuit_file.Variable.values), k = 0 .. the last inside hi;
            # anchored at lo, not 0, so [0.3, 10.3] step 1 snaps to 0.3, 1.3, ... (same points when lo is a multiple)
            k = np.clip(np.round((v - self.lo) / self.step), 0, math.floor((self.hi - self.lo) / self.step + 1e-9))
            return _decimal(self.lo + k * self.step)
        if self.kind == "set":
            vals = np.asarray(self.values, float)
            return vals[np.abs(v[:, None] - vals[None, :]).argmin(axis=1)] if v.ndim else \
                vals[np.abs(v - vals).argmin()]
        if self.kind == "range":
            return v
        if self.kind == "sig":
            exp = np.floor(np.log10(v))
            scale = 10.0 ** (exp - (self.digits - 1))
            return np.clip(np.round(v / scale) * scale, self.lo, self.hi)
        raise AssertionError(self.kind)


def _decimal(x: np.ndarray) -> np.ndarray:
    """Each value as the float nearest its 12-significant-digit decimal: lo + k*step carries float noise
    (0.3 + 7*0.01 = 0.37000000000000005) and a snapped design should read as the grid point it is."""
    x = np.asarray(x, float)
    return np.array([float(f"{a:.12g}") for a in x.ravel()]).reshape(x.shape)


GRID = [
    Rule(r"w\d*", "step", float(W_GRID.min()), float(W_GRID.max()), step=0.5,
         describe="multiple of 0.5 um in [0.5, 50]", unit="um"),
    Rule(r"l\d*", "set", float(L_GRID.min()), float(L_GRID.max()), values=tuple(L_GRID.tolist()),
         describe="one of {0.5, 1, 1.5, 2} um", unit="um"),
    Rule(r"ibias", "set", float(IBIAS_GRID.min()), float(IBIAS_GRID.max()),
         values=tuple(IBIAS_GRID.tolist()), describe="one of {5, 10, 15, 20} uA", unit="A"),
    Rule(r"cc", "step", CC_RANGE[0], CC_RANGE[1], step=0.01e-12, describe="multiple of 0.01 pF in [0.1, 2] pF",
         unit="F"),
    Rule(r"cr", "sig", CR_RANGE[0], CR_RANGE[1], digits=3, describe="3 significant digits in [1k, 100k] ohm",
         unit="ohm"),
]


def rules_from_design_space(design_space: dict) -> list:
    """One exact-name Rule per variable of a design space ({name: {unit, range, grid, sample}})."""
    rules = []
    for name, v in design_space.items():
        lo, hi = (float(b) for b in v["range"])
        g = v.get("grid") or {}
        pattern, unit = re.escape(name), v["unit"]
        if "step" in g:
            rules.append(Rule(pattern, "step", lo, hi, step=float(g["step"]),
                              describe=f"every {g['step']:g} {unit} from {lo:g} to {hi:g}", unit=unit))
        elif "values" in g:
            vals = tuple(float(x) for x in g["values"])
            rules.append(Rule(pattern, "set", min(vals), max(vals), values=vals,
                              describe=f"one of {{{', '.join(f'{x:g}' for x in vals)}}} {unit}", unit=unit))
        elif "digits" in g:
            rules.append(Rule(pattern, "sig", lo, hi, digits=int(g["digits"]),
                              describe=f"{g['digits']} significant digits in [{lo:g}, {hi:g}] {unit}", unit=unit))
        else:
            rules.append(Rule(pattern, "range", lo, hi, describe=f"continuous in [{lo:g}, {hi:g}] {unit}", unit=unit))
    return rules


def grid_for(data_dir, opamp: str, design_space_file=None, recorded=None) -> tuple[list, str]:
    """(rules, where they came from): ``design_space_file`` (a circuit .toml or a meta.json) if
    given, else ``recorded`` (the design space a checkpoint recorded from the data it learned from),
    else ``<data_dir>/<opamp>/target/meta.json``'s design space, else no rules."""
    if design_space_file:
        path = Path(design_space_file)
        if not path.is_file():
            raise ToolkitError(f"--design-space {path} not found; give a circuit file (.toml) or a meta.json "
                               f"written by spice.generate")
        ds = load_circuit(path).design_space() if path.suffix == ".toml" else meta_design_space(path)
        if not ds:
            raise ToolkitError(f"--design-space {path} holds no design_space; give a circuit file (.toml) or the "
                               f"meta.json of data made by spice.generate")
        return rules_from_design_space(ds), str(path)
    if recorded:
        where = "the forward model's checkpoint (recorded from its data)"
        return rules_from_design_space(check_design_space(recorded, where)), where
    meta = Path(data_dir) / opamp / "target" / "meta.json"
    ds = meta_design_space(meta)
    if ds:
        return rules_from_design_space(ds), str(meta)
    return [], "none (no design space with the data: no snapping, the data's range as the box)"


def check_data_against_space(grid, x_cols, x_min, x_max, source: str) -> None:
    """Refuse a design space (``grid``, from ``grid_for``; its origin ``source``) that does not describe the data a
    model learned from (``x_min``/``x_max``: each feature's physical range in them, e.g. the model's
    preprocessing): a feature no rule matches, or a data range more than ``UNIT_SLIP`` times outside its rule's
    [lo, hi] (metres against um): the search would otherwise run decades away from the data.  No grid or no
    recorded ranges (older checkpoints): nothing to check."""
    if not grid or x_min is None or x_max is None:
        return
    boxes = {c: (r.lo, r.hi, r.unit) for c in x_cols if (r := rule_for(c, grid)) is not None}
    check_features_in_space(list(x_cols), x_min, x_max, boxes, source=source,
                            fix="pass --design-space FILE (a circuit .toml or a meta.json) that declares every feature "
                                "in the units of the model's data, or retrain on data in the declared units")


def rule_for(name: str, grid=None):
    """The first rule of ``grid`` matching ``name``, or None.  ``grid=None`` means no rules: a feature is
    snapped or boxed only by a design space the caller passes (``grid_for``), never by its name alone (a
    user's ``w1`` in metres must not be clamped to the shipped micrometre box)."""
    return next((r for r in (grid or ()) if r.matches(name)), None)


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
            raise ValueError(f"feature {name!r} matches no grid rule and no data range was given")
    return np.asarray(lo, float), np.asarray(hi, float)


def describe_grid(x_cols, grid=None) -> dict:
    return {c: (rule_for(c, grid).describe if rule_for(c, grid) else "continuous (no grid rule)") for c in x_cols}


def check_space_inside_circuit(grid, x_cols, circuit, source: str) -> None:
    """Refuse, before a search, a design space (``grid``, from ``source``) wider than the ranges the circuit that
    will simulate the designs declares (``spice.circuits.Circuit``): the simulator refuses designs outside them,
    so a verification would fail after the whole search, its result lost."""
    for c in x_cols:
        rule, var = rule_for(c, grid) if grid else None, circuit.variables.get(c)
        if rule is None or var is None:
            continue
        if rule.lo < var.lo or rule.hi > var.hi:
            raise ToolkitError(f"the design space searched ({source}) lets {c} range over [{rule.lo:g}, {rule.hi:g}] "
                               f"{rule.unit}, but {circuit.path} declares [{var.lo:g}, {var.hi:g}] {var.unit}: designs "
                               f"outside it cannot be simulated. Fix: --design-space {circuit.path} (search inside "
                               f"the circuit's ranges), or widen its range.")
