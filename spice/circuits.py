"""Netlists: the two op-amps as subcircuits and the two testbenches that measure all metrics.

Feature columns (the dataset's inputs) and their units:
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
from spice.processes import Process

FEATURES = {
    "5t_opamp": ["w1", "w2", "w3", "l1", "l2", "l3", "ibias"],
    "two_stage_opamp": ["w1", "w2", "w3", "w4", "w5", "l1", "l2", "l3", "l4", "l5", "cc", "cr", "ibias"],
}
OPAMPS = tuple(FEATURES)

BENCH_VERSION = 2  # 1: 1e12 H / 1e12 F DC loop, + input driven alone; 2: replica + balanced drive
STEP_DELAY = 1e-9  # s: buffer step starts here ...
STEP_RISE = 1e-9   # s: ... and rises this fast (faster than any design here can slew)


# Every transistor of each op-amp and its type (operating-point outputs address them by name).
_FIRST_STAGE = {"m1": "nmos", "m2": "nmos", "m3": "pmos", "m4": "pmos", "m5": "nmos", "m6": "nmos"}
DEVICES = {"5t_opamp": _FIRST_STAGE, "two_stage_opamp": {**_FIRST_STAGE, "m7": "pmos", "m8": "nmos"}}
# The op-amp copy whose operating point is reported (every copy in the AC netlist shares it).
OP_INSTANCE = "xrep"
OP_SUPPLY = "vddrep"

# Which (w, l) feature pair sizes which device type; SKY130 loads only the bins these need.
DEVICE_SIZES = {"nmos": [("w1", "l1"), ("w3", "l3"), ("w5", "l5")], "pmos": [("w2", "l2"), ("w4", "l4")]}


def device_sizes(design: dict) -> dict[str, list[tuple[float, float]]]:
    """{"nmos": [(w, l), ...], "pmos": [...]} in um for the pairs this design has."""
    return {kind: [(design[w], design[l]) for w, l in pairs if w in design]
            for kind, pairs in DEVICE_SIZES.items()}


def _mos(name, d, g, s, b, kind, w, l, process: Process) -> str:
    return process.mos_line(name, d, g, s, b, kind, w, l)


def opamp_subckt(opamp: str, design: dict, process: Process) -> list[str]:
    """The op-amp as ``.subckt opamp inp inn out vdd gnd`` (inp = non-inverting input)."""
    d, n, p = design, "nmos", "pmos"
    if opamp == "5t_opamp":
        # The first stage is non-inverting from m1's gate, so m1 takes the + input.
        g1, g2 = "inp", "inn"
        o1 = "out"
    elif opamp == "two_stage_opamp":
        # The PMOS second stage inverts, so the + input goes to m2 (first-stage output side).
        g1, g2 = "inn", "inp"
        o1 = "o1"
    else:
        raise ValueError(f"unknown opamp {opamp!r}")
    lines = [
        ".subckt opamp inp inn out vdd gnd",
        f"ib vdd nb dc {d['ibias']:.6g}",
        _mos("m6", "nb", "nb", "gnd", "gnd", n, d["w3"], d["l3"], process),
        _mos("m5", "tail", "nb", "gnd", "gnd", n, d["w3"], d["l3"], process),
        _mos("m1", "x", g1, "tail", "gnd", n, d["w1"], d["l1"], process),
        _mos("m2", o1, g2, "tail", "gnd", n, d["w1"], d["l1"], process),
        _mos("m3", "x", "x", "vdd", "vdd", p, d["w2"], d["l2"], process),
        _mos("m4", o1, "x", "vdd", "vdd", p, d["w2"], d["l2"], process),
    ]
    if opamp == "two_stage_opamp":
        lines += [
            _mos("m7", "out", "o1", "vdd", "vdd", p, d["w4"], d["l4"], process),
            _mos("m8", "out", "nb", "gnd", "gnd", n, d["w5"], d["l5"], process),
            f"rc o1 cx {d['cr']:.6g}",
            f"cc cx out {d['cc']:.6g}",
        ]
    lines.append(".ends opamp")
    return lines


def _header(opamp, design, process, model_lines, what) -> list[str]:
    lines = [f"* {opamp} process {process.name}: {what}"]
    lines += model_lines if model_lines is not None else process.model_lines(design, opamp)
    lines += opamp_subckt(opamp, design, process)
    lines.append(f"vdd vdd 0 dc {process.vdd}")
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
