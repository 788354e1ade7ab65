"""The whole forward pipeline in one command: every training stage, then the ensemble and its report.

    python -m pipeline --opamp 5t_opamp                        # the main job on the shipped data
    python -m pipeline --opamp two_stage_opamp --seed 0 --force
    python -m pipeline --dry-run --data-dir /tmp/tiny --results-dir /tmp/res --set HIDDEN_DIM=16

Runs, in-process and in order: training.train -> training.train_align_coral ->
training.train_target_only -> fine_tune.fine_tune -> (training.train_pooled, only with
``--members ...,pooled``) -> inference.infer_ensemble, passing
``--opamp --data-dir --results-dir --device --seed --val-split --test-split --epochs --set
--dry-run --quiet`` through.  A training stage is skipped when its checkpoint is up to date:
it exists; it was made by today's code (the hashes of the stage's source files and of every
toolkit module they import, ``core.code_record``); its config snapshot equals this run's
settings (all keys it reads: see STAGE_IGNORES);
its split equals this run's split; no data file and no parent checkpoint is newer than it; it
is not a dry-run checkpoint (unless this is a dry run).  When the baseline reruns, the stages
built on it (align, fine-tune) rerun too; target-only and pooled do not depend on it.
``--force`` reruns everything.  The ensemble (seconds) always runs.  Ends with a
one-screen summary: per-stage wall time, the ensemble's test R^2 / R^2_log and coverage, paths.
"""
import time
import warnings
from pathlib import Path

from core.cli import StageCLI, run_main
from core.code_record import changed_files
from core.errors import ToolkitError
from core.outputs import results_lock
from data_loader import data_kwargs_from_settings, get_data_and_scalers
from models.model_utils import read_checkpoint_meta
from training.common import COMMANDS, STAGE_MODULES, checkpoint_path

IGNORED_KEYS = {"DEVICE", "NUM_THREADS"}   # settings that do not change what any stage learns
_ALIGN = {"LAMBDA_CORAL", "ALPHA_R2", "ALIGN_REINIT_LAYERS"}
_FINETUNE = {"L2SP_LAMBDA", "LR_BIAS", "LR_HEAD", "LR_UNFREEZE", "UNFREEZE_LAYERS", "FINETUNE_OBJECTIVE",
             "UNFREEZE_PATIENCE"}
_INVERSE = {"MDN_COMPONENTS", "MDN_HIDDEN", "MDN_LAYERS", "MDN_BATCH_SIZE", "MDN_EPOCHS", "MDN_LR", "OUT_OF_DOMAIN"}
_BASELINE = {"BASELINE_BATCH_SIZE", "BASELINE_VAL", "SOURCE_VAL_SPLIT"}  # the baseline's (its children follow it
                                                                        # through "after baseline")
# Settings a stage does not read: changing them leaves its checkpoint up to date.
STAGE_IGNORES = {
    "baseline": _ALIGN | _FINETUNE | _INVERSE | {"BATCH_SIZE", "N_TARGET_TRAIN", "MIN_BATCHES_PER_EPOCH"},
    "align_hetero": _FINETUNE | _INVERSE | _BASELINE,
    "target_only": {"LAMBDA_CORAL", "ALIGN_REINIT_LAYERS"} | _FINETUNE | _INVERSE | _BASELINE,
    "dualhead": (_ALIGN - {"ALPHA_R2"}) | _INVERSE | _BASELINE,   # ALPHA_R2: hetero phase 3
    "pooled": _ALIGN | _FINETUNE | _INVERSE | (_BASELINE - {"BASELINE_BATCH_SIZE"})   # it batches by that
              | {"BATCH_SIZE", "MIN_BATCHES_PER_EPOCH"},
}
STAGES = [  # (name, module, checkpoint kind, parent stage or None); modules: training.common.STAGE_MODULES
    (kind, STAGE_MODULES[kind], kind, parent)
    for kind, parent in (("baseline", None), ("align_hetero", "baseline"), ("target_only", None),
                         ("dualhead", "baseline"), ("pooled", None))
]
OPTIONAL_STAGES = {"pooled"}  # trained only when the ensemble uses it (--members ...,pooled)


def parse_args(argv=None):
    cli = StageCLI("pipeline", __doc__)
    for flag, key in (("--epochs", "EPOCHS"), ("--val-split", "VAL_SPLIT"), ("--test-split", "TEST_SPLIT")):
        cli.flag(flag, key)
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
    if not training and args.epochs is not None:
        out += ["--set", f"EPOCHS={args.epochs}"]   # keeps the ensemble's settings identical (unused there)
    out += ["--dry-run"] * args.dry_run + ["--quiet"] * args.quiet
    if not training:
        out += (["--members", args.members] if args.members else []) + ["--no-plots"] * args.no_plots
    return out


def _differences(saved: dict, settings: dict, kind: str) -> list:
    keys = (set(saved) | set(settings)) - IGNORED_KEYS - STAGE_IGNORES.get(kind, set())
    return sorted(k for k in keys if saved.get(k) != settings.get(k))


def code_staleness(meta: dict, kind: str) -> str | None:
    """Why a ``kind`` checkpoint's code record (``meta["code"]``) does not match today's source, or None."""
    code = meta.get("code")
    if code is None:
        return "no code record (made before checkpoints recorded their code)"
    changed = changed_files(code, STAGE_MODULES[kind])
    if changed:
        return f"code changed: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}"
    return None


def staleness(settings: dict, kind: str, current_split: dict, data_files, *, dry_run: bool) -> str | None:
    """Why the checkpoint of ``kind`` must be (re)made, or None when it is up to date."""
    path = checkpoint_path(settings, kind)
    if not path.is_file():
        return "no checkpoint"
    try:
        meta = read_checkpoint_meta(path)
    except ToolkitError as exc:
        return f"unreadable checkpoint ({exc})"
    if (meta.get("metrics") or {}).get("dry_run") and not dry_run:
        return "dry-run checkpoint"
    code = code_staleness(meta, kind)
    if code:
        return code
    diff = _differences(meta.get("config") or {}, settings, kind)
    if diff:
        return f"settings changed: {', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}"
    # the target split must match; keys a stage adds beside it (the baseline's source holdout) follow
    # from settings and seed, which were compared above
    recorded = {k: v for k, v in (meta.get("split") or {}).items() if k in current_split}
    if recorded != current_split:
        return "split changed"
    mtime = path.stat().st_mtime
    newer = [Path(f).name for f in data_files if Path(f).stat().st_mtime > mtime]
    if newer:
        return f"data newer than checkpoint ({', '.join(newer)})"
    parent = meta.get("parent")
    if parent:
        if not Path(parent).is_file():
            return f"parent {parent} is gone"
        if Path(parent).stat().st_mtime > mtime:
            return f"parent {Path(parent).name} is newer"
    return None


def plan(settings: dict, *, force: bool, dry_run: bool, members=None) -> list:
    """``[(name, module, kind, reason or None)]``; reason None = skip (up to date).

    Optional stages (``OPTIONAL_STAGES``) are planned only when ``members`` (ensemble members,
    default ``DEFAULT_MEMBERS``) names them."""
    from inference.predict import DEFAULT_MEMBERS, parse_members
    wanted = set(parse_members(members or DEFAULT_MEMBERS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the stages print the data warnings themselves
        data = get_data_and_scalers(**data_kwargs_from_settings(settings))
    out, rerun = [], set()
    for name, module, kind, parent in STAGES:
        if name in OPTIONAL_STAGES and name not in wanted:
            continue
        if force:
            reason = "--force"
        elif parent in rerun:
            reason = f"after {parent}"   # a stage built on a retrained parent is retrained too
        else:
            reason = staleness(settings, kind, data["split"], data["files"].values(), dry_run=dry_run)
        if reason:
            rerun.add(name)
        out.append((name, module, kind, reason))
    return out


def _fmt_time(s: float) -> str:
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min"


def main(argv=None):
    args, settings = parse_args(argv)
    with results_lock(settings["RESULTS_DIR"]):   # the stages run in-process under the same lock
        return run(args, settings)


def run(args, settings):
    t_all = time.perf_counter()
    import importlib
    steps = plan(settings, force=args.force, dry_run=args.dry_run, members=args.members)
    print(f"[pipeline] opamp={settings['OPAMP_TYPE']} data={settings['DATA_DIR']} results={settings['RESULTS_DIR']} "
          f"seed={settings['SEED']}{' DRY-RUN' if args.dry_run else ''}")
    for i, (name, module, kind, reason) in enumerate(steps, 1):
        print(f"  {i}. {name:<13} {'run ' if reason else 'skip'}  "
              f"{('(' + reason + ')') if reason else '(up to date: ' + checkpoint_path(settings, kind).name + ')'}")
    print(f"  {len(steps) + 1}. {'ensemble':<13} run   (always; seconds)")
    walls = {}
    for i, (name, module, kind, reason) in enumerate(steps, 1):
        if not reason:
            walls[name] = None
            continue
        print(f"\n[pipeline] ==> {i}/{len(steps) + 1} {name}: {COMMANDS[kind]}", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(module).main(stage_argv(args, training=True))
        walls[name] = time.perf_counter() - t0
    print(f"\n[pipeline] ==> {len(steps) + 1}/{len(steps) + 1} ensemble: python -m inference.infer_ensemble", flush=True)
    from inference import infer_ensemble
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


if __name__ == "__main__":
    run_main(main)
