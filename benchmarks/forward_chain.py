"""Forward-stage benchmark (issue 4): every stage on target_test, next to source-only and
target-only, over circuits and seeds, with wall time per stage.

    python -m benchmarks.forward_chain --opamp 5t_opamp two_stage_opamp --seeds 0 1 2
    python -m benchmarks.forward_chain --opamp 5t_opamp --seeds 0 --set EPOCHS=5   # quick look

Runs training.train -> train_align_coral -> train_target_only -> fine_tune.fine_tune
in-process (``main(argv)``) into ``<results-root>/<opamp>_seed<k>/`` and prints a Markdown
table of mean physical R^2, mean log-space R^2 and mean MAPE (mean ± std over seeds) plus the
median wall time per stage.  Raw rows go to ``<results-root>/forward_chain.jsonl``.
"""
import argparse
import json
import os
import statistics
from pathlib import Path

from core.cli import run_main

STAGES = [("source-only (baseline MLP)", "training.train"),
          ("target-only hetero", "training.train_target_only"),
          ("align_hetero + CORAL", "training.train_align_coral"),
          ("dual-head fine-tune", "fine_tune.fine_tune")]
# the baseline must exist before align/fine-tune; target-only is independent
RUN_ORDER = ["training.train", "training.train_align_coral", "training.train_target_only", "fine_tune.fine_tune"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.forward_chain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--opamp", nargs="+", default=["5t_opamp", "two_stage_opamp"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--results-root", default="results/bench_forward")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every stage")
    return p.parse_args(argv)


def run_one(opamp, seed, args) -> list:
    import importlib
    out = Path(args.results_root) / f"{opamp}_seed{seed}"
    common = ["--opamp", opamp, "--seed", str(seed), "--data-dir", args.data_dir, "--results-dir", str(out),
              "--quiet", *sum((["--set", s] for s in args.set), [])]
    rows = {}
    for module in RUN_ORDER:
        summary = importlib.import_module(module).main(common)
        rows[module] = {"opamp": opamp, "seed": seed, "module": module, "wall_s": summary["wall_s"],
                        **{f"test_{k}": v for k, v in summary["test"]["mean"].items()},
                        "per_metric_r2_log": {c: summary["test"][c]["r2_log"] for c in summary["test"]
                                              if isinstance(summary["test"][c], dict) and "r2_log" in summary["test"][c]}}
    return [rows[m] for _, m in STAGES]


def table(rows) -> str:
    def ms(vals):
        return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"
    lines = ["| circuit | stage | mean R² (physical) | mean R² (log space) | mean MAPE % | wall s (median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for opamp in dict.fromkeys(r["opamp"] for r in rows):
        for name, module in STAGES:
            sel = [r for r in rows if r["opamp"] == opamp and r["module"] == module]
            lines.append(f"| {opamp} | {name} | {ms([r['test_r2'] for r in sel])} | {ms([r['test_r2_log'] for r in sel])} "
                         f"| {ms([r['test_mape'] for r in sel])} | {statistics.median(r['wall_s'] for r in sel):.1f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    Path(args.results_root).mkdir(parents=True, exist_ok=True)
    log = Path(args.results_root) / "forward_chain.jsonl"
    rows = []
    for opamp in args.opamp:
        for seed in args.seeds:
            new = run_one(opamp, seed, args)
            rows += new
            with open(log, "a", encoding="utf-8") as f:
                for r in new:
                    f.write(json.dumps(r) + "\n")
    print(f"\nthreads: torch NUM_THREADS from config; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(table(rows))
    return rows


if __name__ == "__main__":
    run_main(main)
