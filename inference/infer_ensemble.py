"""Stage 4: calibrated ensemble of the members, evaluated in physical units (a script over ``inference.predict.Ensemble``).

    python -m inference.infer_ensemble
    python -m inference.infer_ensemble --opamp two_stage_opamp --members align_hetero,target_only,dualhead,pooled
    python -m inference.infer_ensemble --data-dir /tmp/tiny --results-dir /tmp/res --no-plots

Members (``--members``, default config ``ENSEMBLE_MEMBERS``: align_hetero, target_only, dualhead, pooled, gp_stack;
without ``--members`` the configured ones not trained yet are left out with a warning -- the seed's quick start
trains align_hetero and dualhead only --, while a member ``--members`` names must exist):
each member's model-space variance is calibrated per metric with the closed-form temperature
T^2 = mean((y - mu)^2 / sigma^2) on target_val (point models, ``pooled`` and a ``dualhead``
fine-tuned with FINETUNE_OBJECTIVE="mse", get the homoscedastic variance = their val MSE, then
the same).  Members are fused per sample with
precision x per-metric-MSE weights and a final temperature matching the 68/95 % coverage on
target_val (``--final-calibration``; formulas: ``inference/fusion.py``),
then converted to physical units (clipped inverse scaling, expm1 on log columns).  Evaluated
on target_test, which nothing here fits on.  Writes, under RESULTS_DIR:
``{OPAMP}_ensemble_metrics.json``, ``{OPAMP}_ensemble_predictions.csv``, ``{OPAMP}_parity.png``,
``{OPAMP}_calibration.png``, ``{OPAMP}_training_curves.png`` and ``{OPAMP}_report.md``.
"""
import time
from pathlib import Path

from core.atomic import atomic_path
from core.code_record import code_record
from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.outputs import results_lock
from core.runtime import start_run
from core.settings import setting_choice
from core.stages import STAGES, checkpoint_path, members as member_stages, rerun_command, run_flags
from data_loader import load_run_data
from inference.calibration import CURVE_LEVELS
from inference.fusion import FINAL_METHODS, SELECTIONS
from inference.members import check_against_data, load_member, out_of_date, parse_members
from inference.metrics import format_report
from inference.predict import Ensemble, ensemble_json_path
from inference.report import write_report
from models.model_utils import is_dry_run, plain, read_checkpoint_meta


def parse_args(argv=None):
    cli = StageCLI("inference.infer_ensemble", __doc__)
    cli.flag("--val-split", "VAL_SPLIT")
    cli.flag("--test-split", "TEST_SPLIT")
    cli.add_argument("--members", default=None,
                     help=f"comma-separated among {', '.join(member_stages())} [default: config ENSEMBLE_MEMBERS]")
    cli.flag("--fusion-selection", "FUSION_SELECTION", "how the per-metric weighting is scored on target_val: val "
             "(in-sample) or cv (out of fold)", choices=list(SELECTIONS))
    cli.add_argument("--final-calibration", choices=FINAL_METHODS, default="coverage",
                     help="final temperature of the fused variance, fitted on target_val: coverage (match the "
                          "68/95 %% intervals) | nll (closed form) | none [default %(default)s]")
    cli.add_argument("--no-plots", action="store_true", help="skip the PNGs (the report keeps the tables)")
    cli.add_argument("--dry-run", action="store_true", help="accept dry-run member checkpoints without warning")
    cli.add_argument("--quiet", action="store_true", help="(accepted for symmetry with the training stages)")
    return cli.parse(argv)


def out_paths(settings: dict) -> dict:
    root, opamp = Path(settings["RESULTS_DIR"]), settings["OPAMP_TYPE"]
    return {"metrics": ensemble_json_path(root, opamp), "predictions": root / f"{opamp}_ensemble_predictions.csv",
            "parity": root / f"{opamp}_parity.png", "calibration": root / f"{opamp}_calibration.png",
            "training_curves": root / f"{opamp}_training_curves.png", "report": root / f"{opamp}_report.md"}


def _calibration_table(rows: dict, split: str) -> str:
    lines = [f"=== calibration on {split} (model space; NLL incl. 0.5*log(2*pi)) ===",
             f"{'model':<14} {'NLL before':>10} {'after':>8} {'cov68 before':>13} {'after':>7} "
             f"{'cov95 before':>13} {'after':>7}"]
    for name, cal in rows.items():
        b, a = cal["before"]["mean"], cal["after"]["mean"]
        lines.append(f"{name:<14} {b['nll']:>10.3f} {a['nll']:>8.3f} {100 * b['cov68']:>12.1f}% "
                     f"{100 * a['cov68']:>6.1f}% {100 * b['cov95']:>12.1f}% {100 * a['cov95']:>6.1f}%")
    return "\n".join(lines)


def main(argv=None):
    args, settings = parse_args(argv)
    if args.members is not None and not args.members.strip(" ,"):
        raise ToolkitError("--members is empty. Fix: --members align_hetero,target_only,... or leave it out for "
                           "ENSEMBLE_MEMBERS.")
    names = parse_members(args.members or settings["ENSEMBLE_MEMBERS"])
    # --set FUSION_SELECTION=... bypasses the flag's choices: checked here, before any data is read
    setting_choice(settings, "FUSION_SELECTION", SELECTIONS, default=SELECTIONS[0],
                   fix=f"--fusion-selection {SELECTIONS[0]} (or {', '.join(SELECTIONS[1:])})")
    if args.members is None:   # the configured members: fuse the trained ones (the seed's steps train two of five)
        names = trained_members(names, settings)
    for name in names:   # before loading data: a missing member is the most common mistake
        path = checkpoint_path(settings, name)
        if not path.is_file():
            raise ToolkitError(f"Missing ensemble member {name!r}: {path}. Make it with: "
                               f"{rerun_command(name, settings)}  (or run everything: python -m pipeline "
                               f"{run_flags(settings)})")
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings, names)


def trained_members(names: list, settings: dict) -> list:
    """The configured members (ENSEMBLE_MEMBERS, no --members) that have a checkpoint, with one warning line naming
    the others and how to train them; all of ``names`` when none has one (the caller then says what is missing).
    An explicit --members is never cut: a member it names must exist."""
    have = [n for n in names if checkpoint_path(settings, n).is_file()]
    missing = [n for n in names if n not in have]
    if not have or not missing:
        return names
    print(f"warning: ENSEMBLE_MEMBERS names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
          f"trained in {settings['RESULTS_DIR']}: fusing the {len(have)} that {'is' if len(have) == 1 else 'are'} "
          f"({', '.join(have)}). For all of them: python -m pipeline {run_flags(settings)}", flush=True)
    return have


def plot(paths: dict, settings: dict, result) -> dict:
    """Parity, calibration and training-curve PNGs; {report caption: path}."""
    from inference import plots   # matplotlib: only when plotting
    opamp, truth = settings["OPAMP_TYPE"], result.truth
    histories = {name: read_checkpoint_meta(checkpoint_path(settings, name)).get("history") or {}
                 for name in STAGES if checkpoint_path(settings, name).is_file()}
    from spice.measure import METRIC_UNITS, OP_METRIC_UNITS   # the axis units of the simulator's metrics
    where = "test" if result.split == "target_test" else result.split   # no test rows: say which rows
    return {f"Parity ({where})": plots.parity_plot(paths["parity"], truth, result.mean, result.record["y_cols"],
                                               std=result.std, members=result.members,
                                               units={**METRIC_UNITS, **OP_METRIC_UNITS},
                                               title=f"{opamp}: {result.split} (n={len(truth)})"),
            f"Calibration ({where})": plots.calibration_plot(paths["calibration"], list(CURVE_LEVELS), result.curves,
                                                         title=f"{opamp}: interval coverage on {result.split}"),
            "Training curves": plots.training_curves(paths["training_curves"], histories,
                                                     title=f"{opamp}: training curves")}


def run(args, settings, names):
    opamp = settings["OPAMP_TYPE"]
    device, t0 = start_run(settings, "ensemble", dry_run=args.dry_run)
    data = load_run_data(settings, "ensemble")
    members = [load_member(name, checkpoint_path(settings, name), opamp=opamp, device=device) for name in names]
    for m in members:
        check_against_data(m, data, settings)
        if is_dry_run(m.meta) and not args.dry_run:
            print(f"warning: {m.path} is a dry-run checkpoint (2 epochs of 2 batches); its numbers mean nothing.")
        stale = out_of_date(m, settings, data["files"])
        if stale:
            print(f"warning: {m.path} looks out of date ({'; '.join(stale)}). python -m pipeline with these "
                  f"settings retrains what is.")
    # self-describing like a checkpoint: the settings, the split and the code it was fused with; a dry run when a
    # member is one (the fusion itself trains nothing: --dry-run only quiets the warning above)
    info = {"opamp": opamp, "dry_run": any(is_dry_run(m.meta) for m in members), "seed": settings["SEED"],
            "config": plain(settings, "config"), "data_split": plain(data["split"], "split"),
            "code": code_record("inference.infer_ensemble")}
    ens = Ensemble.fit(members, data, final=args.final_calibration, selection=settings["FUSION_SELECTION"], info=info)
    result = ens.evaluate()
    if result.split == "target_val":
        print("warning: no target_test rows (TEST_SPLIT=0, or a split column without test rows), so the ensemble "
              "is evaluated on target_val, the rows it was calibrated on.")
    paths = out_paths(settings)
    record = ens.save(paths["metrics"], result)
    outside = sum(map(bool, result.out_of_domain))
    if outside:
        print(f"warning: {outside} of the {len(result.out_of_domain)} {result.split} rows lie outside the training "
              f"inputs' ranges (column out_of_domain of the predictions CSV).")
    with atomic_path(paths["predictions"]) as tmp:
        result.table.to_csv(tmp, index=False)
    images = {} if args.no_plots else plot(paths, settings, result)
    old_pngs = [str(p) for k in ("parity", "calibration", "training_curves")
                if args.no_plots and (p := paths[k]).is_file()]
    if old_pngs:   # left as they are (a user may want them), but they show an earlier run, not this one
        print(f"warning: --no-plots: {', '.join(old_pngs)} are from an earlier run and do not show this one; "
              f"rerun without --no-plots to redraw them, or delete them")
    write_report(paths["report"], record, images)

    cols, n = record["y_cols"], record["n"]
    print()
    for name in names:
        print(format_report(record["members"][name]["metrics"], cols, f"{name} on {result.split} (n={n}, physical units)"))
        print()
    print(format_report(record["ensemble"]["metrics"], cols, f"Ensemble on {result.split} (n={n}, physical units)"))
    print()
    print(_calibration_table({**{n: record["members"][n]["calibration"] for n in names},
                              "ensemble": record["ensemble"]["calibration"]}, result.split))
    print("temperatures: " + "; ".join(f"{n}: " + " ".join(f"{t:.2f}" for t in ts)
                                       for n, ts in zip(names, ens.params.temperatures))
          + "; final: " + " ".join(f"{t:.2f}" for t in ens.params.final_temperature))
    wall = time.perf_counter() - t0
    written = [paths["metrics"], paths["predictions"], *[p for p in images.values() if p], paths["report"]]
    print(f"[ensemble] wall {wall:.1f}s; wrote " + ", ".join(str(p) for p in written))
    record["wall_s"] = round(wall, 2)
    record["paths"] = {k: str(p) for k, p in paths.items() if p in written}
    return record


if __name__ == "__main__":
    run_main(main)
