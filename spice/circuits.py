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

Two testbenches, three copies of the op-amp (the AC netlist holds the first two):
  xdm  differential gain: + input = vcm + AC 1; the - input follows the output through a huge
       inductor (DC feedback only) and is AC-grounded by a huge capacitor.  Closing the loop at
       DC only keeps random designs with systematic offset out of the rails.
  xcm  common-mode gain: the same, but the huge capacitor goes to the AC source, so both
       inputs carry the same AC signal.
  xbuf unity-gain buffer driven by a fast step vlo -> vhi for the slew-rate transient.
"""
from spice.processes import Process

FEATURES = {
    "5t_opamp": ["w1", "w2", "w3", "l1", "l2", "l3", "ibias"],
    "two_stage_opamp": ["w1", "w2", "w3", "w4", "w5", "l1", "l2", "l3", "l4", "l5", "cc", "cr", "ibias"],
}
OPAMPS = tuple(FEATURES)

HUGE_L = 1e12      # H: DC feedback path, open at every AC frequency we sweep (6e9 ohm at 1 mHz)
HUGE_C = 1e12      # F: AC short, open at DC
STEP_DELAY = 1e-9  # s: buffer step starts here ...
STEP_RISE = 1e-9   # s: ... and rises this fast (faster than any design here can slew)


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
    """Netlist (lines, ending in .end) with the xdm and xcm copies for the AC sweep."""
    return _header(opamp, design, process, model_lines, "AC (differential and common mode)") + [
        "xdm inp_dm inn_dm out_dm vdd 0 opamp",
        f"vdm inp_dm 0 dc {process.vcm} ac 1",
        f"ldm out_dm inn_dm {HUGE_L:g}",
        f"cdm inn_dm 0 {HUGE_C:g}",
        f"cldm out_dm 0 {process.cl:g}",
        "xcm inp_cm inn_cm out_cm vdd 0 opamp",
        f"vcm inp_cm 0 dc {process.vcm} ac 1",
        f"lcm out_cm inn_cm {HUGE_L:g}",
        f"ccm inn_cm inp_cm {HUGE_C:g}",
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
