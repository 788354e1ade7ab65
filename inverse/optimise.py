"""Gradient-based inverse optimisation: starts -> Adam -> L-BFGS -> snap -> re-predict -> rank.

Design variables live in model space inside the buildable box [lo, hi] (inverse/snap.py
mapped through the forward model's Preprocessing): x = lo + (hi - lo) * sigmoid(u) with u
unconstrained, so every iterate is in bounds.  Per start the loss is

    goal_loss(mean(x), std(x))  +  prior * mean_d x_d^2  [+ w_s * objective term, inverse/objective.py]

(goal loss: inverse/goals.py; ``prior`` pulls x toward the centre of the training data,
where the forward model is trustworthy; x is standardised so x_d^2 is in units of the
data's spread).  All starts are optimised together (their losses are independent and summed).

After optimisation each design is snapped to the grid, converted back to model space and
re-predicted; identical snapped designs are merged; candidates are ranked by
(number of goals the pessimistic prediction misses, goal loss with margin 0), both with
mean -/+ kappa * std, so a candidate the model is unsure of ranks below a confident one; with an
objective (``--objective``), candidates that meet every goal that way are ordered by it instead.
"""
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from inverse import feasibility, objective
from inverse.goals import Spec, goal_loss, pessimistic_fails
from inverse.snap import feature_bounds, rule_for, snap_designs

# The search defaults of python -m inverse_opt and benchmarks.inverse_benchmark (one place).  Measured in
# docs/RESULTS.md "Inverse design": with half MDN / half random starts they meet the feasible specs at a few
# seconds per spec; the seed's 512 starts x (800 Adam at lr 0.002 + 80 L-BFGS) took ~4 min with the ensemble.
DEFAULTS = {"n_init": 128, "steps": 150, "lr": 0.05, "lbfgs_steps": 20, "prior": 0.0, "kappa": 1.0}
EPS = 1e-4       # keep sigmoid(u) off 0/1 when a start sits on the box edge
DATA_SPAN = 3.0  # features with no rule and no recorded range: box = mean +- 3 std of the scaler's data


def model_bounds(pre, grid=None):
    """Model-space box (lo, hi), float32 tensors (D,): the grid rules of inverse/snap.py, else the
    feature's range in the training inputs (recorded in the checkpoint), else mean +- 3 std."""
    lo, hi = np.full(len(pre.x_cols), -DATA_SPAN), np.full(len(pre.x_cols), DATA_SPAN)
    if pre.x_min is not None and pre.x_max is not None:
        lo = pre.transform_x(np.asarray(pre.x_min, float)[None, :])[0].astype(float)
        hi = pre.transform_x(np.asarray(pre.x_max, float)[None, :])[0].astype(float)
    known = [j for j, c in enumerate(pre.x_cols) if rule_for(c, grid) is not None]
    if known:
        p_lo, p_hi = feature_bounds(pre.x_cols, data_lo=np.ones(len(pre.x_cols)),
                                    data_hi=np.ones(len(pre.x_cols)), grid=grid)
        m_lo, m_hi = pre.transform_x(p_lo[None, :])[0], pre.transform_x(p_hi[None, :])[0]
        lo[known], hi[known] = m_lo[known], m_hi[known]
    return torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)


def random_starts(n: int, lo, hi, *, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, len(lo), generator=g)           # (n, D)


def hybrid_starts(n: int, lo, hi, *, seed: int, mdn_x=None) -> torch.Tensor:
    """``n`` starts (n, D, model space) in the box: the first half from ``mdn_x`` (MDN samples in model space)
    when given, the rest uniform random; MDN samples concentrate where the spec is met in the data, the
    random half keeps the search from missing what the MDN does not cover."""
    parts = []
    if mdn_x is not None and len(mdn_x):
        parts.append(torch.as_tensor(np.asarray(mdn_x)[: n // 2], dtype=torch.float32))
    n_rand = n - sum(len(q) for q in parts)
    if n_rand > 0:
        parts.append(random_starts(n_rand, lo, hi, seed=seed))
    return torch.maximum(torch.minimum(torch.cat(parts).float(), hi), lo)


def _to_u(x, lo, hi):
    # a feature constant in the data has lo == hi: it stays at lo (u = 0), not 0/0 = NaN
    span = hi - lo
    p = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 0.5).clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)


def _to_x(u, lo, hi):
    return lo + (hi - lo) * torch.sigmoid(u)


def search_loss(forward, x, mspec, *, prior: float, kappa: float, extra=None):
    """Per-start loss (N,): goal loss + prior, plus ``extra(x, mean, std)`` (N,) (an objective's term) when given."""
    mean, std = forward.predict(x)                                          # (N, M) each
    loss = goal_loss(mean, std, mspec, kappa=kappa) + prior * x.pow(2).mean(dim=1)   # (N,)
    return loss if extra is None else loss + extra(x, mean, std)


def optimise(forward, mspec, x0, lo, hi, *, steps: int = 800, lr: float = 2e-3, lbfgs_steps: int = 80,
             prior: float = 1e-3, kappa: float = 1.0, progress: bool = False, extra=None):
    """Optimise starts ``x0`` (N, D, model space); return (x (N, D) in bounds, per-start loss (N,)).
    ``extra(x, mean, std) -> (N,)`` is added to each start's loss (inverse/objective.py)."""
    u = _to_u(torch.as_tensor(x0, dtype=torch.float32), lo, hi).clone().requires_grad_(True)
    if steps > 0:
        opt = torch.optim.Adam([u], lr=lr)
        # a bar on a terminal only (disable=None); redirected output stays free of carriage-return fragments
        for _ in tqdm(range(steps), desc=f"optimise {len(u)} starts", disable=None if progress else True,
                      leave=False):
            opt.zero_grad(set_to_none=True)
            loss = search_loss(forward, _to_x(u, lo, hi), mspec, prior=prior, kappa=kappa, extra=extra).sum()
            loss.backward()
            opt.step()
    if lbfgs_steps > 0:
        opt = torch.optim.LBFGS([u], lr=1.0, max_iter=lbfgs_steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=True)
            total = search_loss(forward, _to_x(u, lo, hi), mspec, prior=prior, kappa=kappa, extra=extra).sum()
            total.backward()
            return total
        opt.step(closure)
    with torch.no_grad():
        x = _to_x(u, lo, hi)
        return x, search_loss(forward, x, mspec, prior=prior, kappa=kappa, extra=extra)


@dataclass
class Proposal:
    table: pd.DataFrame       # top-k: rank, x (physical), pred_*, std_*, meets_*, meets_all, fails_pessimistic, loss
    x_scaled: np.ndarray      # (k, D) model space of the snapped top-k
    n_starts: int
    n_unique: int
    wall_s: float
    feasibility: dict = None  # inverse.feasibility.analyse over every unique design searched


KEY_DIGITS = 7   # significant digits per variable: what spice.generate stores (FLOAT_FORMAT "%.7g")


def design_keys(frame: pd.DataFrame, x_cols) -> pd.Series:
    """One string per design (``KEY_DIGITS`` significant digits per variable): what "the same design" means when
    merging duplicates, across the rounds of inverse/refine.py, and when the active loop leaves out the designs of
    a data file.  The digits are those the data files store, so a design drawn at full precision and the same
    design read back from a generated file have one key (with 9 digits a continuous variable such as a
    capacitance never matched, and the active loop simulated test designs)."""
    return frame[list(x_cols)].apply(lambda row: ",".join(f"{v:.{KEY_DIGITS}g}" for v in row), axis=1)


NEAR_DIGITS = 3   # significant digits in which two reported candidates' continuous variables must differ


def near_keys(frame: pd.DataFrame, x_cols, grid=None) -> pd.Series:
    """``design_keys`` with each continuous variable (no grid rule, or a 'range' one) to ``NEAR_DIGITS`` significant
    digits: what "nearly the same design" means when the top-k is chosen.  The optimiser's ends differ in a
    continuous bias current's 4th digit where the snapped widths agree, and simulating six such twins tells no more
    than one (a spec and an objective both ranked 4-6 twins in the top 8)."""
    digits = [NEAR_DIGITS if (r := rule_for(c, grid)) is None or r.kind == "range" else KEY_DIGITS for c in x_cols]
    return frame[list(x_cols)].apply(lambda row: ",".join(f"{v:.{d}g}" for v, d in zip(row, digits)), axis=1)


def keys_frame(keys, x_cols) -> pd.DataFrame:
    """The designs of ``design_keys`` strings, back as a frame (their KEY_DIGITS values)."""
    return pd.DataFrame([[float(v) for v in k.split(",")] for k in keys], columns=list(x_cols))


def first_of_each(order, near, seen: set) -> list:
    """The indices of ``order`` whose ``near`` key is new (not in ``seen``, nor an earlier index's), in order."""
    seen, out = set(seen), []
    for i in order:
        if near[i] not in seen:
            seen.add(near[i])
            out.append(int(i))
    return out


def rank_designs(forward, spec: Spec, x_phys, *, kappa: float = 1.0, top_k: int = 8, grid=None,
                 snap: bool = True, exclude=(), terms=(), circuit=None, objective_margin: float = objective.MARGIN,
                 plain_slots: int = objective.PLAIN_SLOTS):
    """Snap physical designs (N, D), merge duplicates, re-predict, rank; return (table, x_scaled).
    Designs whose ``design_keys`` are in ``exclude`` (already simulated) count in the feasibility analysis
    but are not ranked.  ``terms`` (inverse.objective.ObjectiveTerm, the first is the objective, a second
    the other axis of the Pareto front): designs whose pessimistic prediction meets every goal are ordered
    by the objective.  ``circuit``: its figures (gate area, ...) become columns."""
    pre = forward.preprocessing
    x = snap_designs(x_phys, pre.x_cols, grid) if snap else np.asarray(x_phys, float)
    frame = pd.DataFrame(x, columns=pre.x_cols)
    keys = design_keys(frame, pre.x_cols)
    frame = frame[~keys.duplicated()].reset_index(drop=True)
    keys = keys[~keys.duplicated()].reset_index(drop=True)
    xs = pre.transform_x(frame.to_numpy(float))
    mean, std = forward.predict_np(xs)
    mspec = spec.model_space(pre)
    mt, st = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    loss = goal_loss(mt, st, mspec, kappa=kappa, margin=0.0).numpy()
    fails = pessimistic_fails(mt, st, mspec, kappa=kappa).numpy()
    values = [t.value(frame, mean, std) for t in terms]                        # physical, per objective
    second = loss if not terms else np.where(fails == 0, terms[0].objective.sense * values[0], loss)
    # with an objective, designs that meet every goal with objective_margin more stds of pessimism rank first: the
    # objective pushes designs to the spec's edge, where the model's error decides (inverse/objective.py)
    unsafe = (pessimistic_fails(mt, st, mspec, kappa=kappa + objective_margin).numpy() > 0) if terms else 0 * fails
    order = np.lexsort((loss, second, unsafe, fails))   # ties in the objective (same area, another bias): lower loss
    fresh = ~keys.isin(set(exclude)).to_numpy()
    # one candidate per near-twin, none a near-twin of a design simulated already
    near = near_keys(frame, pre.x_cols, grid).to_numpy()
    done = set(near_keys(keys_frame(exclude, pre.x_cols), pre.x_cols, grid)) if len(exclude) else set()
    order = np.asarray(first_of_each(order[fresh[order]], near, done), int)
    if terms and plain_slots > 0:   # the last slots: the plain ranking's best not already in (a hedge at the edge)
        head = list(order[: max(top_k - plain_slots, 1)])
        plain_order = np.lexsort((loss, fails))
        plain = first_of_each(plain_order[fresh[plain_order]], near, done | {near[i] for i in head})
        order = np.asarray(head + plain, int)
    order = order[:top_k]
    y_all = pre.inverse_y(mean)
    bounded = spec.bounded   # a free metric ('any') is no goal: it is neither met nor missed
    searched = feasibility.analyse([c for c, b in zip(spec.y_cols, bounded) if b],
                                   [g for g, b in zip(spec.goals, bounded) if b], spec.meets(y_all)[:, bounded], loss)
    if searched["best_tradeoff"] is not None:        # the design itself, physical units, with its prediction
        b = searched["best_tradeoff"].pop("index")
        searched["best_tradeoff"].update(design={c: float(v) for c, v in frame.iloc[b].items()},
                                         predicted={c: float(v) for c, v in zip(spec.y_cols, y_all[b])})
    y_mean = pre.inverse_y(mean[order])
    y_std = pre.y_std_to_physical(mean[order], std[order])
    meets = spec.meets(y_mean)
    table = frame.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(order) + 1))
    for j, c in enumerate(pre.y_cols):
        table[f"pred_{c}"] = y_mean[:, j]
    for j, c in enumerate(pre.y_cols):
        table[f"std_{c}"] = y_std[:, j]
    for j, c in enumerate(pre.y_cols):
        table[f"meets_{c}"] = meets[:, j]
    table["meets_all"] = meets.all(axis=1)
    table["fails_pessimistic"] = fails[order]
    table["loss"] = loss[order]
    for name, v in objective.figures_table(circuit, table).items():
        table[name] = v
    if terms:
        table["objective"] = values[0][order]
    table.attrs["feasibility"] = searched       # what every searched design (not only the top-k) achieves
    if len(terms) == 2:
        table.attrs["pareto"] = pareto_table(frame, terms, values, fails, y_all, pre.y_cols)
    return table, xs[order], len(frame)


def pareto_table(frame, terms, values, fails, y_phys, y_cols) -> pd.DataFrame:
    """The non-dominated designs for the two objectives among those whose pessimistic prediction meets every
    goal, sorted along the first objective: design, both objective values, predicted metrics."""
    ok = np.flatnonzero(fails == 0)
    idx = ok[objective.pareto_front(terms[0].objective.sense * values[0][ok], terms[1].objective.sense * values[1][ok])]
    out = frame.iloc[idx].reset_index(drop=True)
    for t, v in zip(terms, values):
        out[f"objective_{t.objective.name}"] = v[idx]
    for j, c in enumerate(y_cols):
        out[f"pred_{c}"] = y_phys[idx, j]
    return out


def objective_extra(terms, n: int):
    """``extra(x, mean, std)`` for ``search_loss``: per start s, w_s * z_1 (one objective) or
    w_s * (cos t_s z_1 + sin t_s z_2) (two, t_s spread over [0, pi/2]: starts trace the trade-off)."""
    if not terms:
        return None
    w = objective.start_weights(n)
    if len(terms) == 1:
        coef = [w]
    else:
        theta = torch.as_tensor(np.resize(np.linspace(0.0, np.pi / 2, 7), n), dtype=torch.float32)
        coef = [w * torch.cos(theta), w * torch.sin(theta)]

    def extra(x, mean, std):
        return sum(c[: len(x)] * t.term(x, mean, std) for c, t in zip(coef, terms))
    return extra


def propose(forward, spec: Spec, x0, *, steps=800, lr=2e-3, lbfgs_steps=80, prior=1e-3, kappa=1.0,
            top_k=8, grid=None, keep_starts: bool = True, progress: bool = False, exclude=(),
            objectives=(), circuit=None, objective_margin: float = objective.MARGIN, plain_slots: int = objective.PLAIN_SLOTS) -> Proposal:
    """Optimise from starts ``x0`` (N, D model space), snap, re-predict, rank; the top-k (none of the
    designs in ``exclude``, keys of ``design_keys``).  ``objectives`` (inverse.objective.Objective, at most
    two): minimise/maximise under the spec (the second: the other axis of ``table.attrs["pareto"]``).

    With ``keep_starts`` the (snapped) starts compete in the ranking too: the optimised
    designs of many starts often converge to one region, and a good start (an MDN sample)
    that the optimiser moved away from stays available.
    """
    t0 = time.perf_counter()
    lo, hi = model_bounds(forward.preprocessing, grid)
    x0 = torch.as_tensor(x0, dtype=torch.float32)
    terms = [objective.ObjectiveTerm(o, forward.preprocessing, x0, kappa=kappa) for o in objectives]
    x, _ = optimise(forward, spec.model_space(forward.preprocessing), x0, lo, hi, steps=steps, lr=lr,
                    lbfgs_steps=lbfgs_steps, prior=prior, kappa=kappa, progress=progress,
                    extra=objective_extra(terms, len(x0)))
    if keep_starts:
        x = torch.cat([x, torch.maximum(torch.minimum(x0, hi), lo)])
    x_phys = forward.preprocessing.inverse_x(x.numpy().astype(float))
    table, xs, n_unique = rank_designs(forward, spec, x_phys, kappa=kappa, top_k=top_k, grid=grid, exclude=exclude,
                                       terms=terms, circuit=circuit, objective_margin=objective_margin,
                                       plain_slots=plain_slots)
    return Proposal(table, xs, len(x0), n_unique, time.perf_counter() - t0, table.attrs["feasibility"])


def mdn_condition(spec: Spec) -> np.ndarray:
    """Physical y to condition the MDN on: band centre for 'range', else the target value."""
    y = spec.target.copy()
    for j, g in enumerate(spec.goals):
        if g == "range" and np.isfinite(spec.lo[j]) and np.isfinite(spec.hi[j]):
            y[j] = 0.5 * (spec.lo[j] + spec.hi[j])   # a free metric (open band) keeps its target
    return y
