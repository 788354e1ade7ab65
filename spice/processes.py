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

A file is checked when it is loaded, so a process fault is reported against the process file, not as
every design failing later: vdd, cl and ldiff have sanity bounds (a value in mV, pF or nm is refused),
inline cards must define the ``nmos`` / ``pmos`` model names, and a ``section`` must be one of the
library's ``.lib`` sections.  Optional ``w_range`` / ``l_range`` ([lo, hi] in um) are the node's
device-size limits: ``simulate`` refuses a design with a transistor outside them, and
``spice.generate`` refuses a circuit whose design space reaches outside them, before simulating.
"""
import math
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ToolkitError
from core.toml_file import read_toml
from spice.model_library import VDD_MAX, library_sections


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
    w_range: tuple[float, float] | None = None   # um, allowed transistor width [lo, hi]; None = no limit
    l_range: tuple[float, float] | None = None   # um, allowed transistor length [lo, hi]; None = no limit
    path: str | None = None     # the process file it was loaded from (named in errors); None = built in code

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
_OPTIONAL = ("models", "library", "section", "w_range", "l_range")
# Sanity bounds (lo exclusive, hi inclusive): wide enough for any real node, narrow enough that a value in
# the wrong unit (1200 mV, 1 pF written as 1, 480 nm) is refused instead of making every design fail.
BOUNDS = {"vdd": (0.0, VDD_MAX, "V", "the supply in volts, e.g. 1.8"),
          "cl": (0.0, 1e-6, "F", "the load in farads, e.g. 1e-12 for 1 pF"),
          "ldiff": (0.0, 10.0, "um", "the diffusion length in um, e.g. 0.48")}
SIZE_KEYS = {"w_range": "w", "l_range": "l"}   # process-file key -> the transistor dimension it limits
_MODEL = re.compile(r"^\s*\.model\s+(\S+)\s+(\w+)", re.I | re.M)


def library_path(path) -> Path | None:
    """The model library a process file names (``library``, relative to the file), resolved; None for inline cards
    or a file that cannot be read (``load_process`` says why).  Its bytes decide the simulations as much as the
    process file's: ``spice.generate`` records both digests."""
    try:
        lib = read_toml(path, missing="").get("library")
    except ToolkitError:
        return None
    return (Path(path).parent / lib).resolve() if isinstance(lib, str) and lib else None


def load_process(path) -> Process:
    """A process file (TOML): name, description, vdd (V), cl (F), ldiff (um), nmos, pmos, and either
    ``models`` (the .model cards inline) or ``library`` (a model file, relative to the process file)
    with an optional ``section`` (its ``.lib`` section, e.g. "tt"); optional ``w_range`` and
    ``l_range`` ([lo, hi] in um).  Every problem is one line naming the file and the key."""
    path = Path(path)
    spec = read_toml(path, missing="give a .toml process file or one of A, B, sky130")
    unknown = set(spec) - set(_KEYS) - set(_OPTIONAL)
    if unknown:
        raise ToolkitError(f"{path}: unknown key(s) {sorted(unknown)}; expected {sorted(_KEYS)}, models or "
                           f"library [+ section], and optionally w_range, l_range")
    missing = [key for key in _KEYS if key not in spec]
    if missing:
        raise ToolkitError(f"{path}: missing key(s) {missing}; a process file needs {sorted(_KEYS)} and models or "
                           f"library (docs/SPICE.md)")
    for key, kind in _KEYS.items():
        v = spec.get(key)
        ok = isinstance(v, str) and v if kind is str else isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            raise ToolkitError(f"{path}: {key} must be {'a non-empty string' if kind is str else 'a number'}, got {v!r}")
    for key, (lo, hi, unit, hint) in BOUNDS.items():
        v = spec[key]
        if not (math.isfinite(v) and lo < v <= hi):
            raise ToolkitError(f"{path}: {key} must be > {lo:g} and <= {hi:g} {unit}: expected {hint}, got {v!r}; "
                               f"fix {key} in the file (a value in another unit?)")
    limits = {key: _size_range(path, key, spec[key]) for key in SIZE_KEYS if key in spec}
    if ("models" in spec) == ("library" in spec):
        raise ToolkitError(f"{path}: give exactly one of models (the cards inline) or library (a model file)")
    if "models" in spec:
        if "section" in spec:
            raise ToolkitError(f"{path}: section {spec['section']!r} needs library = \"...\" (a model file with "
                               f".lib sections); inline models have no sections: remove section")
        text = spec["models"]
        if not isinstance(text, str):
            raise ToolkitError(f"{path}: models must be the .model cards as a string, got {type(text).__name__}")
        _check_cards(path, text, spec["nmos"], spec["pmos"])
    else:
        if not isinstance(spec["library"], str) or not spec["library"]:
            raise ToolkitError(f"{path}: library must be a model file path (relative to the process file), "
                               f"got {spec['library']!r}")
        lib = (path.parent / spec["library"]).resolve()
        if not lib.is_file():
            raise ToolkitError(f"{path}: library {lib} does not exist (paths are relative to the process file)")
        section = spec.get("section")
        _check_section(path, lib, section)
        text = f'.lib "{lib}" {section}' if section else f'.include "{lib}"'
    return Process(name=spec["name"], description=spec["description"], vdd=float(spec["vdd"]),
                   cl=float(spec["cl"]), ldiff=float(spec["ldiff"]), nmos=spec["nmos"], pmos=spec["pmos"],
                   model_text=text, w_range=limits.get("w_range"), l_range=limits.get("l_range"),
                   path=str(path))


def _size_range(path, key, v) -> tuple[float, float]:
    ok = (isinstance(v, list) and len(v) == 2
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))
    if not ok or not 0 < v[0] <= v[1]:
        raise ToolkitError(f"{path}: {key} must be [lo, hi] in um with 0 < lo <= hi (the node's smallest and "
                           f"largest transistor {SIZE_KEYS[key]}), got {v!r}; fix {key} or remove it for no limit")
    return float(v[0]), float(v[1])


def _check_cards(path, text: str, nmos: str, pmos: str) -> None:
    """Inline cards must define the two model names the file declares, as the right type.  A binned model
    (``nch.1``, ``nch.2``, ...) counts as ``nch``: ngspice picks the bin by size."""
    cards = {}
    for name, kind in _MODEL.findall(text):
        cards.setdefault(re.sub(r"\.\d+$", "", name).lower(), kind.lower())
    for key, want in (("nmos", nmos), ("pmos", pmos)):
        kind = cards.get(want.lower())
        if kind is None:
            raise ToolkitError(f"{path}: {key} = {want!r}: expected a `.model {want} {key} ...` card in models, got "
                               f"cards for {sorted(cards) or 'nothing'}; fix {key} or the cards")
        if kind != key:
            raise ToolkitError(f"{path}: {key} = {want!r}: expected a {key} card, got `.model {want} {kind}`; "
                               f"swap nmos and pmos, or fix the card's type")


def _check_section(path, lib: Path, section) -> None:
    """``section`` must be one of the library's ``.lib`` sections; a library made of sections needs one."""
    sections = library_sections(str(lib))
    if sections is None:
        raise ToolkitError(f"{path}: library {lib} cannot be read; check its permissions")
    if section is None:
        if sections:
            raise ToolkitError(f"{path}: library {lib} is made of .lib sections {sections}: expected "
                               f"section = one of them (e.g. {sections[0]!r}), got none; add section to the file")
        return
    if not isinstance(section, str) or section.lower() not in {x.lower() for x in sections}:
        have = f"one of {sections}" if sections else "none (it has no .lib sections: remove section to include it whole)"
        raise ToolkitError(f"{path}: section {section!r}: {lib} has no `.lib {section}` section; expected {have}, "
                           f"got {section!r}; fix section")


PROCESSES = {p.stem: load_process(p) for p in sorted(LIBRARY.glob("*.toml"))}
PROCESS_A, PROCESS_B = PROCESSES["A"], PROCESSES["B"]


# The data layout's domains: source data come from process A, target data from process B.
DOMAIN_PROCESS = {"source": "A", "target": "B"}


def diffusion(process_ldiff_um: float, w_um: float) -> str:
    """AD/AS/PD/PS for one finger of width w (um): area w*ldiff, perimeter 2*(w+ldiff)."""
    area = w_um * process_ldiff_um * 1e-12
    perim = 2 * (w_um + process_ldiff_um) * 1e-6
    return f"ad={area:.4e} as={area:.4e} pd={perim:.4e} ps={perim:.4e}"
