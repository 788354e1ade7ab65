"""Which members and which fusion rule, replayed on the harness's saved member checkpoints.

    python -m benchmarks.fusion_whatif --opamp two_stage_opamp --results-root results/benchmarks \
        --members align_hetero,target_only,dualhead align_hetero,target_only,dualhead,pooled --selection val cv

The benchmark harness leaves every member's checkpoint in its task dir
``<results-root>/<opamp>/seed<k>_n<N>/``.  For each task dir and each (member set, fusion
selection) this refits the calibrated ensemble (``inference.predict.Ensemble.fit``: temperatures
and fusion on target_val, as ``inference.infer_ensemble`` does) and scores it on target_test;
no member is retrained, so comparing fusion rules costs seconds.  A member set whose checkpoints
are not all in a task dir is skipped there (and counted).

Per variant and n: mean log-space R^2 over seeds, the worst per-seed gap to that cell's best
member (log-space R^2 of the best single member minus the ensemble's; <= 0 means the ensemble is
at least as good), and the range of per-seed 68 % and 95 % interval coverage; with ``--metric cmrr`` also that
metric's log-space R^2, the ensemble's and the best member's on it.  ``--docs-path`` replaces
the block ``<!-- benchmarks.run:fusion_whatif:<opamp> start/end -->`` in that Markdown file.
"""
import argparse
import contextlib
import difflib
import io
import re
import statistics
from pathlib import Path

import pandas as pd

from benchmarks.sizes import n_order
from core.cli import run_main
from core.errors import ToolkitError
from core.markdown import markdown_table, replace_block
from core.stages import checkpoint_path
from data_loader import data_kwargs_from_settings, get_data_and_scalers
from inference.fusion import SELECTIONS
from inference.members import check_against_data, load_member, parse_members
from inference.predict import Ensemble
from models.model_utils import read_checkpoint_meta

TASK_DIR = re.compile(r"^seed(\d+)_n(\w+)$")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_whatif", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--opamp", required=True)
    p.add_argument("--results-root", nargs="+", default=["results/benchmarks"],
                   help="the harness's --results-root; several: one row group per folder (e.g. the same cells run "
                        "with other settings, --set REFIT=train+val)")
    p.add_argument("--data-dir", default=None, help="default: the DATA_DIR the members were trained on")
    p.add_argument("--members", nargs="+", default=["align_hetero,target_only,dualhead"],
                   help="member sets to compare, each comma-separated")
    p.add_argument("--selection", nargs="+", default=list(SELECTIONS), choices=list(SELECTIONS))
    p.add_argument("--metric", default=None, help="also tabulate this metric's log-space R^2 (e.g. cmrr)")
    p.add_argument("--docs-path", default=None, help="Markdown file whose fusion_whatif block is replaced")
    p.add_argument("--block", default=None, help="block name in --docs-path [fusion_whatif:<opamp>]")
    args = p.parse_args(argv)
    args.member_sets = [tuple(parse_members(m)) for m in args.members]
    return args


def task_dirs(root: Path, opamp: str) -> list:
    """``[(seed, n, path)]`` of the harness's task dirs, sorted; none is an error naming the command."""
    base = root / opamp
    found = sorted((int(m.group(1)), m.group(2), d) for d in (base.iterdir() if base.is_dir() else [])
                   if d.is_dir() and (m := TASK_DIR.match(d.name)))
    if not found:
        held = sorted(d.name for d in root.iterdir() if d.name != opamp and d.is_dir()
                      and any(TASK_DIR.match(t.name) for t in d.iterdir())) if root.is_dir() else []
        close = difflib.get_close_matches(opamp, held, n=1, cutoff=0.8)
        hint = (f" (did you mean --opamp {close[0]}?)" if close else
                f"; {root} holds {', '.join(held)}" if held else "")
        raise ToolkitError(f"No harness task dirs (seed<k>_n<N>) under {base}{hint}. Make them with: python -m "
                           f"benchmarks.run --opamp {opamp} --results-root {root}")
    return found


def task_settings(task: Path, data_dir=None) -> dict | None:
    """The settings the task dir's stages ran with (any checkpoint's config snapshot), RESULTS_DIR = ``task``."""
    for ckpt in sorted(task.glob("*.pth")):
        try:
            settings = dict(read_checkpoint_meta(ckpt).get("config") or {})
        except ToolkitError:
            continue
        if settings:
            settings["RESULTS_DIR"] = str(task)
            if data_dir is not None:
                settings["DATA_DIR"] = data_dir
            return settings
    return None


def load_cell(task: Path, members, data_dir=None):
    """``(data, [Member])`` of one task dir: its data as its stages saw it and the ``members``' checkpoints (checked
    against that data); None when the dir has no checkpoint or lacks one of the members."""
    settings = task_settings(task, data_dir)
    if settings is None:
        return None
    paths = {name: checkpoint_path(settings, name) for name in members}
    if not all(p.is_file() for p in paths.values()):
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        data = get_data_and_scalers(**data_kwargs_from_settings(settings))
    loaded = [load_member(name, paths[name]) for name in members]
    for m in loaded:
        check_against_data(m, data)
    return data, loaded


def score_cell(task: Path, members: tuple, selections, data_dir=None, metric=None) -> dict | None:
    """``{selection: {r2_log, cov68, cov95, best_member, best_r2_log[, metric_r2_log, metric_best_r2_log]}}`` for one
    task dir; None if a member is missing.  ``metric``: a metric column whose log-space R^2 is kept too."""
    cell = load_cell(task, members, data_dir)
    if cell is None:
        return None
    data, loaded = cell
    if metric is not None and metric not in data["y_cols"]:
        raise ToolkitError(f"--metric {metric!r} is not a metric of {task} (its metrics: {data['y_cols']}).")
    out = {}
    for selection in selections:
        record = Ensemble.fit(loaded, data, selection=selection).evaluate("target_test").record
        r2 = {n: record["members"][n]["metrics"]["mean"]["r2_log"] for n in members}
        best = max(r2, key=r2.get)
        out[selection] = {"r2_log": record["ensemble"]["metrics"]["mean"]["r2_log"],
                          "cov68": record["ensemble"]["calibration"]["after"]["mean"]["cov68"],
                          "cov95": record["ensemble"]["calibration"]["after"]["mean"]["cov95"],
                          "best_member": best, "best_r2_log": r2[best]}
        if metric is not None:
            out[selection]["metric_r2_log"] = record["ensemble"]["metrics"][metric]["r2_log"]
            out[selection]["metric_best_r2_log"] = max(record["members"][n]["metrics"][metric]["r2_log"]
                                                       for n in members)
    return out


def table(rows: list, metric=None) -> str:
    """rows: dicts with root, members, selection, seed, n, r2_log, best_r2_log, cov68, cov95 (and with ``metric`` the
    metric_ keys) -> one Markdown table (a results-root column when the rows come from more than one)."""
    roots = list(dict.fromkeys(r["root"] for r in rows))
    groups = {}
    for r in rows:
        groups.setdefault((r["root"], r["members"], r["selection"], r["n"]), []).append(r)
    out = []
    for (root, members, selection, n), rs in sorted(
            groups.items(), key=lambda kv: (kv[0][1], kv[0][2], n_order(kv[0][3]), roots.index(kv[0][0]))):
        gaps = [r["best_r2_log"] - r["r2_log"] for r in rs]

        def spread(key):   # a coverage's range over the seeds, in %
            return f"{100 * min(r[key] for r in rs):.1f}–{100 * max(r[key] for r in rs):.1f}"
        out.append(([root] if len(roots) > 1 else [])
                   + [members.replace(",", " + "), selection, n, str(len(rs)),
                      f"{statistics.mean(r['r2_log'] for r in rs):.3f}",
                      f"{statistics.mean(r['best_r2_log'] for r in rs):.3f}", f"{max(gaps):+.3f}",
                      spread("cov68"), spread("cov95")]
                   + ([f"{statistics.mean(r['metric_r2_log'] for r in rs):.3f}",
                       f"{statistics.mean(r['metric_best_r2_log'] for r in rs):.3f}"] if metric else []))
    columns = ["members", "selection", "n", "seeds", "mean R²_log (test)", "best member's", "worst gap to best member",
               "68 % coverage per seed", "95 % coverage per seed"]
    columns += [f"{metric} R²_log", f"{metric}: best member's"] if metric else []
    return markdown_table(pd.DataFrame(out, columns=(["results root"] if len(roots) > 1 else []) + columns))


def main(argv=None):
    args = parse_args(argv)
    rows, skipped = [], 0
    tasks = [(root, *t) for root in args.results_root for t in task_dirs(Path(root), args.opamp)]   # all checked first
    for root, seed, n, task in tasks:
        for members in args.member_sets:
            cell = score_cell(task, members, args.selection, args.data_dir, args.metric)
            if cell is None:
                skipped += 1
                continue
            for selection, s in cell.items():
                rows.append({"root": root, "members": ",".join(members), "selection": selection, "seed": seed,
                             "n": n, **s})
                print(f"{root} seed {seed} n={n:<4} {'+'.join(members):<40} {selection:<4} R2_log {s['r2_log']:.4f} "
                      f"(best member {s['best_member']} {s['best_r2_log']:.4f}) cov68 {100 * s['cov68']:.1f}% "
                      f"cov95 {100 * s['cov95']:.1f}%",
                      flush=True)
    if not rows:
        raise ToolkitError(f"No task dir under {', '.join(args.results_root)} (/{args.opamp}) holds every checkpoint of "
                           f"{args.members}. Run the harness with those members (--members).")
    text = table(rows, args.metric)
    print()
    print(text)
    if skipped:
        print(f"({skipped} task dir x member set pairs skipped: a member checkpoint was missing)")
    if args.docs_path:
        command = ("python -m benchmarks.fusion_whatif --opamp " + args.opamp + " --results-root "
                   + " ".join(args.results_root)
                   + (f" --data-dir {args.data_dir}" if args.data_dir else "")
                   + " --members " + " ".join(args.members) + " --selection " + " ".join(args.selection)
                   + (f" --metric {args.metric}" if args.metric else ""))
        block = (f"### {args.opamp}: member sets and fusion selection, replayed on the harness's checkpoints\n\n"
                 f"Command: `{command}`\n\n{text}\n")
        name = args.block or f"fusion_whatif:{args.opamp}"
        replace_block(Path(args.docs_path), name, block)
        print(f"wrote the {name} block of {args.docs_path}")
    return rows


if __name__ == "__main__":
    run_main(main)
