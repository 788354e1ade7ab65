"""Processes: model cards plus the fixed testbench conditions, one TOML file each.

The shipped ones are ``library/processes/A.toml`` and ``B.toml``; any process file path works
where a process name does (``simulate(..., process="my_node.toml")``, ``spice.generate --process``).

A is a 180nm-class node (the source domain), B a 130nm-class node (the target domain).
The cards are written by us, not copied from a foundry: parameter values are typical of
public predictive/educational cards for those nodes, chosen so the two nodes differ the way
real ones do -- thinner oxide, lower threshold, lower low-field mobility (higher doping),
stronger drain-induced barrier lowering (pdiblc2) and a lower supply in B.  (B's lower
BSIM4 pclm means *weaker* channel-length modulation: pclm scales 1/V_A,CLM.)

Junction parameters use the BSIM4 names (cjs, cjsws, jss, ...): ngspice's BSIM4 ignores the
BSIM3 names (cj, cjsw, js) with only a warning.  Drain/source areas and perimeters are passed
per instance (see ``diffusion``) because BSIM4 otherwise computes zero junction capacitance.
"""
import math
from dataclasses import dataclass
from pathlib import Path

from core.errors import ToolkitError
from core.toml_file import read_toml


@dataclass(frozen=True)
class Process:
    name: str            # "A" | "B"
    description: str
    vdd: float           # V, supply
    cl: float            # F, load capacitance at the op-amp output
    ldiff: float         # um, drain/source diffusion length used for AD/AS/PD/PS
    nmos: str            # model name used by the netlists
    pmos: str
    model_text: str      # the .model cards
    temp: float | None = None   # C, the circuit temperature (.temp); None = ngspice's nominal 27 C (spice.conditions)

    def model_lines(self, design: dict, opamp: str) -> list[str]:
        """The model cards a netlist for ``design`` needs (all of them, for our own cards)."""
        return self.model_text.splitlines()

    def mos_line(self, name, d, g, s, b, kind, w, l) -> str:
        """One transistor instance; w, l in um; kind "nmos" | "pmos"."""
        model = self.nmos if kind == "nmos" else self.pmos
        return f"{name} {d} {g} {s} {b} {model} w={w:.6g}u l={l:.6g}u {diffusion(self.ldiff, w)}"

    def op_vector(self, inst: str, kind: str, param: str) -> str:
        """ngspice name of one device's operating-point quantity, e.g. ("xrep.m1", "nmos", "gm")
        -> "@m.xrep.m1[gm]" (a MOSFET inside subcircuit instance xrep)."""
        return f"@m.{inst}[{param}]"

    @property
    def vcm(self) -> float:
        """Input common-mode voltage (V) of the AC testbenches: mid-supply."""
        return self.vdd / 2

    @property
    def step(self) -> tuple[float, float]:
        """Buffer input step (V): vcm - vdd/8 -> vcm + vdd/8, i.e. a quarter of the supply."""
        return self.vcm - self.vdd / 8, self.vcm + self.vdd / 8


LIBRARY = Path(__file__).resolve().parent / "library" / "processes"   # the shipped process files
_KEYS = {"name": str, "description": str, "vdd": float, "cl": float, "ldiff": float, "nmos": str, "pmos": str}


def load_process(path) -> Process:
    """A process file (TOML): name, description, vdd (V), cl (F), ldiff (um), nmos, pmos, and either
    ``models`` (the .model cards inline) or ``library`` (a model file, relative to the process file)
    with an optional ``section`` (its ``.lib`` section, e.g. "tt").  Every problem is one line."""
    path = Path(path)
    spec = read_toml(path, missing="give a .toml process file or one of A, B, sky130")
    unknown = set(spec) - set(_KEYS) - {"models", "library", "section"}
    if unknown:
        raise ToolkitError(f"{path}: unknown key(s) {sorted(unknown)}; expected {sorted(_KEYS)} and models or "
                           f"library [+ section]")
    for key, kind in _KEYS.items():
        v = spec.get(key)
        ok = isinstance(v, str) and v if kind is str else isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            raise ToolkitError(f"{path}: {key} must be {'a non-empty string' if kind is str else 'a number'}, got {v!r}")
    for key in ("vdd", "cl", "ldiff"):
        if not (math.isfinite(spec[key]) and spec[key] > 0):
            raise ToolkitError(f"{path}: {key} must be > 0 (vdd in V, cl in F, ldiff in um), got {spec[key]!r}")
    if ("models" in spec) == ("library" in spec):
        raise ToolkitError(f"{path}: give exactly one of models (the cards inline) or library (a model file)")
    if "models" in spec:
        text = spec["models"]
    else:
        lib = (path.parent / spec["library"]).resolve()
        if not lib.is_file():
            raise ToolkitError(f"{path}: library {lib} does not exist (paths are relative to the process file)")
        section = spec.get("section")
        text = f'.lib "{lib}" {section}' if section else f'.include "{lib}"'
    return Process(name=spec["name"], description=spec["description"], vdd=float(spec["vdd"]),
                   cl=float(spec["cl"]), ldiff=float(spec["ldiff"]), nmos=spec["nmos"], pmos=spec["pmos"],
                   model_text=text)


PROCESSES = {p.stem: load_process(p) for p in sorted(LIBRARY.glob("*.toml"))}
PROCESS_A, PROCESS_B = PROCESSES["A"], PROCESSES["B"]


# The data layout's domains: source data come from process A, target data from process B.
DOMAIN_PROCESS = {"source": "A", "target": "B"}


def diffusion(process_ldiff_um: float, w_um: float) -> str:
    """AD/AS/PD/PS for one finger of width w (um): area w*ldiff, perimeter 2*(w+ldiff)."""
    area = w_um * process_ldiff_um * 1e-12
    perim = 2 * (w_um + process_ldiff_um) * 1e-6
    return f"ad={area:.4e} as={area:.4e} pd={perim:.4e} ps={perim:.4e}"
