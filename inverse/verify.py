"""Check proposed designs in ngspice (the target process) and compare with the prediction.

    rows = verify_designs("5t_opamp", table, spec, process="B")
    rows = verify_designs("circuits/my_ota.toml", table, spec, process="my_node.toml")   # your own files

For each candidate and metric: predicted, simulated, pass/fail of its goal in SPICE; a
candidate passes when every goal passes (a failed simulation fails every goal).
"""
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ToolkitError
from data_loader.layout import read_meta_file
from inverse.goals import Spec

POWER = "power"   # the metric column the operating point gives (spice.generate --power; OP_METRIC_UNITS)

INSTALL = "install it with `make ngspice` or `sudo apt-get install ngspice libngspice0`"


def ngspice_available() -> bool:
    from spice.batch import find_ngspice
    from spice.shared_lib import find_library
    return find_library() is not None or find_ngspice() is not None


def require_ngspice(needed_by: str = "--verify", otherwise: str = "Or run without --verify.") -> None:
    from spice.shared_lib import check_loadable
    check_loadable()   # a library that is named or found but does not load fails the first simulation
    if not ngspice_available():
        raise ToolkitError(f"{needed_by} needs ngspice, which is not installed; {INSTALL}. {otherwise}".rstrip())


def read_meta(data_dir, opamp: str, domain: str) -> dict:
    """The meta.json ``spice.generate`` wrote for ``<data_dir>/<opamp>/<domain>``; {} without one (an unreadable
    one is refused: ``data_loader.layout.read_meta_file``)."""
    return read_meta_file(Path(data_dir) / opamp / domain / "meta.json")


def simulator_for(data_dir, opamp: str, circuit=None, process=None, *, required: bool = False) -> tuple:
    """(circuit, process) to simulate ``opamp``'s designs with: the flags given, else what the data's meta.json
    recorded (``spice.generate`` writes ``circuit_file`` and ``process`` / ``process_file``; target wins over
    source), else the shipped circuit named ``opamp`` and process B.  ``required``: a circuit must be known
    (the active loop samples its design space); otherwise ``opamp`` itself is returned and
    ``check_circuit_columns`` says what to pass."""
    from spice.circuits import BUILTINS
    target_meta = read_meta(data_dir, opamp, "target")
    meta = {**read_meta(data_dir, opamp, "source"), **target_meta}
    recorded = meta.get("circuit_file")
    check_at = Path(data_dir) / opamp / "target" / "meta.json"
    if circuit is not None:
        if _same_file(circuit, recorded):      # the data's own circuit file, named by the flag: checked the same
            check_circuit_unchanged(circuit, target_meta, check_at, refuse=required)
        if not str(circuit).endswith(".toml") and circuit not in BUILTINS:
            raise ToolkitError(f"--circuit {circuit!r} is neither a shipped circuit {list(BUILTINS)} nor a .toml file.")
        if str(circuit).endswith(".toml") and not Path(circuit).is_file():
            raise ToolkitError(f"--circuit {circuit} not found.")
        if required and recorded and not same_circuit(circuit, recorded):
            # as for --process below: the loop appends its designs to data another circuit made
            print(f"warning: --circuit {circuit}, but the target data in {Path(data_dir) / opamp / 'target'} were "
                  f"simulated with {recorded}: the loop adds {circuit}'s designs to them and scores on their "
                  f"test rows.")
    else:
        if recorded in BUILTINS or (recorded and Path(recorded).is_file()):
            circuit = recorded
            if recorded not in BUILTINS:
                check_circuit_unchanged(recorded, target_meta, check_at, refuse=required)
        elif recorded and required:        # a circuit file, not a shipped name (those took the branch above)
            raise ToolkitError(f"{check_at} names the circuit file {recorded}, which is not there. Fix: restore it, "
                               f"or --circuit FILE.toml.")
        elif opamp in BUILTINS or not required:
            if recorded:   # a circuit file that moved: say so before a later "no circuit" line
                print(f"warning: {check_at} names the circuit file {recorded}, which is not there; using {opamp!r}"
                      f"{'' if opamp in BUILTINS else ' (not a shipped circuit)'}. Fix: restore the file, or "
                      f"--circuit FILE.toml.")
            circuit = opamp
        else:
            raise ToolkitError(f"{Path(data_dir) / opamp} has no design space the loop can sample from (no meta.json "
                               f"naming a circuit, and {opamp!r} is not a shipped circuit). Fix: --circuit "
                               f"FILE.toml (docs/SPICE.md 'Your own circuit').")
    recorded_process = target_meta.get("process_file") or target_meta.get("process")
    if required and process and recorded_process and not same_process(process, recorded_process):
        # the loop appends its designs to the target rows: another process mixes two processes in one data set
        print(f"warning: --process {process}, but the target data in {Path(data_dir) / opamp / 'target'} were "
              f"simulated in {recorded_process}: the loop adds {process}'s designs to them and scores on their "
              f"test rows.")
    process = process or recorded_process or "B"
    if recorded_process and same_process(process, recorded_process):
        check_process_unchanged(process, target_meta, check_at, refuse=required)
    return str(circuit), str(process)


def _same_file(a, b) -> bool:
    """Whether ``a`` and ``b`` are paths of one existing .toml file."""
    return bool(a and b) and all(str(p).endswith(".toml") and Path(p).is_file() for p in (a, b)) \
        and Path(a).resolve() == Path(b).resolve()


def same_circuit(a, b) -> bool:
    """Two circuit names or paths that load one circuit file (a shipped name and its library path are one)."""
    from spice.circuits import circuit as load_circuit
    try:
        return Path(load_circuit(str(a)).path).resolve() == Path(load_circuit(str(b)).path).resolve()
    except ToolkitError:             # a recorded file that is gone: not the one given
        return False


def same_process(a, b) -> bool:
    """Two process names, or two paths of one process file (the data record it absolute, a flag may be relative)."""
    if str(a).endswith(".toml") and str(b).endswith(".toml"):
        return Path(a).resolve() == Path(b).resolve()
    return str(a) == str(b)


def check_circuit_unchanged(path, meta: dict, meta_path: Path, *, refuse: bool) -> None:
    """The circuit file the target data name, as it was when they were generated (the sha256 ``spice.generate``
    records in meta.json's recipe; data made before it are not checked).  Edited since: ``refuse`` (the active
    loop would add the edited circuit's rows to the old ones) or a warning (a verification simulates the edit)."""
    from core.freshness import file_sha256
    want = (meta.get("recipe") or {}).get("circuit_sha256")
    if not want or file_sha256(path) == want:
        return
    _edited(f"{path} changed since the data in {meta_path.parent} were simulated with it ({meta_path} records "
            f"another sha256)", "circuit", refuse)


def check_process_unchanged(process: str, meta: dict, meta_path: Path, *, refuse: bool) -> None:
    """The process file the target data name, and the model library it points to, as they were when the data were
    generated (``spice.generate`` records their sha256 in meta.json's recipe; data made before it are not checked).
    Edited since: ``refuse`` (the active loop would add the edited process's rows to the old ones) or a warning."""
    from spice.generate import process_digests
    if str(process).endswith(".toml") and not Path(process).is_file():
        return                  # a process file that is gone: loading it says so, in its own words
    recipe = meta.get("recipe") or {}
    now = process_digests(str(process))
    changed = [k.replace("_sha256", "") for k in ("process_sha256", "library_sha256")
               if recipe.get(k) and now.get(k) != recipe[k]]
    if not changed:
        return
    what = " and ".join("the process file" if k == "process" else "its model library" for k in changed)
    _edited(f"{what} of {process} changed since the data in {meta_path.parent} were simulated ({meta_path} records "
            f"another sha256)", "process", refuse)


def _edited(text: str, what: str, refuse: bool) -> None:
    """A circuit or process file edited since the data were simulated: ``refuse`` (the active loop would add the
    edited file's rows to the old ones) or a warning (a verification simulates the edit)."""
    if refuse:
        raise ToolkitError(f"{text}: new designs would not match the old ones. Fix: regenerate the data with the "
                           f"edited {what}, or restore the file.")
    print(f"warning: {text}: the simulations check the edited {what}, not the one the model learned.")


def recorded_conditions(data_dir, opamp: str) -> dict:
    """The run conditions (temp, vdd, corner) ``spice.generate`` recorded for the target data, checked
    (``spice.conditions.Conditions``); {} when nominal or not recorded."""
    from spice.conditions import Conditions
    recorded = read_meta(data_dir, opamp, "target").get("conditions") or {}
    if not isinstance(recorded, dict) or set(recorded) - {"temp", "vdd", "corner"}:
        raise ToolkitError(f"{Path(data_dir) / opamp / 'target' / 'meta.json'}: 'conditions' must map temp / vdd / "
                           f"corner to values, got {recorded!r}. Fix: the meta.json spice.generate wrote.")
    return Conditions(**recorded).to_dict()


def check_circuit_columns(opamp, x_cols) -> None:
    """``opamp``: a shipped circuit name or a circuit file (.toml) whose variables the model's
    features must be (any order)."""
    from spice.circuits import BUILTINS, circuit
    if isinstance(opamp, str) and opamp not in BUILTINS and not opamp.endswith(".toml"):
        raise ToolkitError(f"The simulator has no circuit {opamp!r} (shipped: {list(BUILTINS)}); "
                           f"give its circuit file with --circuit FILE.toml (docs/SPICE.md 'Your own circuit').")
    features = circuit(opamp).features
    if sorted(x_cols) != sorted(features):
        raise ToolkitError(f"The model's features {list(x_cols)} are not the simulator's {features} for {opamp}: "
                           f"use the model and data made with that circuit, or --circuit FILE.toml.")


def measured_metrics() -> list:
    """What the simulator gives: ``spice.measure.METRICS``, and ``power`` from the operating point
    (``spice.generate --power``)."""
    from spice.measure import METRICS
    return METRICS + [POWER]


def unmeasured_metrics(y_cols) -> list:
    """The metric columns the simulator cannot give: a model may learn them from another tool, but no simulation
    checks them."""
    return [c for c in y_cols if c not in measured_metrics()]


def check_verifiable(spec: Spec) -> list:
    """The spec's metrics a verification cannot simulate (``unmeasured_metrics``): refused when a goal bounds one
    (its pass/fail could not be checked), else returned (left unchecked, as the spec leaves them free)."""
    missing = unmeasured_metrics(spec.y_cols)
    bounded = [c for c in missing if spec.bounded[spec.y_cols.index(c)]]
    if bounded:
        raise ToolkitError(f"--verify cannot check the goals on {bounded}: the simulator does not measure them (it "
                           f"measures {measured_metrics()}). Fix: leave them free in the spec ('any'), or drop "
                           f"--verify.")
    return missing


class SimulationInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``verify_designs``: ``rows`` are the designs simulated before it (its rows, maybe none)."""

    def __init__(self, rows: pd.DataFrame):
        super().__init__()
        self.rows = rows


def verify_designs(opamp, table: pd.DataFrame, spec: Spec, *, process: str = "B",
                   simulate=None, progress: bool = False, power: bool = False, conditions: dict | None = None
                   ) -> pd.DataFrame:
    """Simulate the designs of ``table`` (physical x columns + pred_*); one row per candidate with
    sim_*, pass_* per metric, status and pass_all.  ``progress``: a bar per design (on a terminal).
    ``power``: also the operating point's sim_supply_current (A) and sim_power (W).  ``conditions``: run
    conditions as keywords of ``spice.simulate.simulate`` (temp, vdd, corner; spice/conditions.py).
    Ctrl-C raises ``SimulationInterrupted`` carrying the rows of the designs simulated before it."""
    if simulate is None:
        from spice.simulate import simulate
    from tqdm import tqdm

    from spice.circuits import circuit
    x = table[circuit(opamp).features].reset_index(drop=True)
    kw = ({"op": True} if power else {}) | dict(conditions or {})
    if not len(x):
        return verification_rows(table, simulate(opamp, x, process, **kw), spec, power)
    sims = []
    try:
        for i in tqdm(range(len(x)), desc=f"verify {len(x)} in {process}", unit="sim",
                      disable=None if progress else True, leave=False):
            sims.append(simulate(opamp, x.iloc[i:i + 1], process, **kw))
    except KeyboardInterrupt:   # what was simulated is kept: a simulation is the scarce thing
        raise SimulationInterrupted(verification_rows(table.iloc[:len(sims)], pd.concat(sims), spec, power)
                                    if sims else pd.DataFrame()) from None
    return verification_rows(table, pd.concat(sims), spec, power)


def verification_rows(table: pd.DataFrame, sim: pd.DataFrame, spec: Spec, power: bool) -> pd.DataFrame:
    """``verify_designs``' rows from the candidates ``table`` and their simulator output ``sim`` (same order)."""
    # a metric the simulator does not measure (left free: check_verifiable) has no simulated value and passes
    y = sim.reindex(columns=spec.y_cols).to_numpy(float)
    ok = (sim["status"] == "ok").to_numpy()
    unsimulated = np.array([c not in sim.columns for c in spec.y_cols])
    passed = (spec.meets(y) | unsimulated[None, :]) & ok[:, None]
    out = pd.DataFrame({"rank": table["rank"].to_numpy()})
    for j, c in enumerate(spec.y_cols):
        out[f"pred_{c}"] = table[f"pred_{c}"].to_numpy()
        if f"std_{c}" in table:   # the model's std at the candidate (inverse.optimise.propose writes it)
            out[f"std_{c}"] = table[f"std_{c}"].to_numpy()
        out[f"sim_{c}"] = y[:, j]
        out[f"pass_{c}"] = passed[:, j]
    from spice.measure import SIGNED_METRICS, sign_column
    for m in SIGNED_METRICS:   # the sign of a ratio metric (cmrr): a signs file row, to append with the metrics
        if m in spec.y_cols and sign_column(m) in sim.columns:
            out[f"sim_{sign_column(m)}"] = sim[sign_column(m)].to_numpy(float)
    if power:
        out["sim_supply_current"] = sim["supply_current"].to_numpy(float)
        out["sim_power"] = sim["power"].to_numpy(float)
    out["status"] = sim["status"].to_numpy()
    out["pass_all"] = passed.all(axis=1)
    return out


def format_verification(ver: pd.DataFrame, spec: Spec) -> str:
    """One line per simulated design: each metric's pass interval with units, predicted and simulated value."""
    lines = []
    for _, r in ver.iterrows():
        parts = []
        for j, c in enumerate(spec.y_cols):
            mark = "ok" if r[f"pass_{c}"] else "FAIL"
            goal = spec.goal_text(c) if spec.bounded[j] else "free"
            unit = f" {spec.units[c]}" if spec.units.get(c) else ""
            if r[f"pass_{c}"] and not np.isfinite(r[f"sim_{c}"]):   # a free metric the simulator does not give
                parts.append(f"{c}[free] pred {r[f'pred_{c}']:.4g}{unit} not simulated")
                continue
            parts.append(f"{c}[{goal}] pred {r[f'pred_{c}']:.4g} sim {r[f'sim_{c}']:.4g}{unit} {mark}")
        lines.append(f"  #{int(r['rank'])} {'PASS' if r['pass_all'] else 'fail'} ({r['status']}): " + "; ".join(parts))
    n = int(ver["pass_all"].sum())
    lines.append(f"[verify] {n}/{len(ver)} candidates meet every goal in SPICE"
                 + ("" if n else " -- no verified design: the closest ones are listed above"))
    within = within_std(ver, spec)
    if within is not None:
        counts = ", ".join(f"{c} {within['within_1_std'][c]}/{within['n'][c]} / {within['within_2_std'][c]}/"
                           f"{within['n'][c]}" for c in within["n"])
        lines.append(f"[verify] simulated inside the predicted mean +- 1 / 2 std: {counts}")
        if within["short"]:
            short = ", ".join(f"{c} {k}/{within['n'][c]}" for c, k in within["short"].items())
            lines.append(f"[verify] simulated on the failing side of the prediction (one-sided goals): {short}")
        lines.append("         (a calibrated model holds about 68 % / 95 % of random designs, half on either side; one "
                     "spec's candidates are often near-twins that share one error, so their counts move together: "
                     "the simulation decides, and --kappa's margin is in these stds)")
    return "\n".join(lines)


def standardised_errors(ver: pd.DataFrame, spec: Spec) -> dict:
    """{metric: (z, side)}: z = (simulated - predicted) / std over the candidates that simulated OK with finite
    values and a std > 0 (``std_*``: the model's std in physical units, as ``inverse.optimise.propose`` writes it);
    ``side`` the sign of z that fails a one-sided goal (-1 below a ``min`` bound, +1 above a ``max``; 0 for a range
    or a free metric).  Metrics without a simulated value or a std on any such candidate are left out."""
    ok = (ver["status"] == "ok").to_numpy()
    out = {}
    for j, c in enumerate(spec.y_cols):
        if f"std_{c}" not in ver or f"sim_{c}" not in ver:
            continue
        sim, pred, std = (ver[f"{k}_{c}"].to_numpy(float) for k in ("sim", "pred", "std"))
        usable = ok & np.isfinite(sim) & np.isfinite(pred) & np.isfinite(std) & (std > 0)
        if usable.any():
            lower, upper = np.isfinite(spec.lo[j]), np.isfinite(spec.hi[j])
            out[c] = ((sim[usable] - pred[usable]) / std[usable], 0 if lower == upper else (-1 if lower else 1))
    return out


def within_std(ver: pd.DataFrame, spec: Spec) -> dict | None:
    """How the simulated values sat against each candidate's predicted mean +- std (``standardised_errors``): per
    metric ``{"n": {metric: designs}, "within_1_std": {metric: count}, "within_2_std": {...}, "short": {...}}``;
    None when no metric has a simulated value and a std (a table without stds, every simulation failed).
    ``short`` (metrics with a one-sided goal only): designs whose simulated value fell on the failing side of the
    prediction (below it for a ``min`` bound, above for a ``max``): about half for a model whose errors do not
    depend on how the designs were chosen; more says the optimiser picked where the model flatters the spec."""
    errors = standardised_errors(ver, spec)
    if not errors:
        return None
    out = {"n": {}, "within_1_std": {}, "within_2_std": {}, "short": {}}
    for c, (z, side) in errors.items():
        out["n"][c], out["within_1_std"][c], out["within_2_std"][c] = len(z), int((abs(z) <= 1).sum()), int(
            (abs(z) <= 2).sum())
        if side:
            out["short"][c] = int((side * z > 0).sum())
    return out


def first_pass_rank(ver: pd.DataFrame):
    """Rank of the best candidate that passes in SPICE, or None."""
    hits = ver.loc[ver["pass_all"], "rank"]
    return int(hits.min()) if len(hits) else None


def nan_safe(v):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v
