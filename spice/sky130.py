"""``--process sky130``: the SkyWater SKY130 PDK's typical-corner nfet_01v8 / pfet_01v8.

The PDK is found at ``--pdk-path`` or ``$PDK_ROOT/sky130A/libs.tech/ngspice`` (the open_pdks
layout, holding ``sky130.lib.spice``).  Parsing the full typical-corner library costs ~0.45 s per
netlist, and ``alter`` does not reselect size bins, so each design gets a fresh netlist that
inlines the ``.lib tt`` section with every include expanded, except that the two model files we
use keep only the size bins the design's (w, l) fall in and every other device's model file is
dropped.  The library sets ``.option scale=1.0u``, so instance sizes are written in um without a
unit suffix (areas in um^2).  Widths beyond the widest bin are split into parallel fingers (mult).
Supply 1.8 V and 1 pF load, as process A.
"""
import functools
import math
import os
import re
from pathlib import Path

from core.errors import ToolkitError
from spice.circuits import device_sizes
from spice.processes import Process

SUBDIR = "sky130A/libs.tech/ngspice"
LIB_FILE = "sky130.lib.spice"
CORNER = "tt"
DEVICES = {"nmos": "sky130_fd_pr__nfet_01v8", "pmos": "sky130_fd_pr__pfet_01v8"}
LDIFF_UM = 0.29  # um: SKY130 diffusion length to contact (li/licon rules), for AD/AS/PD/PS

_INCLUDE = re.compile(r'^\s*\.include\s+"?([^"\s]+)"?', re.I)
_BIN = {k: re.compile(rf"\b{k}\s*=\s*([-+0-9.eE]+)", re.I) for k in ("lmin", "lmax", "wmin", "wmax")}
_MODEL_FILE = re.compile(r"(sky130_fd_pr__[a-z0-9_]+?)__\w+\.pm3\.spice$|(sky130_fd_pr__[a-z0-9_]+?)\.pm3\.spice$")


def find_pdk(pdk_path=None) -> Path:
    """The folder holding sky130.lib.spice, or a ToolkitError saying where we looked."""
    if pdk_path:
        root = Path(pdk_path)
    elif os.environ.get("PDK_ROOT"):
        root = Path(os.environ["PDK_ROOT"]) / SUBDIR
    else:
        root = None
    if root is None or not (root / LIB_FILE).is_file():
        where = f"{root}/{LIB_FILE}" if root else "$PDK_ROOT (not set)"
        raise ToolkitError(
            f"SKY130 PDK not found: expected {LIB_FILE} at {where}. Install SKY130 with open_pdks "
            f"(e.g. `volare enable --pdk sky130`), then set PDK_ROOT to the folder holding sky130A/ "
            f"or pass --pdk-path <.../sky130A/libs.tech/ngspice>")
    return root


def _lib_section(path: Path, name: str) -> list[str]:
    lines, inside = [], False
    for line in path.read_text(errors="replace").splitlines():
        low = line.strip().lower()
        if low.startswith(".lib ") and low.split()[-1] == name:
            inside = True
        elif low.startswith(".endl") and inside:
            return lines
        elif inside:
            lines.append(line)
    raise ToolkitError(f"{path} has no `.lib {name}` section; is this a SKY130 ngspice library?")


def _expand(lines: list[str], base: Path, models: dict, depth: int = 0) -> list[str]:
    """Inline includes; record our devices' model files in ``models``, drop other devices'."""
    out = []
    for line in lines:
        m = _INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        path = (base / m.group(1)).resolve()
        mf = _MODEL_FILE.search(path.name)
        device = mf and (mf.group(1) or mf.group(2))
        if device in DEVICES.values():
            models[device] = path
            out.append(f"*@models {device}")  # placeholder: bins go here per design
        elif device:
            continue  # another device's model file: not needed, and the slow part to parse
        elif depth < 8 and path.is_file():
            out += _expand(path.read_text(errors="replace").splitlines(), path.parent, models, depth + 1)
        else:
            raise ToolkitError(f"SKY130 include {path} not found (from {base}); is the PDK install complete?")
    return out


def split_bins(text: str) -> list:
    """A model file as a list of segments in file order: a plain line (str) or a size bin
    (lmin, lmax, wmin, wmax, lines) for each ``.model`` card with its ``+`` continuations."""
    segs, cur = [], None
    for line in text.splitlines():
        s = line.strip().lower()
        if s.startswith(".model"):
            cur = [line]
            segs.append(cur)
        elif cur is not None and s.startswith("+"):
            cur.append(line)
        else:
            cur = None
            segs.append(line)
    out = []
    for seg in segs:
        if isinstance(seg, str):
            out.append(seg)
            continue
        body = "\n".join(seg)
        vals = {k: rx.search(body) for k, rx in _BIN.items()}
        if not all(vals.values()):
            raise ToolkitError(f"SKY130 model {seg[0][:60]!r} lacks lmin/lmax/wmin/wmax")
        out.append((*(float(vals[k].group(1)) for k in ("lmin", "lmax", "wmin", "wmax")), seg))
    return out


def _bins(segs) -> list:
    return [x for x in segs if not isinstance(x, str)]


def _covers(b, w_m, l_m) -> bool:
    # ngspice picks the bin with min <= size < max; eps absorbs the um -> m rounding.
    eps = 1e-12
    return b[0] - eps <= l_m < b[1] - eps and b[2] - eps <= w_m < b[3] - eps


def fingers(bins, w_um: float, l_um: float) -> int:
    """Parallel fingers so each finger's width lies in a bin for this length."""
    l_m = l_um * 1e-6
    wmax = max((b[3] for b in bins if b[0] - 1e-12 <= l_m < b[1] - 1e-12), default=None)
    if wmax is None:
        raise ToolkitError(f"no SKY130 bin covers l={l_um} um")
    return max(1, math.floor(w_um * 1e-6 / wmax + 1 - 1e-9))  # each finger < wmax


class Sky130Process(Process):
    """Process with the PDK's models; frozen dataclass fields plus parsed PDK text."""

    def __init__(self, root: Path):
        lines = _lib_section(root / LIB_FILE, CORNER)
        models: dict = {}
        params = _expand(lines, root, models)
        missing = [d for d in DEVICES.values() if d not in models]
        if missing:
            raise ToolkitError(f"SKY130 typical corner under {root} does not include {missing}")
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_segs", {d: split_bins(p.read_text(errors="replace"))
                                           for d, p in models.items()})
        super().__init__(name="sky130", description=f"SKY130 {CORNER} (nfet/pfet_01v8), 1.8 V",
                         vdd=1.8, cl=1e-12, ldiff=LDIFF_UM, nmos=DEVICES["nmos"], pmos=DEVICES["pmos"],
                         model_text="")

    def model_lines(self, design: dict, opamp: str) -> list[str]:
        sizes = device_sizes(design)
        out = []
        for line in self._params:
            if not line.startswith("*@models "):
                out.append(line)
                continue
            device = line.split()[1]
            kind = "nmos" if device == DEVICES["nmos"] else "pmos"
            segs = self._segs[device]
            need = [(w / fingers(_bins(segs), w, l) * 1e-6, l * 1e-6) for w, l in sizes[kind]]
            for seg in segs:
                if isinstance(seg, str):
                    out.append(seg)
                elif any(_covers(seg, w_m, l_m) for w_m, l_m in need):
                    out += seg[4]
        return out

    def mos_line(self, name, d, g, s, b, kind, w, l) -> str:
        device = DEVICES[kind]
        m = fingers(_bins(self._segs[device]), w, l)
        wf = w / m
        area, perim = wf * self.ldiff, 2 * (wf + self.ldiff)  # um^2, um (scale=1u)
        return (f"x{name} {d} {g} {s} {b} {device} w={wf:.6g} l={l:.6g} mult={m} "
                f"ad={area:.6g} as={area:.6g} pd={perim:.6g} ps={perim:.6g}")


def process(pdk_path=None) -> Sky130Process:
    """The SKY130 process, parsed once per PDK folder per process."""
    return _cached(find_pdk(pdk_path).resolve())


@functools.lru_cache(maxsize=4)
def _cached(root: Path) -> Sky130Process:
    return Sky130Process(root)
