"""Operating point of a design: per-device quantities and the supply current, from the replica.

The AC netlist's replica ``xrep`` is the op-amp as a unity-gain buffer at the input common mode,
powered by its own source, so its DC solution is the op-amp's operating point (the xdm / xcm
copies share it) and -i(vddrep) is one op-amp's supply current.

Columns (``op_columns``), all magnitudes so NMOS and PMOS read alike:
  supply_current  A, into the op-amp from VDD (bias branch included)
  power           W, vdd * supply_current
  <dev>_id        A, |drain current|          <dev>_gm, <dev>_gds   S
  <dev>_vgs, <dev>_vds, <dev>_vth, <dev>_vdsat   V, magnitudes
  <dev>_region    "saturation" (|vgs| > |vth| and |vds| >= |vdsat|), "triode" (|vgs| > |vth|,
                  |vds| < |vdsat|) or "subthreshold" (|vgs| <= |vth|)
"""
import numpy as np

from spice.circuits import OP_INSTANCE, OP_SUPPLY, circuit

PARAMS = ("id", "gm", "gds", "vgs", "vds", "vth", "vdsat")
SATURATION, TRIODE, SUBTHRESHOLD = "saturation", "triode", "subthreshold"


def op_columns(opamp: str) -> list[str]:
    """The columns ``simulate(..., op=True)`` adds, in order."""
    cols = ["supply_current", "power"]
    for dev in circuit(opamp).devices:
        cols += [f"{dev}_{p}" for p in PARAMS] + [f"{dev}_region"]
    return cols


def op_vectors(opamp: str, process) -> dict[str, str]:
    """{column: ngspice vector name} for every numeric quantity read from the simulator."""
    vecs = {"supply_current": f"i({OP_SUPPLY})"}
    for dev, kind in circuit(opamp).devices.items():
        for p in PARAMS:
            vecs[f"{dev}_{p}"] = process.op_vector(f"{OP_INSTANCE}.{dev}", kind, p)
    return vecs


def region(vgs: float, vds: float, vth: float, vdsat: float) -> str:
    """Region from magnitudes (see module doc); thresholds as BSIM4 reports them."""
    if vgs <= vth:
        return SUBTHRESHOLD
    return SATURATION if vds >= vdsat else TRIODE


def op_row(opamp: str, raw: dict, vdd: float) -> dict:
    """One output row from the raw simulator values (signed, as ngspice reports them)."""
    row = {k: abs(float(v)) for k, v in raw.items()}
    row["power"] = vdd * row["supply_current"]
    for dev in circuit(opamp).devices:
        row[f"{dev}_region"] = region(*(row[f"{dev}_{p}"] for p in ("vgs", "vds", "vth", "vdsat")))
    return row


def empty_row(opamp: str) -> dict:
    """The op columns of a design whose operating point was not found."""
    return {c: (None if c.endswith("_region") else np.nan) for c in op_columns(opamp)}
