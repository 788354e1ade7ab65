"""Benchmark harness: our transfer methods vs peer baselines, over target-training sizes and seeds.

    python -m benchmarks.run --opamp 5t_opamp --seeds 0 1 2 --n-target 50 100 200 400 all --jobs 2
    python -m benchmarks.run --opamp two_stage_opamp --seeds 0 1 2 --n-target 50 100 200 400 all --jobs 2
    python -m benchmarks.run --opamp 5t_opamp --quick               # 1 seed, n = 50 and all, tiny nets
    python -m benchmarks.run --opamp 5t_opamp --render-only         # tables + plot from the JSONL

For each circuit x seed x target size n (a seeded subset of ``target_train``; val and test
rows fixed by the seed; ``all`` = every training row) it trains and scores on ``target_test``:

* ours, through the real stage entry points in-process into
  ``<results-root>/<opamp>/seed<k>_n<N>/``: ``training.train`` (the source-only baseline,
  reused from another n of the same seed when its preprocessing is identical), then the ensemble
  member stages of the registry (``core.stages``: align_hetero, target_only, dualhead; their
  method names are the stage names, old names such as align_coral accepted), then
  ``inference.infer_ensemble --no-plots``;
* peers (``benchmarks/peers.py``): source-only (the baseline above applied to B), target-only
  MLP / GBM / GP, the pooled stage (MLP with a domain flag), stacking (GBM and GP on x + source
  prediction).

Every method is scored by ``inference.metrics.regression_report`` (physical R^2, log-space
R^2, MAPE).  One JSONL line per circuit x seed x n x method goes to
``<results-root>/benchmarks.jsonl`` (finished tasks with the same settings -- every setting a
stage reads, from config.py or --set -- are skipped on a rerun; ``--fresh`` redoes them).  Inside a task dir a stage whose checkpoint is up to date by
the pipeline's rule (same settings it reads, split, data and parent) is not retrained: its saved
test report and wall time are used; ``--retrain`` trains every stage again.  Then
``--docs-path`` (default ``<results-root>/RESULTS.md``: a run never edits the shipped docs unless told to;
``make benchmarks`` passes ``docs/RESULTS.md``) gets
the block between ``<!-- benchmarks.run:<opamp> start -->`` and ``... end -->`` replaced (or
appended), ``learning_curve_<opamp>.png`` is written next to it, and where the n = all task dirs
hold finished runs the forward-stage block (``benchmarks.forward_report``) is refreshed from them
too.  ``--jobs`` (default 2 on
a 2-core machine) runs that many worker processes, one thread each; each (seed, n) cell is
split into parts that need the source baseline or not, run longest first
(``benchmarks/schedule.py``), so both workers stay busy to the end.  Fit times are measured
under that sharing.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/sklearn load their thread pools

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from benchmarks import forward_report, schedule  # noqa: E402
from benchmarks.sizes import n_label, n_order, n_value  # noqa: E402
from benchmarks.peers import PEERS, peer_params  # noqa: E402
from core.cli import run_main  # noqa: E402
from core.errors import ToolkitError  # noqa: E402
from core.executor import exit_with_parent  # noqa: E402
from core.markdown import replace_block  # noqa: E402
from core.outputs import check_writable_dir, results_lock, shared_results  # noqa: E402
from core.runtime import set_threads  # noqa: E402
from core.settings import parse_set_pairs, resolve, toolkit_config  # noqa: E402
from core.stages import STAGES, canonical, checkpoint_path, differences, metrics_path  # noqa: E402
from data_loader import data_kwargs_from_settings, get_data_and_scalers  # noqa: E402
from data_loader.preprocessing import same_preprocessing  # noqa: E402
from inference import infer_ensemble  # noqa: E402
from inference.evaluate import positive_floor, predict_scaled  # noqa: E402
from inference.members import parse_members  # noqa: E402
from inference.metrics import regression_report  # noqa: E402
from models import MLP  # noqa: E402
from models.model_utils import load_checkpoint, read_checkpoint_meta, sidecar_path  # noqa: E402
from training.staleness import code_staleness, staleness  # noqa: E402

config = toolkit_config()   # the toolkit's config.py, never a same-named file of the user's

N_DEFAULT = ["50", "100", "200", "400", "all"]
QUICK_SETS = ["EPOCHS=20", "PATIENCE=10", "HIDDEN_DIM=64", "NUM_LAYERS=3", "POOLED_HIDDEN_DIM=64", "POOLED_NUM_LAYERS=3"]  # ~1 min per circuit here
QUICK_GP_ROWS = 200
ENSEMBLE = ("ensemble", "ensemble (calibrated)")
SOURCE_ONLY = ("source_only", "source-only (baseline on B)")
PEER_STAGES = ("pooled",)   # stages scored as peers (trained from scratch, no transfer)
Y_FLOOR = -0.5     # learning-curve plot: mean log-space R^2 below this is drawn on the floor
BEST_TOL = 0.005  # log-space R^2 within this of the best counts as tied-first
# method -> table label: the registry's non-optional member stages (by name), then the ensemble
# our methods: every member stage the registry declares (an optional one too: the GP member) except the
# stages scored as peers, then the ensemble
OURS = {**{s.name: s.label for s in STAGES.values() if s.member and s.name not in PEER_STAGES},
        ENSEMBLE[0]: ENSEMBLE[1]}
BASELINE_MEMBERS = {s.name for s in STAGES.values() if s.member and s.parent == "baseline"}  # built on the baseline


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--opamp", nargs="+", default=[config.OPAMP_TYPE], help="circuit folder(s) under --data-dir")
    p.add_argument("--data-dir", default=config.DATA_DIR)
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    p.add_argument("--n-target", nargs="+", default=None, metavar="N",
                   help="target training sizes, integers or 'all' (default 50 100 200 400 all; --quick: 50 all)")
    p.add_argument("--results-root", default="results/benchmarks", help="per-run dirs and benchmarks.jsonl")
    p.add_argument("--docs-path", default=None, help="Markdown file whose block is replaced [<results-root>/RESULTS.md; "
                                                      "docs/RESULTS.md only when named]")
    p.add_argument("--device", default="cpu", help="passed to every stage (auto | cpu | cuda)")
    p.add_argument("--members", default=None, help="ensemble members (infer_ensemble --members); default: its own")
    p.add_argument("--methods", nargs="+", default=None,
                   help="restrict to these methods (default all): source_only, ours and peer names")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every stage and peer")
    p.add_argument("--gp-max-rows", type=int, default=None, help="training rows per GP (default peers.GP_MAX_ROWS)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="(seed, n) tasks run at once, one thread each [default %(default)s]")
    p.add_argument("--quick", action="store_true", help="1 seed, n = 50 and all, 5 epochs, small nets")
    p.add_argument("--fresh", action="store_true", help="redo tasks already in the JSONL")
    p.add_argument("--retrain", action="store_true",
                   help="retrain stages even when their checkpoint in the task dir is up to date")
    p.add_argument("--render-only", action="store_true", help="only rebuild tables and plots from the JSONL")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds or [0]
        args.n_target = args.n_target or ["50", "all"]
        args.set = QUICK_SETS + args.set  # explicit --set after these wins
        args.gp_max_rows = args.gp_max_rows or QUICK_GP_ROWS
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    args.n_target = [n_label(n) for n in (args.n_target or N_DEFAULT)]
    if args.jobs < 1:
        raise ToolkitError(f"--jobs must be >= 1, got {args.jobs}.")
    return args


def all_methods() -> list:
    return [SOURCE_ONLY[0], *PEERS, *OURS]


def labels() -> dict:
    return {SOURCE_ONLY[0]: SOURCE_ONLY[1], **{k: v[2] for k, v in PEERS.items()}, **OURS}


def method_name(name: str) -> str:
    """A method's name today: a stage's old name (align_coral, target_hetero, pooled_mlp) -> the stage's."""
    if name in all_methods():
        return name
    try:
        return canonical(name)
    except ToolkitError:
        return name


def settings_for(opamp, seed, n, args) -> dict:
    overrides = parse_set_pairs(args.set)
    overrides.update(OPAMP_TYPE=opamp, DATA_DIR=args.data_dir, SEED=seed, N_TARGET_TRAIN=n_value(n))
    return resolve(config, overrides)


PER_CELL = {"SEED", "N_TARGET_TRAIN", "OPAMP_TYPE", "RESULTS_DIR", "DATA_DIR"}   # set per cell, or paths


def fingerprint(args) -> str:
    """Settings that change numbers (not seed / n / paths): rows with another fingerprint are redone.  It is the
    resolved value of every setting a stage reads (and the fusion's), so an edit of config.py counts as a --set
    does; code changes do not (``--fresh`` redoes rows; stale checkpoints retrain either way)."""
    settings = resolve(config, parse_set_pairs(args.set))
    keys = set().union(*(s.reads for s in STAGES.values())) | {"FUSION_SELECTION", "ENSEMBLE_MEMBERS"}
    key = {"settings": {k: settings.get(k) for k in sorted(keys - PER_CELL)}, "gp": args.gp_max_rows,
           "members": args.members, "data": str(args.data_dir)}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ---- one (circuit, seed, n) task
def _stage_argv(opamp, seed, n, out, args):
    return ["--opamp", opamp, "--data-dir", str(args.data_dir), "--results-dir", str(out), "--seed", str(seed),
            "--device", args.device, "--quiet", *sum((["--set", s] for s in args.set), []),
            "--set", f"N_TARGET_TRAIN={n_value(n)}"]  # --set: infer_ensemble has no --n-target flag


def _reusable_baseline(out: Path, opamp: str, data: dict, settings: dict):
    """A baseline of the same seed trained in a sibling n dir with identical preprocessing, settings it reads
    (``core.stages``; its RESULTS_DIR aside) and code: the pipeline's up-to-date rule across folders."""
    for other in sorted(out.parent.glob(f"seed{settings['SEED']}_n*")):
        path = other / f"{opamp}_baseline_model.pth"
        if other == out or not path.is_file() or not path.with_name(path.stem + "_metrics.json").is_file():
            continue
        meta = read_checkpoint_meta(path)
        if (not differences(meta.get("config") or {}, settings, "baseline", ignore={"RESULTS_DIR"})
                and code_staleness(meta, "baseline") is None
                and same_preprocessing(meta["preprocessing"], data["preprocessing"].to_dict())):
            return path
    return None


def _row(base: dict, method: str, report: dict, fit_s: float, total_s: float, kind: str) -> dict:
    return {**base, "method": method, "kind": kind,
            **{k: float(report["mean"][k]) for k in ("r2", "r2_log", "mape")},
            "per_metric_r2_log": {c: float(v["r2_log"]) for c, v in report.items()
                                  if c != "mean" and isinstance(v, dict) and "r2_log" in v},
            "fit_s": round(float(fit_s), 2), "total_s": round(float(total_s), 2)}


def needs_baseline(methods: list, ens_members) -> bool:
    """Whether these methods use the seed's source baseline (the pooled and target-only ones do not)."""
    direct = {SOURCE_ONLY[0], *BASELINE_MEMBERS, "stack_gbm", "stack_gp"} & set(methods)
    return bool(direct) or bool(BASELINE_MEMBERS & set(ens_members))


def _baseline(out: Path, opamp: str, data: dict, settings_run: dict, ckpt: Path, current: bool, argv, train):
    """The seed's baseline summary: this dir's up-to-date one, a sibling n dir's copied here, or trained
    (``train``: the baseline stage's main)."""
    reuse = None if current else _reusable_baseline(out, opamp, data, settings_run)
    if current:
        print(f"[benchmarks] baseline: checkpoint up to date, reusing {ckpt}")
    elif reuse is not None:
        for src in (reuse, sidecar_path(reuse), metrics_path(reuse)):
            shutil.copy2(src, out / src.name)
        print(f"[benchmarks] reusing {reuse}")
    else:
        return train(argv)
    return json.loads(metrics_path(ckpt).read_text())


def run_task(opamp: str, seed: int, n: str, args, methods: list) -> list:
    """Train and score every method for one (circuit, seed, n); returns JSONL rows."""
    settings = settings_for(opamp, seed, n, args)
    out = Path(args.results_root) / opamp / f"seed{seed}_n{n}"
    out.mkdir(parents=True, exist_ok=True)
    set_threads(settings["NUM_THREADS"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "few target rows" is the point of small n
        data = get_data_and_scalers(**data_kwargs_from_settings(settings))
    truth = data["raw"]["target_test"][1].to_numpy(float)
    floor, pre, cols = positive_floor(data), data["preprocessing"], data["y_cols"]
    base = {"opamp": opamp, "seed": seed, "n_target": n, "n_train": int(len(data["target_train"][0])),
            "n_test": int(len(truth)), "fingerprint": fingerprint(args), "quick": bool(args.quick),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    argv = _stage_argv(opamp, seed, n, out, args)
    rows, stage_s = [], {}
    log = open(out / "benchmark_log.txt", "a", encoding="utf-8")
    # the cell's parts run in parallel workers on this folder (different checkpoints): the harness, holding
    # the results root's lock, coordinates them, so the stages' own folder lock stands aside
    with log, contextlib.redirect_stdout(log), threadpool_limits(1), shared_results(out):
        # source-only baseline: trained once per seed when the preprocessing allows, else here
        settings_run = dict(settings, RESULTS_DIR=str(out))
        ckpt = checkpoint_path(settings_run, "baseline")
        def up_to_date(kind):
            return not args.retrain and staleness(settings_run, kind, data["split"], data["files"],
                                                  dry_run=False) is None
        ens_members = parse_members(args.members or config.ENSEMBLE_MEMBERS) if "ensemble" in methods else []
        stage_s["baseline"] = 0.0
        if needs_baseline(methods, ens_members):
            base_summary = _baseline(out, opamp, data, settings_run, ckpt, up_to_date("baseline"), argv,
                                     _stage_main("baseline"))
            stage_s["baseline"] = base_summary["wall_s"]
            if SOURCE_ONLY[0] in methods:
                rows.append(_row(base, SOURCE_ONLY[0], base_summary["test"], stage_s["baseline"],
                                 stage_s["baseline"], "peer"))
        ours = [m for m in OURS if m in methods]
        # every member stage (what the ensemble needs), plus an optional one the ensemble or a peer row uses
        stages = [s.name for s in STAGES.values()
                  if s.member and (not s.optional or s.name in methods or s.name in ens_members)]
        if not ours:  # a peer stage alone (pooled): its stage only
            stages = [m for m in stages if m in methods]
        if stages:
            for method in stages:
                if not up_to_date(method):
                    summary = _stage_main(method)(argv)
                else:
                    summary = json.loads(metrics_path(checkpoint_path(settings_run, method)).read_text())
                    print(f"[benchmarks] {method}: checkpoint up to date, reusing its test report")
                stage_s[method] = summary["wall_s"]
                prereq = stage_s["baseline"] if method in BASELINE_MEMBERS else 0.0
                if method in methods:
                    rows.append(_row(base, method, summary["test"], summary["wall_s"], summary["wall_s"] + prereq,
                                     "peer" if method in PEER_STAGES else "ours"))
            if "ensemble" in methods:
                extra = ["--members", args.members] if args.members else []
                record = infer_ensemble.main(_stage_argv(opamp, seed, n, out, args) + ["--no-plots", *extra])
                members = record["members"]
                needs_base = bool(BASELINE_MEMBERS & set(members))
                total = (record["wall_s"] + sum(stage_s[m] for m in members)
                         + (stage_s["baseline"] if needs_base else 0.0))
                rows.append(_row(base | {"members": list(members)}, "ensemble", record["ensemble"]["metrics"],
                                 record["wall_s"], total, "ours"))
        # peers
        peers = [m for m in PEERS if m in methods and PEERS[m][0] is not None]  # pooled: a stage, above
        source_pred = None
        if any(PEERS[m][1] for m in peers):
            model, _ = load_checkpoint(ckpt, expect_class=MLP, map_location="cpu")
            source_pred = {s: predict_scaled(model, torch.as_tensor(data[s][0]))[0].astype(np.float32)
                           for s in ("target_train", "target_val", "target_test")}
        hp = peer_params(settings, **({"gp_max_rows": args.gp_max_rows} if args.gp_max_rows else {}))
        for name in peers:
            fn, needs_source, _ = PEERS[name]
            t0 = time.perf_counter()
            pred_model = fn(data, seed=seed, hp=hp, source_pred=source_pred)
            fit_s = time.perf_counter() - t0
            report = regression_report(truth, pre.inverse_y(pred_model), cols, floor=floor)
            rows.append(_row(base, name, report, fit_s, fit_s + (stage_s["baseline"] if needs_source else 0.0),
                             "peer"))
            print(f"[benchmarks] {name}: r2_log={report['mean']['r2_log']:.4f} fit {fit_s:.1f}s")
    return rows


def _stage_main(name: str):
    """The entry point of stage ``name`` (its registry module's ``main``)."""
    return importlib.import_module(STAGES[name].module).main


def _task_entry(job):
    opamp, seed, n, args, methods = job
    if mp.parent_process() is not None:   # a pool worker: never an orphan writing in a dead harness's folder
        exit_with_parent()
    return run_task(opamp, seed, n, args, methods)


# ---- JSONL
def read_rows(path: Path) -> list:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:   # rows written before the stage registry carry the stages' old names
        r["method"] = method_name(r["method"])
    return rows


def latest(rows: list) -> list:
    """The last row per (opamp, seed, n, method): reruns replace older numbers."""
    keep = {}
    for r in rows:
        keep[(r["opamp"], r["seed"], r["n_target"], r["method"])] = r
    return list(keep.values())


# ---- rendering
def _ms(vals, fmt="{:.3f}") -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"


def summarise(rows: list, opamp: str) -> dict:
    """{(method, n): {metric: [values over seeds]}} for one circuit."""
    out = {}
    for r in rows:
        if r["opamp"] != opamp:
            continue
        cell = out.setdefault((r["method"], r["n_target"]), {"r2": [], "r2_log": [], "mape": [], "total_s": [],
                                                            "n_train": [], "seeds": []})
        for k in ("r2", "r2_log", "mape", "total_s", "n_train"):
            cell[k].append(r[k])
        cell["seeds"].append(r["seed"])
    return out


def _commands_line(commands: list) -> str:
    """The command(s) that produced the rows shown: one, or each (reruns of some cells / methods)."""
    if len(commands) == 1:
        return f"Command: `{commands[0]}`"
    return "Commands (the table shows each cell's latest run):\n\n" + "\n".join(f"- `{c}`" for c in commands)


def render_markdown(rows: list, opamp: str, commands: list) -> str:
    cells = summarise(rows, opamp)
    names = labels()
    ns = sorted({n for _, n in cells}, key=n_order)
    methods = [m for m in all_methods() if any((m, n) in cells for n in ns)]
    ours = [m for m in methods if m in OURS]
    seeds = sorted({s for c in cells.values() for s in c["seeds"]})
    quick = any(r.get("quick") for r in rows if r["opamp"] == opamp)
    n_rows = {n: round(statistics.mean(v for (m, nn), c in cells.items() if nn == n for v in c["n_train"])) for n in ns}
    lines = [f"### {opamp}: transfer methods vs peers over target-training size",
             "", _commands_line(commands) + (" (**--quick: smoke-test settings, not results**)" if quick else ""),
             "", f"Seeds {', '.join(map(str, seeds))}; test split fixed per seed; n = rows of target_train used "
             f"({', '.join(f'{n}: {n_rows[n]}' for n in ns)}). Mean ± std over seeds. "
             "Methods marked * are ours; **bold** = best (or within "
             f"{BEST_TOL}) mean log-space R² at that n.", "",
             "Mean log-space R² on target_test:", "",
             "| method | " + " | ".join(f"n={n}" for n in ns) + " |",
             "| --- |" + " --- |" * len(ns)]
    best = {n: max(statistics.mean(cells[(m, n)]["r2_log"]) for m in methods if (m, n) in cells) for n in ns}
    for m in methods:
        vals = []
        for n in ns:
            c = cells.get((m, n))
            if not c:
                vals.append("–")
                continue
            text = _ms(c["r2_log"])
            vals.append(f"**{text}**" if statistics.mean(c["r2_log"]) >= best[n] - BEST_TOL else text)
        lines.append(f"| {names[m]}{' *' if m in ours else ''} | " + " | ".join(vals) + " |")
    lines += ["", "Best of ours vs best peer (mean log-space R²):", "",
              "| n | best ours | best peer | ours first or tied? |", "| --- | --- | --- | --- |"]
    for n in ns:
        o = [(statistics.mean(cells[(m, n)]["r2_log"]), m) for m in ours if (m, n) in cells]
        p = [(statistics.mean(cells[(m, n)]["r2_log"]), m) for m in methods if m not in ours and (m, n) in cells]
        if o and p:
            bo, bp = max(o), max(p)
            lines.append(f"| {n} | {names[bo[1]]} {bo[0]:.3f} | {names[bp[1]]} {bp[0]:.3f} | "
                         f"{'yes' if bo[0] >= bp[0] - BEST_TOL else 'no'} |")
    lines += ["", "All numbers (physical R², log-space R², MAPE; fit s = wall time of the method including the "
              "stages it needs, e.g. the source baseline for align/fine-tune/stacking):", "",
              "| n | method | R² (physical) | R² (log space) | MAPE % | fit s |", "| --- | --- | --- | --- | --- | --- |"]
    for n in ns:
        for m in methods:
            c = cells.get((m, n))
            if c:
                lines.append(f"| {n} | {names[m]}{' *' if m in ours else ''} | {_ms(c['r2'])} | {_ms(c['r2_log'])} | "
                             f"{_ms(c['mape'], '{:.1f}')} | {_ms(c['total_s'], '{:.1f}')} |")
    lines += ["", f"![learning curve {opamp}](learning_curve_{opamp}.png)"]
    return "\n".join(lines)


def plot_learning_curve(rows: list, opamp: str, path: Path) -> Path:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after choosing the backend
    cells = summarise(rows, opamp)
    names = labels()
    ns = sorted({n for _, n in cells}, key=n_order)
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = plt.get_cmap("tab20").colors
    xs_all = set()
    for k, m in enumerate(all_methods()):
        pts = [(statistics.mean(cells[(m, n)]["n_train"]), cells[(m, n)]["r2_log"]) for n in ns if (m, n) in cells]
        if not pts:
            continue
        x = [p[0] for p in pts]
        xs_all.update(x)
        y = [statistics.mean(p[1]) for p in pts]
        err = [statistics.stdev(p[1]) if len(p[1]) > 1 else 0.0 for p in pts]
        shown = [max(v, Y_FLOOR) for v in y]  # far-off values drawn on the floor as down-triangles
        style = dict(color=colors[(2 * k) % 20 + (k >= 10)], label=names[m] + (" *" if m in OURS else ""),
                     linestyle="-" if m in OURS else "--", linewidth=2 if m in OURS else 1)
        ax.errorbar(x, shown, yerr=[e if v > Y_FLOOR else 0.0 for e, v in zip(err, y)], marker="o", capsize=3,
                    **style)
        low = [(xi, Y_FLOOR) for xi, v in zip(x, y) if v < Y_FLOOR]
        if low:
            ax.plot(*zip(*low), marker="v", linestyle="none", markersize=9, color=style["color"])
    ax.set_xscale("log")
    ax.set_xticks(sorted(xs_all))
    ax.set_xticklabels([str(round(v)) for v in sorted(xs_all)])
    ax.minorticks_off()
    ax.set_xlabel("target training rows n (log scale)")
    ax.set_ylabel("mean log-space R² on target_test")
    ax.set_ylim(Y_FLOOR - 0.05, 1.02)
    ax.set_title(f"{opamp}: accuracy vs target samples (mean ± std over seeds; * = ours; ▼ = below {Y_FLOOR})",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(rows: list, opamps: list, args, fp: str | None = None) -> list:
    """Tables and plot per circuit from rows of one settings fingerprint (default: the circuit's latest)."""
    doc = Path(args.docs_path) if args.docs_path else Path(args.results_root) / "RESULTS.md"
    written = []
    for opamp in opamps:
        mine = [r for r in rows if r["opamp"] == opamp]
        if not mine:
            print(f"warning: no rows for {opamp} in the JSONL; nothing rendered for it.")
            continue
        want = fp or mine[-1]["fingerprint"]
        mine = latest([r for r in mine if r["fingerprint"] == want])
        if not mine:
            print(f"warning: no rows for {opamp} with these settings; nothing rendered for it.")
            continue
        commands = list(dict.fromkeys(r.get("command", "python -m benchmarks.run") for r in mine))
        body = render_markdown(mine, opamp, commands)
        replace_block(doc, opamp, body)
        written.append(plot_learning_curve(mine, opamp, doc.parent / f"learning_curve_{opamp}.png"))
        print(body)
        render_forward(Path(args.results_root), opamp, doc)
    print(f"[benchmarks] wrote {doc} and " + ", ".join(map(str, written)))
    return written


def render_forward(root: Path, opamp: str, doc: Path) -> None:
    """Refresh the forward-stage block from the same task dirs, so the two tables cannot drift apart
    (it once showed a dual-head two harness reruns old)."""
    runs = forward_report.collect_or_none(root, opamp)
    if runs:
        replace_block(doc, f"{opamp}:forward", forward_report.render(opamp, runs))


def _command(argv) -> str:
    """The command that reproduces the numbers (``--render-only`` only re-renders, so it is left out)."""
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--render-only"]
    return "python -m benchmarks.run " + " ".join(shown)


def main(argv=None):
    args = parse_args(argv)
    root = Path(args.results_root)
    log = root / "benchmarks.jsonl"
    command = _command(argv)
    if args.render_only:
        rows = read_rows(log)
        if not rows:
            raise ToolkitError(f"--render-only: no rows in {log}, nothing to render. Fix: the --results-root the "
                               f"harness wrote to.")
        render(rows, args.opamp, args)
        return rows
    methods = [method_name(m) for m in args.methods] if args.methods else all_methods()
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise ToolkitError(f"Unknown method(s) {unknown}; choose from {all_methods()}.")
    for opamp in args.opamp:
        if not (Path(args.data_dir) / opamp).is_dir():
            raise ToolkitError(f"No circuit folder {Path(args.data_dir) / opamp}. Give --data-dir and --opamp.")
    check_writable_dir(root, "--results-root")
    root.mkdir(parents=True, exist_ok=True)
    with results_lock(root, flag="--results-root"):   # one harness per results root; it coordinates the cells
        return run_cells(args, methods, root, log, command)


def run_cells(args, methods: list, root: Path, log: Path, command: str) -> list:
    """Plan the parts not yet in the JSONL, run them (``--jobs`` workers), append their rows, render."""
    fp = fingerprint(args)
    same_settings = [r for r in read_rows(log) if r.get("fingerprint") == fp]
    done = {(r["opamp"], r["seed"], r["n_target"], r["method"]) for r in same_settings} if not args.fresh else set()
    cells = [(opamp, seed, n) for opamp in args.opamp for n in args.n_target for seed in args.seeds]
    members = tuple(parse_members(args.members or config.ENSEMBLE_MEMBERS)) if "ensemble" in methods else ()
    parts = schedule.plan(cells, methods, done=done, ensemble_members=members, order_n=n_order,
                          history=schedule.fit_history(latest(same_settings)))
    print(f"[benchmarks] {len(parts)} part(s) of {len(cells)} (seed, n) cell(s) to run "
          f"(the rest already in {log}); methods: {', '.join(methods)}")
    t0 = time.perf_counter()

    def record(part, rows):
        with open(log, "a", encoding="utf-8") as f:
            for r in rows:
                r["command"] = command
                f.write(json.dumps(r) + "\n")
        best = max(rows, key=lambda x: x["r2_log"]) if rows else None
        print(f"[benchmarks] {part.opamp} seed {part.seed} n={part.n} {part.name}: "
              + (f"best r2_log {best['r2_log']:.3f} ({best['method']}); " if best else "")
              + f"{time.perf_counter() - t0:.0f}s elapsed", flush=True)

    def job(part):
        return (part.opamp, part.seed, part.n, args, part.methods)

    if args.jobs == 1 or len(parts) <= 1:
        def submit(part):  # in this process, one after another, in the scheduler's order
            record(part, _task_entry(job(part)))
            return id(part)
        schedule.dispatch(parts, 1, submit, lambda handles: handles[0])
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {}

            def submit(part):
                fut = pool.submit(_task_entry, job(part))
                futures[fut] = part
                return fut

            def wait_one(handles):
                fut = next(iter(wait(handles, return_when=FIRST_COMPLETED).done))
                record(futures[fut], fut.result())
                return fut
            schedule.dispatch(parts, args.jobs, submit, wait_one)
    print(f"[benchmarks] all tasks done in {time.perf_counter() - t0:.0f}s")
    rows = read_rows(log)
    render(rows, args.opamp, args, fp)
    return latest([r for r in rows if r["fingerprint"] == fp and r["opamp"] in args.opamp])


if __name__ == "__main__":
    run_main(main)
