"""Which pieces of work ``benchmarks.run`` hands to its worker processes, and in what order.

One (circuit, seed, n) cell is split into up to three independent parts, so that ``--jobs 2``
can keep both cores busy to the end instead of idling behind one long cell:

    transfer  everything that needs the seed's source baseline: source-only, align + CORAL,
              target-only hetero and dual-head (the ensemble's members), the ensemble, stacking
    pooled    the pooled MLP (trained from scratch on source + target rows; needs nothing else)
    target    the target-only peers (MLP, GBM, GP)

The baseline is trained once per seed, by that seed's first ``transfer`` part (its smallest n);
the seed's other ``transfer`` parts wait for it (otherwise two workers would train the same
baseline side by side) and then reuse it.  Among the parts that may start, the one expected to
take longest starts first (longest-processing-time order), the baseline makers before all, so
the work left at the end is small.  Expected times come from the previous run's ``fit_s``
in the JSONL when it has every method of the part, else from ``STATIC_COST_S``.  The order
changes only when a part finishes, never any number a part produces.
"""
from dataclasses import dataclass

from core import scheduling
from core.stages import STAGES

# the ensemble's member stages (core.stages) join "transfer"; an optional member that needs no baseline (the
# pooled MLP, trained from scratch) is its own part
PART_METHODS = {
    "transfer": ("source_only", *(s.name for s in STAGES.values() if s.member and (not s.optional or s.parent)),
                 "ensemble", "stack_gbm", "stack_gp"),
    "pooled": tuple(s.name for s in STAGES.values() if s.member and s.optional and not s.parent),
    "target": ("target_mlp", "target_gbm", "target_gp"),
}
# Rough seconds per part on the shipped 5t_opamp data with --jobs 2 (docs/RESULTS.md), as
# (fixed, per target row); n = "all" counts as ALL_ROWS_GUESS rows.  Only used to order parts.
STATIC_COST_S = {"transfer": (60.0, 0.5), "pooled": (45.0, 0.0), "target": (5.0, 0.1)}
ALL_ROWS_GUESS = 640


@dataclass
class Part:
    opamp: str
    seed: int
    n: str
    name: str
    methods: list
    cost_s: float = 0.0
    makes_baseline: bool = False
    after: tuple | None = None          # key() of the part that must finish first

    def key(self) -> tuple:
        return (self.opamp, self.seed, self.n, self.name)


def split_methods(methods: list, ensemble_members: tuple = ()) -> dict:
    """{part name: the requested methods in it}; empty parts dropped.  An ensemble that uses the
    pooled member needs the pooled checkpoint beside its own, so pooled then joins ``transfer``."""
    parts = {name: [m for m in methods if m in group] for name, group in PART_METHODS.items()}
    if "pooled" in ensemble_members and "ensemble" in methods and parts["pooled"]:
        parts["transfer"] += parts.pop("pooled")
    return {name: ms for name, ms in parts.items() if ms}


def _n_rows(n: str) -> int:
    return ALL_ROWS_GUESS if n == "all" else int(n)


def estimate_cost(part_name: str, opamp: str, n: str, methods: list, history: dict) -> float:
    """Expected seconds: mean past ``fit_s`` summed over the part's methods, else the static guess.
    ``history``: {(opamp, n, method): [fit_s, ...]} from earlier rows."""
    past = [history.get((opamp, n, m)) for m in methods if m != "source_only"]  # reused baseline: ~0 s
    if past and all(past):
        return sum(sum(v) / len(v) for v in past)
    fixed, per_row = STATIC_COST_S[part_name]
    return fixed + per_row * _n_rows(n)


def fit_history(rows: list) -> dict:
    """{(opamp, n, method): [fit_s over seeds]} from JSONL rows (latest settings of each cell)."""
    out = {}
    for r in rows:
        if "fit_s" in r:
            out.setdefault((r["opamp"], r["n_target"], r["method"]), []).append(float(r["fit_s"]))
    return out


def plan(cells: list, methods: list, *, done: set, history: dict, order_n, ensemble_members: tuple = ()) -> list:
    """Parts still to run for ``cells`` [(opamp, seed, n)], with costs and dependencies.

    ``done``: {(opamp, seed, n, method)} already in the JSONL.  A part is skipped when all its
    methods are done.  ``order_n(n)`` sorts sizes (smallest first) to find each seed's first n."""
    groups = split_methods(methods, ensemble_members)
    parts = []
    first_transfer = {}
    for opamp, seed, n in sorted(cells, key=lambda c: (c[0], c[1], order_n(c[2]))):
        for name, ms in groups.items():
            if all((opamp, seed, n, m) in done for m in ms):
                continue
            part = Part(opamp, seed, n, name, list(ms), cost_s=estimate_cost(name, opamp, n, ms, history))
            if name == "transfer":
                first = first_transfer.setdefault((opamp, seed), part)
                if first is part:
                    part.makes_baseline = True
                else:
                    part.after = first.key()
            parts.append(part)
    return parts


def dispatch(parts: list, jobs: int, submit, wait_one) -> None:
    """Run ``parts`` with at most ``jobs`` in flight (``core.scheduling.dispatch``): among the parts whose
    prerequisite has finished, baseline makers first, then the longest expected."""
    scheduling.dispatch(parts, jobs, submit, wait_one, key=Part.key, after=lambda p: p.after,
                        priority=lambda p: (p.makes_baseline, p.cost_s))
