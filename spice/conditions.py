"""Run conditions of a simulation: temperature, supply and process corner, on top of a process.

    simulate("5t_opamp", designs, "B", temp=85, vdd=1.08)            # hot, supply 10 % low
    simulate("5t_opamp", designs, "sky130", corner="ss", temp=-40)   # slow-slow, cold
    python -m spice.generate ... --temp 85 --vdd 1.08 --corner ss
    python -m inverse_opt ... --verify --temp 85

temp      degrees C (ngspice's ``.temp``); None = the simulator's nominal 27 C, as every shipped dataset
vdd       V: replaces the process's supply; the input common mode (vdd/2) and the buffer step
          (a quarter of the supply about it) follow it, as they do from process to process
corner    a ``.lib`` section of the process's model library: tt, ff, ss, sf, fs for sky130; any
          section of a process file that gives ``library`` + ``section``.  A process whose cards are
          inline (A, B) has no corners: asking for one is an error, never a silent typical run.
Bounds are sanity checks on typos (-60..200 C, 0 < vdd <= 10 V).  None everywhere = the process as it
is, so the shipped data and every number made before these existed are unchanged.
"""
import copy
import math
import re
from dataclasses import dataclass

from core.errors import ToolkitError
from spice.model_library import VDD_MAX, library_sections

TEMP_RANGE = (-60.0, 200.0)     # C
_LIB_LINE = re.compile(r'^(\s*\.lib\s+"[^"]+"\s+)(\w+)\s*$', re.I)


@dataclass(frozen=True)
class Conditions:
    temp: float | None = None
    vdd: float | None = None
    corner: str | None = None

    def __post_init__(self):
        if self.temp is not None:
            t = _number(self.temp, "temp")
            if not TEMP_RANGE[0] <= t <= TEMP_RANGE[1]:
                raise ToolkitError(f"temperature {t:g} C is outside {TEMP_RANGE[0]:g}..{TEMP_RANGE[1]:g} C; give it in "
                                   f"degrees Celsius, e.g. --temp 85")
            object.__setattr__(self, "temp", t)
        if self.vdd is not None:
            v = _number(self.vdd, "vdd")
            if not 0 < v <= VDD_MAX:
                raise ToolkitError(f"supply {v:g} V must be > 0 and <= {VDD_MAX:g} V; give it in volts, e.g. --vdd 1.08")
            object.__setattr__(self, "vdd", v)
        if self.corner is not None and not re.fullmatch(r"\w+", str(self.corner)):
            raise ToolkitError(f"corner {self.corner!r} is not a .lib section name such as tt, ff or ss")

    @property
    def nominal(self) -> bool:
        return self.temp is None and self.vdd is None and self.corner is None

    def to_dict(self) -> dict:
        """What meta.json and result files record (only the conditions that were set)."""
        return {k: v for k, v in (("temp", self.temp), ("vdd", self.vdd), ("corner", self.corner)) if v is not None}

    def describe(self) -> str:
        parts = [f"{self.temp:g} C" if self.temp is not None else "",
                 f"vdd {self.vdd:g} V" if self.vdd is not None else "",
                 f"corner {self.corner}" if self.corner is not None else ""]
        return ", ".join(p for p in parts if p) or "nominal"


def _number(value, what) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ToolkitError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ToolkitError(f"{what} must be finite, got {value!r}")
    return v


def apply(process, conditions: Conditions, *, pdk_path=None):
    """``process`` under ``conditions``: a new Process (the given one is never changed)."""
    if conditions is None or conditions.nominal:
        return process
    proc = process
    if conditions.corner is not None:
        proc = _with_corner(proc, conditions.corner, pdk_path)
    proc = copy.copy(proc)
    if conditions.vdd is not None:
        object.__setattr__(proc, "vdd", conditions.vdd)
    if conditions.temp is not None:
        object.__setattr__(proc, "temp", conditions.temp)
    object.__setattr__(proc, "description", f"{proc.description}; {conditions.describe()}")
    return proc


def _with_corner(process, corner: str, pdk_path):
    sky = process.name == "sky130" and hasattr(process, "root")
    if sky:
        from spice import sky130
        lib = str(process.root / sky130.LIB_FILE)
    else:
        lines = process.model_text.strip().splitlines()
        m = _LIB_LINE.match(lines[0]) if len(lines) == 1 else None
        if m is None:
            raise ToolkitError(f"process {process.name!r} has no corners: its models are inline cards (or an "
                               f".include). Corners need a model library with sections: --process sky130, or a "
                               f"process file with library = \"...\" and section = \"tt\"")
        lib = re.search(r'"([^"]+)"', m.group(1)).group(1)
    sections = library_sections(lib)
    if sections is None:
        raise ToolkitError(f"process {process.name!r}: its model library {lib} cannot be read")
    if corner.lower() not in {x.lower() for x in sections}:
        raise ToolkitError(f"corner {corner!r}: {lib} has no `.lib {corner}` section; it has {sections}")
    if sky:
        return sky130.process(pdk_path or process.root, corner=corner)
    out = copy.copy(process)
    object.__setattr__(out, "model_text", f"{m.group(1)}{corner}")
    return out
