"""Inverse-design benchmark: feasible specs from held-out simulated designs, success in SPICE.

    python -m benchmarks.inverse_benchmark --opamp 5t_opamp --results-dir results_bench --n-specs 50
needs, in --results-dir, the forward checkpoints (python -m pipeline --results-dir ...) and the
MDN (python -m inverse_mdn --results-dir ...), all trained on the same data and split.

Specs: ``--n-specs`` rows drawn (seeded) from the target_test split -- never used to fit or
select any model -- each giving, around its simulated metrics (s, g, u, p, c):
    slewrate_pos >= 0.9 s (min), dc_gain >= 0.9 g (min), ugf in [0.8 u, 1.2 u] (range),
    phase_margin in [p - 10, p + 10] deg (range), cmrr >= 0.9 c (min)
so every spec is met by at least the held-out design itself.  Success = every goal met in a
SPICE simulation in the target process (B).  Per spec and method, with the same budget of
``--top-k`` simulations:
    opt      hybrid inverse_opt: MDN samples + random starts, Adam + L-BFGS through the forward
             model, snap, re-predict, rank; simulate the top-k
    random   k designs drawn from the generator's design space (spice.sampling); simulate them
    mdn      MDN samples alone: 4k samples, snapped, deduplicated, ranked by MDN log-density;
             simulate the top-k
top-1 = the first-ranked design passes; top-k = any of the k passes.  Wall time per spec =
proposal + simulation of the k designs (1 process, 1 torch thread).
Writes ``<results-dir>/inverse_benchmark_<opamp>.json`` (per-spec rows + summary).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import config
from core.atomic import atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError
from core.outputs import check_writable_dir
from core.settings import resolve
from core.stages import checkpoint_path
from data_loader import data_kwargs_from_settings, get_data_and_scalers
from data_loader.preprocessing import Preprocessing
from inverse.forward import ENSEMBLE, canonical_model_type, load_forward, model_types
from inverse.goals import Spec
from inverse.mdn import load_mdn, mdn_log_prob, sample_designs
from inverse.optimise import mdn_condition, model_bounds, propose, random_starts
from inverse.snap import grid_for, snap_designs
from inverse.verify import verify_designs
from spice.sampling import sample_designs as grid_designs
from spice.simulate import simulate

GOALS = ["min", "min", "range", "range", "min"]
METHODS = ("opt", "random", "mdn")


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
    p.add_argument("--n-init", type=int, default=64, help="starts per spec (half MDN, half random)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--finish-lbfgs", type=int, default=20)
    p.add_argument("--prior", type=float, default=1e-3)
    p.add_argument("--kappa", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--methods", default="opt,random,mdn")
    args = p.parse_args(argv)
    for name, value, lo in (("--n-specs", args.n_specs, 1), ("--top-k", args.top_k, 1), ("--n-init", args.n_init, 2),
                            ("--steps", args.steps, 0), ("--finish-lbfgs", args.finish_lbfgs, 0)):
        if value < lo:
            raise ToolkitError(f"{name} must be >= {lo}, got {value}.")
    for name, value in (("--lr", args.lr), ("--prior", args.prior), ("--kappa", args.kappa)):
        if not np.isfinite(value) or value < 0 or (name == "--lr" and value == 0):
            raise ToolkitError(f"{name} must be a finite number {'> 0' if name == '--lr' else '>= 0'}, got {value}.")
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        raise ToolkitError(f"--methods has unknown {unknown}; choose from {','.join(METHODS)}.")
    return args


def make_spec(y_cols, y_phys) -> Spec:
    s, g, u, pm, c = (float(y_phys[y_cols.index(k)]) for k in
                      ("slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"))
    return Spec.build(y_cols, GOALS, [0.9 * s, 0.9 * g, u, pm, 0.9 * c],
                      bands={"ugf": (0.8 * u, 1.2 * u), "phase_margin": (pm - 10.0, pm + 10.0)})


def sim_pass(opamp, designs: pd.DataFrame, spec: Spec) -> np.ndarray:
    sim = simulate(opamp, designs.reset_index(drop=True), "B")
    ok = (sim["status"] == "ok").to_numpy()
    return spec.meets(sim[spec.y_cols].to_numpy(float)).all(axis=1) & ok


def run_opt(args, fwd, mdn, mdn_meta, spec, seed):
    pre = fwd.preprocessing
    lo, hi = model_bounds(pre, args.grid)
    n_mdn = args.n_init // 2
    _, d = sample_designs(mdn, mdn_meta, mdn_condition(spec), n_mdn, seed=seed)
    x0 = torch.cat([torch.as_tensor(pre.transform_x(d)), random_starts(args.n_init - n_mdn, lo, hi, seed=seed)])
    x0 = torch.maximum(torch.minimum(x0, hi), lo)
    prop = propose(fwd, spec, x0, steps=args.steps, lr=args.lr, lbfgs_steps=args.finish_lbfgs, prior=args.prior,
                   kappa=args.kappa, top_k=args.top_k, grid=args.grid)
    ver = verify_designs(args.opamp, prop.table, spec, process="B")
    return ver["pass_all"].to_numpy(), {"n_pred_ok": int(prop.table["meets_all"].sum())}


def run_random(args, x_cols, spec, seed):
    d = grid_designs(args.opamp, 10_000 + seed, 0, args.top_k)[x_cols]
    return sim_pass(args.opamp, d, spec), {}


def run_mdn(args, mdn, mdn_meta, spec, seed):
    pre = Preprocessing.from_dict(mdn_meta["preprocessing"])
    _, d = sample_designs(mdn, mdn_meta, mdn_condition(spec), 4 * args.top_k, seed=seed)
    snapped = pd.DataFrame(snap_designs(d.to_numpy(float), pre.x_cols, args.grid), columns=pre.x_cols).drop_duplicates()
    xs = torch.as_tensor(pre.transform_x(snapped))
    ys = torch.as_tensor(pre.transform_y(mdn_condition(spec)[None, :])).expand(len(xs), -1)
    with torch.no_grad():
        lp = mdn_log_prob(*mdn(ys), xs).numpy()
    top = snapped.iloc[np.argsort(-lp)[:args.top_k]]
    return sim_pass(args.opamp, top, spec), {}


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
    per_spec = []
    for i, r in enumerate(rows):
        spec = make_spec(data["y_cols"], y_test.iloc[r].to_numpy(float))
        row = {"spec_row": int(y_test.index[r]), "spec": spec.to_dict()}
        for m in methods:
            t0 = time.perf_counter()
            if m == "opt":
                passed, extra = run_opt(args, fwd, mdn, mdn_meta, spec, args.seed + i)
            elif m == "random":
                passed, extra = run_random(args, data["x_cols"], spec, args.seed + i)
            else:
                passed, extra = run_mdn(args, mdn, mdn_meta, spec, args.seed + i)
            row[m] = {"top1": bool(passed[0]) if len(passed) else False, "topk": bool(passed.any()),
                      "n_pass": int(passed.sum()), "n_sim": int(len(passed)),
                      "wall_s": round(time.perf_counter() - t0, 3), **extra}
        per_spec.append(row)
        print(f"spec {i + 1}/{len(rows)} (test row {row['spec_row']}): " + "  ".join(
            f"{m}: top1={row[m]['top1']:d} top{args.top_k}={row[m]['topk']:d} {row[m]['wall_s']:.1f}s"
            for m in methods), flush=True)
    summary = {m: {"top1": float(np.mean([r[m]["top1"] for r in per_spec])),
                   f"top{args.top_k}": float(np.mean([r[m]["topk"] for r in per_spec])),
                   "median_wall_s": float(np.median([r[m]["wall_s"] for r in per_spec])),
                   "sims_per_spec": float(np.mean([r[m]["n_sim"] for r in per_spec]))} for m in methods}
    out = {"opamp": args.opamp, "n_specs": len(rows), "args": vars(args), "summary": summary, "per_spec": per_spec}
    path = Path(args.results_dir) / f"inverse_benchmark_{args.opamp}.json"
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    print(f"\n| method | top-1 | top-{args.top_k} | median s/spec | sims/spec |\n|---|---|---|---|---|")
    for m, s in summary.items():
        print(f"| {m} | {100 * s['top1']:.0f} % | {100 * s[f'top{args.top_k}']:.0f} % | {s['median_wall_s']:.1f} | "
              f"{s['sims_per_spec']:.0f} |")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    run_main(main)
