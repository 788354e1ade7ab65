"""Inverse-design benchmark: specs of three difficulties, success in SPICE at equal simulation budgets.

    python -m benchmarks.inverse_benchmark --opamp 5t_opamp --results-dir results --model-type ensemble --n-specs 50
    python -m benchmarks.inverse_benchmark ... --difficulty hard --rounds 4 --methods opt,bo,random,mdn
    python -m benchmarks.inverse_benchmark ... --difficulty infeasible --rounds 2 --methods opt
needs, in --results-dir, the forward checkpoints (python -m pipeline --results-dir ...) and the
MDN (python -m inverse_mdn --results-dir ...), all trained on the same data and split; ``bo`` needs
BoTorch (pip install -e '.[bench]').

Specs (``--difficulty``): ``feasible`` -- ``--n-specs`` rows drawn (seeded) from target_test, never
used to fit or select any model, each giving around its simulated metrics (s, g, u, p, c):
    slewrate_pos >= 0.9 s (min), dc_gain >= 0.9 g (min), ugf in [0.8 u, 1.2 u] (range),
    phase_margin in [p - 10, p + 10] deg (range), cmrr >= 0.9 c (min)
so every spec is met by at least the held-out design itself; ``hard`` -- three higher-is-better
metrics jointly at the 80-90th percentile of all B rows, met by some simulated design
(``hard_spec``); ``infeasible`` -- one metric beyond every simulated design (``infeasible_spec``).
Success = every goal met in a SPICE simulation in the target process (B).  Per spec and method,
with the same budget of ``--top-k`` x ``--rounds`` simulations:
    opt      inverse_opt's search (its defaults, inverse.optimise.DEFAULTS): half MDN, half random
             starts, Adam + L-BFGS through the forward model, snap, re-predict, rank; simulate the
             top-k; between rounds the simulator-in-the-loop correction (inverse/refine.py)
    bo       constrained Bayesian optimisation (benchmarks/bo_baseline.py, BoTorch)
    random   designs drawn from the generator's design space (spice.sampling); simulate them
    mdn      MDN samples alone: 4 x budget samples, snapped, deduplicated, ranked by MDN log-density
top-1 = the first simulated design passes; success within b = a design passes within the first b
simulations; flagged infeasible = opt predicts, before any simulation, that no candidate meets the
spec.  Wall time per spec = proposal + simulations (1 process, 1 torch thread).
``--objective min:gate_area`` adds ``opt-obj`` (opt with that objective) and, per method, the best figure among
its simulated designs that met the spec (median over the specs both it and opt met, and the median ratio to opt).
How honest the model's std is where opt searched: its first round's simulated candidates' z = (simulated -
predicted) / std, pooled over the specs (inside +- 1 / 2 std, share on a one-sided goal's failing side, the margin
in stds 90 / 95 % of them cleared), printed beside the same model on the target_test designs.
Writes ``<results-dir>/inverse_benchmark_<opamp>[_<difficulty>][_r<rounds>][_<min|max>-<figure>].json``; after
each spec the rows so far go to ``<that name>.partial.json``, and a rerun with the same arguments (the forward
model's and MDN's sha256 among them) resumes after them, or summarises a finished run again without simulating.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.atomic import atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError
from core.freshness import file_sha256
from core.outputs import check_writable_dir
from core.settings import resolve, toolkit_config
from core.stages import checkpoint_path
from data_loader import data_kwargs_from_settings, get_data_and_scalers
from data_loader.preprocessing import Preprocessing
from inference.predict import ensemble_json_path
from inverse.forward import ENSEMBLE, canonical_model_type, load_forward, model_types
from inverse.goals import Spec
from inverse.mdn import load_mdn, mdn_log_prob, sample_designs
from inverse.objective import MARGIN, PLAIN_SLOTS, figure_circuit, figures_table, parse_objective
from inverse.optimise import DEFAULTS, design_keys, hybrid_starts, mdn_condition, model_bounds, propose
from inverse.snap import grid_for, snap_designs
from inverse.refine import observed, search
from inverse.verify import standardised_errors, verify_designs
from spice.sampling import sample_designs as grid_designs
from spice.simulate import simulate

config = toolkit_config()   # the toolkit's config.py, never a same-named file of the user's

GOALS = ["min", "min", "range", "range", "min"]
METHODS = ("opt", "random", "mdn", "bo")
OBJ_METHOD = "opt-obj"     # opt with --objective (added to the methods when --objective is given)
OBJECTIVE_MARGIN = MARGIN  # opt-obj's objective_margin: inverse_opt's default (inverse/objective.py)
DIFFICULTIES = ("feasible", "hard", "infeasible")
HIGHER_IS_BETTER = ("slewrate_pos", "dc_gain", "ugf", "cmrr")
PM_MIN = 45.0     # degrees: every hard / infeasible spec asks for a stable amplifier too


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.inverse_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--opamp", default="5t_opamp")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--results-dir", default="results_bench")
    p.add_argument("--n-specs", type=int, default=50)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--model-type", default="align_hetero", type=canonical_model_type,
                   help=f"forward model: {' | '.join(model_types())} (old names such as dualhead_b accepted)")
    # the search defaults are inverse_opt's (inverse.optimise.DEFAULTS): the benchmark measures the CLI
    p.add_argument("--n-init", type=int, default=DEFAULTS["n_init"], help="starts per spec (half MDN, half random)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--finish-lbfgs", type=int, default=DEFAULTS["lbfgs_steps"])
    p.add_argument("--prior", type=float, default=DEFAULTS["prior"])
    p.add_argument("--kappa", type=float, default=DEFAULTS["kappa"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--methods", default="opt,random,mdn")
    p.add_argument("--difficulty", default="feasible", choices=DIFFICULTIES,
                   help="feasible: around a held-out design (met by it); hard: 3 metrics jointly at the 80-90th "
                        "percentile of the target data (met by some simulated design); infeasible: one metric "
                        "beyond every simulated design [feasible]")
    p.add_argument("--objective", default=None, metavar="min|max:FIGURE",
                   help="a figure of the circuit file (e.g. min:gate_area): adds the method opt-obj (opt with "
                        "inverse_opt --objective) and, per method, the best figure among the simulated designs "
                        "that met the spec [none]")
    p.add_argument("--objective-margin", type=float, default=OBJECTIVE_MARGIN,
                   help=f"opt-obj: extra stds of pessimism a design needs to be ranked by the objective first "
                        f"[{OBJECTIVE_MARGIN:g}]")
    p.add_argument("--plain-slots", type=int, default=PLAIN_SLOTS,
                   help=f"opt-obj: how many of the top-k are the plain ranking's (no objective) [{PLAIN_SLOTS}]")
    p.add_argument("--rounds", type=int, default=1, help="opt: simulator-in-the-loop rounds of --top-k simulations "
                                                         "(inverse_opt --rounds); random and mdn get the same "
                                                         "budget, rounds x top-k [1]")
    args = p.parse_args(argv)
    for name, value, lo in (("--n-specs", args.n_specs, 1), ("--top-k", args.top_k, 1), ("--n-init", args.n_init, 2),
                            ("--steps", args.steps, 0), ("--finish-lbfgs", args.finish_lbfgs, 0),
                            ("--rounds", args.rounds, 1)):
        if value < lo:
            raise ToolkitError(f"{name} must be >= {lo}, got {value}.")
    for name, value in (("--lr", args.lr), ("--prior", args.prior), ("--kappa", args.kappa)):
        if not np.isfinite(value) or value < 0 or (name == "--lr" and value == 0):
            raise ToolkitError(f"{name} must be a finite number {'> 0' if name == '--lr' else '>= 0'}, got {value}.")
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        raise ToolkitError(f"--methods has unknown {unknown}; choose from {','.join(METHODS)}.")
    if args.objective is not None:           # figures only (exact, no simulation); checked before any work
        from spice.circuits import circuit
        parse_objective(args.objective, y_cols=[], circuit=circuit(args.opamp))
    if "bo" in args.methods.split(","):      # before the data load and the other methods' work
        from benchmarks.bo_baseline import require_botorch
        require_botorch()
    return args


def make_spec(y_cols, y_phys) -> Spec:
    s, g, u, pm, c = (float(y_phys[y_cols.index(k)]) for k in
                      ("slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"))
    return Spec.build(y_cols, GOALS, [0.9 * s, 0.9 * g, u, pm, 0.9 * c],
                      bands={"ugf": (0.8 * u, 1.2 * u), "phase_margin": (pm - 10.0, pm + 10.0)})


def bound_spec(y_cols, lows: dict) -> Spec:
    """``metric >= bound`` for the metrics in ``lows`` (phase margin >= PM_MIN), every other metric free."""
    goals = ["min" if c in lows or c == "phase_margin" else "range" for c in y_cols]
    target = [lows.get(c, PM_MIN if c == "phase_margin" else 0.0) for c in y_cols]
    bands = {c: (-np.inf, np.inf) for c, g in zip(y_cols, goals) if g == "range"}
    return Spec.build(y_cols, goals, target, bands=bands, weights=[1.0 if g == "min" else 0.0 for g in goals])


def hard_spec(y_cols, y_all: np.ndarray, rng) -> tuple:
    """Three higher-is-better metrics each at the q-quantile of the target data (q drawn in [0.8, 0.9], lowered
    by 0.02 until some simulated design meets all three and PM_MIN); returns (spec, q)."""
    names = [c for c in HIGHER_IS_BETTER if c in y_cols]
    chosen = list(rng.choice(names, size=min(3, len(names)), replace=False))
    q = float(rng.uniform(0.8, 0.9))
    while q > 0.5:
        spec = bound_spec(y_cols, {c: float(np.nanquantile(y_all[:, y_cols.index(c)], q)) for c in chosen})
        if spec.meets(y_all).all(axis=1).any():
            return spec, q
        q -= 0.02
    return spec, q


def infeasible_spec(y_cols, y_all: np.ndarray, rng) -> tuple:
    """One higher-is-better metric at f x its largest simulated value (f drawn in [1.15, 1.5]), another at its
    q-quantile (q drawn in [0.3, 0.7]): no simulated design meets it.  Drawn levels, not fixed ones: with fixed
    levels the 4 metrics give only 12 distinct specs, so 50 specs would repeat a few (and one that is feasible
    after all would count several times).  Returns (spec, f)."""
    names = [c for c in HIGHER_IS_BETTER if c in y_cols]
    beyond, other = rng.choice(names, size=2, replace=False)
    f, q = float(rng.uniform(1.15, 1.5)), float(rng.uniform(0.3, 0.7))
    col = y_all[:, y_cols.index(beyond)]
    spec = bound_spec(y_cols, {beyond: f * float(np.nanmax(col)),
                               other: float(np.nanquantile(y_all[:, y_cols.index(other)], q))})
    return spec, f


def sim_pass(opamp, designs: pd.DataFrame, spec: Spec) -> np.ndarray:
    sim = simulate(opamp, designs.reset_index(drop=True), "B")
    ok = (sim["status"] == "ok").to_numpy()
    return spec.meets(sim[spec.y_cols].to_numpy(float)).all(axis=1) & ok


def run_opt(args, fwd, mdn, mdn_meta, spec, seed, objectives=()):
    pre = fwd.preprocessing
    lo, hi = model_bounds(pre, args.grid)
    _, d = sample_designs(mdn, mdn_meta, mdn_condition(spec), args.n_init // 2, seed=seed)
    mdn_x = pre.transform_x(d)

    def propose_round(model, x0, exclude):
        return propose(model, spec, x0, steps=args.steps, lr=args.lr, lbfgs_steps=args.finish_lbfgs,
                       prior=args.prior, kappa=args.kappa, top_k=args.top_k, grid=args.grid, exclude=exclude,
                       objectives=objectives, circuit=args.circuit, objective_margin=args.objective_margin,
                       plain_slots=args.plain_slots)

    found = search(fwd, spec, starts=lambda model, rnd: hybrid_starts(args.n_init, lo, hi, seed=seed + 1000 * (rnd - 1),
                                                                        mdn_x=mdn_x),
                   propose_round=propose_round, rounds=args.rounds, log=lambda *_: None,
                   simulate=lambda table: verify_designs(args.opamp, table, spec, process="B"))
    passed = np.concatenate([v["pass_all"].to_numpy() for v in found.verified])
    designs = pd.concat([v[pre.x_cols] for v in found.verified], ignore_index=True)
    # the first round's candidates against the uncorrected model's mean +- std (later rounds use a corrected model)
    errors = standardised_errors(found.verified[0], spec) if found.verified else {}
    return passed, designs, {"n_pred_ok": found.rounds[0]["n_predicted_ok"], "rounds": len(found.rounds),
                    "flagged_infeasible": found.rounds[0]["n_predicted_ok"] == 0, "success_at": found.success_at,
                    "std_errors": {c: {"side": side, "z": [round(float(v), 4) for v in z]}
                                   for c, (z, side) in errors.items()}}


def pooled_std_errors(records: list) -> dict:
    """Per-spec ``std_errors`` ({metric: {"side", "z"}}, from ``inverse.verify.standardised_errors``; None for a spec
    with none) pooled per metric -> {metric: {"n", "within_1_std", "within_2_std" (shares of n), "n_one_sided",
    "side", "short" (share on the failing side), "kappa_90", "kappa_95", "specs_mostly_short" (share of specs with
    more than half their candidates on the failing side; None from fewer than 2 specs)}}.  The last five come from
    the specs in which the metric had a one-sided goal (a spec may leave it free): ``side`` that goal's failing
    side (0 when there is none, or the specs disagree), ``kappa_q`` the margin in stds, mean - kappa * std for a
    ``min`` goal, that the simulated value cleared on a share q of those candidates (the q-quantile of side * z):
    1.28 / 1.64 for a calibrated normal model on designs chosen without it.  None where no spec had such a goal."""
    pooled = {}
    for rec in filter(None, records):
        for c, e in rec.items():
            p = pooled.setdefault(c, {"z": [], "oriented": [], "sides": set(), "spec_short": []})
            p["z"].extend(e["z"])
            if e["side"] and len(e["z"]):
                o = e["side"] * np.asarray(e["z"], float)
                p["oriented"].extend(o)
                p["sides"].add(e["side"])
                p["spec_short"].append(np.mean(o > 0) > 0.5)
    out = {}
    for c, p in pooled.items():
        z, o = np.asarray(p["z"], float), np.asarray(p["oriented"], float)
        one = {"short": float(np.mean(o > 0)), "kappa_90": float(np.quantile(o, 0.90)),
               "kappa_95": float(np.quantile(o, 0.95))} if len(o) else dict.fromkeys(("short", "kappa_90", "kappa_95"))
        # one spec's candidates are often near-twins sharing one error: the share of specs is the sturdier count
        one["specs_mostly_short"] = float(np.mean(p["spec_short"])) if len(p["spec_short"]) > 1 else None
        out[c] = {"n": len(z), "within_1_std": float(np.mean(abs(z) <= 1)), "within_2_std": float(np.mean(abs(z) <= 2)),
                  "n_one_sided": len(o), "side": p["sides"].pop() if len(p["sides"]) == 1 else 0, **one}
    return out


def random_design_errors(fwd, x_test: pd.DataFrame, y_test: pd.DataFrame, sides: dict) -> dict:
    """``pooled_std_errors`` of the forward model on the target_test designs (drawn at random; never used to fit or
    select it), each metric oriented by ``sides`` as the candidates were: what the candidates' numbers compare to."""
    pre = fwd.preprocessing
    mean, std = fwd.predict_np(pre.transform_x(x_test[pre.x_cols]))
    y_mean, y_std = pre.inverse_y(mean), pre.y_std_to_physical(mean, std)
    y = y_test[pre.y_cols].to_numpy(float)
    record = {}
    for j, c in enumerate(pre.y_cols):
        if c in sides:
            z = (y[:, j] - y_mean[:, j]) / y_std[:, j]
            record[c] = {"side": sides[c], "z": z[np.isfinite(z) & (y_std[:, j] > 0)].tolist()}
    return pooled_std_errors([record])


def run_bo(args, bo, pre, spec, seed):
    """Constrained BO (benchmarks/bo_baseline.py): rounds of ``--top-k`` designs, snapped, never simulated twice."""
    mspec = spec.model_space(pre)
    xs, ys, passed, done, success_at, simulated = [], [], [], set(), None, []
    for rnd in range(args.rounds):
        u = bo.propose(mspec.lo.numpy(), mspec.hi.numpy(), q=args.top_k, seed=seed + 1000 * rnd,
                       x_extra=np.concatenate(xs) if xs else None, y_extra=np.concatenate(ys) if ys else None)
        d = pd.DataFrame(snap_designs(pre.inverse_x(bo.to_scaled(u)), pre.x_cols, args.grid), columns=pre.x_cols)
        d = d[~design_keys(d, pre.x_cols).isin(done)].drop_duplicates()
        done |= set(design_keys(d, pre.x_cols))
        simulated.append(d)
        sim = simulate(args.opamp, d.reset_index(drop=True), "B")
        ok = (sim["status"] == "ok").to_numpy()
        y = sim[spec.y_cols].to_numpy(float)
        passed.append(spec.meets(y).all(axis=1) & ok)
        if passed[-1].any():
            success_at = sum(len(p) for p in passed)
            break
        x_new, y_new = observed(pre, d.to_numpy(float), y, ok)
        xs.append(x_new)
        ys.append(y_new)
    return np.concatenate(passed), pd.concat(simulated, ignore_index=True), {"rounds": rnd + 1, "success_at": success_at}


def run_random(args, x_cols, spec, seed):
    d = grid_designs(args.opamp, 10_000 + seed, 0, args.top_k * args.rounds)[x_cols]
    return sim_pass(args.opamp, d, spec), d, {}


def run_mdn(args, mdn, mdn_meta, spec, seed):
    pre = Preprocessing.from_dict(mdn_meta["preprocessing"])
    budget = args.top_k * args.rounds
    _, d = sample_designs(mdn, mdn_meta, mdn_condition(spec), 4 * budget, seed=seed)
    snapped = pd.DataFrame(snap_designs(d.to_numpy(float), pre.x_cols, args.grid), columns=pre.x_cols).drop_duplicates()
    xs = torch.as_tensor(pre.transform_x(snapped))
    ys = torch.as_tensor(pre.transform_y(mdn_condition(spec)[None, :])).expand(len(xs), -1)
    with torch.no_grad():
        lp = mdn_log_prob(*mdn(ys), xs).numpy()
    top = snapped.iloc[np.argsort(-lp)[:budget]]
    return sim_pass(args.opamp, top, spec), top, {}


def partial_path(path: Path) -> Path:
    return path.with_name(path.stem + ".partial.json")


def saved_run(path: Path) -> dict | None:
    """A benchmark file's (finished or partial) content; None when it is missing or unreadable (truncated, not ours)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def resumed_specs(path: Path, run_args: dict) -> list:
    """The per-spec rows an interrupted run with the same arguments left (the run resumes after them), or those of
    a finished run with the same arguments (summarised again, nothing simulated), else []."""
    args = json.loads(json.dumps(run_args))     # as the file holds them (tuples as lists)
    part = partial_path(path)
    if part.is_file():
        saved = saved_run(part) or {}
        if saved.get("args") != args:
            print(f"[resume] {part} was written with other arguments: starting over", flush=True)
            return []
        print(f"[resume] {len(saved['per_spec'])} specs done in an earlier run: continuing after them", flush=True)
        return saved["per_spec"]
    saved = saved_run(path) or {}
    if saved.get("args") == args and "per_spec" in saved:
        print(f"[resume] {path} is this run, finished: summarising its {len(saved['per_spec'])} specs again without "
              f"simulating (delete the file to rerun them)", flush=True)
        return saved["per_spec"]
    return []


def model_fingerprint(model_type: str, ckpt, results_dir, opamp: str) -> dict:
    """sha256 of the files the forward model and the MDN are read from (an ensemble: its record, which holds its
    members' sha256): part of a run's arguments, so a run is resumed or reused only with the same models."""
    forward = ensemble_json_path(results_dir, opamp) if model_type == ENSEMBLE else Path(ckpt)
    return {"forward": file_sha256(forward), "mdn": file_sha256(Path(results_dir) / f"mdn_{opamp}.pth")}


def check_not_replacing(path: Path, run_args: dict) -> None:
    """A finished benchmark in ``path`` made with other arguments (another --model-type, --seed, --n-specs,
    --methods ...) is refused, not silently replaced by this run's."""
    saved = saved_run(path)
    if saved is None:
        return                                     # nothing there, or not ours to judge: replaced as before
    old = saved.get("args") or {}
    new = json.loads(json.dumps(run_args))
    diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:4])
        raise ToolkitError(f"{path} holds a finished benchmark made with other arguments ({shown}); this run would "
                           f"replace it. Fix: move or rename that file first, or rerun with its arguments.")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    settings = resolve(config, {"OPAMP_TYPE": args.opamp, "DATA_DIR": args.data_dir, "SEED": args.seed,
                                "RESULTS_DIR": args.results_dir})
    if not Path(args.results_dir).is_dir():     # before the data load: the most common first mistake
        raise ToolkitError(f"--results-dir {args.results_dir} does not exist. Make the forward models and the MDN "
                           f"there first: python -m pipeline --opamp {args.opamp} --results-dir {args.results_dir} "
                           f"&& python -m inverse_mdn --opamp {args.opamp} --results-dir {args.results_dir}")
    check_writable_dir(args.results_dir, "--results-dir")
    args.grid, _ = grid_for(args.data_dir, args.opamp)   # the design space that travels with the data
    data = get_data_and_scalers(**data_kwargs_from_settings(settings))
    x_test, y_test = data["raw"]["target_test"]
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(y_test), size=min(args.n_specs, len(y_test)), replace=False)
    ckpt = Path(args.results_dir) if args.model_type == ENSEMBLE else checkpoint_path(settings, args.model_type)
    fwd = load_forward(args.model_type, ckpt, opamp=args.opamp, results_dir=args.results_dir)
    mdn, mdn_meta = load_mdn(Path(args.results_dir) / f"mdn_{args.opamp}.pth")
    methods = args.methods.split(",")
    args.circuit, objectives = figure_circuit(args.opamp, fwd.x_cols), []
    if args.objective is not None:
        # figures only: exact, no simulation needed to score a design
        objectives = [parse_objective(args.objective, y_cols=[], circuit=args.circuit)]
        methods.append(OBJ_METHOD)
    # the rows of an interrupted run first: before the GP fit below (minutes), so a resume says so at once
    tag = ("" if args.difficulty == "feasible" else f"_{args.difficulty}") + ("" if args.rounds == 1 else f"_r{args.rounds}") \
        + (f"_{objectives[0].word}-{objectives[0].name}" if objectives else "") \
        + (f"_margin{args.objective_margin:g}" if objectives and args.objective_margin != OBJECTIVE_MARGIN else "") \
        + (f"_plain{args.plain_slots}" if objectives and args.plain_slots != PLAIN_SLOTS else "")
    path = Path(args.results_dir) / f"inverse_benchmark_{args.opamp}{tag}.json"
    run_args = {k: v for k, v in vars(args).items() if k not in ("grid", "circuit")} | {
        "models": model_fingerprint(args.model_type, ckpt, args.results_dir, args.opamp)}
    check_not_replacing(path, run_args)
    per_spec = resumed_specs(path, run_args)
    bo = None
    if "bo" in methods:   # the GPs' hyperparameters: fitted once on the B rows the forward models learn from
        from benchmarks.bo_baseline import BayesOpt
        pre = fwd.preprocessing
        x_fit = pd.concat([data["raw"][k][0] for k in ("target_train", "target_val")])
        y_fit = pd.concat([data["raw"][k][1] for k in ("target_train", "target_val")])
        t_fit = time.perf_counter()
        bo = BayesOpt(pre.transform_x(x_fit), pre.transform_y(y_fit), *model_bounds(pre, args.grid))
        print(f"[bo] GPs fitted on {len(x_fit)} target rows in {time.perf_counter() - t_fit:.1f}s", flush=True)
    y_all = np.concatenate([data["raw"][k][1].to_numpy(float) for k in ("target_train", "target_val", "target_test")])
    spec_rng = np.random.default_rng(args.seed + 1)
    for i, r in enumerate(rows):
        q = None
        if args.difficulty == "feasible":
            spec = make_spec(data["y_cols"], y_test.iloc[r].to_numpy(float))
        elif args.difficulty == "hard":
            spec, q = hard_spec(list(data["y_cols"]), y_all, spec_rng)
        else:
            spec, q = infeasible_spec(list(data["y_cols"]), y_all, spec_rng)
        if i < len(per_spec):   # done in an earlier, interrupted run with the same arguments
            if per_spec[i]["spec"] != spec.to_dict():
                raise ToolkitError(f"{partial_path(path)}: spec {i + 1} differs from this run's; delete the file "
                                   f"to start over")
            continue
        row = {"spec_row": int(y_test.index[r]), "spec": spec.to_dict(),
               ("beyond_factor" if args.difficulty == "infeasible" else "quantile"): q,
               "met_by_simulated_rows": int(spec.meets(y_all).all(axis=1).sum())}
        for m in methods:
            t0 = time.perf_counter()
            if m in ("opt", OBJ_METHOD):
                passed, designs, extra = run_opt(args, fwd, mdn, mdn_meta, spec, args.seed + i,
                                                 objectives if m == OBJ_METHOD else ())
            elif m == "bo":
                passed, designs, extra = run_bo(args, bo, fwd.preprocessing, spec, args.seed + i)
            elif m == "random":
                passed, designs, extra = run_random(args, data["x_cols"], spec, args.seed + i)
            else:
                passed, designs, extra = run_mdn(args, mdn, mdn_meta, spec, args.seed + i)
            if objectives:   # the best figure among the simulated designs that met the spec
                o = objectives[0]
                v = figures_table(args.circuit, designs.reset_index(drop=True))[o.name][np.asarray(passed, bool)]
                extra["objective_best"] = float(v[np.argmin(o.sense * v)]) if len(v) else None
            if "success_at" not in extra:   # one batch, ranked: the first passing design's position
                extra["success_at"] = int(np.argmax(passed)) + 1 if passed.any() else None
            row[m] = {"top1": bool(passed[0]) if len(passed) else False, "topk": bool(passed.any()),
                      "n_pass": int(passed.sum()), "n_sim": int(len(passed)),
                      "wall_s": round(time.perf_counter() - t0, 3), **extra}
        per_spec.append(row)
        atomic_write_text(partial_path(path), json.dumps({"args": run_args, "per_spec": per_spec}) + "\n")
        print(f"spec {i + 1}/{len(rows)} (test row {row['spec_row']}): " + "  ".join(
            f"{m}: top1={row[m]['top1']:d} top{args.top_k}={row[m]['topk']:d} {row[m]['wall_s']:.1f}s"
            for m in methods), flush=True)
    summary = {m: {"top1": float(np.mean([r[m]["top1"] for r in per_spec])),
                   f"top{args.top_k}": float(np.mean([r[m]["topk"] for r in per_spec])),
                   "median_wall_s": float(np.median([r[m]["wall_s"] for r in per_spec])),
                   "sims_per_spec": float(np.mean([r[m]["n_sim"] for r in per_spec]))} for m in methods}
    for m in methods:   # success within b simulations (b a multiple of --top-k up to the budget)
        summary[m]["success_within"] = {
            b: float(np.mean([r[m]["success_at"] is not None and r[m]["success_at"] <= b for r in per_spec]))
            for b in [args.top_k * 2 ** i for i in range(8) if args.top_k * 2 ** i <= args.top_k * args.rounds]}
    if objectives:   # paired with opt: the specs both met; the per-spec ratio of the best figures
        for m in methods:
            both = [r for r in per_spec if r[m]["objective_best"] is not None
                    and ("opt" not in methods or r["opt"]["objective_best"] is not None)]
            summary[m]["objective_n_paired"] = len(both)
            summary[m]["objective_median"] = float(np.median([r[m]["objective_best"] for r in both])) if both else None
            summary[m]["objective_ratio_to_opt"] = float(np.median(
                [r[m]["objective_best"] / r["opt"]["objective_best"] for r in both])) if both and "opt" in methods else None
    if "opt" in methods:   # flagged infeasible = no candidate predicted to meet the spec before any simulation
        summary["opt"]["flagged_infeasible"] = float(np.mean([r["opt"]["flagged_infeasible"] for r in per_spec]))
    sides = {}
    for m in (m for m in methods if m in ("opt", OBJ_METHOD)):
        summary[m]["std_errors"] = pooled_std_errors([r[m].get("std_errors") for r in per_spec])
        sides |= {c: e["side"] for c, e in summary[m]["std_errors"].items()}
    test_errors = random_design_errors(fwd, x_test, y_test, sides) if sides else {}
    out = {"opamp": args.opamp, "n_specs": len(rows), "difficulty": args.difficulty, "rounds": args.rounds,
           "args": run_args, "summary": summary, "target_test_std_errors": test_errors, "per_spec": per_spec}
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    partial_path(path).unlink(missing_ok=True)
    budgets = list(next(iter(summary.values()))["success_within"])
    print(f"\n{args.difficulty} specs, budget {args.rounds} x {args.top_k} simulations\n"
          f"| method | top-1 | {' | '.join(f'success within {b} sims' for b in budgets)} | median s/spec | sims/spec | "
          f"flagged infeasible |\n|---|---|{'---|' * len(budgets)}---|---|---|")
    for m, s in summary.items():
        flagged = f"{100 * s['flagged_infeasible']:.0f} %" if "flagged_infeasible" in s else "–"
        within = " | ".join(f"{100 * v:.0f} %" for v in s["success_within"].values())
        print(f"| {m} | {100 * s['top1']:.0f} % | {within} | {s['median_wall_s']:.1f} | {s['sims_per_spec']:.1f} | "
              f"{flagged} |")
    if objectives:
        o = objectives[0]
        print(f"\n{o.describe()}: best among each method's simulated designs meeting the spec, on the specs both it "
              f"and opt met\n| method | specs paired with opt | median {o.name} | median ratio to opt |\n|---|---|---|---|")
        for m, s in summary.items():
            med, ratio = s["objective_median"], s["objective_ratio_to_opt"]
            print(f"| {m} | {s['objective_n_paired']} | {'–' if med is None else f'{med:.4g}'} | "
                  f"{'–' if ratio is None else f'{ratio:.3f}'} |")
    for m, s in summary.items():
        if s.get("std_errors"):
            print(f"\n{m}: its first round's candidates that simulated OK, all specs pooled, against the model's "
                  f"mean +- std; beside each, the same model on the {len(y_test)} target_test designs (random)\n"
                  f"| metric | designs | inside +- 1 std | inside +- 2 std | on the failing side | specs mostly on it "
                  f"| margin (std) cleared by 90 % | by 95 % |\n|---|---|---|---|---|---|---|---|")
            for c, w in s["std_errors"].items():
                for name, e in ((f"{c}: candidates", w), (f"{c}: target_test", test_errors[c])):
                    mostly = e.get("specs_mostly_short")
                    mostly = "–" if mostly is None else f"{100 * mostly:.0f} %"
                    one = ["–"] * 4 if e["short"] is None else [f"{100 * e['short']:.0f} % of {e['n_one_sided']}",
                                                                 mostly, f"{e['kappa_90']:.2f}", f"{e['kappa_95']:.2f}"]
                    print(f"| {name} | {e['n']} | {100 * e['within_1_std']:.0f} % | {100 * e['within_2_std']:.0f} % | "
                          + " | ".join(one) + " |")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    run_main(main)
