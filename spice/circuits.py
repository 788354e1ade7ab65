"""Netlists: an op-amp from its circuit file as a subcircuit, and the two testbenches that
measure every metric of any op-amp with ports ``inp inn out vdd gnd``.

Circuits are files (``spice.circuit_file``): the shipped ones are ``library/circuits/*.toml``; any
``.toml`` path works wherever a circuit name does.  The shipped feature columns and units:
  5t_opamp        w1,w2,w3,l1,l2,l3 (um), ibias (A)
  two_stage_opamp w1..w5, l1..l5 (um), cc (F), cr (ohm), ibias (A)

Devices (the same names in both circuits, so operating-point checks can address them):
  m1/m2  NMOS input pair (w1/l1); m2 is on the output side of the first stage
  m3/m4  PMOS current-mirror load (w2/l2); m3 diode-connected, m4 on the output side
  m5     NMOS tail (w3/l3), mirrored 1:1 from the diode m6 (w3/l3) that carries ibias
  m7     PMOS common-source second stage (w4/l4)          [two_stage_opamp only]
  m8     NMOS current sink (w5/l5), mirrored from m6       [two_stage_opamp only]
  rc+cc  Miller compensation, cr in series with cc, first-stage output -> out

Two testbenches (bench version BENCH_VERSION, recorded in every generated meta.json):
  AC netlist, three copies of the op-amp and no element beyond its real size:
    xrep replica: a unity-gain buffer at the input common mode vcm, with its own supply source
         (vddrep).  It only sets DC levels: no AC source reaches it, so its AC solution is zero.
    xdm  differential gain: inp = vcm + vd/2 and inn = v(out_rep) - vd/2 with vd = AC 1, both
         through ideal VCVSs from one source (vdmsig), so ``tf v(out_dm) vdmsig`` gives Adm at DC.
         At DC its inputs equal the replica's, so its operating point is the replica's: a design
         with systematic offset sits where it would in unity feedback, never at a rail.
    xcm  common-mode gain: inp = vcm + vc, inn = v(out_rep) + vc, vc = AC 1 (source vcmsig).
    Both inputs are driven (balanced): single-ended drive gives Adm +- Acm/2.  The previous bench
    (1e12 H / 1e12 F elements closing a DC loop) was ill-conditioned and mis-measured cmrr.
  Transient netlist: xbuf, a unity-gain buffer driven by a fast step vlo -> vhi (slew rate).
"""
from functools import lru_cache
from pathlib import Path

from core.errors import ToolkitError
from spice.circuit_file import Circuit, load_circuit
from spice.processes import Process

LIBRARY = Path(__file__).resolve().parent / "library" / "circuits"   # the shipped circuit files
BUILTINS = tuple(sorted(p.stem for p in LIBRARY.glob("*.toml")))


@lru_cache(maxsize=64)
def _load(path: str) -> Circuit:
    return load_circuit(path)


def circuit(opamp) -> Circuit:
    """The Circuit for a built-in name ("5t_opamp", "two_stage_opamp"), a .toml path, or a Circuit."""
    if isinstance(opamp, Circuit):
        return opamp
    if isinstance(opamp, str) and opamp in BUILTINS:
        return _load(str(LIBRARY / f"{opamp}.toml"))
    if isinstance(opamp, (str, Path)) and str(opamp).endswith(".toml"):
        return _load(str(Path(opamp).resolve()))
    raise ToolkitError(f"unknown opamp {opamp!r}: expected one of {list(BUILTINS)} or a circuit file (.toml); "
                       f"see docs/SPICE.md 'Your own circuit'")


# The shipped circuits' feature columns, read from their files.
FEATURES = {name: circuit(name).features for name in BUILTINS}
OPAMPS = tuple(FEATURES)

BENCH_VERSION = 2  # 1: 1e12 H / 1e12 F DC loop, + input driven alone; 2: replica + balanced drive
STEP_DELAY = 1e-9  # s: buffer step starts here ...
STEP_RISE = 1e-9   # s: ... and rises this fast (faster than any design here can slew)


# The op-amp copy whose operating point is reported (every copy in the AC netlist shares it).
OP_INSTANCE = "xrep"
OP_SUPPLY = "vddrep"


def opamp_subckt(opamp, design: dict, process: Process) -> list[str]:
    """The op-amp as ``.subckt opamp inp inn out vdd gnd`` (inp = non-inverting input)."""
    return circuit(opamp).subckt(design, process.mos_line)


def _header(opamp, design, process, model_lines, what) -> list[str]:
    lines = [f"* {circuit(opamp).name} process {process.name}: {what}"]
    lines += model_lines if model_lines is not None else process.model_lines(design, opamp)
    lines += opamp_subckt(opamp, design, process)
    lines.append(f"vdd vdd 0 dc {process.vdd}")
    if process.temp is not None:          # a run condition (spice.conditions); absent: nominal, as before
        lines.append(f".temp {process.temp:g}")
    return lines


def ac_testbench(opamp: str, design: dict, process: Process, *, model_lines=None) -> list[str]:
    """Netlist (lines, ending in .end): the replica xrep and the xdm / xcm copies (see module doc).

    Signal sources: vdmsig (differential, AC 1) and vcmsig (common mode, AC 1), both 0 V at DC,
    so the same netlist serves ``ac`` sweeps and ``tf`` at DC.  Supply current of one op-amp:
    -i(vddrep)."""
    vcm = process.vcm
    return _header(opamp, design, process, model_lines, "AC (replica, differential and common mode)") + [
        f"vddrep vdd_rep 0 dc {process.vdd}",
        "xrep in_rep out_rep out_rep vdd_rep 0 opamp",
        f"vrep in_rep 0 dc {vcm}",
        f"vcmref cmref 0 dc {vcm}",
        "vdmsig dmsig 0 dc 0 ac 1",
        "edmp inp_dm cmref dmsig 0 0.5",
        "edmn inn_dm out_rep dmsig 0 -0.5",
        "xdm inp_dm inn_dm out_dm vdd 0 opamp",
        f"cldm out_dm 0 {process.cl:g}",
        "vcmsig cmsig 0 dc 0 ac 1",
        "ecmp inp_cm cmref cmsig 0 1",
        "ecmn inn_cm out_rep cmsig 0 1",
        "xcm inp_cm inn_cm out_cm vdd 0 opamp",
        f"clcm out_cm 0 {process.cl:g}",
        ".end",
    ]


def tran_testbench(opamp: str, design: dict, process: Process, *, model_lines=None) -> list[str]:
    """Netlist with the xbuf copy only: the transient is the costly analysis, so it solves
    one op-amp instead of three (measured 3x faster than one netlist holding all copies)."""
    vlo, vhi = process.step
    period = 1.0  # s: far beyond any transient we run, so the pulse never falls
    return _header(opamp, design, process, model_lines, "slew transient (unity-gain buffer)") + [
        "xbuf inp_tr out_tr out_tr vdd 0 opamp",
        f"vtr inp_tr 0 dc {vlo} pulse({vlo} {vhi} {STEP_DELAY:g} {STEP_RISE:g} {STEP_RISE:g} {period:g} {2 * period:g})",
        f"cltr out_tr 0 {process.cl:g}",
        ".end",
    ]
