"""Predict the metrics of new designs with the calibrated ensemble, from the shell.

    python -m inference.predict_designs --opamp 5t_opamp --designs my_designs.csv
    python -m inference.predict_designs --designs my_designs.csv --levels 0.9 --out my_predictions.csv

Reads a CSV with one row per design and a column per design variable (the data's names and units, any
order; other columns such as an id are kept as they are), loads the ensemble that
``python -m inference.infer_ensemble`` (or the pipeline) fitted in --results-dir, and writes the designs
with, per metric, the predicted ``<metric>_mean``, its ``<metric>_std`` (the model-space 1-sigma mapped to
physical units: docs/USAGE.md) and the calibrated central interval ``<metric>_lo<L>`` .. ``<metric>_hi<L>``
for each --levels L (the ensemble's split-conformal multipliers, fitted on target_val for levels 0.1 .. 0.99,
as ``Ensemble.predict_interval``), plus ``out_of_domain`` (the design variables outside the ranges the models
were trained on: extrapolations) and ``clipped`` (the metrics whose prediction was held at the edge of the
training data's range: the models extrapolated past it).
With --truth FILE (the designs' simulated metrics, rows in the same order: e.g. the targets.csv that
``python -m spice.generate --designs`` wrote) it adds ``<metric>_true`` and scores the predictions on the designs
that simulated OK: R², R² in log space, MAPE and the share inside each interval, per metric.
Default output: <results-dir>/<opamp>_predicted_<designs file name>.csv (--out FOLDER/ puts that name in
FOLDER); an existing file is replaced only with --overwrite.
"""
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.atomic import atomic_path
from core.cli import StageCLI, run_main
from core.errors import ToolkitError, name_list
from core.outputs import check_writable_file
from core.runtime import resolve_device
from data_loader.layout import line_of, read_designs, read_metrics
from inference.calibration import CURVE_LEVELS
from inference.evaluate import half_min_positive
from inference.metrics import regression_report
from inference.predict import Ensemble
from models.model_utils import is_dry_run

DEFAULT_LEVELS = (0.68, 0.95)   # the levels the ensemble's report states coverage for
BATCH = 4096                    # designs per forward pass (the GP member holds a batch x its training rows)
FLAG_COLUMNS = ("out_of_domain", "clipped")
FEW_FOR_R2 = 30                 # --truth on fewer designs: a note that R² rests on their spread



def parse_args(argv=None):
    cli = StageCLI("inference.predict_designs", __doc__, common=False)   # no data dir or seed: the ensemble has both
    for flag, key, help_text in StageCLI.COMMON:
        if key in ("OPAMP_TYPE", "RESULTS_DIR", "DEVICE"):
            cli.flag(flag, key, help_text)
    cli.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config.py constant")
    cli.add_argument("--designs", required=True, help="CSV of designs: a header naming the design variables, one "
                                                      "row per design (physical units, as in the data)")
    cli.add_argument("--out", default=None, help="output CSV, or a folder ending in / for the default name there "
                                                 "[<results-dir>/<opamp>_predicted_<designs name>.csv]")
    cli.add_argument("--levels", default=",".join(f"{lv:g}" for lv in DEFAULT_LEVELS),
                     help=f"comma-separated coverages of the calibrated intervals, each in {min(CURVE_LEVELS):g} .. "
                          f"{max(CURVE_LEVELS):g} (the levels they were calibrated for) [%(default)s]")
    cli.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    cli.add_argument("--truth", default=None, help="CSV of the designs' simulated metrics, rows in the designs "
                                                   "file's order (a status column is honoured): score the "
                                                   "predictions against it")
    cli.flag("--out-of-domain", "OUT_OF_DOMAIN", "designs outside the training inputs' ranges: warn (predict and "
                                                 "mark them) | refuse (exit 2) | off (predict and mark, no warning)")
    return cli.parse(argv)


def level_tag(level: float) -> str:
    """Column suffix of a level: 0.95 -> '95', 0.975 -> '97.5' (the ensemble predictions CSV's lo95/hi95)."""
    return f"{round(100 * level, 4):g}"


def parse_levels(text: str) -> list:
    """``"0.68,0.95"`` -> [0.68, 0.95]: each a coverage the intervals were calibrated for (``CURVE_LEVELS``' span),
    in the order given; levels with the same column name (``level_tag``) are one level."""
    lo, hi = min(CURVE_LEVELS), max(CURVE_LEVELS)
    levels = {}
    for part in str(text).split(","):
        part = part.strip()
        try:
            level = float(part)
        except ValueError:
            level = float("nan")
        if not 0 < level < 1:
            raise ToolkitError(f"--levels: {part!r} is not a coverage in (0, 1); expected e.g. --levels 0.68,0.95.")
        if not lo <= level <= hi:
            raise ToolkitError(f"--levels: {part} lies outside {lo:g} .. {hi:g}, the levels the ensemble's intervals "
                               f"were calibrated for on target_val (beyond them an interval would rest on a Gaussian "
                               f"guess); pick a level in that range.")
        levels.setdefault(level_tag(level), round(level, 6))
    return list(levels.values())


def default_name(settings: dict, designs: Path) -> str:
    return f"{settings['OPAMP_TYPE']}_predicted_{designs.stem}.csv"


def out_path(raw, settings: dict, designs: Path) -> Path:
    """--out as given; a folder (existing, or written with a trailing /) gets the default file name inside it."""
    if raw is None:
        return Path(settings["RESULTS_DIR"]) / default_name(settings, designs)
    path = Path(raw)
    if str(raw).endswith(("/", "\\")) or path.is_dir():
        return path / default_name(settings, designs)
    return path


def main(argv=None):
    t0 = time.perf_counter()
    args, settings = parse_args(argv)
    levels = parse_levels(args.levels)
    for flag, value in (("--designs", args.designs), ("--out", args.out), ("--truth", args.truth)):
        if value is not None and not str(value).strip():
            raise ToolkitError(f"{flag} is empty: pass a file path (or leave the flag out).")
    designs_path = Path(args.designs)
    out = out_path(args.out, settings, designs_path)
    for flag, given in (("--designs", designs_path), ("--truth", args.truth)):
        if given is not None and out.resolve() == Path(given).resolve():
            raise ToolkitError(f"--out {out} is the {flag} file itself; pass another --out (that file is kept).")
    check_writable_file(out, "--out")
    if out.exists() and not args.overwrite:
        raise ToolkitError(f"{out} exists (an earlier prediction?). Pass --overwrite to replace it, or --out "
                           f"another file.")
    ens = Ensemble.load(settings["RESULTS_DIR"], settings["OPAMP_TYPE"],
                        device=resolve_device(settings["DEVICE"], verbose=False))
    text, x = read_designs(designs_path, ens.x_cols)   # before any prediction: one line for a bad file
    truth = None if args.truth is None else read_metrics(args.truth, ens.y_cols, len(x))
    return run(settings, ens, text, x, levels, out, t0, truth, designs_path)


def written_by_us(columns, y_cols, truth: bool = False) -> list:
    """The columns of a designs file that this command writes (an earlier prediction fed back): replaced, not kept
    beside the new ones; with ``truth`` the ``<metric>_true`` ones too (without, they still hold those rows' truth)."""
    metric = "|".join(re.escape(c) for c in y_cols)
    kinds = "mean|std|lo[0-9.]+|hi[0-9.]+" + ("|true" if truth else "")
    pattern = re.compile(rf"^(?:{metric})_(?:{kinds})$")
    return [c for c in columns if c in FLAG_COLUMNS or pattern.match(c)]


def run(settings, ens: Ensemble, text: pd.DataFrame, x: pd.DataFrame, levels: list, out: Path, t0: float,
        truth: pd.DataFrame | None = None, designs_path: Path | None = None) -> dict:
    if ens.record.get("dry_run") or any(is_dry_run(m.meta) for m in ens.members):
        print(f"warning: the ensemble in {settings['RESULTS_DIR']} was fitted on dry-run members (--dry-run: 2 epochs "
              f"of 2 batches, a smoke test): its predictions mean nothing. Fix: python -m pipeline without --dry-run.")
    logged = [c for c in ens.x_cols if c in ens.preprocessing.log_x_cols]
    nonpositive = (x[logged] <= 0).to_numpy()
    if nonpositive.any():   # the models read these features in log space: no prediction exists for them
        row, col = (int(v) for v in np.argwhere(nonpositive)[0])
        where = line_of(designs_path, row) if designs_path is not None else f"data row {row + 1}"
        raise ToolkitError(f"design variable {logged[col]!r} is {x[logged[col]].iloc[row]:g} on {where} "
                           f"(rows like it: {int(nonpositive.any(axis=1).sum())}); the models read it in log space, "
                           f"so it must be > 0 (a size in the data's units). Fix that cell or delete the row.")
    flags = ens.domain_flags(x)
    outside = flags[flags != ""]
    mode = settings["OUT_OF_DOMAIN"]
    if len(outside) and mode == "refuse":
        raise ToolkitError(f"{len(outside)} of {len(x)} designs lie outside the training data (first: data row "
                           f"{outside.index[0] + 1}: {outside.iloc[0]}); --out-of-domain refuse. Their predictions "
                           f"would be extrapolations. Fix: designs inside the data's ranges (units as in the data), "
                           f"or --out-of-domain warn to predict and mark them.")
    columns, clipped = {}, []
    for start in tqdm(range(0, len(x), BATCH), desc="predict", unit="batch", disable=None, leave=False):
        part = x.iloc[start:start + BATCH]
        mean, std, bounds = ens.predict_with_intervals(part, levels, out_of_domain="off")
        clipped.append(mean.attrs["clipped"])
        for c in ens.y_cols:
            if truth is not None:
                columns.setdefault(f"{c}_true", []).append(truth[c].to_numpy()[start:start + BATCH])
            columns.setdefault(f"{c}_mean", []).append(mean[c].to_numpy())
            columns.setdefault(f"{c}_std", []).append(std[c].to_numpy())
            for lv, (lo, hi) in bounds.items():
                columns.setdefault(f"{c}_lo{level_tag(lv)}", []).append(lo[c].to_numpy())
                columns.setdefault(f"{c}_hi{level_tag(lv)}", []).append(hi[c].to_numpy())
    predicted = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()}, index=x.index)
    predicted.insert(0, "clipped", pd.concat(clipped))
    predicted.insert(0, "out_of_domain", flags)
    replaced = written_by_us(text.columns, ens.y_cols, truth is not None)
    table = pd.concat([text.drop(columns=replaced), predicted], axis=1)
    scores = None if truth is None else score(table, ens.y_cols, levels)   # before writing: a failure writes nothing
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    kept = [c for c in text.columns if c not in ens.x_cols and c not in replaced]
    summary = {"designs": len(x), "outside": len(outside), "clipped": int((predicted["clipped"] != "").sum()),
               "replaced": replaced, "kept": kept, "out": str(out), "levels": levels, "scores": scores,
               "wall_s": round(time.perf_counter() - t0, 2)}
    print_summary(settings, ens, table, summary, outside if mode != "off" else outside.iloc[:0])
    return summary


def score(table: pd.DataFrame, y_cols, levels) -> dict:
    """The predictions against the ``<metric>_true`` columns, on the designs whose every metric is known (those that
    simulated OK): ``{"n", "left_out", "metrics": regression_report (R², log-space R² with the truth's half smallest
    positive value as floor, MAPE), "covered": {level: {metric: share inside}}}``."""
    truth = table[[f"{c}_true" for c in y_cols]].to_numpy(float)
    ok = np.isfinite(truth).all(axis=1)
    out = {"n": int(ok.sum()), "left_out": int((~ok).sum()), "metrics": None, "covered": {}}
    if ok.sum() < 2:
        return out
    truth, pred = truth[ok], table.loc[ok, [f"{c}_mean" for c in y_cols]].to_numpy(float)
    out["metrics"] = regression_report(truth, pred, list(y_cols), floor=half_min_positive(truth))
    for lv in levels:
        tag = level_tag(lv)
        lo = table.loc[ok, [f"{c}_lo{tag}" for c in y_cols]].to_numpy(float)
        hi = table.loc[ok, [f"{c}_hi{tag}" for c in y_cols]].to_numpy(float)
        out["covered"][lv] = dict(zip(y_cols, map(float, ((truth >= lo) & (truth <= hi)).mean(axis=0))))
    return out


def print_scores(scores: dict, y_cols, levels) -> None:
    if scores["metrics"] is None:
        print(f"warning: --truth: {scores['n']} designs with every metric known ({scores['left_out']} failed or "
              f"missing a metric): too few to score")
        return
    rep = scores["metrics"]
    head = "".join(f"  {level_tag(lv) + ' % covered':>13s}" for lv in levels)
    print(f"against --truth, on the {scores['n']} designs with every metric known ({scores['left_out']} left out: "
          f"failed or missing a metric):")
    print(f"{'metric':16s} {'R2':>8s} {'R2 log':>8s} {'MAPE %':>8s}{head}")
    for c in y_cols:
        r = rep[c]
        cov = "".join(f"  {100 * scores['covered'][lv][c]:12.1f}%" for lv in levels)
        mark = " " if r["log_space"] else "*"
        print(f"{c:15s}{mark} {r['r2']:8.4f} {r['r2_log']:8.4f} {r['mape']:8.2f}{cov}")
    m = rep["mean"]
    print(f"{'mean':16s} {m['r2']:8.4f} {m['r2_log']:8.4f} {m['mape']:8.2f}")
    if scores["n"] < FEW_FOR_R2:
        print(f"note: R² weighs the errors against the spread of the true values over these {scores['n']} designs; "
              f"for a few similar designs (an inverse design's candidates) read MAPE and the coverage instead")
    if any(not rep[c]["log_space"] for c in y_cols):
        print("* not every true value > 0: its 'R2 log' is its R2, its MAPE is left out of the mean (it crosses or "
              "touches 0)")


def print_summary(settings: dict, ens: Ensemble, table: pd.DataFrame, summary: dict, outside: pd.Series) -> None:
    """One screen: what predicted what, each metric's predictions and typical interval, how the intervals covered
    target_test per metric, the flags, the file."""
    rec = ens.record
    print(f"[predict] {settings['OPAMP_TYPE']}: {summary['designs']} designs, ensemble of "
          f"{', '.join(ens.params.members)} (fitted {rec.get('time', '?')})")
    tag = level_tag(max(summary["levels"]))
    cal = ((rec.get("ensemble") or {}).get("calibration") or {}).get("after", {})
    split = rec.get("split", "?")
    print(f"{'metric':16s} {'median mean':>12s} {'min mean':>12s} {'max mean':>12s}  {'median ' + tag + ' % interval':>24s}"
          f"  {'on ' + split + ': 68 % / 95 % covered':>28s}")
    for c in ens.y_cols:
        m = table[f"{c}_mean"]
        with np.errstate(divide="ignore", invalid="ignore"):   # the interval relative to each design's own mean
            lo = np.nanmedian((table[f"{c}_lo{tag}"] - m) / m.abs())
            hi = np.nanmedian((table[f"{c}_hi{tag}"] - m) / m.abs())
        cov = cal.get(c, {})
        covered = f"{100 * cov['cov68']:.1f} % / {100 * cov['cov95']:.1f} %" if "cov95" in cov else "not recorded"
        print(f"{c:16s} {m.median():12.4g} {m.min():12.4g} {m.max():12.4g}  {100 * lo:+10.1f} % .. {100 * hi:+.1f} %"
              f"  {covered:>28s}")
    print(f"(interval: median over the designs of its bounds relative to the design's mean; the intervals are "
          f"calibrated on target_val, the coverage is theirs on {split}, {rec.get('n', '?')} rows)")
    if len(outside):
        print(f"warning: {summary['outside']} of {summary['designs']} designs lie outside the training data (first: "
              f"data row {outside.index[0] + 1}: {outside.iloc[0]}); their predictions are extrapolations (column "
              f"out_of_domain)")
    if summary["clipped"]:
        print(f"warning: for {summary['clipped']} designs a metric's prediction is held at the edge of the training "
              f"data's range (column clipped): the models extrapolated past it; treat those values as bounds")
    if summary["scores"] is not None:
        print_scores(summary["scores"], ens.y_cols, summary["levels"])
    if summary["kept"]:
        print(f"note: {len(summary['kept'])} column(s) ({name_list(summary['kept'])}) are not design variables of the model: "
              f"kept as they are")
    if summary["replaced"]:
        print(f"note: {len(summary['replaced'])} column(s) of the designs file ({name_list(summary['replaced'])}) are an "
              f"earlier prediction's: replaced by this one's")
    print(f"[predict] {summary['wall_s']:.1f}s from loading the ensemble to writing; wrote {summary['out']}")


if __name__ == "__main__":
    run_main(main)
