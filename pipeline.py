"""The whole forward pipeline in one command: every training stage, then the ensemble and its report.

    python -m pipeline --opamp 5t_opamp                        # the main job on the shipped data
    python -m pipeline --opamp two_stage_opamp --seed 0 --force
    python -m pipeline --dry-run --data-dir /tmp/tiny --results-dir /tmp/res --set HIDDEN_DIM=16
    (HIDDEN_DIM / NUM_LAYERS size every network but the pooled stage's: POOLED_HIDDEN_DIM / POOLED_NUM_LAYERS)

Runs, in the registry's order (``core.stages.STAGES``; see ``--jobs`` below): training.train ->
training.train_align_coral -> training.train_target_only -> fine_tune.fine_tune ->
training.train_pooled -> training.train_gp (these two optional stages run when the ensemble's members,
config ``ENSEMBLE_MEMBERS`` or ``--members``, name them: by default they do) -> inference.infer_ensemble, passing
``--opamp --data-dir --results-dir --device --seed --val-split --test-split --epochs --set
--dry-run --quiet`` through (``--n-target N`` as ``--set N_TARGET_TRAIN=N``, the ensemble included).  A training
stage is skipped when its checkpoint is up to date:
it exists; it was made by today's code (the hashes of the stage's source files and of every
toolkit module they import, ``core.code_record``); its config snapshot equals this run's
settings on every key it reads (``core.stages``: each stage declares them);
its split equals this run's split; no data file and no parent checkpoint changed since it (by
content: ``core.freshness``); it is not a dry-run checkpoint (unless this is a dry run).  When the
baseline reruns, the stages built on it (align, fine-tune) rerun too; target-only and pooled do not depend on it.
``--force`` reruns everything.  The ensemble (seconds) always runs.  Ends with a
one-screen summary: per-stage wall time, the ensemble's test R^2 / R^2_log and coverage, paths.

``--jobs N`` (config ``PIPELINE_JOBS``, default 2): the training stages run in N worker processes,
a child stage as soon as its parent is done, the longest chain first (``core.scheduling``; expected
times from each stage's last wall time, else ``Stage.cost_s``).  Each stage's own output then goes to
``RESULTS_DIR/logs/<opamp>_<stage>.log`` and the pipeline prints when each starts and ends.  The
checkpoints are the same as with ``--jobs 1`` (each stage seeds itself; a test checks it), which runs the
stages one after another in this process with their output on the terminal.
"""
import contextlib
import importlib
import json
import multiprocessing as mp
import signal
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from core.cli import StageCLI, run_main
from core import scheduling
from core.executor import exit_with_parent, quiet_leak_warnings
from core.outputs import results_lock, shared_results
from core.stages import STAGES, checkpoint_path, command, metrics_path, preflight as stage_checks
from data_loader import data_kwargs_from_settings, get_data_and_scalers, new_run
from inference import infer_ensemble
from inference.members import DEFAULT_MEMBERS, parse_members
from training.staleness import code_staleness, staleness  # noqa: F401  (pipeline.staleness: the old home)
from training.stage import refuse_dry_run_over_trained


def parse_args(argv=None):
    cli = StageCLI("pipeline", __doc__)
    for flag, key in (("--epochs", "EPOCHS"), ("--val-split", "VAL_SPLIT"), ("--test-split", "TEST_SPLIT"),
                      ("--n-target", "N_TARGET_TRAIN")):
        cli.flag(flag, key)
    cli.flag("--jobs", "PIPELINE_JOBS", "training stages run at once (worker processes; 1 = in this process)")
    cli.add_argument("--force", action="store_true", help="rerun every stage even if its checkpoint is up to date")
    cli.add_argument("--dry-run", action="store_true", help="2 epochs of 2 batches per stage (smoke test)")
    cli.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars in the stages")
    cli.add_argument("--members", default=None, help="ensemble members (see python -m inference.infer_ensemble -h)")
    cli.add_argument("--no-plots", action="store_true", help="no PNGs in the ensemble report")
    return cli.parse(argv)


def stage_argv(args, *, training: bool) -> list:
    """The flags passed through to a stage (only those the user gave)."""
    out = []
    for flag, dest in (("--opamp", "opamp"), ("--data-dir", "data_dir"), ("--results-dir", "results_dir"),
                       ("--device", "device"), ("--seed", "seed"), ("--val-split", "val_split"),
                       ("--test-split", "test_split")) + ((("--epochs", "epochs"),) if training else ()):
        value = getattr(args, dest)
        if value is not None:
            out += [flag, str(value)]
    for pair in args.set:
        out += ["--set", pair]
    if args.n_target is not None:   # every stage, the ensemble too: they must agree on the subset of training rows
        out += ["--set", f"N_TARGET_TRAIN={args.n_target}"]
    if not training and args.epochs is not None:
        out += ["--set", f"EPOCHS={args.epochs}"]   # keeps the ensemble's settings identical (unused there)
    out += ["--dry-run"] * args.dry_run + ["--quiet"] * args.quiet
    if not training:
        out += (["--members", args.members] if args.members else []) + ["--no-plots"] * args.no_plots
    return out


def plan(settings: dict, *, force: bool, dry_run: bool, members=None) -> list:
    """``[(name, module, kind, reason or None)]``; reason None = skip (up to date).

    Optional stages (``Stage.optional``) are planned only when ``members`` (ensemble members,
    default ``DEFAULT_MEMBERS``) names them."""
    wanted = set(parse_members(members or DEFAULT_MEMBERS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the stages print the data warnings themselves
        data = get_data_and_scalers(**data_kwargs_from_settings(settings))
    out, rerun = [], set()
    for stage in STAGES.values():
        name, parent = stage.name, stage.parent
        if stage.optional and name not in wanted:
            continue
        if force:
            reason = "--force"
        elif parent in rerun:
            reason = f"after {parent}"   # a stage built on a retrained parent is retrained too
        else:
            reason = staleness(settings, name, data["split"], data["files"], dry_run=dry_run,
                               preprocessing=data["preprocessing"].to_dict())
        if reason:
            rerun.add(name)
        out.append((name, stage.module, name, reason))
    return out


def _fmt_time(s: float) -> str:
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min"


def main(argv=None):
    args, settings = parse_args(argv)
    new_run()        # the loader's warnings print once in this run, again in the next (a notebook's second fit)
    preflight(settings, args.members or settings["ENSEMBLE_MEMBERS"])
    with results_lock(settings["RESULTS_DIR"]):   # the stages run in-process under the same lock
        return run(args, settings)


def preflight(settings: dict, members) -> None:
    """Every stage's own settings checks (``preflight`` in its module), for every stage this run may train,
    before the results folder is touched and before hours of training."""
    wanted = set(parse_members(members or DEFAULT_MEMBERS))
    stage_checks(settings, [s.name for s in STAGES.values() if not s.optional or s.name in wanted])


def run(args, settings):
    t_all = time.perf_counter()
    steps = plan(settings, force=args.force, dry_run=args.dry_run, members=args.members or settings["ENSEMBLE_MEMBERS"])
    if args.dry_run:   # before any stage runs: a smoke test never replaces trained checkpoints
        for name, _, kind, reason in steps:
            if reason:
                refuse_dry_run_over_trained(settings, kind)
    print(f"[pipeline] opamp={settings['OPAMP_TYPE']} data={settings['DATA_DIR']} results={settings['RESULTS_DIR']} "
          f"seed={settings['SEED']}{' DRY-RUN' if args.dry_run else ''}")
    for i, (name, module, kind, reason) in enumerate(steps, 1):
        print(f"  {i}. {name:<13} {'run ' if reason else 'skip'}  "
              f"{('(' + reason + ')') if reason else '(up to date: ' + checkpoint_path(settings, kind).name + ')'}")
    print(f"  {len(steps) + 1}. {'ensemble':<13} run   (always; seconds)")
    walls = {name: None for name, *_ in steps}
    todo = [step for step in steps if step[3]]
    if settings["PIPELINE_JOBS"] > 1 and len(todo) > 1:
        walls.update(run_parallel(args, settings, steps, todo))
    else:
        for i, (name, module, kind, reason) in enumerate(steps, 1):
            if not reason:
                continue
            print(f"\n[pipeline] ==> {i}/{len(steps) + 1} {name}: {command(kind)}", flush=True)
            t0 = time.perf_counter()
            importlib.import_module(module).main(stage_argv(args, training=True))
            walls[name] = time.perf_counter() - t0
    print(f"\n[pipeline] ==> {len(steps) + 1}/{len(steps) + 1} ensemble: python -m inference.infer_ensemble", flush=True)
    t0 = time.perf_counter()
    record = infer_ensemble.main(stage_argv(args, training=False))
    walls["ensemble"] = time.perf_counter() - t0
    total = time.perf_counter() - t_all

    ens = record["ensemble"]
    best = max(record["members"], key=lambda n: record["members"][n]["metrics"]["mean"]["r2_log"])
    cal = ens["calibration"]["after"]["mean"]
    print("\n" + "=" * 72)
    print(f"pipeline summary: {settings['OPAMP_TYPE']} ({_fmt_time(total)} total)"
          + (" -- DRY RUN, numbers are meaningless" if args.dry_run else ""))
    for name, wall in walls.items():
        print(f"  {name:<13} {'skipped (up to date)' if wall is None else _fmt_time(wall)}")
    print(f"  ensemble on {record['split']} (n={record['n']}): mean R2={ens['metrics']['mean']['r2']:.4f} "
          f"R2_log={ens['metrics']['mean']['r2_log']:.4f}  (best member {best}: "
          f"R2_log={record['members'][best]['metrics']['mean']['r2_log']:.4f})")
    print(f"  coverage after calibration: 68% -> {100 * cal['cov68']:.1f}%, 95% -> {100 * cal['cov95']:.1f}%")
    for key in ("report", "metrics", "predictions"):
        if key in record.get("paths", {}):
            print(f"  {key:<12} {record['paths'][key]}")
    print("=" * 72)
    return {"walls": walls, "total_s": total, "plan": [(n, r) for n, _, _, r in steps], "ensemble": record}


def expected_seconds(settings: dict, name: str) -> float:
    """The stage's wall time in its last metrics JSON (a full run), else the registry's rough ``cost_s``."""
    try:
        record = json.loads(metrics_path(checkpoint_path(settings, name)).read_text(encoding="utf-8"))
        if not record.get("dry_run") and float(record["wall_s"]) > 0:
            return float(record["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return STAGES[name].cost_s


def stage_log(settings: dict, name: str) -> Path:
    return Path(settings["RESULTS_DIR"]) / "logs" / f"{settings['OPAMP_TYPE']}_{name}.log"


def _stage_worker(module: str, argv: list, results_dir: str, log_path: str, registry: list) -> float:
    """One training stage in a worker process, its output into ``log_path``; returns its wall seconds.
    The pipeline process holds the results lock; ``shared_results`` lets the stage write under it.
    ``registry``: the pipeline's stages, so one registered at run time (not in core.stages) is known here too."""
    from threadpoolctl import threadpool_limits

    from core.stages import register
    exit_with_parent()   # never an orphan writing under a lock its dead pipeline no longer holds
    for stage in registry:
        if stage.name not in STAGES:
            register(stage)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log), threadpool_limits(1), shared_results(results_dir):
        # one BLAS thread: the other worker has the other core (the GP's linear algebra would oversubscribe)
        importlib.import_module(module).main(argv)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _children_ignore_ctrl_c():
    """Workers started in this block ignore Ctrl-C from birth (an ignored signal stays ignored across exec, and
    Python then installs no KeyboardInterrupt handler): a terminal's Ctrl-C reaches the whole process group, and a
    worker still importing printed its own traceback.  The pipeline process stops them (``run_parallel``) and prints
    the one "interrupted" line.  A stage's files are written atomically: one cut short leaves no half file."""
    if threading.current_thread() is not threading.main_thread():   # only the main thread may set handlers
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _tail(path: Path, lines: int) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    return ""


def run_parallel(args, settings: dict, steps: list, todo: list) -> dict:
    """Train ``todo`` (plan steps with a reason) in ``PIPELINE_JOBS`` worker processes, each after its
    parent when the parent is retrained too; returns {stage: wall seconds}.  A failed stage stops the
    start of others; the running ones finish (their checkpoints are kept) and the error is raised."""
    number = {name: i for i, (name, *_rest) in enumerate(steps, 1)}
    total = len(steps) + 1
    parent = {name: STAGES[name].parent for name, *_ in todo}
    cost = {name: expected_seconds(settings, name) for name, *_ in todo}
    priority = scheduling.critical_path([s[0] for s in todo], key=lambda n: n, after=parent.get, cost=cost.get)
    (Path(settings["RESULTS_DIR"]) / "logs").mkdir(parents=True, exist_ok=True)
    jobs = settings["PIPELINE_JOBS"]
    print(f"\n[pipeline] {len(todo)} training stages on {jobs} workers; each stage's output: "
          f"{stage_log(settings, '<stage>')}", flush=True)
    modules = {name: module for name, module, *_ in todo}
    walls, t_all = {}, time.perf_counter()
    quiet_leak_warnings()   # before the pool starts multiprocessing's resource tracker
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        futures = {}

        def submit(name):
            log = stage_log(settings, name)
            print(f"[pipeline] ==> {number[name]}/{total} {name} starts at {time.perf_counter() - t_all:.0f}s: "
                  f"{command(name)}  (log {log})", flush=True)
            with _children_ignore_ctrl_c():   # a worker process may be started by this submit
                fut = pool.submit(_stage_worker, modules[name], stage_argv(args, training=True),
                                  str(settings["RESULTS_DIR"]), str(log), list(STAGES.values()))
            futures[fut] = name
            return fut

        def wait_one(handles):
            fut = next(iter(wait(handles, return_when=FIRST_COMPLETED).done))
            name = futures[fut]
            try:
                walls[name] = fut.result()
            except BaseException:
                others = [futures[f] for f in handles if f is not fut]
                print(f"[pipeline] {name} failed; the last lines of {stage_log(settings, name)}:\n"
                      f"{_tail(stage_log(settings, name), 15)}", flush=True)
                if others:
                    print(f"[pipeline] waiting for {', '.join(others)} to finish (its checkpoint is kept)", flush=True)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            last = (_tail(stage_log(settings, name), 2).splitlines() or [""])[0]   # "[stage] best epoch ...; wall"
            print(f"[pipeline] <== {name} done in {_fmt_time(walls[name])}: {last}", flush=True)
            return fut

        try:
            scheduling.dispatch([s[0] for s in todo], jobs, submit, wait_one, key=lambda n: n,
                                after=parent.get, priority=priority.get)
        except KeyboardInterrupt:   # Ctrl-C (the workers ignore it): stop them rather than wait for their stages
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)   # quick once they are gone; frees the pool's queues
            raise
    return walls


if __name__ == "__main__":
    run_main(main)
