"""How long the slew transient must run for one design.

The length adapts to each design: second-stage currents can be ~1000x below ibias, so one fixed
window is either far too long for fast designs or too short for slow ones.  The estimate takes
the slowest plausible slewing (current into the capacitance it must charge) plus linear settling
of ~20 time constants of the loop (1 / (2 pi ugf), known from the AC sweep that runs first).
"""
import math

SLEW_MARGIN = 3.0      # x the estimated slewing time
SETTLE_TAUS = 20.0     # x 1/(2 pi ugf)
POINTS = 300           # output points and max time step = tstop / POINTS
RETRY_FACTOR = 8.0     # one retry this much longer when the step did not complete


def estimate_tstop(opamp: str, design: dict, cl: float, dv: float, ugf: float) -> float:
    ibias = design["ibias"]
    if opamp == "two_stage_opamp":
        # m8 sinks ibias * (w5/l5)/(w3/l3); the first stage charges cc with the tail current.
        isink = ibias * (design["w5"] / design["l5"]) / (design["w3"] / design["l3"])
        slew_time = max(dv * design["cc"] / ibias, dv * (cl + design["cc"]) / isink)
    else:
        slew_time = dv * cl / ibias
    return SLEW_MARGIN * slew_time + SETTLE_TAUS / (2 * math.pi * ugf)
