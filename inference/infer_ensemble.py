"""Stage 4: calibrated ensemble of the heteroscedastic members, evaluated in physical units.

    python -m inference.infer_ensemble
    python -m inference.infer_ensemble --opamp two_stage_opamp --members align_hetero,target_only,dualhead,pooled
    python -m inference.infer_ensemble --data-dir /tmp/tiny --results-dir /tmp/res --no-plots

Members (``--members``, default ``align_hetero,target_only,dualhead``; ``pooled`` optional):
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
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.atomic import atomic_path, atomic_write_text
from core.cli import StageCLI, run_main
from core.outputs import results_lock
from core.errors import ToolkitError
from inference.calibration import CURVE_LEVELS, LEVELS, calibration_summary, coverage_curve
from inference.fusion import FINAL_METHODS, apply_fusion, fit_fusion
from inference.metrics import format_report, regression_report
from inference.predict import (DEFAULT_MEMBERS, _same_prep, check_agreement, checkpoint_sha256, ensemble_json_path,
                               load_member, parse_members)
from models.model_utils import read_checkpoint_meta
from training.common import COMMANDS, checkpoint_path, eval_split, positive_floor, start_stage


def parse_args(argv=None):
    cli = StageCLI("inference.infer_ensemble", __doc__)
    cli.flag("--val-split", "VAL_SPLIT")
    cli.flag("--test-split", "TEST_SPLIT")
    cli.add_argument("--members", default=",".join(DEFAULT_MEMBERS),
                     help="comma-separated: align_hetero, target_only, pooled, dualhead [default %(default)s]")
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


def check_against_data(member, data: dict) -> None:
    meta = member.meta
    for key in ("x_cols", "y_cols"):
        if list(meta[key]) != list(data[key]):
            raise ToolkitError(f"{member.path} was trained on {key} {meta[key]} but the data has {data[key]}. "
                               f"Retrain it on this data: {COMMANDS[member.name]}.")
    if not _same_prep(meta["preprocessing"], data["preprocessing"].to_dict()):
        raise ToolkitError(f"{member.path} was trained with other preprocessing (scalers / log columns) than this "
                           f"run's data settings. Rerun {COMMANDS[member.name]} with the same settings (or "
                           f"python -m pipeline --force).")
    split = meta.get("split") or {}
    for key in ("target_val_idx", "target_test_idx"):
        if key in data["split"] and split.get(key) != data["split"][key]:
            raise ToolkitError(f"{member.path} was trained on another split ({key} differs: other --seed, "
                               f"--val-split or --test-split); calibrating on it would leak. Rerun "
                               f"{COMMANDS[member.name]} with this run's split.")


@torch.no_grad()
def member_outputs(member, x: torch.Tensor):
    member.model.eval()
    mean, var = member.forward(x)
    return mean.double().cpu().numpy(), (None if var is None else var.double().cpu().numpy())


def _calibration_table(rows: dict) -> str:
    lines = ["=== calibration on test (model space; NLL incl. 0.5*log(2*pi)) ===",
             f"{'model':<14} {'NLL before':>10} {'after':>8} {'cov68 before':>13} {'after':>7} "
             f"{'cov95 before':>13} {'after':>7}"]
    for name, cal in rows.items():
        b, a = cal["before"]["mean"], cal["after"]["mean"]
        lines.append(f"{name:<14} {b['nll']:>10.3f} {a['nll']:>8.3f} {100 * b['cov68']:>12.1f}% "
                     f"{100 * a['cov68']:>6.1f}% {100 * b['cov95']:>12.1f}% {100 * a['cov95']:>6.1f}%")
    return "\n".join(lines)


def interval_bounds(pre, mean, var, z):
    """Physical (lo, hi) of mean +- z*sqrt(var) in model space (monotone transforms keep the order)."""
    half = np.sqrt(var) * np.asarray(z, float)
    return pre.inverse_y(mean - half), pre.inverse_y(mean + half)


def main(argv=None):
    args, settings = parse_args(argv)
    names = parse_members(args.members)
    opamp = settings["OPAMP_TYPE"]
    members = []
    for name in names:   # before loading data: a missing member is the most common mistake
        path = checkpoint_path(settings, name)
        if not path.is_file():
            raise ToolkitError(f"Missing ensemble member {name!r}: {path}. Make it with: {COMMANDS[name]} --opamp "
                               f"{opamp} --results-dir {settings['RESULTS_DIR']}  (or run everything: "
                               f"python -m pipeline --opamp {opamp})")
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings, names)


def run(args, settings, names):
    opamp = settings["OPAMP_TYPE"]
    members = []
    device, data, t0 = start_stage(settings, "ensemble", dry_run=args.dry_run)
    for name in names:
        members.append(load_member(name, checkpoint_path(settings, name), opamp=opamp, device=device))
    check_agreement(members)
    for m in members:
        check_against_data(m, data)
        if (m.meta.get("metrics") or {}).get("dry_run") and not args.dry_run:
            print(f"warning: {m.path} is a dry-run checkpoint (2 epochs of 2 batches); its numbers mean nothing.")
    split = eval_split(data)
    if split == "target_val":
        print("warning: TEST_SPLIT=0, so the ensemble is evaluated on target_val, the rows it was calibrated on.")
    cols, pre = data["y_cols"], data["preprocessing"]
    y_val = data["target_val"][1].astype(float)
    y_test = data[split][1].astype(float)
    x_val, x_test = (torch.as_tensor(data[s][0], device=device) for s in ("target_val", split))

    out = {}
    for m in members:
        mv, vv = member_outputs(m, x_val)
        mt, vt = member_outputs(m, x_test)
        if vv is None:  # point model: homoscedastic variance = its val MSE per metric
            mse = np.mean((mv - y_val) ** 2, axis=0)
            vv, vt = np.broadcast_to(mse, mv.shape).copy(), np.broadcast_to(mse, mt.shape).copy()
        out[m.name] = (mv, vv, mt, vt)
    params = fit_fusion(names, np.stack([out[n][0] for n in names]), np.stack([out[n][1] for n in names]), y_val,
                        final=args.final_calibration)
    means_t, vars_t = np.stack([out[n][2] for n in names]), np.stack([out[n][3] for n in names])
    ens_mean, ens_var_before, _ = apply_fusion(params, means_t, vars_t, final=False)
    _, ens_var, weights = apply_fusion(params, means_t, vars_t, final=True)

    truth = data["raw"][split][1].to_numpy(float)
    floor = positive_floor(data)
    record = {"opamp": opamp, "split": split, "n": int(len(truth)), "y_cols": cols, "members": {},
              "checkpoints": [str(m.path) for m in members], "dry_run": bool(args.dry_run),
              # what the fusion was fitted on: Ensemble.load refuses a member retrained since
              "member_sha256": {m.name: checkpoint_sha256(m.path) for m in members},
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": settings["SEED"],
              "coverage_levels": list(CURVE_LEVELS), "mean_weights": {}}
    curves, phys_member = {}, {}
    temps = np.asarray(params.temperatures)
    for k, m in enumerate(members):
        _, _, mt, vt = out[m.name]
        phys_member[m.name] = pre.inverse_y(mt)
        rep = regression_report(truth, phys_member[m.name], cols, floor=floor)
        cal_vt = vt * temps[k] ** 2
        record["members"][m.name] = {
            "checkpoint": str(m.path), "metrics": rep,
            "temperature": dict(zip(cols, map(float, temps[k]))),
            "val_mse": dict(zip(cols, map(float, params.val_mse[k]))),
            "calibration": {"before": calibration_summary(y_test, mt, vt, cols),
                            "after": calibration_summary(y_test, mt, cal_vt, cols)}}
        curves[f"{m.name} before"] = coverage_curve(y_test, mt, vt)
        curves[f"{m.name} after"] = coverage_curve(y_test, mt, cal_vt)
        record["mean_weights"][m.name] = dict(zip(cols, map(float, weights[k].mean(axis=0))))
    pred = pre.inverse_y(ens_mean)
    std = pre.y_std_to_physical(ens_mean, np.sqrt(ens_var))
    record["ensemble"] = {
        "metrics": regression_report(truth, pred, cols, floor=floor),
        "final_temperature": dict(zip(cols, map(float, params.final_temperature))),
        "final_method": params.final_method,
        "interval_z": params.interval_z,
        "calibration": {"before": calibration_summary(y_test, ens_mean, ens_var_before, cols),
                        "after": calibration_summary(y_test, ens_mean, ens_var, cols, params.interval_z),
                        "after_gaussian_z": calibration_summary(y_test, ens_mean, ens_var, cols)}}
    curves["ensemble before"] = coverage_curve(y_test, ens_mean, ens_var_before)
    curves["ensemble after"] = coverage_curve(y_test, ens_mean, ens_var)
    record["coverage_curves"] = curves
    record["fusion"] = params.to_dict()

    paths = out_paths(settings)
    atomic_write_text(paths["metrics"], json.dumps(record, indent=2) + "\n")
    idx = data["split"].get(f"{split}_idx", list(range(len(truth))))
    flags = pre.out_of_domain(data["raw"][split][0])
    table = {"row": idx, "out_of_domain": flags if flags is not None else [""] * len(idx)}   # "" = inside
    if flags is not None and any(flags):
        print(f"warning: {sum(map(bool, flags))} of the {len(flags)} {split} rows lie outside the training "
              f"inputs' ranges (column out_of_domain of the predictions CSV).")
    bounds = {lv: interval_bounds(pre, ens_mean, ens_var, params.interval_z[str(lv)]) for lv in LEVELS}
    for j, c in enumerate(cols):
        table.update({f"{c}_true": truth[:, j], f"{c}_mean": pred[:, j], f"{c}_std": std[:, j]})
        for lv, (lo, hi) in bounds.items():
            table.update({f"{c}_lo{round(100 * lv)}": lo[:, j], f"{c}_hi{round(100 * lv)}": hi[:, j]})
    with atomic_path(paths["predictions"]) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)

    images = {}
    if not args.no_plots:
        from inference import plots
        images["Parity (test)"] = plots.parity_plot(paths["parity"], truth, pred, cols, std=std, members=phys_member,
                                                    title=f"{opamp}: {split} (n={len(truth)})")
        images["Calibration (test)"] = plots.calibration_plot(paths["calibration"], list(CURVE_LEVELS), curves,
                                                              title=f"{opamp}: interval coverage on {split}")
        histories = {}
        for kind in COMMANDS:
            ck = checkpoint_path(settings, kind)
            if ck.is_file():
                histories[kind] = read_checkpoint_meta(ck).get("history") or {}
        images["Training curves"] = plots.training_curves(paths["training_curves"], histories,
                                                          title=f"{opamp}: training curves")
    from inference.report import write_report
    write_report(paths["report"], record, images)

    print()
    for m in members:
        print(format_report(record["members"][m.name]["metrics"], cols,
                            f"{m.name} on {split} (n={len(truth)}, physical units)"))
        print()
    print(format_report(record["ensemble"]["metrics"], cols, f"Ensemble on {split} (n={len(truth)}, physical units)"))
    print()
    print(_calibration_table({**{n: record["members"][n]["calibration"] for n in names},
                              "ensemble": record["ensemble"]["calibration"]}))
    print("temperatures: " + "; ".join(f"{n}: " + " ".join(f"{t:.2f}" for t in temps[k]) for k, n in enumerate(names))
          + "; final: " + " ".join(f"{t:.2f}" for t in params.final_temperature))
    wall = time.perf_counter() - t0
    written = [paths["metrics"], paths["predictions"], *[p for p in images.values() if p], paths["report"]]
    print(f"[ensemble] wall {wall:.1f}s; wrote " + ", ".join(str(p) for p in written))
    record["wall_s"] = round(wall, 2)
    record["paths"] = {k: str(p) for k, p in paths.items() if p in written}
    return record


if __name__ == "__main__":
    run_main(main)
