"""Forward-stage and ensemble tables (issues 4 and 5) from the harness's full-data runs.

    python -m benchmarks.run --opamp 5t_opamp --seeds 0 1 2 --n-target all ...   # trains (or reuses)
    python -m benchmarks.forward_report --opamp 5t_opamp two_stage_opamp          # tables only

Reads ``<results-root>/<opamp>/seed<k>_nall/``: each stage's ``*_metrics.json`` (test report,
wall time) and ``{opamp}_ensemble_metrics.json`` (members, ensemble, calibration), and writes
per circuit: mean ± std over seeds of physical R², log-space R², MAPE and wall time per stage;
the ensemble against its best member per seed; interval coverage after calibration.  The
block between ``<!-- benchmarks.run:<opamp>:forward start/end -->`` in the docs is replaced.
"""
import argparse
import re
import json
import statistics
from pathlib import Path

from core.cli import run_main
from core.errors import ToolkitError
from core.markdown import replace_block
from core.stages import STAGES




def stage_rows(opamp: str) -> list:
    """(table label, metrics-file glob in a task dir) per registered stage, from its checkpoint file name."""
    return [(s.label, re.sub(r"\{[^}]*\}", "*", s.file.replace("{opamp}", opamp)).replace(".pth", "_metrics.json"))
            for s in STAGES.values()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.forward_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--opamp", nargs="+", default=["5t_opamp", "two_stage_opamp"])
    p.add_argument("--results-root", default="results/benchmarks")
    p.add_argument("--docs-path", default=None, help="Markdown file whose forward block is replaced "
                                                      "[<results-root>/RESULTS.md; docs/RESULTS.md only when named]")
    return p.parse_args(argv)


def _ms(values, fmt="{:.3f}"):
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def collect(root: Path, opamp: str) -> list:
    runs = []
    for d in sorted((root / opamp).glob("seed*_nall")):
        ens_path = d / f"{opamp}_ensemble_metrics.json"
        if not ens_path.is_file():
            continue
        run = {"seed": d.name.split("_")[0][4:], "ensemble": json.loads(ens_path.read_text()), "stages": {}}
        for name, pattern in stage_rows(opamp):
            hits = sorted(d.glob(pattern))
            if hits:
                run["stages"][name] = json.loads(hits[0].read_text())
        runs.append(run)
    if not runs:
        raise ToolkitError(f"No finished full-data runs under {root / opamp}/seed*_nall. Run: python -m benchmarks.run "
                           f"--opamp {opamp} --seeds 0 1 2 --n-target all")
    return runs


def collect_or_none(root: Path, opamp: str) -> list | None:
    """``collect``, or None when no full-data run has finished (the harness ran no n = all)."""
    try:
        return collect(root, opamp)
    except ToolkitError:
        return None


def render(opamp: str, runs: list) -> str:
    seeds = ", ".join(r["seed"] for r in runs)
    n_test = runs[0]["ensemble"]["n"]
    lines = [f"### {opamp}: forward stages and ensemble, all target training rows "
             f"({n_test} target_test rows, seeds {seeds})", "",
             "| stage | mean R² (physical) | mean R² (log space) | mean MAPE % | wall s |", "| --- | --- | --- | --- | --- |"]
    for name, _ in stage_rows(opamp):
        got = [r["stages"][name] for r in runs if name in r["stages"]]
        lines.append(f"| {name} | {_ms([g['test']['mean']['r2'] for g in got])} | "
                     f"{_ms([g['test']['mean']['r2_log'] for g in got])} | "
                     f"{_ms([g['test']['mean']['mape'] for g in got], '{:.1f}')} | {_ms([g['wall_s'] for g in got], '{:.0f}')} |")
    ens = [r["ensemble"]["ensemble"] for r in runs]
    members = " + ".join(runs[0]["ensemble"]["members"])
    lines.append(f"| **ensemble** ({members}) | {_ms([e['metrics']['mean']['r2'] for e in ens])} | "
                 f"{_ms([e['metrics']['mean']['r2_log'] for e in ens])} | "
                 f"{_ms([e['metrics']['mean']['mape'] for e in ens], '{:.1f}')} | – |")
    lines += ["", "| seed | ensemble R²_log | best member R²_log | 68 % interval covers | 95 % interval covers |",
              "| --- | --- | --- | --- | --- |"]
    for r in runs:
        members = {k: v["metrics"]["mean"]["r2_log"] for k, v in r["ensemble"]["members"].items()}
        best = max(members, key=members.get)
        cal = r["ensemble"]["ensemble"]["calibration"]["after"]["mean"]
        lines.append(f"| {r['seed']} | {r['ensemble']['ensemble']['metrics']['mean']['r2_log']:.4f} | "
                     f"{members[best]:.4f} ({best}) | {100 * cal['cov68']:.1f} % | {100 * cal['cov95']:.1f} % |")
    cols = runs[0]["ensemble"]["y_cols"]
    lines += ["", "Log-space R² per metric (mean ± std over seeds):", "",
              "| stage | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for name, _ in stage_rows(opamp):
        got = [r["stages"][name]["test"] for r in runs if name in r["stages"]]
        lines.append(f"| {name} | " + " | ".join(_ms([g[c]["r2_log"] for g in got]) for c in cols) + " |")
    lines.append("| ensemble | " + " | ".join(_ms([r["ensemble"]["ensemble"]["metrics"][c]["r2_log"] for r in runs])
                                         for c in cols) + " |")
    depths = [(r["seed"], (r["stages"].get(STAGES["align_hetero"].label, {}).get("extra") or {})) for r in runs]
    if any("reinit_layers" in d for _, d in depths):
        lines += ["", "Align transfer depth kept on val NLL (`ALIGN_REINIT_LAYERS`; 0 = every layer transferred): "
                  + ", ".join(f"seed {s}: {d.get('reinit_layers', '–')} (val NLL "
                              + " / ".join(f"k={k} {v:.3f}" for k, v in d.get("reinit_val_nll", {}).items()) + ")"
                              for s, d in depths) + "."]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    for opamp in args.opamp:
        body = render(opamp, collect(Path(args.results_root), opamp))
        replace_block(Path(args.docs_path) if args.docs_path else Path(args.results_root) / "RESULTS.md",
                      f"{opamp}:forward", body)
        print(body + "\n")


if __name__ == "__main__":
    run_main(main)
