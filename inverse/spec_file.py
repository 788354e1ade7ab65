"""A spec as a file, with units: ``inverse_opt --spec spec.toml`` instead of positional strings.

    [goals]                         # one line per metric you constrain; the others are free
    dc_gain = ">= 40 dB"
    ugf = "1 MHz .. 3 MHz"          # range: lo .. hi
    slewrate_pos = ">= 10 V/us"
    phase_margin = ">= 60 deg"
    cmrr = "any"                    # explicitly free
    [weights]                       # optional, default 1
    dc_gain = 2
    [objective]                     # optional: among designs meeting the goals, the smallest gate area
    minimize = "gate_area"          # (or maximize = "ugf"); a figure of the circuit file or a metric

Goal forms: ``>= X`` (min), ``<= X`` (max), ``== X`` (target, met within ``TARGET_TOL``),
``X .. Y`` (range), ``any``.  X is a number with an optional unit from ``UNITS``; a bare number is in
the metric's data unit.  A unit must have the dimension of the metric's data unit: V/V metrics take
``dB`` = 20 log10, Hz metrics Hz/kHz/MHz/GHz, slew rates V/s, V/ms, V/us, V/ns, angles deg (or °)/rad.

The data unit of a metric is what its column holds: for the metric names ``spice.measure`` writes,
the unit it writes (``METRIC_UNITS``); for any other metric, or data of your own in another unit,
declare it in an optional ``[units]`` table (a metric of yours without one takes bare numbers only):

    [units]
    pm_deg = "deg"                  # my column pm_deg holds degrees: "60 deg" and "1.05 rad" both work
    dc_gain = "dB"                  # my dc_gain column is in dB: ">= 40 dB" and ">= 100 V/V" are both 40

A free metric gets an open band and conditions the MDN on the model's typical value (the source mean).
"""
import math
import re
from pathlib import Path

import numpy as np

from core.errors import ToolkitError
from core.toml_file import read_toml
from inverse.goals import TARGET_TOL, Spec
from spice.measure import METRIC_UNITS, OP_METRIC_UNITS

# unit -> (dimension, factor to the data unit); "dB" is converted as 10 ** (x / 20).
UNITS = {
    "": ("1", 1.0), "V/V": ("1", 1.0), "dB": ("1", "dB"),
    "Hz": ("Hz", 1.0), "kHz": ("Hz", 1e3), "MHz": ("Hz", 1e6), "GHz": ("Hz", 1e9),
    "V/s": ("V/s", 1.0), "V/ms": ("V/s", 1e3), "V/us": ("V/s", 1e6), "V/µs": ("V/s", 1e6), "V/ns": ("V/s", 1e9),
    "deg": ("deg", 1.0), "°": ("deg", 1.0), "rad": ("deg", 180.0 / math.pi),
    "A": ("A", 1.0), "mA": ("A", 1e-3), "uA": ("A", 1e-6), "µA": ("A", 1e-6),
    "W": ("W", 1.0), "mW": ("W", 1e-3), "uW": ("W", 1e-6), "µW": ("W", 1e-6),
}
DB_LIKE_MAX = 120          # a bare number on a V/V metric up to this may be meant in dB: the note says how it is read
# The data unit of each shipped metric (spice.measure, docs/SPICE.md); a spec's [units] table names others.
METRIC_DATA_UNITS = {**METRIC_UNITS, **OP_METRIC_UNITS}
_KIND = {"1": "a ratio (V/V)", "Hz": "a frequency (Hz)", "V/s": "a slew rate (V/s)", "deg": "an angle (deg)",
         "A": "a current (A)", "W": "a power (W)"}
_EXAMPLE = {"1": "40 dB", "Hz": "2 MHz", "V/s": "10 V/us", "deg": "60 deg", "W": "1 mW", "A": "100 uA"}
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµ°/^0-9]*)\s*$")


def quantity(text: str, metric: str, where: str, data_unit: str | None = None, *, bare=None) -> float:
    """'10 V/us' -> 1e7 in the metric's data unit (``data_unit``; default: the shipped metric's, else
    unknown); a bare number is in the data unit (and is passed to ``bare``, a list, when given).  One clear
    error for a bad number or unit."""
    m = _QUANTITY.match(text)
    if not m:
        raise ToolkitError(f"{where}: {text!r} is not a number with an optional unit, e.g. '40 dB' or '1.5 MHz'")
    value, unit = float(m.group(1)), m.group(2)
    if unit not in UNITS:
        raise ToolkitError(f"{where}: unknown unit {unit!r}; known: {sorted(u for u in UNITS if u)}")
    if not unit:
        if bare is not None:
            bare.append(m.group(1))
        return value                                     # a bare number: already in the data unit
    data_unit = METRIC_DATA_UNITS.get(metric) if data_unit is None else data_unit
    if data_unit is None:
        raise ToolkitError(f"{where}: the unit of {metric!r} is not known, so {unit!r} cannot be converted; give a "
                           f"bare number in its data unit, or declare it in a [units] table "
                           f"({metric} = \"{unit}\" if the column holds {unit})")
    dim, factor = UNITS[unit]
    want, data_factor = UNITS[data_unit]
    if dim != want:
        raise ToolkitError(f"{where}: unit {unit!r} is {_KIND[dim]}, but {metric} is in {data_unit}, "
                           f"{_KIND[want]}; e.g. {_EXAMPLE[want]!r}")
    base = 10 ** (value / 20) if factor == "dB" else value * factor      # in the dimension's base unit
    if data_factor != "dB":
        return base / data_factor
    if base <= 0:
        raise ToolkitError(f"{where}: {text.strip()!r} is <= 0, which has no value in dB ({metric}'s data unit)")
    return 20 * math.log10(base)


def metric_units(y_cols, recorded=None) -> dict:
    """{metric: data unit} where known: the data's meta.json (``recorded``), else the shipped metric's."""
    return {c: u for c, u in {**METRIC_DATA_UNITS, **(recorded or {})}.items() if c in y_cols and u}


def recorded_units(data_dir, opamp: str) -> tuple:
    """({metric or variable: unit}, meta.json path) the data's ``meta.json`` records (``spice.generate`` writes
    ``units``; target wins over source), or ({}, None) for data without one."""
    from inverse.verify import read_meta
    for domain in ("target", "source"):
        units = read_meta(data_dir, opamp, domain).get("units")
        if isinstance(units, dict):
            return ({k: v for k, v in units.items() if isinstance(v, str) and v in UNITS},
                    Path(data_dir) / opamp / domain / "meta.json")
    return {}, None


def _warn_bare_number(numbers: list, metric: str, data_unit, typical, where: str, warn) -> None:
    """A bare number (``numbers``: as written) a thousand times off the data's typical value, for a metric with a
    known unit, is most likely written in another unit ('>= 10' for 10 V/us): say how it was read."""
    if data_unit is None or not np.isfinite(typical) or typical == 0:
        return
    off = [n for n in numbers if float(n) != 0 and not 1e-3 <= abs(float(n) / typical) <= 1e3]
    if off:
        warn(f"warning: {where}: {off[0]} is read in {data_unit} (a bare number is in the data unit), "
             f"but the data's typical {metric} is {typical:.3g} {data_unit}; add the unit if you meant "
             f"another, e.g. {_EXAMPLE.get(UNITS[data_unit][0], '1 ' + data_unit)!r}")
        return
    # a gain is usually specified in dB: '>= 40' on a V/V column is 40 V/V (32 dB), within the data's range
    db_like = [n for n in numbers if data_unit == "V/V" and 0 < float(n) <= DB_LIKE_MAX]
    if db_like:
        v = float(db_like[0])
        warn(f"note: {where}: {db_like[0]} is read as {v:g} V/V ({20 * np.log10(v):.1f} dB), the data unit; if you "
             f"meant {db_like[0]} dB, write '{db_like[0]} dB'")


def data_units(table, y_cols, path, recorded=None, recorded_where=None) -> dict:
    """{metric: data unit} from a spec's optional ``[units]`` table, each checked; a unit the data's meta.json
    records (``recorded``: the simulator's, which the verifying simulation also returns) cannot be changed."""
    recorded = recorded or {}
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ToolkitError(f"{path}: [units] must be a table of metric = \"unit\" lines, got {table!r}")
    bad = [k for k in table if k not in y_cols]
    if bad:
        raise ToolkitError(f"{path}: [units] names {bad}, which the model does not predict (metrics: {list(y_cols)})")
    for col, unit in table.items():
        if not isinstance(unit, str) or unit not in UNITS or not unit:
            raise ToolkitError(f"{path}: units.{col} = {unit!r} is not a unit; known: {sorted(u for u in UNITS if u)}")
        if col in recorded and recorded[col] != unit:
            raise ToolkitError(f"{path}: units.{col} = {unit!r}, but {recorded_where} records {col} in "
                               f"{recorded[col]!r} (what the simulator writes and --verify compares with); drop "
                               f"that line")
    return dict(table)


def _goal(text, metric: str, where: str, data_unit: str | None = None, target_tol: float = TARGET_TOL, bare=None):
    """(goal word, target, band or None) in data units.  On a column in dB, ``== X`` is the band of values within
    ``target_tol`` of X as a ratio (X + 20 log10(1 -/+ tol) dB): the same designs pass as on a V/V column."""
    if not isinstance(text, str):
        raise ToolkitError(f"{where}: expected a string such as '>= 40 dB' or '1 MHz .. 3 MHz', got {text!r}")
    t = text.strip()
    if t.lower() == "any":
        return "range", None, (-math.inf, math.inf)
    for op, word in ((">=", "min"), ("<=", "max"), ("==", "target")):
        if t.startswith(op):
            value = quantity(t[len(op):], metric, where, data_unit, bare=bare)
            if word == "target" and data_unit == "dB":
                band = (value + 20 * math.log10(1 - target_tol), value + 20 * math.log10(1 + target_tol))
                return "range", value, band
            return word, value, None
    if ".." in t:
        lo_s, hi_s = t.split("..", 1)
        lo, hi = (quantity(q, metric, where, data_unit, bare=bare) for q in (lo_s, hi_s))
        if not lo < hi:
            raise ToolkitError(f"{where}: range {t!r} needs lo < hi")
        return "range", 0.5 * (lo + hi), (lo, hi)
    raise ToolkitError(f"{where}: {t!r} is not a goal; write '>= X', '<= X', '== X', 'lo .. hi' or 'any'")


def load_spec(path, y_cols, typical, *, target_tol: float = TARGET_TOL, warn=print, recorded=None,
              recorded_where=None) -> Spec:
    """Read a spec file for a model with metrics ``y_cols``; ``typical`` (physical, per metric)
    conditions the MDN for free metrics.  ``recorded`` / ``recorded_where``: the data's units and the meta.json
    holding them (``recorded_units``): the data unit of a metric the spec's [units] table does not name."""
    path = Path(path)
    notes, say = [], warn
    warn = notes.append   # printed once the whole file is read: a refused file prints its one error line only
    spec = read_toml(path, missing="--spec needs a TOML file with a [goals] table (docs/USAGE.md)")
    unknown = set(spec) - {"goals", "weights", "objective", "units"}
    if unknown or not isinstance(spec.get("goals"), dict) or not spec["goals"]:
        raise ToolkitError(f"{path}: expected a non-empty [goals] table and optional [weights], [units] and "
                           f"[objective] tables, got keys {sorted(spec)}")
    recorded = {k: v for k, v in (recorded or {}).items() if k in y_cols}
    # each metric's data unit, resolved once: the spec's [units], else meta.json's, else the simulator's name
    units = {**metric_units(y_cols, recorded), **data_units(spec.get("units"), y_cols, path, recorded, recorded_where)}
    weights_in = spec.get("weights", {})
    for table, name in ((spec["goals"], "goals"), (weights_in, "weights")):
        bad = [k for k in table if k not in y_cols]
        if bad:
            raise ToolkitError(f"{path}: [{name}] names {bad}, which the model does not predict "
                               f"(metrics: {list(y_cols)})")
    for col in weights_in:
        if col not in spec["goals"]:   # a weight scales a goal's loss; a metric left free has none to scale
            warn(f"[spec] {path}: weights.{col} has no effect: {col} has no goal in [goals] (it is left free)")
    goals, target, bands, weights = [], np.array(typical, float), {}, np.ones(len(y_cols))
    for j, col in enumerate(y_cols):
        if col in spec["goals"]:
            bare = []
            word, t, band = _goal(spec["goals"][col], col, f"{path}: goals.{col}", units.get(col), target_tol, bare)
            _warn_bare_number(bare, col, units.get(col), typical[j], f"{path}: goals.{col}", warn)
        else:
            word, t, band = "range", None, (-math.inf, math.inf)
            warn(f"[spec] {col} is not in {path}: left free")
        goals.append(word)
        if t is not None:
            target[j] = t
        if band is not None:
            bands[col] = band
        w = weights_in.get(col, 1.0)
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ToolkitError(f"{path}: weights.{col} must be a number >= 0, got {w!r}")
        weights[j] = w
    if weights.sum() <= 0:
        raise ToolkitError(f"{path}: [weights] are all 0; at least one goal must count")
    built = Spec.build(list(y_cols), goals, target, weights=weights, bands=bands, target_tol=target_tol, warn=warn)
    built.units = {c: u for c, u in units.items() if c in y_cols and u}
    for note in notes:
        say(note)
    return built


def load_objective(path):
    """(sense, name) of the spec file's ``[objective]`` (``minimize = "gate_area"`` or ``maximize = "ugf"``), or
    None when it has none; the name is checked against the model and circuit by inverse.objective."""
    spec = read_toml(Path(path), missing="--spec needs a TOML file with a [goals] table (docs/USAGE.md)")
    table = spec.get("objective")
    if table is None:
        return None
    keys = set(table) if isinstance(table, dict) else set()
    if not isinstance(table, dict) or len(keys) != 1 or not keys <= {"minimize", "maximize", "minimise", "maximise"} \
            or not isinstance(next(iter(table.values())), str):
        raise ToolkitError(f"{path}: [objective] must hold one line, minimize = \"NAME\" or maximize = \"NAME\" "
                           f"(e.g. minimize = \"gate_area\"), got {table!r}")
    sense, name = next(iter(table.items()))
    return sense, name
