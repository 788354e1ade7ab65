"""``simulate(opamp, designs, process)``: the five metrics and a status per design
(``op=True`` adds the operating point: supply current, power, per-device quantities).

This is the API other stages call (inverse design verifies its candidates here).  It runs in the
calling process with its own ngspice instance (libngspice through ctypes), or falls back to one
``ngspice -b`` process per design when the shared library is not installed.
"""
import functools
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ToolkitError
from spice import batch, measure
from spice import conditions as conditions_mod
from spice import operating_point
from spice.circuits import ac_testbench, circuit, tran_testbench
from spice.measure import INCOMPLETE_STEP, METRICS, NONCONVERGENCE, OK, SIGN_COLUMNS, SIM_ERROR
from spice.processes import PROCESSES, load_process
from spice.shared_lib import engine
from spice.tran_length import POINTS, RETRY_FACTOR, SETTLE_TAUS, estimate_tstop

AC_CMD = batch.AC_CMD
BACKENDS = ("auto", "shared", "batch")
# One ngspice instance per process is not thread-safe: threads (e.g. a Dask worker with several
# threads) take turns.  Processes, one per core, are the way to run in parallel.
_LOCK = threading.Lock()
INSTALL_HINT = "install it with `sudo apt-get install ngspice libngspice0` (see docs/SPICE.md)"


def resolve_process(process, *, pdk_path=None):
    """The Process for "A", "B", "sky130" (parsed once per PDK folder) or a process file (.toml)."""
    if process in PROCESSES:
        return PROCESSES[process]
    if process == "sky130":
        from spice import sky130
        return sky130.process(pdk_path)
    if str(process).endswith(".toml"):
        return _process_file(str(Path(process).resolve()))
    raise ToolkitError(f"unknown process {process!r}: expected one of {sorted(PROCESSES) + ['sky130']} "
                       f"or a process file (.toml; docs/SPICE.md 'Your own process')")


@functools.lru_cache(maxsize=16)
def _process_file(path: str):
    return load_process(path)


def _designs_frame(opamp, designs) -> pd.DataFrame:
    c = circuit(opamp)
    if isinstance(designs, dict):
        designs = [designs]
    df = pd.DataFrame(designs)
    cols = c.features
    missing = [k for k in cols if k not in df.columns]
    if missing:
        units = ", ".join(f"{k} in {v.unit or '1'}" for k, v in c.variables.items())
        raise ToolkitError(f"{c.name} designs lack columns {missing}: expected exactly {cols} "
                           f"({units}), got {list(df.columns)}")
    x = df[cols].apply(pd.to_numeric, errors="coerce")
    # Only finiteness here: a variable may be signed (an offset voltage), and a size or current with the
    # wrong sign or unit is caught by the declared range below, which names the range and the file.
    finite = np.isfinite(x.to_numpy(float))
    bad = ~finite.all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        col = cols[int(np.argmax(~finite[i]))]
        v = df[col].iloc[i]
        shown = repr(v) if isinstance(v, str) else str(v)     # 'abc' quoted; nan, inf, None bare
        raise ToolkitError(f"{c.name}: {int(bad.sum())} design(s) have missing, non-numeric or infinite values "
                           f"(first: design {i + 1}, {col} = {shown}); expected a finite number for every "
                           f"feature {cols}; fix or drop those rows")
    # Outside the declared space is refused, never clamped: it is most often a unit slip.  Every variable that is
    # named at once, so a file with several slips is fixed in one go.
    outside = {k: _outside(x[k], (v.lo, v.hi)).to_numpy() for k, v in c.variables.items()}
    slips = [(k, out) for k, out in outside.items() if out.any()]
    if slips:
        rows = np.any([out for _, out in slips], axis=0)
        what = "; ".join(f"{k} in {int(out.sum())} (declared [{c.variables[k].lo:g}, {c.variables[k].hi:g}] "
                         f"{c.variables[k].unit}; first: design {int(np.argmax(out)) + 1}, {k} = "
                         f"{x[k].iloc[int(np.argmax(out))]:g})" for k, out in slips)
        raise ToolkitError(f"{c.name}: {int(rows.sum())} of {len(x)} design(s) lie outside the declared ranges: "
                           f"{what}; check the units, or widen the range in {c.path}")
    return x


def _limits(proc) -> dict:
    """{"w" | "l": (process-file key, (lo, hi) in um)} for the limits the process sets."""
    return {dim: (key, rng) for dim, key, rng in (("w", "w_range", proc.w_range), ("l", "l_range", proc.l_range))
            if rng is not None}


def _outside(v, rng):
    """``v`` (a number or an array) outside [lo, hi], with a relative float tolerance that also holds for a
    signed bound (an offset voltage's negative lo)."""
    lo, hi = rng
    return (v < lo - 1e-9 * abs(lo)) | (v > hi + 1e-9 * abs(hi))


def check_sizes(opamp, x: pd.DataFrame, proc) -> None:
    """Refuse designs with a transistor outside the process file's ``w_range`` / ``l_range`` (um): one
    line naming the process file, the key, the device and its size."""
    c = circuit(opamp)
    for dim, (key, rng) in _limits(proc).items():
        for m in c.mosfets:
            size = getattr(m, dim)     # a design variable's name, or a number fixed in the netlist
            v = x[size].to_numpy(float) if isinstance(size, str) else np.full(len(x), float(size))
            out = _outside(v, rng)
            if out.any():
                i = int(np.argmax(out))
                what = f"{{{size}}}" if isinstance(size, str) else "fixed in the netlist"
                raise ToolkitError(f"{proc.path or proc.name}: {key} [{rng[0]:g}, {rng[1]:g}] um refuses "
                                   f"{int(out.sum())} design(s) of {c.name}: device {m.name} {dim} = {v[i]:g} um "
                                   f"({what}; first: design {i + 1}); give sizes inside {key}, or widen it in "
                                   f"the process file")


def check_designs(opamp, designs: pd.DataFrame, proc) -> pd.DataFrame:
    """What ``simulate`` refuses, checked for a whole set of designs before any is simulated: the circuit's
    variables present and finite, inside its declared ranges, transistor sizes inside the process's ranges."""
    x = _designs_frame(opamp, designs)
    check_sizes(opamp, x, proc)
    return x


SLEW_CHECK_DESIGNS = 16   # designs of the space the circuit file's slew_time is evaluated on before any simulation


def check_design_space(opamp, proc) -> None:
    """Refuse a circuit whose declared sizes reach outside the process's ``w_range`` / ``l_range`` (or are not
    positive), or whose ``slew_time`` is not a positive time: the generator draws anywhere in the declared ranges,
    so such a run would fail part-way (or every design as "nonconvergence") instead of now."""
    c = circuit(opamp)
    for m in c.mosfets:
        for dim in ("w", "l"):
            size = getattr(m, dim)
            lo = c.variables[size].lo if isinstance(size, str) else size
            if not lo > 0:
                what = f"{{{size}}} down to " if isinstance(size, str) else ""
                raise ToolkitError(f"{c.path}: device {m.name} {dim} = {what}{lo:g} um: a transistor's {dim} must be "
                                   f"> 0. Fix the netlist or that variable's range in the circuit file.")
    _check_slew_time(c, proc)
    for dim, (key, rng) in _limits(proc).items():
        for m in c.mosfets:
            size = getattr(m, dim)
            lo, hi = (c.variables[size].lo, c.variables[size].hi) if isinstance(size, str) else (size, size)
            if _outside(lo, rng) or _outside(hi, rng):
                what = f"{{{size}}} in [{lo:g}, {hi:g}] um" if isinstance(size, str) else f"{lo:g} um"
                raise ToolkitError(f"{proc.path or proc.name}: {key} [{rng[0]:g}, {rng[1]:g}] um: expected every "
                                   f"{dim} of {c.path} inside it, got device {m.name} {dim} = {what}; narrow that "
                                   f"range in the circuit file, or widen {key} in the process file")


def netlist_errors(opamp, design: dict, process: str = "A", *, pdk_path=None, conditions=None) -> list[str]:
    """What ngspice says when it parses the AC netlist of one design ([] when it accepts it, or
    when only ``ngspice -b`` is installed): lets a new circuit file fail with ngspice's words."""
    proc = conditions_mod.apply(resolve_process(process, pdk_path=pdk_path), conditions, pdk_path=pdk_path)
    eng = engine()
    if eng is None:
        return []
    with _LOCK:
        eng.load(ac_testbench(opamp, design, proc))
        return list(eng.errors)


def _finish(m: dict, status: str, op: dict | None = None) -> dict:
    """One output row; a failed design keeps no partial metrics (NaN), only its status.
    ``op`` (the operating-point columns) is kept whenever the operating point was solved."""
    keep = status == OK
    return {**{k: m[k] if keep else np.nan for k in METRICS + SIGN_COLUMNS}, "status": status, **(op or {})}


def _read_op(eng, opamp, proc) -> dict | None:
    raw = {}
    for col, name in operating_point.op_vectors(opamp, proc).items():
        v = eng.vector(name)
        if v is None or not len(v):
            return None
        raw[col] = v.real[0]
    return operating_point.op_row(opamp, raw, proc.vdd)


def _one_shared(eng, opamp, design, proc, want_op: bool) -> dict:
    model_lines = proc.model_lines(design, opamp)
    ac_net = ac_testbench(opamp, design, proc, model_lines=model_lines)
    op = empty = operating_point.empty_row(opamp) if want_op else None
    if want_op:
        # Only saved vectors exist after an analysis once any .save is given: keep the AC outputs.
        vecs = " ".join(operating_point.op_vectors(opamp, proc).values())
        ac_net = ac_net[:-1] + [f".save v(out_dm) v(out_cm) {vecs}", ".end"]
    eng.load(ac_net)
    if eng.errors:
        return _finish({}, SIM_ERROR, op)
    if want_op:
        if not eng.run("op"):
            return _finish({}, NONCONVERGENCE, op)
        op = _read_op(eng, opamp, proc)
        if op is None:
            return _finish({}, SIM_ERROR, empty)
    if not eng.run(AC_CMD):
        return _finish({}, NONCONVERGENCE, op)
    freq, adm, acm = eng.vector("frequency"), eng.vector("out_dm"), eng.vector("out_cm")
    if freq is None or adm is None or acm is None:
        return _finish({}, SIM_ERROR, op)
    m, status = measure.ac_metrics(freq.real, adm, acm)
    if status != OK:
        return _finish(m, status, op)
    vlo, vhi = proc.step
    tstop = estimate_tstop(opamp, design, proc.cl, vhi - vlo, m["ugf"])
    eng.load(tran_testbench(opamp, design, proc, model_lines=model_lines))
    for _ in range(2):
        dt = tstop / POINTS
        if not eng.run(f"tran {dt:.6e} {tstop:.6e} 0 {dt:.6e}"):
            return _finish(m, NONCONVERGENCE, op)
        t, v = eng.vector("time"), eng.vector("out_tr")
        if t is None or v is None or t[-1] < 0.999 * tstop:
            return _finish(m, NONCONVERGENCE, op)
        sr = measure.slew_rate(t, v, vhi - vlo)
        if sr is not None:
            m["slewrate_pos"] = sr
            return _finish(m, OK, op)
        tstop *= RETRY_FACTOR
    return _finish(m, INCOMPLETE_STEP, op)


def _one_batch(exe, opamp, design, proc, want_op: bool) -> dict:
    model_lines = proc.model_lines(design, opamp)
    lines = (ac_testbench(opamp, design, proc, model_lines=model_lines),
             tran_testbench(opamp, design, proc, model_lines=model_lines))
    vlo, vhi = proc.step
    # The slewing part of the length; ngspice adds the settling part once it knows the ugf.
    slew_part = estimate_tstop(opamp, design, proc.cl, vhi - vlo, ugf=float("inf"))
    op_vecs = operating_point.op_vectors(opamp, proc) if want_op else None
    r = batch.run_design(exe, lines, slew_time=slew_part, settle_taus=SETTLE_TAUS, points=POINTS,
                         op_vectors=op_vecs)
    op = None
    if want_op:
        op = (operating_point.op_row(opamp, r["op"], proc.vdd) if "op" in r
              else operating_point.empty_row(opamp))
    if "adm" not in r:
        return _finish({}, NONCONVERGENCE, op)
    m, status = measure.ac_metrics(r["freq"], r["adm"], r["acm"])
    if status != OK:
        return _finish(m, status, op)
    tstop = estimate_tstop(opamp, design, proc.cl, vhi - vlo, m["ugf"])
    for attempt in range(2):
        if attempt:
            r = batch.run_design(exe, lines, slew_time=0, settle_taus=0, points=POINTS,
                                 tran_only_tstop=tstop)
        if "vout" not in r:
            return _finish(m, NONCONVERGENCE, op)
        sr = measure.slew_rate(r["t"], r["vout"], vhi - vlo)
        if sr is not None:
            m["slewrate_pos"] = sr
            return _finish(m, OK, op)
        tstop = r["t"][-1] * RETRY_FACTOR
    return _finish(m, INCOMPLETE_STEP, op)


def simulate(opamp, designs, process: str = "A", *, backend: str = "auto",
             pdk_path=None, op: bool = False, temp=None, vdd=None, corner=None) -> pd.DataFrame:
    """Simulate designs of ``opamp`` in ``process`` ("A", "B" or "sky130").

    opamp: a built-in circuit name, a circuit file (.toml, see ``spice.circuit_file``) or a Circuit.
    designs: a DataFrame, a list of dicts or one dict with the circuit's design variables as
    columns, in the units its file declares (shipped: w*, l* in um; cc in F; cr in ohm; ibias in A).  Returns a DataFrame with the same index
    and columns slewrate_pos (V/s), dc_gain (V/V), ugf (Hz), phase_margin (deg), cmrr (V/V)
    and status ("ok" or a failure reason; failed rows have NaN metrics), plus cmrr_sign (+1 / -1: the sign of
    Re(Adm/Acm), ``spice.measure``) after the metrics.
    backend: "shared" (libngspice in this process), "batch" (ngspice -b per design) or
    "auto" (shared when available, else batch).
    op: also return the operating point (``spice.operating_point.op_columns``: supply_current in
    A, power in W, and per device |id|, gm, gds, |vgs|, |vds|, |vth|, |vdsat| and region), kept
    for failed designs too whenever their operating point was solved.
    temp (C), vdd (V), corner (a .lib section, e.g. "ss" in sky130): run conditions
    (``spice.conditions``); None = the process as it is (27 C, its supply, its typical section).
    Refused, before any simulation: a missing or non-finite feature, a value outside the circuit's
    declared range, a transistor outside the process file's ``w_range`` / ``l_range``.
    """
    if backend not in BACKENDS:
        raise ToolkitError(f"unknown backend {backend!r}: expected one of {BACKENDS}")
    x = _designs_frame(opamp, designs)
    proc = conditions_mod.apply(resolve_process(process, pdk_path=pdk_path), conditions_mod.Conditions(temp, vdd, corner),
                                pdk_path=pdk_path)
    check_sizes(opamp, x, proc)
    eng = engine() if backend in ("auto", "shared") else None
    exe = batch.find_ngspice() if eng is None else None
    if eng is None and backend == "shared":
        raise ToolkitError(f"libngspice (the ngspice shared library) was not found; {INSTALL_HINT}, "
                           f"or set NGSPICE_LIBRARY=/path/to/libngspice.so, or use backend='batch'")
    if eng is None and exe is None:
        raise ToolkitError(f"ngspice is not installed (neither libngspice nor the ngspice "
                           f"executable was found); {INSTALL_HINT}")
    rows = []
    columns = METRICS + SIGN_COLUMNS + ["status"] + (operating_point.op_columns(opamp) if op else [])
    for design in x.to_dict("records"):
        if eng is not None and eng.exited:
            # A fatal ngspice error ended this process's instance (re-init would crash):
            # finish with ngspice -b if we can, else mark the rest as simulator errors.
            eng, exe = None, batch.find_ngspice()
        if eng is None and exe is None:
            rows.append(_finish({}, SIM_ERROR, operating_point.empty_row(opamp) if op else None))
        elif eng is not None:
            with _LOCK:
                rows.append(_one_shared(eng, opamp, design, proc, op))
        else:
            rows.append(_one_batch(exe, opamp, design, proc, op))
    return pd.DataFrame(rows, index=x.index, columns=columns)


def ngspice_version(backend: str = "auto") -> str:
    eng = engine() if backend in ("auto", "shared") else None
    if eng is not None:
        return eng.version
    exe = batch.find_ngspice()
    return batch.version(exe) if exe else "not installed"


def _check_slew_time(c, proc) -> None:
    """The circuit file's ``slew_time`` (s) on the first SLEW_CHECK_DESIGNS designs of its space: a positive, finite
    time, or one line naming the file and the design (a negative one made every transient fail)."""
    from spice.sampling import sample_designs
    vlo, vhi = proc.step
    for _, design in sample_designs(c, 0, 0, SLEW_CHECK_DESIGNS).iterrows():
        t = c.evaluate(c.slew_time, design.to_dict(), cl=proc.cl, dv=vhi - vlo)
        if not (np.isfinite(t) and t > 0):
            raise ToolkitError(f"{c.path}: slew_time = {c.slew_time!r} is {t:g} s for the design "
                               f"{ {k: float(f'{v:.4g}') for k, v in design.items()} }: it must be a positive time "
                               f"(the slowest plausible slewing, e.g. dv * cl / ibias). Fix the expression.")
