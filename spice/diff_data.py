"""Compare two generated datasets of the same designs, metric by metric (e.g. after a bench change).

    python -m spice.diff_data --old /tmp/data_v1 --new data
    python -m spice.diff_data --old A --new B --threshold 0.01 --out results/data_diff.md

For every <circuit>/<domain> folder present in both, rows are matched by their feature values
(the designs a seed draws do not depend on the bench); the table gives, per metric, how many of
the common rows changed by more than ``--threshold`` (relative, |new/old - 1|; phase margin in
degrees against ``--pm-threshold``) and the median and largest change.  Designs that are OK in one
set only are counted apart.
"""
import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError
from core.outputs import check_writable_file
from core.markdown import markdown_table

ANGLE_METRICS = ("phase_margin",)  # compared as an absolute difference in degrees


def _read(folder: Path) -> pd.DataFrame:
    feats, targets = sorted(folder.glob("*features*.csv")), sorted(folder.glob("*targets*.csv"))
    if len(feats) != 1 or len(targets) != 1:
        raise ToolkitError(f"{folder} must hold one *features*.csv and one *targets*.csv, got "
                           f"{[f.name for f in feats + targets]}")
    x, y = pd.read_csv(feats[0]), pd.read_csv(targets[0])
    if len(x) != len(y):
        raise ToolkitError(f"{folder}: {len(x)} feature rows vs {len(y)} target rows; regenerate the folder")
    return pd.concat([x, y], axis=1)


def diff_folder(old: Path, new: Path, threshold: float, pm_threshold: float) -> list[dict]:
    """One row per metric for one <circuit>/<domain> pair of folders."""
    a, b = _read(old), _read(new)
    feats = [c for c in pd.read_csv(next(old.glob("*features*.csv")), nrows=0).columns]
    metrics = [c for c in pd.read_csv(next(old.glob("*targets*.csv")), nrows=0).columns if c != "status"]
    # A design drawn twice is matched to its own repeat (k-th copy to k-th copy), never crossed.
    a["_copy"], b["_copy"] = a.groupby(feats).cumcount(), b.groupby(feats).cumcount()
    both = a.merge(b, on=feats + ["_copy"], suffixes=("_old", "_new"))
    rows = []
    for m in metrics:
        o, n = both[f"{m}_old"].to_numpy(float), both[f"{m}_new"].to_numpy(float)
        if m in ANGLE_METRICS:
            change, limit, unit = np.abs(n - o), pm_threshold, "deg"
        else:
            change, limit, unit = np.abs(n / o - 1), threshold, "rel"
        rows.append({"metric": m, "common rows": len(both), "changed": int((change > limit).sum()),
                     "changed %": round(100 * float((change > limit).mean()), 1),
                     "median change": f"{np.median(change):.2g} {unit}",
                     "largest change": f"{np.max(change):.3g} {unit}",
                     "only in old": len(a) - len(both), "only in new": len(b) - len(both)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m spice.diff_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--old", required=True, help="data root before (holds <circuit>/<domain>/)")
    p.add_argument("--new", required=True, help="data root after")
    p.add_argument("--threshold", type=float, default=0.01, help="relative change that counts (default 1 %%)")
    p.add_argument("--pm-threshold", type=float, default=1.0, help="phase-margin change that counts, deg")
    p.add_argument("--out", help="also write the Markdown table here")
    args = p.parse_args(argv)
    old, new = Path(args.old), Path(args.new)
    for flag, root in (("--old", old), ("--new", new)):
        if not root.is_dir():
            raise ToolkitError(f"{flag} {root} is not a folder; give a data root holding <circuit>/<source|target>/.")
    pairs = sorted(f.parent.relative_to(old) for f in old.glob("*/*/*targets*.csv")
                   if (new / f.parent.relative_to(old)).is_dir())
    if not pairs:
        raise ToolkitError(f"no <circuit>/<domain> folder is in both {old} and {new}; "
                           f"expected the data layout <root>/<circuit>/<source|target>/ in each")
    if args.out:
        check_writable_file(args.out, "--out")
    for flag, value in (("--threshold", args.threshold), ("--pm-threshold", args.pm_threshold)):
        if not (math.isfinite(value) and value > 0):
            raise ToolkitError(f"{flag} must be a number > 0 (the change that counts), got {value}.")
    lines = []
    for rel in pairs:
        table = pd.DataFrame(diff_folder(old / rel, new / rel, args.threshold, args.pm_threshold))
        lines += [f"**{rel}** (changed: > {args.threshold:.0%} relative, phase margin > {args.pm_threshold:g} deg)",
                  "", markdown_table(table), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")


if __name__ == "__main__":
    run_main(main)
