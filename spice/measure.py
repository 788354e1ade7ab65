"""The five metrics, computed from simulator vectors (pure NumPy, testable without ngspice).

Definitions (also in docs/SPICE.md).  Adm is the differential gain with both inputs driven
(+vd/2, -vd/2) and the common mode held; Acm the gain with both inputs driven together; both
from the AC bench of ``spice.circuits`` (sweep ``spice.batch.AC_CMD``, from F_START = 1 mHz):
  dc_gain       |Adm| at the lowest AC frequency (F_START), linear V/V
  ugf           first frequency where |Adm| falls through 1, log-log interpolated (Hz)
  phase_margin  180 + phase(Adm) at ugf, phase unwrapped from ~0 deg at F_START (deg; < 0 = unstable)
  cmrr          |Adm| / |Acm| at F_START, linear
  cmrr_sign     sign of Re(Adm / Acm) at F_START (+1 / -1): Acm passes through zero inside a design space
                (the tail's and the mirror's common-mode paths cancel), so |Adm/Acm| spikes there while the
                signed ratio Acm/Adm stays smooth; ``spice.generate`` writes it to metric_signs.csv
  slewrate_pos  unity-gain buffer, input step vlo -> vhi (dV = vhi - vlo): the output's first
                crossings of v0 + 0.2 dV and v0 + 0.8 dV (v0 = output before the step) give
                0.6 dV / (t80 - t20), V/s.  First crossings of fixed fractions of the *input*
                step stay defined on ringing buffers, where a 20-80 % of the settled value does not.
"""
import numpy as np

METRICS = ["slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"]
METRIC_UNITS = {"slewrate_pos": "V/s", "dc_gain": "V/V", "ugf": "Hz", "phase_margin": "deg", "cmrr": "V/V"}
# operating-point quantities a dataset may carry as metrics too (spice.generate --power): units for spec files
OP_METRIC_UNITS = {"power": "W", "supply_current": "A"}
# Metrics that are the magnitude of a ratio whose sign the simulator also records (column <metric>_sign).
SIGNED_METRICS = ["cmrr"]
SIGN_SUFFIX = "_sign"


def sign_column(metric: str) -> str:
    """The column holding the sign of a ratio ``metric`` (simulator output, the active loop's ledger)."""
    return metric + SIGN_SUFFIX


SIGN_COLUMNS = [sign_column(m) for m in SIGNED_METRICS]

# Status values a design can get.  Only "ok" rows go into the training files.
OK = "ok"
NONCONVERGENCE = "nonconvergence"      # an analysis aborted (no DC solution, time step too small)
NO_UGF = "no_ugf"                      # |Adm| never falls through 1 (or starts below 1)
INCOMPLETE_STEP = "incomplete_step"    # the buffer output never reached 80 % of the step
SIM_ERROR = "sim_error"                # the netlist was rejected or a vector was missing
STATUSES = (OK, NONCONVERGENCE, NO_UGF, INCOMPLETE_STEP, SIM_ERROR)

SLEW_LO, SLEW_HI = 0.2, 0.8


def ac_metrics(freq, adm, acm) -> tuple[dict, str]:
    """dc_gain, ugf, phase_margin, cmrr from the AC sweeps; (metrics, status)."""
    freq, adm, acm = np.asarray(freq, float), np.asarray(adm), np.asarray(acm)
    mag = np.abs(adm)
    out = {"dc_gain": float(mag[0]), "cmrr": float(mag[0] / max(abs(acm[0]), 1e-300)),
           "cmrr_sign": 1.0 if (adm[0] * np.conj(acm[0])).real >= 0 else -1.0}
    below = np.nonzero(mag < 1.0)[0]
    if mag[0] <= 1.0 or below.size == 0:
        return out, NO_UGF
    k = int(below[0])  # first point below unity; k-1 is above
    lf, lm = np.log10(freq[k - 1:k + 1]), np.log10(mag[k - 1:k + 1])
    frac = (0.0 - lm[0]) / (lm[1] - lm[0])
    ugf_log = lf[0] + frac * (lf[1] - lf[0])
    phase = np.degrees(np.unwrap(np.angle(adm)))
    phase -= 360.0 * np.round(phase[0] / 360.0)  # start near 0 deg, not +-360
    ph = phase[k - 1] + frac * (phase[k] - phase[k - 1])
    out["ugf"] = float(10 ** ugf_log)
    out["phase_margin"] = float(180.0 + ph)
    return out, OK


def first_crossing(t, v, level) -> float | None:
    """Time of the first upward crossing of ``level`` (linear interpolation), or None."""
    idx = np.nonzero(v >= level)[0]
    if idx.size == 0:
        return None
    k = int(idx[0])
    if k == 0:
        return float(t[0])
    return float(t[k - 1] + (level - v[k - 1]) * (t[k] - t[k - 1]) / (v[k] - v[k - 1]))


def slew_rate(t, vout, dv) -> float | None:
    """Positive slew rate (V/s) from a step response; None if the output never reached 80 %."""
    t, vout = np.asarray(t, float), np.asarray(vout, float)
    v0 = vout[0]
    t_lo = first_crossing(t, vout, v0 + SLEW_LO * dv)
    t_hi = first_crossing(t, vout, v0 + SLEW_HI * dv)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    return float((SLEW_HI - SLEW_LO) * dv / (t_hi - t_lo))
