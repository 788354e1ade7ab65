"""Check proposed designs in ngspice (the target process) and compare with the prediction.

    rows = verify_designs("5t_opamp", table, spec, process="B")
    rows = verify_designs("circuits/my_ota.toml", table, spec, process="my_node.toml")   # your own files

For each candidate and metric: predicted, simulated, pass/fail of its goal in SPICE; a
candidate passes when every goal passes (a failed simulation fails every goal).
"""
import numpy as np
import pandas as pd

from core.errors import ToolkitError
from inverse.goals import Spec

INSTALL = "install it with `make ngspice` or `sudo apt-get install ngspice libngspice0`"


def ngspice_available() -> bool:
    from spice.batch import find_ngspice
    from spice.shared_lib import find_library
    return find_library() is not None or find_ngspice() is not None


def require_ngspice(needed_by: str = "--verify", otherwise: str = "Or run without --verify.") -> None:
    if not ngspice_available():
        raise ToolkitError(f"{needed_by} needs ngspice, which is not installed; {INSTALL}. {otherwise}".rstrip())


def check_circuit_columns(opamp, x_cols) -> None:
    """``opamp``: a shipped circuit name or a circuit file (.toml) whose variables the model's
    features must be (any order)."""
    from spice.circuits import BUILTINS, circuit
    if isinstance(opamp, str) and opamp not in BUILTINS and not opamp.endswith(".toml"):
        raise ToolkitError(f"--verify: the simulator has no circuit {opamp!r} (shipped: {list(BUILTINS)}); "
                           f"give its circuit file with --circuit FILE.toml (docs/SPICE.md 'Your own circuit').")
    features = circuit(opamp).features
    if sorted(x_cols) != sorted(features):
        raise ToolkitError(f"--verify: the model's features {list(x_cols)} are not the simulator's "
                           f"{features} for {opamp}; verify with the model of that circuit.")


def verify_designs(opamp, table: pd.DataFrame, spec: Spec, *, process: str = "B",
                   simulate=None, progress: bool = False, power: bool = False, conditions: dict | None = None
                   ) -> pd.DataFrame:
    """Simulate the designs of ``table`` (physical x columns + pred_*); one row per candidate with
    sim_*, pass_* per metric, status and pass_all.  ``progress``: a bar per design (on a terminal).
    ``power``: also the operating point's sim_supply_current (A) and sim_power (W).  ``conditions``: run
    conditions as keywords of ``spice.simulate.simulate`` (temp, vdd, corner; spice/conditions.py)."""
    if simulate is None:
        from spice.simulate import simulate
    from tqdm import tqdm

    from spice.circuits import circuit
    x = table[circuit(opamp).features].reset_index(drop=True)
    kw = ({"op": True} if power else {}) | dict(conditions or {})
    sim = pd.concat([simulate(opamp, x.iloc[i:i + 1], process, **kw) for i in tqdm(
        range(len(x)), desc=f"verify {len(x)} in {process}", unit="sim", disable=None if progress else True,
        leave=False)]) if len(x) else simulate(opamp, x, process, **kw)
    y = sim[spec.y_cols].to_numpy(float)
    ok = (sim["status"] == "ok").to_numpy()
    passed = spec.meets(y) & ok[:, None]
    out = pd.DataFrame({"rank": table["rank"].to_numpy()})
    for j, c in enumerate(spec.y_cols):
        out[f"pred_{c}"] = table[f"pred_{c}"].to_numpy()
        out[f"sim_{c}"] = y[:, j]
        out[f"pass_{c}"] = passed[:, j]
    if power:
        out["sim_supply_current"] = sim["supply_current"].to_numpy(float)
        out["sim_power"] = sim["power"].to_numpy(float)
    out["status"] = sim["status"].to_numpy()
    out["pass_all"] = passed.all(axis=1)
    return out


def format_verification(ver: pd.DataFrame, spec: Spec) -> str:
    lines = []
    for _, r in ver.iterrows():
        parts = []
        for c, g in zip(spec.y_cols, spec.goals):
            mark = "ok" if r[f"pass_{c}"] else "FAIL"
            parts.append(f"{c}[{g}] pred {r[f'pred_{c}']:.4g} sim {r[f'sim_{c}']:.4g} {mark}")
        lines.append(f"  #{int(r['rank'])} {'PASS' if r['pass_all'] else 'fail'} ({r['status']}): " + "; ".join(parts))
    n = int(ver["pass_all"].sum())
    lines.append(f"[verify] {n}/{len(ver)} candidates meet every goal in SPICE"
                 + ("" if n else " -- no verified design: the closest ones are listed above"))
    return "\n".join(lines)


def first_pass_rank(ver: pd.DataFrame):
    """Rank of the best candidate that passes in SPICE, or None."""
    hits = ver.loc[ver["pass_all"], "rank"]
    return int(hits.min()) if len(hits) else None


def nan_safe(v):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v
