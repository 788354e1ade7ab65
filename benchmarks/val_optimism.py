"""How optimistic each ensemble member's target_val errors are, measured on the harness's checkpoints.

    python -m benchmarks.val_optimism --opamp 5t_opamp --results-root results/bench_5t_opamp

The ensemble fits its fusion weights, temperatures and interval multipliers on each member's target_val
predictions.  The GP member's are out of sample (fold refits or leave-one-out, ``extra["oof_val"]``), but a
neural member chose its epoch on those same rows (align also its transfer depth, target-only its cmrr
target), so its val error can be lower than its error on new rows, and the fusion would then trust it too
much.  Per task dir, member and metric this takes the model-space MSE on target_test over the MSE on
target_val that the fusion saw.  Val and test are different rows, so that ratio also moves with the split;
dividing it by the reference member's ratio in the same cell and metric (default ``gp_stack``, out of
sample) cancels the split: 1 = the member's val errors are as honest as the reference's, 1.3 = 30 % more
optimistic.  The reference's own refits learn from fewer rows than it does, so its val errors lean
pessimistic where rows are few: the relative factor is an upper bound on a member's optimism there.
Medians over seeds and metrics (geometric: the ratios are scale factors).  Nothing is retrained.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.fusion_whatif import load_cell, task_dirs
from benchmarks.sizes import n_order
from core.cli import run_main
from core.errors import ToolkitError
from core.markdown import markdown_table, replace_block
from inference.members import DEFAULT_MEMBERS, parse_members
from inference.predict import member_outputs, oof_val


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.val_optimism", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--opamp", required=True)
    p.add_argument("--results-root", nargs="+", default=["results/benchmarks"], help="the harness's --results-root")
    p.add_argument("--data-dir", default=None, help="default: the DATA_DIR the members were trained on")
    p.add_argument("--members", default=",".join(DEFAULT_MEMBERS), help="comma-separated member stages")
    p.add_argument("--reference", default="gp_stack",
                   help="the member whose val predictions are out of sample (one of --members)")
    p.add_argument("--docs-path", default=None, help="Markdown file whose val_optimism:<opamp> block is replaced")
    args = p.parse_args(argv)
    args.member_list = parse_members(args.members)
    reference = parse_members(args.reference)
    if len(reference) != 1 or reference[0] not in args.member_list:
        raise ToolkitError(f"--reference must be one of --members ({', '.join(args.member_list)}), got "
                           f"{args.reference!r}.")
    args.reference = reference[0]
    return args


def cell_mse(data: dict, loaded) -> dict:
    """``{member: (val_mse (M,), test_mse (M,), out_of_sample)}`` in model space; val as the fusion sees it."""
    if len(data["target_test"][0]) == 0:
        raise ToolkitError("The task dir's data has no target_test rows (TEST_SPLIT = 0): nothing to compare "
                           "the val errors with.")
    (x_val, y_val), (x_test, y_test) = data["target_val"], data["target_test"]
    out = {}
    for m in loaded:
        oof = oof_val(m, data)
        val_mean = oof[0] if oof is not None else member_outputs(m, torch.as_tensor(x_val))[0]
        test_mean = member_outputs(m, torch.as_tensor(x_test))[0]
        out[m.name] = (np.mean((val_mean - y_val) ** 2, axis=0), np.mean((test_mean - y_test) ** 2, axis=0),
                       oof is not None)
    return out


def log_ratios(cells: list, reference: str) -> list:
    """``cells``: ``[(n, {member: (val_mse, test_mse, out_of_sample)})]`` -> one row per (n, member, cell) with
    ``log_ratio`` (M,) = log(test/val MSE) and ``log_rel`` = that minus the reference's; metrics whose val or test
    MSE is 0 in the cell (a constant metric) are left out (NaN)."""
    rows = []
    for n, cell in cells:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = {name: np.log(test / val) for name, (val, test, _) in cell.items()}
        logs = {name: np.where(np.isfinite(lr), lr, np.nan) for name, lr in logs.items()}
        for name, lr in logs.items():
            rows.append({"n": n, "member": name, "out_of_sample": cell[name][2], "log_ratio": lr,
                         "log_rel": lr - logs[reference]})
    return rows


EVERY_N = "every n"   # the summary row of a member over all its cells


def summarise(rows: list, members: list) -> pd.DataFrame:
    """Per (member, n), and per member over every n: cells, geometric medians over cells x metrics of test/val
    MSE and of its ratio to the reference's, and the quartiles of the latter."""
    out = []
    sizes = sorted({r["n"] for r in rows}, key=n_order)
    for name in members:
        for n in sizes + ([EVERY_N] if len(sizes) > 1 else []):
            rs = [r for r in rows if r["member"] == name and n in (r["n"], EVERY_N)]
            if not rs:
                continue
            ratio = np.concatenate([r["log_ratio"] for r in rs])
            rel = np.concatenate([r["log_rel"] for r in rs])
            q1, med, q3 = np.exp(np.nanpercentile(rel, [25, 50, 75]))
            kinds = {r["out_of_sample"] for r in rs}
            out.append([name, "out of sample" if kinds == {True} else "early-stopped on them" if kinds == {False}
                        else "mixed", n, len(rs), f"{np.exp(np.nanmedian(ratio)):.2f}", f"{med:.2f}",
                        f"{q1:.2f}–{q3:.2f}"])
    return pd.DataFrame(out, columns=["member", "its val predictions", "n", "cells", "test ÷ val MSE (median)",
                                      "÷ reference's (median)", "÷ reference's (quartiles)"])


def main(argv=None):
    args = parse_args(argv)
    tasks = [t for root in args.results_root for t in task_dirs(Path(root), args.opamp)]   # all checked first
    cells, skipped = [], 0
    for seed, n, task in tasks:
        loaded = load_cell(task, args.member_list, args.data_dir)
        if loaded is None:
            skipped += 1
            continue
        cells.append((n, cell_mse(*loaded)))
        print(f"{task}: done", flush=True)
    if not cells:
        raise ToolkitError(f"No task dir under {', '.join(args.results_root)} (/{args.opamp}) holds every checkpoint "
                           f"of {args.members}. Run the harness with those members, or name fewer with --members.")
    text = markdown_table(summarise(log_ratios(cells, args.reference), args.member_list))
    print()
    print(text)
    if skipped:
        print(f"({skipped} task dirs skipped: a member checkpoint was missing)")
    if args.docs_path:
        command = (f"python -m benchmarks.val_optimism --opamp {args.opamp} --results-root "
                   + " ".join(args.results_root) + (f" --data-dir {args.data_dir}" if args.data_dir else "")
                   + (f" --members {args.members}" if args.member_list != list(DEFAULT_MEMBERS) else "")
                   + (f" --reference {args.reference}" if args.reference != "gp_stack" else ""))
        block = (f"### {args.opamp}: how optimistic the members' val errors are (reference: {args.reference})\n\n"
                 f"Command: `{command}`\n\n{text}\n")
        replace_block(Path(args.docs_path), f"val_optimism:{args.opamp}", block)
        print(f"wrote the val_optimism:{args.opamp} block of {args.docs_path}")
    return cells


if __name__ == "__main__":
    run_main(main)
