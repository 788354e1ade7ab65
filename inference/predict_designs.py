"""Predict the metrics of new designs with the calibrated ensemble, from the shell.

    python -m inference.predict_designs --opamp 5t_opamp --designs my_designs.csv
    python -m inference.predict_designs --designs my_designs.csv --levels 0.9 --out my_predictions.csv

Reads a CSV with one row per design and a column per design variable (the data's names and units, any
order; other columns such as an id are kept as they are), loads the ensemble that
``python -m inference.infer_ensemble`` (or the pipeline) fitted in --results-dir, and writes the designs
with, per metric, the predicted ``<metric>_mean``, its ``<metric>_std`` (the model-space 1-sigma mapped to
physical units: docs/USAGE.md) and the calibrated central interval ``<metric>_lo<L>`` .. ``<metric>_hi<L>``
for each --levels L (the ensemble's split-conformal multipliers, as ``Ensemble.predict_interval``), plus
``out_of_domain``: the design variables outside the ranges the models were trained on (extrapolations).
Default output: <results-dir>/<opamp>_predicted_<designs file name>.csv; an existing file is replaced
only with --overwrite.
"""
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.atomic import atomic_path
from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.outputs import check_writable_file
from core.runtime import resolve_device
from data_loader.layout import read_designs
from inference.predict import Ensemble, ensemble_json_path
from models.model_utils import is_dry_run

DEFAULT_LEVELS = (0.68, 0.95)   # the levels the ensemble's report states coverage for
BATCH = 4096                    # designs per forward pass (the GP member holds a batch x its training rows)


def parse_args(argv=None):
    cli = StageCLI("inference.predict_designs", __doc__, common=False)   # no data dir or seed: the ensemble has both
    for flag, key, help_text in StageCLI.COMMON:
        if key in ("OPAMP_TYPE", "RESULTS_DIR", "DEVICE"):
            cli.flag(flag, key, help_text)
    cli.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config.py constant")
    cli.add_argument("--designs", required=True, help="CSV of designs: a header naming the design variables, one "
                                                      "row per design (physical units, as in the data)")
    cli.add_argument("--out", default=None, help="output CSV [<results-dir>/<opamp>_predicted_<designs name>.csv]")
    cli.add_argument("--levels", default=",".join(f"{lv:g}" for lv in DEFAULT_LEVELS),
                     help="comma-separated coverages of the calibrated intervals, each in (0, 1) [%(default)s]")
    cli.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    cli.flag("--out-of-domain", "OUT_OF_DOMAIN", "designs outside the training inputs' ranges: warn (predict and "
                                                 "mark them) | refuse (exit 2) | off (predict, no warning)")
    return cli.parse(argv)


def parse_levels(text: str) -> list:
    """``"0.68,0.95"`` -> [0.68, 0.95]: each a coverage in (0, 1), in the order given, repeats dropped."""
    levels = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            level = float(part)
        except ValueError:
            level = float("nan")
        if not 0 < level < 1:
            raise ToolkitError(f"--levels: {part!r} is not a coverage in (0, 1); expected e.g. --levels 0.68,0.95.")
        if level not in levels:
            levels.append(level)
    return levels


def level_tag(level: float) -> str:
    """Column suffix of a level: 0.95 -> '95', 0.975 -> '97.5' (the ensemble predictions CSV's lo95/hi95)."""
    return f"{round(100 * level, 6):g}"


def default_out(settings: dict, designs: Path) -> Path:
    return Path(settings["RESULTS_DIR"]) / f"{settings['OPAMP_TYPE']}_predicted_{designs.stem}.csv"


def main(argv=None):
    args, settings = parse_args(argv)
    levels = parse_levels(args.levels)
    designs_path = Path(args.designs)
    out = Path(args.out) if args.out else default_out(settings, designs_path)
    if out.resolve() == designs_path.resolve():
        raise ToolkitError(f"--out {out} is the --designs file itself; pass another --out (the designs are kept).")
    check_writable_file(out, "--out")
    if out.exists() and not args.overwrite:
        raise ToolkitError(f"{out} exists (an earlier prediction?). Pass --overwrite to replace it, or --out "
                           f"another file.")
    opamp, results = settings["OPAMP_TYPE"], Path(settings["RESULTS_DIR"])
    if not ensemble_json_path(results, opamp).is_file():
        raise ToolkitError(f"No ensemble for {opamp!r} in {results} ({ensemble_json_path(results, opamp)} is "
                           f"missing). Make it with: python -m pipeline --opamp {opamp} --results-dir {results}")
    ens = Ensemble.load(results, opamp, device=resolve_device(settings["DEVICE"], verbose=False))
    text, x = read_designs(designs_path, ens.x_cols)   # before any prediction: one line for a bad file
    return run(args, settings, ens, text, x, levels, out)


def run(args, settings, ens: Ensemble, text: pd.DataFrame, x: pd.DataFrame, levels: list, out: Path) -> dict:
    t0 = time.perf_counter()
    if ens.record.get("dry_run") or any(is_dry_run(m.meta) for m in ens.members):
        print(f"warning: the ensemble in {settings['RESULTS_DIR']} was fitted on dry-run members (--dry-run: 2 epochs "
              f"of 2 batches, a smoke test): its predictions mean nothing. Fix: python -m pipeline without --dry-run.")
    logged = [c for c in ens.x_cols if c in ens.preprocessing.log_x_cols]
    nonpositive = (x[logged] <= 0).to_numpy()
    if nonpositive.any():   # the models read these features in log space: no prediction exists for them
        row, col = (int(v) for v in np.argwhere(nonpositive)[0])
        raise ToolkitError(f"design variable {logged[col]!r} is {x[logged[col]].iloc[row]:g} in data row {row + 1} "
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
    columns = {}
    for start in tqdm(range(0, len(x), BATCH), desc="predict", unit="batch", disable=None, leave=False):
        part = x.iloc[start:start + BATCH]
        mean, std, bounds = ens.predict_with_intervals(part, levels, out_of_domain="off")
        for c in ens.y_cols:
            columns.setdefault(f"{c}_mean", []).append(mean[c].to_numpy())
            columns.setdefault(f"{c}_std", []).append(std[c].to_numpy())
            for lv, (lo, hi) in bounds.items():
                columns.setdefault(f"{c}_lo{level_tag(lv)}", []).append(lo[c].to_numpy())
                columns.setdefault(f"{c}_hi{level_tag(lv)}", []).append(hi[c].to_numpy())
    predicted = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()}, index=x.index)
    predicted.insert(0, "out_of_domain", flags)
    replaced = [c for c in text.columns if c in predicted.columns]
    table = pd.concat([text.drop(columns=replaced), predicted], axis=1)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    summary = {"designs": len(x), "outside": len(outside), "replaced": replaced, "out": str(out), "levels": levels,
               "wall_s": round(time.perf_counter() - t0, 2)}
    print_summary(settings, ens, table, summary)
    return summary


def print_summary(settings: dict, ens: Ensemble, table: pd.DataFrame, summary: dict) -> None:
    """One screen: what predicted what, the spread of the predictions, the intervals' tested coverage, the file."""
    rec = ens.record
    print(f"[predict] {settings['OPAMP_TYPE']}: {summary['designs']} designs, ensemble of "
          f"{', '.join(ens.params.members)} (fitted {rec.get('time', '?')})")
    wide = max(levels := summary["levels"])
    tag = level_tag(wide)
    print(f"{'metric':16s} {'median mean':>12s} {'min mean':>12s} {'max mean':>12s}  median {tag} % interval")
    for c in ens.y_cols:
        m = table[f"{c}_mean"]
        print(f"{c:16s} {m.median():12.4g} {m.min():12.4g} {m.max():12.4g}  "
              f"{table[f'{c}_lo{tag}'].median():.4g} .. {table[f'{c}_hi{tag}'].median():.4g}")
    cal = ((rec.get("ensemble") or {}).get("calibration") or {}).get("after", {}).get("mean", {})
    if cal and rec.get("split"):
        print(f"intervals calibrated on target_val; on {rec['split']} ({rec.get('n', '?')} rows) the 68 % interval "
              f"covered {100 * cal['cov68']:.1f} % and the 95 % one {100 * cal['cov95']:.1f} % (levels asked: "
              f"{', '.join(f'{lv:g}' for lv in levels)})")
    if summary["outside"]:
        print(f"warning: {summary['outside']} of {summary['designs']} designs lie outside the training data: their "
              f"predictions are extrapolations (column out_of_domain names the variables)")
    if summary["replaced"]:
        print(f"note: the designs file's column(s) {summary['replaced']} are replaced by this prediction's")
    print(f"[predict] wall {summary['wall_s']:.1f}s; wrote {summary['out']}")


if __name__ == "__main__":
    run_main(main)
