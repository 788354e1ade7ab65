"""Search settings of one training stage: a grid (or a seeded random subset of it) x seeds x target sizes.

    python -m sweep --stage align_hetero --grid LAMBDA_CORAL=0.01,0.02,0.03,0.05 --seeds 0 1 2
    python -m sweep --opamp two_stage_opamp --stage dualhead --grid LR_UNFREEZE=1e-4,3e-4,1e-3 \\
        --grid UNFREEZE_LAYERS=1,all --random 4 --n-target 100 all --jobs 2
    python -m sweep ... --backend dask --scheduler tcp://head:8786     # an existing Dask cluster

Every combination of the ``--grid`` values (``KEY=v1,v2,...``; any config.py key the stage or its
parents read, typed like its default; ``KEY=[...]`` for list values) is run for every seed and
target size, each in its own folder ``<results-root>/<combo>_<hash>/seed<k>_n<N>_<fingerprint>/``: the stage's parents
(e.g. the source baseline) are trained once per (seed, n, parent settings) under
``<results-root>/_parents/`` and copied in, then the stage itself.  Each run is scored in
physical units on target_val (mean log-space R^2) -- the number the best setting is **chosen**
on -- and on target_test, which is only reported.  Runs go to a local process pool
(``--jobs``) or a Dask cluster (``core.executor``, the mechanism ``spice.generate`` uses).

Writes ``<results-root>/sweep.jsonl`` (one line per run; a rerun skips runs already there, so an
interrupted sweep resumes) and ``<results-root>/sweep.md`` (a table per target size, the best
setting by val marked), and prints the best setting as ``--set`` flags.  ``--docs-path`` also
replaces the block ``<!-- benchmarks.run:sweep:<name> ... -->`` of that Markdown file.

Bad input (an unknown or mistyped key, a value of the wrong type, an empty grid, a key the stage
does not read, an unreachable scheduler) is one line and exit 2, before anything is written.
"""
import argparse
import contextlib
import hashlib
import importlib
import itertools
import json
import os
import re
import shutil
import statistics
import time
import warnings
from pathlib import Path

from benchmarks.sizes import n_label, n_order, n_value
from core.atomic import atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError
from core.executor import BACKENDS, check_backend, parallel
from core.outputs import check_writable_dir
from core.markdown import replace_block
from core.settings import parse_set_pairs, resolve, snapshot, toolkit_config
from core.stages import STAGES, canonical, checkpoint_path, command, metrics_path, preflight as stage_checks
from models.model_utils import sidecar_path

config = toolkit_config()   # the toolkit's config.py, never a same-named file of the user's

SCORE = "r2_log"           # the selection score: mean log-space R^2 on target_val (higher is better)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--opamp", default=config.OPAMP_TYPE, help="circuit folder under --data-dir")
    p.add_argument("--data-dir", default=config.DATA_DIR)
    p.add_argument("--stage", required=True, help="the training stage to sweep: " + ", ".join(STAGES))
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config key and the values to try (repeat for more keys)")
    p.add_argument("--random", type=int, default=None, metavar="K",
                   help="run K combinations drawn (seeded by --sweep-seed) from the grid instead of all")
    p.add_argument("--sweep-seed", type=int, default=0, help="seed of the --random draw")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="run seeds (split, init, batches)")
    p.add_argument("--n-target", nargs="+", default=["all"], metavar="N", help="target training rows: N or all")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed for every run")
    p.add_argument("--results-root", default=None, help="default results/sweeps/<opamp>_<stage>")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="local worker processes")
    p.add_argument("--backend", choices=list(BACKENDS), default="local")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (with --backend dask)")
    p.add_argument("--docs-path", default=None, help="Markdown file whose sweep block is replaced")
    p.add_argument("--block", default=None, metavar="NAME",
                   help="name of that block, sweep:<NAME> [<opamp>_<stage>]: another sweep of the same stage gets "
                        "its own table instead of replacing the first")
    args = p.parse_args(argv)
    if args.block is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", args.block):
        raise ToolkitError(f"--block must be letters, digits, '_', '.' and '-', got {args.block!r}. "
                           f"Fix: e.g. --block 5t_opamp_align_hetero_large")
    args.stage = canonical(args.stage, what="stage to sweep")
    if not args.grid:
        raise ToolkitError("Empty grid: give at least one --grid KEY=V1,V2 (e.g. --grid LAMBDA_CORAL=0.01,0.05).")
    if args.random is not None and args.random < 1:
        raise ToolkitError(f"--random must be >= 1, got {args.random}.")
    # each run once: a repeated seed or size (or 0 beside all) trained the same run again and showed a zero spread
    args.n_target = list(dict.fromkeys(n_label(n) for n in args.n_target))
    args.seeds = list(dict.fromkeys(args.seeds))
    check_backend(args.backend, args.scheduler, workers=args.jobs)
    args.results_root = Path(args.results_root or Path(config.RESULTS_DIR) / "sweeps" / f"{args.opamp}_{args.stage}")
    check_writable_dir(args.results_root, "--results-root")
    return args


# ---------------------------------------------------------------- the grid
def chain(stage: str) -> list:
    """The stage's parents first, then the stage: ``["baseline", "align_hetero"]``."""
    out = [stage]
    while STAGES[out[0]].parent:
        out.insert(0, STAGES[out[0]].parent)
    return out


# settings that say which run it is, not how it trains: each sweep run gets them from these flags (a --grid or --set
# of one was overridden by the flag without a word: OPAMP_TYPE=5t_opamp,nosuch ranked two copies of one run)
RUN_KEYS = {"OPAMP_TYPE": "--opamp", "DATA_DIR": "--data-dir", "RESULTS_DIR": "--results-root", "SEED": "--seeds",
            "N_TARGET_TRAIN": "--n-target"}


def check_not_run_key(key: str, how: str) -> None:
    if key in RUN_KEYS:
        raise ToolkitError(f"{how} {key}: a sweep sets {key} for each run from {RUN_KEYS[key]}. Fix: "
                           f"{RUN_KEYS[key]} ... instead (one sweep per circuit and data folder).")


def parse_grid(pairs: list, stage: str) -> dict:
    """``["KEY=v1,v2"]`` -> {KEY: [typed values]} checked against config.py and the stage chain's reads."""
    defaults = snapshot(config)
    reads = set().union(*(STAGES[s].reads for s in chain(stage)))
    grid = {}
    for pair in pairs:
        key, raw = (pair.split("=", 1) + [""])[:2] if "=" in pair else (pair, None)
        key = key.strip().upper()
        if raw is None or not raw.strip():
            raise ToolkitError(f"--grid {pair!r} has no values. Fix: --grid {key or 'KEY'}=V1,V2")
        if key not in defaults:
            resolve(config, {key: raw})          # raises: unknown setting, with a "did you mean"
        check_not_run_key(key, "--grid")
        if key in grid:
            raise ToolkitError(f"--grid names {key} twice; give all its values once: --grid {key}=V1,V2,V3")
        if key not in reads:
            raise ToolkitError(f"{key} is not read by {stage} or the stages it starts from ({', '.join(chain(stage))}),"
                               f" so sweeping it changes nothing. Keys they read: {', '.join(sorted(reads))}.")
        split = _split_values(raw, defaults[key])
        if not split:
            raise ToolkitError(f"--grid {pair!r} has no values. Fix: --grid {key}=V1,V2")
        values = [resolve(config, {key: v})[key] for v in split]   # typed; bad: one line
        if len(set(map(json.dumps, values))) != len(values):
            raise ToolkitError(f"--grid {key} lists a value twice: {raw}")
        grid[key] = values
    return grid


def _split_values(raw: str, default):
    """Comma-separated values, or a JSON list (``[0.01, 0.02]``); a list-valued key takes a JSON list of lists
    (``[["a","b"],["a"]]``)."""
    if not isinstance(default, list) and raw.strip().startswith("["):
        try:
            values = json.loads(raw)
        except ValueError:
            raise ToolkitError(f"--grid values {raw!r} start with '[' but are not a JSON list.") from None
        return [v if isinstance(v, str) else json.dumps(v) for v in values]
    if isinstance(default, list):
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
            raise ToolkitError(f"A list setting takes a JSON list of lists in --grid, e.g. "
                               f"--grid 'KEY=[[\"a\",\"b\"],[\"a\"]]'; got {raw!r}.")
        return values
    values = [v.strip() for v in raw.split(",")]
    if "" in values and any(values):
        raise ToolkitError(f"--grid values {raw!r} have an empty item (a stray comma?). Fix: V1,V2 with no gaps.")
    return [v for v in values if v]


def combinations(grid: dict, random_k: int | None, seed: int) -> list:
    """Every combination of the grid ({KEY: value}), or ``random_k`` of them drawn without replacement."""
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    if random_k is not None and random_k < len(combos):
        import numpy as np
        pick = sorted(np.random.default_rng(seed).choice(len(combos), random_k, replace=False))
        combos = [combos[i] for i in pick]
    return combos


def _text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def combo_name(combo: dict) -> str:
    """A folder name for a combination: readable and unique (``LAMBDA_CORAL=0.01`` ... plus a short hash)."""
    text = "_".join(f"{k}={_text(v)}" for k, v in combo.items())
    safe = "".join(c if c.isalnum() or c in "._=-" else "-" for c in text)[:80]
    return f"{safe}_{hashlib.sha256(json.dumps(combo, sort_keys=True).encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------- one run (in a worker process)
def _argv(opamp, data_dir, results_dir, seed, n, overrides: dict) -> list:
    """A stage's command line for one run (``--set`` for every override, N_TARGET_TRAIN from n)."""
    out = ["--opamp", opamp, "--data-dir", str(data_dir), "--results-dir", str(results_dir), "--seed", str(seed),
           "--quiet", "--set", f"N_TARGET_TRAIN={n_value(n)}"]
    for key, value in overrides.items():
        out += ["--set", f"{key}={_text(value)}"]
    return out


def _settings(spec: dict, results_dir) -> dict:
    """The resolved settings the stage of ``spec`` runs with in ``results_dir`` (what its argv says)."""
    return resolve(config, {**spec["overrides"], "OPAMP_TYPE": spec["opamp"], "DATA_DIR": str(spec["data_dir"]),
                            "RESULTS_DIR": str(results_dir), "SEED": spec["seed"],
                            "N_TARGET_TRAIN": n_value(spec["n"])})


def _train(stages: list, argv: list, results_dir: Path) -> dict:
    """Run each stage's entry point in order (one thread, output to the folder's log); the last summary."""
    from core.runtime import set_threads
    set_threads(1)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = None
    with open(results_dir / "sweep_log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        for name in stages:
            summary = importlib.import_module(STAGES[name].module).main(argv)
    return summary


def _quiet_data(kwargs: dict) -> dict:
    """``get_data_and_scalers(**kwargs)`` without its lines and warnings: the sweep's own checks and scoring reloads
    (each stage prints the loader's warnings into its log once; raw warnings with source paths reached the terminal)."""
    from data_loader import get_data_and_scalers
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_data_and_scalers(**kwargs)


def parents_up_to_date(spec: dict) -> bool:
    """Whether every parent checkpoint in ``spec["dir"]`` is up to date by the pipeline's rule
    (``training.staleness``): a resumed sweep reuses them instead of training them again."""
    from data_loader import data_kwargs_from_settings
    from training.staleness import staleness
    settings = _settings(spec, spec["dir"])
    if not all(checkpoint_path(settings, p).is_file() for p in spec["parents"]):
        return False
    data = _quiet_data(data_kwargs_from_settings(settings))
    pre = data["preprocessing"].to_dict()
    return all(staleness(settings, p, data["split"], data["files"], dry_run=False, preprocessing=pre) is None
               for p in spec["parents"])


def train_parents(spec: dict) -> tuple:
    """Phase 1 task: the parent chain for one (seed, n, parent settings), unless it is there and up to date.
    ``(dir, None)``, or ``(dir, reason)`` when a parent's loss diverged (a swept parent setting that cannot
    train): its runs are recorded as failed instead of stopping the sweep."""
    from training.loop import TrainingDiverged
    if not parents_up_to_date(spec):
        try:
            _train(spec["parents"], _argv(spec["opamp"], spec["data_dir"], spec["dir"], spec["seed"], spec["n"],
                                          spec["overrides"]), Path(spec["dir"]))
        except TrainingDiverged as exc:
            return spec["dir"], f"parent {'/'.join(spec['parents'])}: {str(exc).splitlines()[0][:260]}"
    return spec["dir"], None


def failed_row(spec: dict, reason: str, wall_s: float) -> dict:
    """The JSONL row of a run that could not train: its reason, no scores (never chosen; a rerun skips it)."""
    return {**spec["row"], "failed": reason, "val_" + SCORE: None, "test_" + SCORE: None, "wall_s": wall_s,
            "dir": str(spec["dir"])}


def run_one(spec: dict) -> dict:
    """Phase 2 task: copy the trained parents in, train the stage, score it on target_val and target_test."""
    import torch
    from data_loader import data_kwargs_from_settings
    from inference.evaluate import evaluate_physical
    from inference.predict import checkpoint_oof_val
    from models.model_utils import load_checkpoint, read_checkpoint_meta
    out = Path(spec["dir"])
    out.mkdir(parents=True, exist_ok=True)
    argv = _argv(spec["opamp"], spec["data_dir"], out, spec["seed"], spec["n"], spec["overrides"])
    settings = _settings(spec, out)
    for parent in spec["parents"]:
        src = checkpoint_path(_settings(spec, spec["parent_dir"]), parent)
        for f in (src, sidecar_path(src), metrics_path(src)):
            shutil.copy2(f, out / f.name)
    t0 = time.perf_counter()
    from training.loop import TrainingDiverged
    try:
        summary = _train([spec["stage"]], argv, out)
    except TrainingDiverged as exc:   # this setting cannot train: recorded, the sweep goes on (a rerun skips it;
        # anything else, a locked folder or a full disk, stops the sweep and is retried by the rerun)
        return failed_row(spec, str(exc).splitlines()[0][:300], round(time.perf_counter() - t0, 2))
    wall = time.perf_counter() - t0
    data = _quiet_data(data_kwargs_from_settings(settings))   # for scoring: the stage printed its warnings
    path = checkpoint_path(settings, spec["stage"])
    model, _ = load_checkpoint(path, map_location="cpu")
    # a stage that also fitted the val rows (the GP with GP_ROWS = train+val) is scored on the out-of-sample val
    # predictions its checkpoint keeps, not on its in-sample fit of them (R^2 ~1 whatever the setting)
    oof = checkpoint_oof_val(read_checkpoint_meta(path), data)
    with torch.no_grad():
        val = evaluate_physical(model, data, "cpu", split="target_val", mean_scaled=None if oof is None else oof[0])
    test = summary["test"]
    return {**spec["row"], "val_" + SCORE: float(val["mean"][SCORE]), "test_" + SCORE: float(test["mean"][SCORE]),
            "val_per_metric": {c: float(v[SCORE]) for c, v in val.items() if isinstance(v, dict) and SCORE in v
                               and c != "mean"},
            "wall_s": round(wall, 2), "dir": str(out)}


# ---------------------------------------------------------------- the sweep
def fingerprint(args, fixed: dict) -> str:
    """What makes two sweeps' runs comparable (beside combo, seed and n): stage, circuit, data, fixed settings
    (their resolved values: --set epochs=3 and --set EPOCHS=03 are one setting)."""
    key = {"stage": args.stage, "opamp": args.opamp, "data": str(Path(args.data_dir).resolve()),
           "set": json.dumps(fixed, sort_keys=True, default=str)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def read_rows(path: Path) -> list:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plan(args, combos: list, fixed: dict) -> tuple:
    """(parent tasks, run tasks) still to do; runs already in the JSONL are skipped."""
    fp = fingerprint(args, fixed)
    done = {(json.dumps(r["combo"], sort_keys=True), r["seed"], r["n"]) for r in read_rows(args.results_root / "sweep.jsonl")
            if r.get("fingerprint") == fp}
    stages = chain(args.stage)
    parents, parent_reads = stages[:-1], set().union(*(STAGES[s].reads for s in stages[:-1])) if len(stages) > 1 else set()
    parent_tasks, runs = {}, []
    for combo in combos:
        overrides = {**fixed, **combo}
        for seed in args.seeds:
            for n in args.n_target:
                if (json.dumps(combo, sort_keys=True), seed, n) in done:
                    continue
                parent_overrides = {k: v for k, v in overrides.items() if k in parent_reads}
                what = [seed, n, parent_overrides, args.opamp, str(Path(args.data_dir).resolve())]
                pkey = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
                pdir = args.results_root / "_parents" / f"seed{seed}_n{n}_{pkey}"
                if parents and pkey not in parent_tasks:
                    parent_tasks[pkey] = {"parents": parents, "opamp": args.opamp, "data_dir": str(args.data_dir),
                                          "dir": str(pdir), "seed": seed, "n": n, "overrides": parent_overrides}
                runs.append({"stage": args.stage, "parents": parents, "parent_dir": str(pdir), "opamp": args.opamp,
                             "data_dir": str(args.data_dir), "seed": seed, "n": n, "overrides": overrides,
                             # the fingerprint in the name: a sweep with other fixed settings (--set), data or
                             # circuit in the same root gets its own folders instead of overwriting these runs
                             "dir": str(args.results_root / combo_name(combo) / f"seed{seed}_n{n}_{fp[:8]}"),
                             "row": {"stage": args.stage, "opamp": args.opamp, "combo": combo, "seed": seed, "n": n,
                                     "fingerprint": fp}})
    return list(parent_tasks.values()), runs


def table(rows: list, keys: list) -> tuple:
    """(Markdown, {n: best combo}): per target size, one line per combination, best val marked."""
    by_n = {}
    for r in rows:
        by_n.setdefault(r["n"], {}).setdefault(json.dumps(r["combo"], sort_keys=True), []).append(r)
    parts, best = [], {}
    for n in sorted(by_n, key=n_order):
        # a combination with a failed run is not chosen: its mean would be over the seeds that happened to train
        failed = {c: rs for c, rs in by_n[n].items() if any(r.get("failed") for r in rs)}
        groups = {c: rs for c, rs in by_n[n].items() if c not in failed}
        mean_val = {c: statistics.mean(r["val_" + SCORE] for r in rs) for c, rs in groups.items()}
        top = max(mean_val, key=mean_val.get) if mean_val else None
        if top is not None:
            best[n] = json.loads(top)
        seeds = sorted({r['seed'] for rs in by_n[n].values() for r in rs})
        lines = [f"n = {n} target training rows; seeds {seeds}. "
                 f"**Bold** = chosen (highest mean val R²_log); test is reported, never used to choose.", "",
                 "| " + " | ".join(keys) + " | val R²_log (mean ± sd) | test R²_log (mean) | wall s (median) |",
                 "| " + " | ".join("---" for _ in keys) + " | --- | --- | --- |"]
        for c, rs in failed.items():
            reason = next(r["failed"] for r in rs if r.get("failed")).replace("|", "/")
            lines.append("| " + " | ".join(str(json.loads(c).get(k)) for k in keys)
                         + f" | failed in {sum(bool(r.get('failed')) for r in rs)} of {len(rs)} runs: {reason}"
                         + " | – | – |")
        for c, rs in sorted(groups.items(), key=lambda kv: -mean_val[kv[0]]):
            combo, vals = json.loads(c), [r["val_" + SCORE] for r in rs]
            # one seed has no spread to show (a "± 0.0000" read as a measured zero)
            cell = f"{mean_val[c]:.4f}" + (f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else " (1 seed)")
            lines.append("| " + " | ".join(str(combo.get(k)) for k in keys)
                         + f" | {'**' + cell + '**' if c == top else cell}"
                         + f" | {statistics.mean(r['test_' + SCORE] for r in rs):.4f}"
                         + f" | {statistics.median(r['wall_s'] for r in rs):.0f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts), best


def check_run_settings(settings: dict, stages: list, combo: dict) -> None:
    """The checks each stage of the chain runs on its settings at its start (its ``preflight``), for one
    combination, so a bad value is one line before any run instead of a stop halfway through the sweep."""
    try:
        stage_checks(settings, stages)
    except ToolkitError as exc:
        raise ToolkitError(f"--grid/--set {combo or 'fixed settings'}: {exc} (in a sweep: --grid KEY=V1,V2 or "
                           f"--set KEY=VALUE)") from None


def check_sizes(args, combos: list, fixed: dict) -> None:
    """Before anything runs or is written: the data load for every seed (and swept split setting), and each
    --n-target fits in its target training rows."""
    from data_loader import data_kwargs_from_settings
    sizes = [n for n in args.n_target if n != "all"]
    seen = set()
    for combo, seed in itertools.product(combos, args.seeds):
        kwargs = data_kwargs_from_settings(resolve(config, {**fixed, **combo, "OPAMP_TYPE": args.opamp,
                                                            "DATA_DIR": str(args.data_dir), "SEED": seed,
                                                            "N_TARGET_TRAIN": 0}))
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        rows = len(_quiet_data(kwargs)["target_train"][0])
        too_big = [n for n in sizes if int(n) > rows]
        if too_big:
            raise ToolkitError(f"--n-target {' '.join(too_big)}: seed {seed}'s split has {rows} target training rows. "
                               f"Fix: --n-target {rows} or less, or all.")


def main(argv=None):
    args = parse_args(argv)
    grid = parse_grid(args.grid, args.stage)
    fixed = {k: resolve(config, {k: v})[k] for k, v in parse_set_pairs(args.set).items()}
    for key in fixed:
        check_not_run_key(key, "--set")
    overlap = sorted(set(fixed) & set(grid))
    if overlap:
        raise ToolkitError(f"{', '.join(overlap)} is both swept (--grid) and fixed (--set); keep one.")
    combos = combinations(grid, args.random, args.sweep_seed)
    for combo in combos:      # every run's settings are valid before anything runs (range and stage checks)
        check_run_settings(resolve(config, {**fixed, **combo, "OPAMP_TYPE": args.opamp,
                                            "DATA_DIR": str(args.data_dir)}), chain(args.stage), combo)
    data_dir = Path(args.data_dir) / args.opamp
    if not data_dir.is_dir():
        raise ToolkitError(f"No circuit folder {data_dir}. Fix: --data-dir DIR with DIR/{args.opamp}/source and "
                           f"DIR/{args.opamp}/target (python -m data_loader.cli checks a folder).")
    check_sizes(args, combos, fixed)
    parent_tasks, runs = plan(args, combos, fixed)
    jsonl = args.results_root / "sweep.jsonl"
    t0 = time.perf_counter()
    from joblib import delayed
    with parallel(args.backend, args.jobs, args.scheduler) as run:   # an unreachable scheduler fails here
        print(f"[sweep] {args.stage} on {args.opamp}: {len(combos)} combination(s) x {len(args.seeds)} seed(s) x "
              f"{len(args.n_target)} size(s); {len(runs)} run(s) to do, {len(parent_tasks)} parent chain(s) first "
              f"({' -> '.join(chain(args.stage)[:-1]) or 'none'}); {args.backend} backend; {args.results_root}")
        args.results_root.mkdir(parents=True, exist_ok=True)
        parents_failed = {}
        for done, failed in run(delayed(train_parents)(t) for t in parent_tasks):
            if failed:
                parents_failed[done] = failed
            print(f"[sweep] parents {'FAILED (' + failed + ')' if failed else 'ready'}: {done} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        # a run whose parents could not train is recorded as failed, with their reason, without training
        doomed = [failed_row(r, parents_failed[r["parent_dir"]], 0.0)
                  for r in runs if r["parent_dir"] in parents_failed]
        total, runs = len(runs), [r for r in runs if r["parent_dir"] not in parents_failed]
        finished = itertools.chain(doomed, run(delayed(run_one)(r) for r in runs))
        for k, row in enumerate(finished, 1):
            with open(jsonl, "a", encoding="utf-8") as f:      # one line per finished run: a resume point
                f.write(json.dumps(row) + "\n")
            what = (f"FAILED ({row['failed']})" if row.get("failed") else
                    f"val R2_log {row['val_' + SCORE]:.4f}, test {row['test_' + SCORE]:.4f}")
            print(f"[sweep] {k}/{total} {row['combo']} seed {row['seed']} n={row['n']}: {what} "
                  f"({row['wall_s']:.0f} s)", flush=True)
    fp = fingerprint(args, fixed)
    wanted = {json.dumps(c, sort_keys=True) for c in combos}
    rows = [r for r in read_rows(jsonl) if r.get("fingerprint") == fp and json.dumps(r["combo"], sort_keys=True) in wanted
            and r["seed"] in args.seeds and r["n"] in args.n_target]
    text, best = table(rows, list(grid))
    cmd = "python -m sweep " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    block = f"### sweep: {args.stage} on {args.opamp}\n\nCommand: `{cmd}`\n\n{text}\n"
    atomic_write_text(args.results_root / "sweep.md", block)
    if args.docs_path:
        replace_block(Path(args.docs_path), f"sweep:{args.block or f'{args.opamp}_{args.stage}'}", block)
    print()
    print(text)
    print()
    for n, combo in best.items():
        flags = " ".join(f"--set {k}={_text(v)}" for k, v in combo.items())
        # the command that trains it again: this sweep's circuit, data, size and fixed settings with the winner
        same = " ".join([f"--opamp {args.opamp} --data-dir {args.data_dir}",
                         *([f"--n-target {n}"] if n != "all" else []),
                         *(f"--set {k}={_text(v)}" for k, v in fixed.items())])
        print(f"[sweep] best on val at n={n}: {flags}   (e.g. {command(args.stage)} {same} {flags})")
    failed = [r for r in rows if r.get("failed")]
    if failed:
        print(f"[sweep] {len(failed)} of {len(rows)} runs could not train (listed in sweep.md; never chosen)")
    print(f"[sweep] wrote {jsonl} and {args.results_root / 'sweep.md'} ({time.perf_counter() - t0:.0f} s)")
    return {"rows": rows, "best": best}


if __name__ == "__main__":
    run_main(main)
