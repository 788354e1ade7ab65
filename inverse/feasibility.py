"""Why a spec was not met: which goals no design reaches, and which goals conflict.

After optimisation every unique snapped design (optimised ends and starts) has a predicted mean
per metric.  ``analyse`` reads the (N designs, M goals) pass matrix of those means:

* a goal **never met** by any design is beyond what the model predicts for this circuit's design
  space (the spec asks for more than the data suggests is reachable);
* two goals that are each met by some designs but **never by the same design** conflict: the
  optimiser traded one for the other everywhere it looked;
* the **best trade-off** is the design meeting the most goals (then the lowest loss), with the
  goals it still misses.

It describes the search that was done, from the model's predictions; it is not a proof that no
design exists.  ``inverse_opt`` prints it and exits with ``INFEASIBLE_EXIT`` when no candidate
is predicted (or, with --verify, simulated) to meet every goal.
"""
import numpy as np

INFEASIBLE_EXIT = 3        # inverse_opt's exit status for "searched, nothing meets the spec" (2 = bad input)


def analyse(y_cols, goals, meets: np.ndarray, loss: np.ndarray) -> dict:
    """``meets`` (N, M) booleans of every searched design, ``loss`` (N,) its goal loss -> a JSON-able summary."""
    meets = np.asarray(meets, bool)
    n, m = meets.shape
    met = meets.mean(axis=0) if n else np.zeros(m)
    never = [c for c, f in zip(y_cols, met) if f == 0]
    conflicts = []
    for i in range(m):
        for j in range(i + 1, m):
            if met[i] > 0 and met[j] > 0 and not np.any(meets[:, i] & meets[:, j]):
                conflicts.append([y_cols[i], y_cols[j]])
    count = meets.sum(axis=1)
    best = int(np.lexsort((np.asarray(loss, float), -count))[0]) if n else None
    return {"n_designs": int(n), "met_fraction": {c: float(f) for c, f in zip(y_cols, met)},
            "goals": dict(zip(y_cols, goals)), "never_met": never, "conflicts": conflicts,
            "n_meet_all": int(np.all(meets, axis=1).sum()) if n else 0,
            "best_tradeoff": None if best is None else {
                "index": best, "goals_met": int(count[best]),
                "misses": [c for c, ok in zip(y_cols, meets[best]) if not ok]}}


def describe(summary: dict, goal_texts: dict | None = None) -> list:
    """Printable lines for a spec no design meets (empty when some design meets every goal).  ``goal_texts``:
    {metric: its goal as a designer reads it, with units} (``Spec.goal_text``); else the goal words."""
    if summary["n_meet_all"] > 0 or not summary["n_designs"]:
        return []
    goals = {**summary["goals"], **(goal_texts or {})}
    out = [f"[inverse] infeasible in prediction: none of the {summary['n_designs']} designs searched meets every "
           f"goal"]
    if summary["never_met"]:
        out.append("[inverse]   never met by any design (beyond the model's reach here): "
                   + ", ".join(f"{c} ({goals[c]})" for c in summary["never_met"]))
    if summary["conflicts"]:
        out.append("[inverse]   met separately but never together: "
                   + "; ".join(f"{a} vs {b}" for a, b in summary["conflicts"]))
    bt = summary["best_tradeoff"]
    out.append(f"[inverse]   best trade-off among them (predicted mean) meets {bt['goals_met']} of "
               f"{len(summary['goals'])} goals; misses {', '.join(bt['misses'])} (the per-goal pass rates: "
               + ", ".join(f"{c} {100 * f:.0f} %" for c, f in summary["met_fraction"].items()) + ")")
    return out
