"""Check a dataset before training: what was read, how it splits, what was dropped and why.

    python -m data_loader.cli --opamp 5t_opamp --val-split 0.2 --seed 42
    python -m data_loader.cli --opamp two_stage_opamp --data-dir /path/to/data --test-split 0.2

Prints the files read, rows per domain and split, dropped rows by reason, per-column
min / median / max per domain, and one domain-shift line per metric (median target/source).
Writes nothing.
"""
import warnings

import numpy as np
import pandas as pd

from core.cli import StageCLI, run_main
from data_loader.data_loader import data_kwargs_from_settings, get_data_and_scalers
from data_loader.layout import read_domain
from data_loader.split import SEEDED_PROTOCOL


def parse_args(argv=None):
    cli = StageCLI("data_loader.cli", __doc__)
    cli.flag("--val-split", "VAL_SPLIT", "fraction of non-test target rows for validation")
    cli.flag("--test-split", "TEST_SPLIT", "fraction of target rows held out as test")
    return cli.parse(argv)


def _stats_table(frames: dict, cols) -> str:
    lines = [f"  {'column':<14}" + "".join(f"{d + ' min':>12}{'median':>12}{'max':>12}" for d in frames)]
    for col in cols:
        row = f"  {col:<14}"
        for frame in frames.values():
            v = frame[col].to_numpy(float)
            row += f"{v.min():>12.4g}{np.median(v):>12.4g}{v.max():>12.4g}"
        lines.append(row)
    return "\n".join(lines)


def main(argv=None):
    _, settings = parse_args(argv)
    kwargs = data_kwargs_from_settings(settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = get_data_and_scalers(**kwargs)
    opamp = settings["OPAMP_TYPE"]
    print(f"=== {opamp} in {settings['DATA_DIR']} ===")
    for key, path in d["files"].items():
        print(f"  {key:<16} {path}")
    n_src_all = read_domain(settings["DATA_DIR"], opamp, "source").targets.shape[0]
    print(f"\nfeatures ({len(d['x_cols'])}): {', '.join(d['x_cols'])}   log-scaled: {d['log_x_cols'] or 'none'}")
    print(f"metrics  ({len(d['y_cols'])}): {', '.join(d['y_cols'])}   log1p: {d['log_y_cols'] or 'none'}")
    how = (f"seed {settings['SEED']}, test {settings['TEST_SPLIT']}, val {settings['VAL_SPLIT']} of the rest"
           if d["split"]["protocol"] == SEEDED_PROTOCOL else d["split"]["protocol"])
    print(f"\nsplit ({how}):")
    total_dropped = 0
    for name in ("source", "target_train", "target_val", "target_test"):
        if name not in d:
            continue
        reasons = d["dropped"][name]
        n_drop = sum(reasons.values())
        total_dropped += n_drop
        why = ", ".join(f"{r}: {c}" for r, c in reasons.items()) or "-"
        print(f"  {name:<13} kept {len(d[name][0]):>6}   dropped {n_drop:>5}   {why}")
    n_tgt_all = read_domain(settings["DATA_DIR"], opamp, "target").targets.shape[0]
    n_src_drop = sum(d["dropped"]["source"].values())
    print(f"  dropped rows in all: {total_dropped} of {n_src_all + n_tgt_all} (source {n_src_drop} of {n_src_all}, "
          f"target {total_dropped - n_src_drop} of {n_tgt_all}). Rule: {d['failure_rule'].describe(d['y_cols'])}")
    x_src, y_src = d["raw"]["source"]
    tgt_parts = [d["raw"][k] for k in ("target_train", "target_val", "target_test") if k in d["raw"]]
    x_tgt = pd.concat([p[0] for p in tgt_parts])
    y_tgt = pd.concat([p[1] for p in tgt_parts])
    print("\nfeatures (kept rows):")
    print(_stats_table({"src": x_src, "tgt": x_tgt}, d["x_cols"]))
    print("\nmetrics (kept rows, physical units):")
    print(_stats_table({"src": y_src, "tgt": y_tgt}, d["y_cols"]))
    print("\ndomain shift (median target / median source):")
    for col in d["y_cols"]:
        ms, mt = np.median(y_src[col]), np.median(y_tgt[col])
        ratio = f"{mt / ms:.3g}" if ms != 0 else "n/a (source median is 0)"
        extra = ""
        if (y_src[col] < 0).any() or (y_tgt[col] < 0).any():
            extra = (f"   negative values: source {100 * (y_src[col] < 0).mean():.1f} %, "
                     f"target {100 * (y_tgt[col] < 0).mean():.1f} %")
        print(f"  {col:<14} {ratio}{extra}")
    signs = {k: v for k, v in d["signs"].items() if v is not None}
    if signs:   # *metric_signs*.csv: the target-only member learns these through their sign (SIGNED_RATIO)
        print("\nsigns of ratio metrics (share of kept rows with sign -1):")
        for col in next(iter(signs.values())).columns:
            shares = ", ".join(f"{k} {100 * (v[col] < 0).mean():.1f} %" for k, v in signs.items() if col in v)
            print(f"  {col:<14} {shares}")
    for w in caught:
        print(f"warning: {w.message}")
    return d


if __name__ == "__main__":
    run_main(main)
