"""A circuit as a file: the op-amp's netlist template, its design space and closed-form figures.

TOML (``tomllib``), one file per op-amp; the shipped ones are in ``spice/library/circuits/``:

    name = "my_ota"                       # the data folder name (<data-dir>/<name>/...)
    description = "..."
    netlist = '''                         # body of .subckt opamp inp inn out vdd gnd
    ib vdd nb dc {ibias}
    m1 x inp tail gnd nmos w={w1} l={l1}
    ...'''
    slew_time = "dv * cl / ibias"         # s: slowest plausible slewing (sizes the transient)
    [variables.w1]
    unit = "um"                           # um (w, l), A, F, ohm, V, or "" (dimensionless)
    range = [0.5, 50]
    grid = {step = 0.5}                   # buildable values: {step}, {values = [...]} or {digits = 3}
    sample = "grid"                       # how spice.generate draws it: grid | uniform | loguniform
    scale = "log"                         # optional: how models see it, lin | log (default: decided from the data)
    [figures]                             # closed forms of the design: reported, and objectives of inverse_opt
    gate_area = {expr = "sum_wl", unit = "um^2"}      # sum of w*l over the transistors (built-in)
    bias_current = {expr = "2 * ibias", unit = "A"}   # or a bare "expression" (no unit)

Netlist: ``{name}`` is a design variable's value (written ``%.6g`` in its unit). A MOSFET line is
``<name> <d> <g> <s> <b> nmos|pmos w=<size> l=<size>`` with sizes ``{variable}`` or numbers in um;
it is written by the process (model names, diffusion areas, PDK subcircuits, fingers). Nodes
``inp inn out vdd gnd`` are the ports (inp = non-inverting input). The draw order of ``sample``
is the order of ``[variables]``, so a seed gives the same designs for the same file.

Grid: every value of ``values`` lies in ``range``, and a ``step`` grid (lo, lo + step, ...) ends on
``hi`` or below it (the generator's points are ``lo + k * step``; inverse design snaps to the same
points).  ``scale`` is recorded in the design space the data carry: with ``LOG_X_COLS = 'auto'`` a
declared scale wins over the data rule (log when a column spans ``LOG_X_MIN_SPAN``); ``log`` needs
lo > 0.  A figure's ``unit`` is one of ``FIGURE_UNITS`` (it labels reports and plots).

Expressions (``slew_time``, ``[figures]``): + - * / **, parentheses, numbers, the design
variables, ``cl`` (F) and ``dv`` (V, the buffer's input step), ``min``/``max``/``sqrt``/``log10``,
and ``sum_wl`` (um^2).  Anything else is refused when the file is loaded.
"""
import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ToolkitError
from core.toml_file import read_toml

PORTS = ("inp", "inn", "out", "vdd", "gnd")
UNITS = ("um", "A", "F", "ohm", "V", "")
FIGURE_UNITS = UNITS + ("um^2", "W", "s", "Hz", "V/s", "V/V")   # areas, powers, times, ...: labels only
SAMPLES = ("grid", "uniform", "loguniform")
SCALES = ("lin", "log")
MOS_KINDS = ("nmos", "pmos")
FUNCTIONS = {"min": min, "max": max, "sqrt": math.sqrt, "log10": math.log10}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIZE = re.compile(r"^([wl])=(\{[A-Za-z_][A-Za-z0-9_]*\}|[0-9.eE+-]+)$")


@dataclass(frozen=True)
class Variable:
    """One design variable: its unit, range, buildable grid and how the generator draws it."""
    name: str
    unit: str
    lo: float
    hi: float
    grid: dict = field(default_factory=dict)   # {"step": s} | {"values": [...]} | {"digits": n} | {}
    sample: str = "grid"
    scale: str = ""                             # "lin" | "log" when the file declares it, else "" (the data decide)

    def values(self) -> np.ndarray | None:
        """The buildable values when the grid is a step or a set, else None."""
        if "values" in self.grid:
            return np.asarray(self.grid["values"], float)
        if "step" in self.grid:
            step = self.grid["step"]
            n = int(round((self.hi - self.lo) / step)) + 1
            return self.lo + step * np.arange(n)
        return None

    def draw(self, rng: np.random.Generator) -> float:
        if self.sample == "grid":
            return float(rng.choice(self.values()))
        if self.sample == "uniform":
            return float(rng.uniform(self.lo, self.hi))
        return float(10 ** rng.uniform(np.log10(self.lo), np.log10(self.hi)))

    def describe(self) -> dict:
        """What meta.json and checkpoints record about this variable (``scale`` only when declared, so the
        shipped files' records, made before the key existed, stay as they are)."""
        out = {"unit": self.unit, "range": [self.lo, self.hi], "grid": dict(self.grid), "sample": self.sample}
        return {**out, "scale": self.scale} if self.scale else out


@dataclass(frozen=True)
class Mosfet:
    name: str
    nodes: tuple          # (d, g, s, b)
    kind: str             # "nmos" | "pmos"
    w: str | float        # variable name or a size in um
    l: str | float

    def size(self, design: dict) -> tuple[float, float]:
        w = design[self.w] if isinstance(self.w, str) else self.w
        l = design[self.l] if isinstance(self.l, str) else self.l
        return float(w), float(l)


@dataclass(frozen=True)
class Circuit:
    name: str
    description: str
    path: str
    variables: dict       # name -> Variable, in draw order
    lines: tuple          # netlist body: str (element template) or Mosfet, in file order
    slew_time: str
    figures: dict         # name -> expression
    figure_units: dict = field(default_factory=dict)   # name -> unit text ("um^2", "A"); "" when not declared

    @property
    def features(self) -> list[str]:
        return list(self.variables)

    @property
    def mosfets(self) -> list[Mosfet]:
        return [x for x in self.lines if isinstance(x, Mosfet)]

    @property
    def devices(self) -> dict[str, str]:
        """{transistor name: "nmos" | "pmos"} in netlist order."""
        return {m.name: m.kind for m in self.mosfets}

    def device_sizes(self, design: dict) -> dict[str, list[tuple[float, float]]]:
        """{"nmos": [(w, l), ...], "pmos": [...]} in um (SKY130 loads only the bins these need)."""
        out = {k: [] for k in MOS_KINDS}
        for m in self.mosfets:
            out[m.kind].append(m.size(design))
        return out

    def subckt(self, design: dict, mos_line) -> list[str]:
        """``.subckt opamp inp inn out vdd gnd`` ... ``.ends``; ``mos_line`` is the process's."""
        out = [".subckt opamp " + " ".join(PORTS)]
        for x in self.lines:
            if isinstance(x, Mosfet):
                out.append(mos_line(x.name, *x.nodes, x.kind, *x.size(design)))
            else:
                out.append(_PLACEHOLDER.sub(lambda m: f"{design[m.group(1)]:.6g}", x))
        out.append(".ends opamp")
        return out

    def evaluate(self, expr: str, design: dict, **extra) -> float:
        """An expression of the file (slew_time, a figure) for one design."""
        env = {**{k: float(design[k]) for k in self.variables}, **extra,
               "sum_wl": sum(w * l for w, l in (m.size(design) for m in self.mosfets))}
        return float(_eval(ast.parse(expr, mode="eval").body, env))

    def figures_of(self, design: dict) -> dict[str, float]:
        return {name: self.evaluate(expr, design) for name, expr in self.figures.items()}

    def figure_of_columns(self, name: str, columns: dict, functions: dict):
        """Figure ``name`` for many designs at once: ``columns`` maps each design variable to an array or
        tensor (N,), ``functions`` the array versions of min/max/sqrt/log10 (e.g. torch's, so the figure
        stays differentiable for inverse design)."""
        env = {**columns, "sum_wl": sum(_size(m.w, columns) * _size(m.l, columns) for m in self.mosfets)}
        return _eval(ast.parse(self.figures[name], mode="eval").body, env, functions)

    def design_space(self) -> dict:
        """{variable: {unit, range, grid, sample}}: what generated data and checkpoints carry."""
        return {name: v.describe() for name, v in self.variables.items()}


def _size(size, columns):
    return columns[size] if isinstance(size, str) else size


def _eval(node, env, functions=FUNCTIONS):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, functions), _eval(node.right, env, functions)
        return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}[type(node.op)]()
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, env, functions)
    if isinstance(node, ast.Call):
        return functions[node.func.id](*(_eval(a, env, functions) for a in node.args))
    raise AssertionError(node)  # _check_expr refused everything else at load time


def _check_expr(expr, names: set, where: str) -> None:
    if not isinstance(expr, str) or not expr.strip():
        raise ToolkitError(f"{where}: expected an expression string, got {expr!r}")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ToolkitError(f"{where}: {expr!r} is not an expression ({exc.msg})") from None
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load,
               ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub)
    for node in ast.walk(tree):
        if not isinstance(node, allowed) or (isinstance(node, ast.Constant) and not isinstance(node.value, (int, float))):
            raise ToolkitError(f"{where}: {expr!r} uses {type(node).__name__}; allowed: + - * / **, numbers, "
                               f"names, {sorted(FUNCTIONS)}")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
            raise ToolkitError(f"{where}: {expr!r} calls something other than {sorted(FUNCTIONS)}")
        if isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            raise ToolkitError(f"{where}: {expr!r} names {node.id!r}, which is not a design variable "
                               f"({sorted(names - {'cl', 'dv', 'sum_wl'})}), cl, dv or sum_wl")


def check_variable(where: str, name: str, spec) -> Variable:
    """One design variable ``{unit, range, grid, sample, scale}`` checked, as a Variable; every problem is one
    ToolkitError starting with ``where`` (a circuit file's ``[variables.w1]``, a meta.json's ``design_space.w1``)."""
    if not isinstance(spec, dict):
        raise ToolkitError(f"{where}: expected a table with unit, range, grid, sample, scale; got {spec!r}")
    unknown = set(spec) - {"unit", "range", "grid", "sample", "scale"}
    if unknown:
        raise ToolkitError(f"{where}: unknown key(s) {sorted(unknown)}; expected unit, range, grid, sample, scale")
    unit = spec.get("unit")
    if unit not in UNITS:
        raise ToolkitError(f"{where}: unit {unit!r} is not one of {list(UNITS)} (w and l in um, currents in A, "
                           f"capacitances in F, resistances in ohm)")
    grid = spec.get("grid", {})
    if not isinstance(grid, dict) or len(grid) > 1 or (grid and next(iter(grid)) not in ("step", "values", "digits")):
        raise ToolkitError(f"{where}: grid must be {{step = s}}, {{values = [...]}} or {{digits = n}}, got {grid!r}")
    if "values" in grid and (not isinstance(grid["values"], (list, tuple)) or not grid["values"]
                             or not all(_number(v) for v in grid["values"])):
        raise ToolkitError(f"{where}: grid values must be a non-empty list of numbers, got {grid['values']!r}")
    rng = spec.get("range")
    if rng is None and "values" in grid:
        rng = [min(grid["values"]), max(grid["values"])]
    if (not isinstance(rng, list) or len(rng) != 2 or not all(_number(v) for v in rng)):
        raise ToolkitError(f"{where}: range must be [lo, hi] in {unit or 'its unit'}, got {rng!r}")
    lo, hi = float(rng[0]), float(rng[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ToolkitError(f"{where}: range [{lo:g}, {hi:g}] needs finite lo <= hi")
    if "values" in grid:
        outside = [v for v in grid["values"] if not lo <= v <= hi]
        if outside:     # the generator would draw them and simulate() refuse them mid-run
            raise ToolkitError(f"{where}: grid values {outside} lie outside range [{lo:g}, {hi:g}] {unit}; "
                               f"widen the range or drop those values")
    if "step" in grid:
        step = grid["step"]
        if not (_number(step) and math.isfinite(step) and step > 0):
            raise ToolkitError(f"{where}: grid step must be > 0, got {step!r}")
        # Variable.values() rounds the number of steps, so a step that does not divide hi - lo can put the
        # last point above hi (step 0.7 on [0.5, 50] ends at 50.2), where simulate() refuses it
        last = lo + step * round((hi - lo) / step)
        if last > hi + 1e-9 * max(abs(hi), step):
            fit = lo + step * math.floor((hi - lo) / step + 1e-9)
            raise ToolkitError(f"{where}: grid step {step:g} on [{lo:g}, {hi:g}] ends at {last:g} > {hi:g}; "
                               f"use a step that divides hi - lo, or hi = {fit:g}")
    if "digits" in grid and not (isinstance(grid["digits"], int) and not isinstance(grid["digits"], bool)
                                 and grid["digits"] >= 1):
        raise ToolkitError(f"{where}: grid digits must be an integer >= 1, got {grid['digits']!r}")
    sample = spec.get("sample", "grid" if ("step" in grid or "values" in grid) else "uniform")
    if sample not in SAMPLES:
        raise ToolkitError(f"{where}: sample {sample!r} is not one of {list(SAMPLES)}")
    if sample == "grid" and not ("step" in grid or "values" in grid):
        raise ToolkitError(f"{where}: sample = 'grid' needs grid = {{step = ...}} or {{values = [...]}}")
    if sample == "loguniform" and lo <= 0:
        raise ToolkitError(f"{where}: sample = 'loguniform' needs lo > 0, got {lo:g}")
    scale = spec.get("scale", "")
    if scale not in SCALES and not (scale == "" and "scale" not in spec):
        raise ToolkitError(f"{where}: scale {scale!r} is not one of {list(SCALES)} (or leave it out: the data decide)")
    if scale == "log" and lo <= 0:
        raise ToolkitError(f"{where}: scale = 'log' needs lo > 0, got {lo:g}; use scale = 'lin'")
    return Variable(name, unit, lo, hi, grid, sample, scale)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _netlist(path, text, variables) -> tuple:
    if not isinstance(text, str) or not text.strip():
        raise ToolkitError(f"{path}: netlist: expected the subcircuit body as a string")
    lines, used = [], set()
    for i, raw in enumerate(text.strip().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("*"):
            continue
        where = f"{path}: netlist line {i} {line!r}"
        names = set(_PLACEHOLDER.findall(line))
        missing = names - set(variables)
        if missing:
            raise ToolkitError(f"{where}: {{{sorted(missing)[0]}}} is not a design variable "
                               f"(declared: {list(variables)})")
        used |= names
        tok = line.split()
        if tok[0][0].lower() == "m" and len(tok) >= 6 and tok[5].lower() in MOS_KINDS:
            if len(tok) != 8:
                raise ToolkitError(f"{where}: a MOSFET is '<name> <d> <g> <s> <b> nmos|pmos w=<size> l=<size>'")
            sizes = {}
            for t in tok[6:]:
                m = _SIZE.match(t)
                if not m:
                    raise ToolkitError(f"{where}: {t!r} is not w={{variable}} / l={{variable}} or a number in um")
                v = m.group(2)
                sizes[m.group(1)] = v[1:-1] if v.startswith("{") else float(v)
            if set(sizes) != {"w", "l"}:
                raise ToolkitError(f"{where}: needs one w= and one l=")
            lines.append(Mosfet(tok[0].lower(), tuple(tok[1:5]), tok[5].lower(), sizes["w"], sizes["l"]))
        else:
            lines.append(line)
    unused = set(variables) - used
    if unused:
        raise ToolkitError(f"{path}: design variable(s) {sorted(unused)} appear nowhere in the netlist; "
                           f"use them as {{name}} or remove them")
    nodes = {n for x in lines if isinstance(x, Mosfet) for n in x.nodes}
    if not {"inp", "inn", "out"} <= nodes | {t for x in lines if isinstance(x, str) for t in x.split()}:
        raise ToolkitError(f"{path}: the netlist must use the ports inp, inn and out")
    return tuple(lines)


def load_circuit(path) -> Circuit:
    """Parse and check a circuit file; every problem is one ToolkitError naming the file and key."""
    path = Path(path)
    spec = read_toml(path, missing="give a .toml circuit file or a built-in circuit name")
    unknown = set(spec) - {"name", "description", "netlist", "slew_time", "variables", "figures"}
    if unknown:
        lost = "" if "variables" in spec else (" (a [variables] header missing above them? each design variable "
                                                 "goes under it)")
        raise ToolkitError(f"{path}: unknown key(s) {sorted(unknown)}{lost}; expected name, description, netlist, "
                           f"slew_time, [variables], [figures]")
    name = spec.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise ToolkitError(f"{path}: name must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    if not isinstance(spec.get("variables"), dict) or not spec["variables"]:
        raise ToolkitError(f"{path}: [variables] is missing or empty; declare each design variable")
    variables = {k: check_variable(f"{path}: [variables.{k}]", k, v) for k, v in spec["variables"].items()}
    lines = _netlist(path, spec.get("netlist"), variables)
    names = set(variables) | {"cl", "dv", "sum_wl"}
    slew = spec.get("slew_time")
    _check_expr(slew, names, f"{path}: slew_time")
    figures = spec.get("figures", {})
    if not isinstance(figures, dict):
        raise ToolkitError(f"{path}: [figures] must be a table of name = \"expression\"")
    exprs, units = {}, {}
    for k, v in figures.items():
        if isinstance(v, dict):       # {expr = "...", unit = "..."}
            extra = set(v) - {"expr", "unit"}
            if extra or "expr" not in v or not isinstance(v.get("unit", ""), str):
                raise ToolkitError(f"{path}: figures.{k}: expected \"expression\" or {{expr = \"...\", unit = \"...\"}}, "
                                   f"got {v!r}")
            v, units[k] = v["expr"], v.get("unit", "")
            if units[k] not in FIGURE_UNITS:
                raise ToolkitError(f"{path}: figures.{k}: unit {units[k]!r} is not one of {list(FIGURE_UNITS)}")
        _check_expr(v, names - {"cl", "dv"}, f"{path}: figures.{k}")
        exprs[k] = v
        units.setdefault(k, "")
    return Circuit(name, str(spec.get("description", "")), str(path), variables, lines, slew, exprs, units)
