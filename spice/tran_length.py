"""How long the slew transient must run for one design.

The length adapts to each design: second-stage currents can be ~1000x below ibias, so one fixed
window is either far too long for fast designs or too short for slow ones.  The estimate takes
the slowest plausible slewing (the circuit file's ``slew_time``: current into the capacitance
it must charge) plus linear settling
of ~20 time constants of the loop (1 / (2 pi ugf), known from the AC sweep that runs first).
"""
import math

from spice.circuits import circuit

SLEW_MARGIN = 3.0      # x the estimated slewing time
SETTLE_TAUS = 20.0     # x 1/(2 pi ugf)
POINTS = 300           # output points and max time step = tstop / POINTS
RETRY_FACTOR = 8.0     # one retry this much longer when the step did not complete


def estimate_tstop(opamp, design: dict, cl: float, dv: float, ugf: float) -> float:
    """Transient length (s): SLEW_MARGIN x the circuit file's ``slew_time`` + settling."""
    c = circuit(opamp)
    slew_time = c.evaluate(c.slew_time, design, cl=cl, dv=dv)
    return SLEW_MARGIN * slew_time + SETTLE_TAUS / (2 * math.pi * ugf)
