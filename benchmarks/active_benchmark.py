"""Active learning vs random sampling: mean log-space R^2 on the fixed target_test vs B simulations.

    python -m benchmarks.active_benchmark --opamp 5t_opamp --rules random uncertainty diverse --seeds 0 1 2 \\
        --budget 250 --docs-path docs/RESULTS.md

Runs ``python -m active`` for every (seed, rule) -- one after another, each with the loop's own
``--jobs`` -- in ``<results-root>/<opamp>/<rule>_seed<k>/`` (a rerun resumes each loop and skips the
finished ones), then writes a table (mean ± sd over seeds per rule and simulation count, the time per
round, the per-metric R², and where each rule's simulated designs fall in the target data's distribution: the
share below its 10th / above its 90th percentile per metric, so a rule that spends its budget on the tails shows)
and ``learning_curve_active_<opamp>.png`` (one line per rule, ± sd band, the all-rows random-sample
reference ``--reference``).  ``--docs-path`` replaces the block ``active:<opamp>`` of that Markdown file
and puts the PNG beside it.  Extra flags after ``--`` go to every loop (e.g. ``-- --set EPOCHS=50``); with
``-- --spec FILE`` (every rule reports the simulated designs meeting that spec; rule ``spec`` needs it) a
second table counts them per rule and budget, and the Markdown block is ``active-spec:<opamp>``.
A plain rule retrains every round (``--warm-start false``, as the tables were first measured); ``<rule>+warm``
runs it with ``--warm-start true`` (each round's neural members start from the previous round's, the loop's
default) beside the others; the Markdown block is then ``active-warm:<opamp>``.  ``<rule>[+warm]+uval`` runs it
with ``--val-designs uniform`` (each round validates on designs drawn uniformly from the pool); every other rule
runs with ``--val-designs picks``, as the tables were first measured.  A last suffix ``+b<N>`` runs the rule
with ``--batch N`` instead of the benchmark's ``--batch`` (e.g. ``integrated+warm+uval+b10``); the tables show it
at the other rules' simulation counts by its last round at or below each.
"""
import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import active
from active_learning.acquisition import RULES
from active_learning.ledger import STATUS
from active_learning.plots import learning_curve
from core.atomic import atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError
from core.markdown import markdown_table, replace_block
from data_loader.layout import read_domain


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.active_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--opamp", default="5t_opamp")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--rules", nargs="+", default=[r for r in RULES if r != "spec"],
                   help="rules to compare (default: every rule but spec, which needs -- --spec FILE)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=250)
    p.add_argument("--init", type=int, default=25)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--results-root", default="results/active_bench")
    p.add_argument("--reference", type=float, default=None,
                   help="all-rows random-sample mean R2_log to draw and compare with (docs/RESULTS.md harness)")
    p.add_argument("--docs-path", default=None, help="Markdown file whose active:<opamp> block is replaced")
    p.add_argument("--block", default=None, metavar="NAME",
                   help="Markdown block (and PNG) name, e.g. active-integrated (default: from the rules and --spec), "
                        "so a comparison of other rules does not replace the published one")
    p.add_argument("--report-only", action="store_true", help="only tabulate the runs already there")
    return p


def parse_args(argv=None):
    args, extra = build_parser().parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    args.extra = extra
    twice = sorted({r for r in args.rules if args.rules.count(r) > 1})
    if twice:
        raise ToolkitError(f"--rules names {', '.join(twice)} twice; give each rule once.")
    if args.reference is not None and not math.isfinite(args.reference):
        raise ToolkitError(f"--reference must be a number (the all-rows mean R2_log), got {args.reference}.")
    bad = [r for r in args.rules if base_rule(r) not in RULES]   # random+warm+warm: base random+warm, refused
    if bad:
        raise ToolkitError(f"Unknown rule(s) {bad}; choose from {list(RULES)}, each optionally with {WARM} "
                           f"(warm-started rounds), then {UNIFORM_VAL} (uniformly drawn validation designs), "
                           f"then +b<N> (batches of N instead of --batch), e.g. --rules random{WARM} "
                           f"integrated{WARM}{UNIFORM_VAL}+b10.")
    if any(base_rule(r) == "spec" for r in args.rules) and "--spec" not in args.extra:
        raise ToolkitError("Rule spec simulates toward a spec: give it after --, e.g. --rules random spec -- --spec "
                           "my_spec.toml (every rule then reports the designs meeting it).")
    if args.block is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.block):
        raise ToolkitError(f"--block must be lower-case letters, digits and '-', got {args.block!r}. "
                           f"Fix: e.g. --block active-integrated")
    return args


WARM = "+warm"          # rule suffix: the same rule with --warm-start true
UNIFORM_VAL = "+uval"   # rule suffix (after +warm): the same rule with --val-designs uniform (else picks)
BATCH_SUFFIX = re.compile(r"\+b([1-9][0-9]*)$")   # rule suffix (last), e.g. +b10: the same rule with --batch 10


def split_batch(rule: str) -> tuple:
    """(rule without its ``+b<N>`` suffix, N or None) of a benchmark rule name."""
    m = BATCH_SUFFIX.search(rule)
    return (rule[:m.start()], int(m.group(1))) if m else (rule, None)


def variant(rule: str) -> tuple:
    """(base rule, warm, uniform validation designs) of a benchmark rule name ``<rule>[+warm][+uval][+b<N>]``."""
    rule = split_batch(rule)[0]
    uval = rule.endswith(UNIFORM_VAL)
    rest = rule[:-len(UNIFORM_VAL)] if uval else rule
    warm = rest.endswith(WARM)
    return (rest[:-len(WARM)] if warm else rest), warm, uval


def base_rule(rule: str) -> str:
    return variant(rule)[0]


def random_control(rule: str, rules) -> str | None:
    """The random run ``rule``'s mean is compared with ("≥ random at"): the one trained the same way
    (``random+warm`` for a ``+warm`` rule) when the benchmark has it, else plain ``random``; ``rule`` itself when
    it is that control (``random``; ``random+warm`` without a plain one); else any random run; None without one."""
    same = "random" + (WARM if variant(rule)[1] else "")
    if rule == "random":
        return rule
    if same in rules and same != rule:
        return same
    if "random" in rules:
        return "random"
    return next((r for r in rules if base_rule(r) == "random"), None)


def block_name(args) -> str:
    """The Markdown block (and PNG) name: --block, else active-spec / active-warm / active; then the circuit."""
    kind = args.block or ("active-spec" if "--spec" in args.extra
                          else "active-warm" if any(variant(r)[1] for r in args.rules) else "active")
    return f"{kind}:{args.opamp}"


def run_dir(args, rule: str, seed: int) -> Path:
    return Path(args.results_root) / args.opamp / f"{rule}_seed{seed}"


def loop_command(args, rules, seeds, budget: int) -> str:
    """The command that runs ``rules`` x ``seeds`` to ``budget`` simulations with this benchmark's other settings
    (no Markdown: the report writes it)."""
    defaults = build_parser().parse_args([])
    parts = ["--opamp", args.opamp, "--rules", *rules, "--seeds", *map(str, seeds), "--budget", str(budget)]
    for flag in ("data_dir", "init", "batch", "results_root", "reference"):
        if getattr(args, flag) != getattr(defaults, flag):
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.extra:
        parts += ["--", *args.extra]
    return "python -m benchmarks.active_benchmark " + " ".join(parts)


def reproducing_commands(args, report: str) -> str:
    """The block's command line: ``report`` alone when every loop there stopped at --budget, else one command per
    (simulations reached, seeds) group of loops -- e.g. five seeds to 250 and three of them on to 400 -- and then
    ``report`` with --report-only, so the block says how each row was made, not only how it was tabulated."""
    reach = {(rule, seed): run[-1]["simulations"] for rule in args.rules for seed in args.seeds
             if (run := read_progress(run_dir(args, rule, seed)))}
    if set(reach.values()) <= {args.budget}:   # the report's own command runs (or ran) every loop shown
        return f"Command: `{report}`"
    groups = {}   # (simulations reached, seeds) -> rules, in the order given
    for budget in sorted(set(reach.values())):
        for rule in args.rules:
            seeds = tuple(s for s in args.seeds if reach.get((rule, s)) == budget)
            if seeds:
                groups.setdefault((budget, seeds), []).append(rule)
    lines = [f"- `{loop_command(args, rules, seeds, budget)}`" for (budget, seeds), rules in groups.items()]
    return ("Commands (the loops, then the table from them):\n\n" + "\n".join(lines)
            + f"\n- `{report} --report-only`")


def read_progress(folder: Path) -> list:
    path = folder / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def within_budget(run: list, budget: int) -> list:
    """A loop's rounds up to ``budget`` simulations: a run taken on past the benchmark's --budget is timed and its
    failures counted over its first --budget simulations, as the others."""
    return [r for r in run if r["simulations"] <= budget]


def on_counts(run: list, counts) -> dict:
    """{n: the run's last round with at most n simulations} for each n in ``counts`` the run reached: a loop with
    another batch size than the others (``+b<N>``) is shown at their simulation counts by the model it had then."""
    reached = run[-1]["simulations"] if run else 0
    return {n: [r for r in run if r["simulations"] <= n][-1] for n in counts
            if n <= reached and run[0]["simulations"] <= n}


def summarise(args) -> tuple:
    """(Markdown, {rule: [(simulations, mean, sd)]}) over the seeds that reached each simulation count."""
    by_rule, lines = {}, []
    runs = {rule: [read_progress(run_dir(args, rule, seed)) for seed in args.seeds] for rule in args.rules}
    own = [rule for rule in args.rules if split_batch(rule)[1] is None]   # rules run with --batch: their own counts
    counts = {r["simulations"] for rule in own for run in runs[rule] for r in run}
    if not counts:   # every rule has its own batch size: the --init + k x --batch grid, to the longest run
        last = max((run[-1]["simulations"] for rule in args.rules for run in runs[rule] if run), default=0)
        counts = set(range(args.init, last + 1, args.batch)) | ({args.budget} if args.budget <= last else set())
    for rule in args.rules:
        per_n = {}
        for run in runs[rule]:
            for n, r in (((r["simulations"], r) for r in run) if rule in own else on_counts(run, counts).items()):
                per_n.setdefault(n, []).append(r)
        by_rule[rule] = per_n
    counts = sorted(counts)
    table = []
    for n in counts:
        row = {"B simulations": n}
        for rule in args.rules:
            rows = by_rule[rule].get(n, [])
            vals = [r["test_r2_log"] for r in rows if "test_r2_log" in r]
            row[rule] = (f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} ({len(vals)})" if len(vals) > 1
                         else f"{vals[0]:.4f} (1)" if vals else "–")
        table.append(row)
    curves = {rule: [(n, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                     for n, rows in by_rule[rule].items()
                     if (v := [r["test_r2_log"] for r in rows if "test_r2_log" in r])] for rule in args.rules}
    timing = []
    for rule in args.rules:
        rows = [r for run in runs[rule] for r in run]
        if not rows:
            continue
        complete = [run for run in runs[rule] if run and run[-1]["simulations"] >= args.budget]
        mean_at = {n: m for n, m, _ in curves[rule]}
        reached = [n for n in sorted(mean_at) if args.reference is not None and mean_at[n] >= args.reference]
        run_s = [sum(r["select_s"] + r["simulate_s"] + r["train_s"] for r in within_budget(run, args.budget))
                 for run in complete]
        row = {"rule": rule, "complete runs": len(complete),
               "median s per round (select / simulate / train)":
                   " / ".join(f"{statistics.median(r[k] for r in rows):.0f}" for k in ("select_s", "simulate_s", "train_s")),
               f"s per {args.budget}-simulation run (median)": f"{statistics.median(run_s):.0f}" if run_s else "–",
               "failed simulations (all seeds)": sum(within[-1]["failed"] for run in runs[rule]
                                                     if (within := within_budget(run, args.budget)))}
        if args.reference is not None:
            row[f"first mean ≥ {args.reference}"] = reached[0] if reached else "not reached"
        control = random_control(rule, args.rules)
        if control is not None:
            row["≥ random at"] = "–"
        if control not in (None, rule) and curves.get(control):
            rand = {n: m for n, m, _ in curves[control]}
            common = [n for n in mean_at if n in rand]
            row["≥ random at"] = f"{sum(mean_at[n] >= rand[n] for n in common)} of {len(common)} budgets"
        timing.append(row)
    lines.append(markdown_table(pd.DataFrame(table)))
    lines.append("")
    lines.append("Cells: mean ± sd of the mean log-space R² on the fixed target_test over seeds (number of seeds)."
                 + ("" if len(own) == len(args.rules) else
                    " A rule with its own batch size (+b<N>) is shown at each count by its last round at or below it."))
    if any("spec_met_total" in r for rule in args.rules for rows in by_rule[rule].values() for r in rows):
        met = []
        for n in counts:
            row = {"B simulations": n}
            for rule in args.rules:
                vals = [r["spec_met_total"] for r in by_rule[rule].get(n, []) if "spec_met_total" in r]
                row[rule] = f"{statistics.mean(vals):.1f} ({len(vals)})" if vals else "–"
            met.append(row)
        lines += ["", markdown_table(pd.DataFrame(met)), "",
                  "Cells: simulated designs meeting the spec so far (every goal, in SPICE), mean over seeds (number of "
                  "seeds)."]
    per_metric = metric_table(args.rules, by_rule, counts)
    if per_metric is not None:
        lines += ["", markdown_table(per_metric), "",
                  "Cells: log-space R² per metric on the fixed target_test, mean over seeds, every "
                  f"{PER_METRIC_EVERY} simulations: where a rule gains and which metric holds the mean back."]
    coverage = coverage_table(args.rules, by_rule, counts)
    if coverage is not None:
        lines += ["", markdown_table(coverage), "",
                  "Cells: share of the fixed target_test's (design, metric) pairs inside the round ensemble's "
                  f"calibrated 95 % interval, mean over seeds (lowest–highest seed), every {PER_METRIC_EVERY} "
                  "simulations: 0.95 is calibrated."]
    tails = tail_table(args)
    if tails is not None:
        lines += ["", markdown_table(tails), "",
                  f"Cells: % of a rule's successful simulations (after the {args.init} random first, all seeds "
                  "pooled) whose metric lies below the 10th / above the 90th percentile of that metric in the "
                  "circuit's target data: a uniform draw puts about 10 / 10 there; a rule far from it spends its "
                  "budget on the tails."]
    if timing:
        lines += ["", markdown_table(pd.DataFrame(timing))]
    return "\n".join(lines), curves


PER_METRIC_EVERY = 50   # simulations between the rows of the per-metric table


def metric_table(rules, by_rule: dict, counts: list):
    """Rows (simulations, rule) every PER_METRIC_EVERY simulations, a column per metric: the mean over seeds of
    ``test_r2_log_per_metric``; None when no run recorded it."""
    rows = []
    for n in (n for n in counts if n % PER_METRIC_EVERY == 0):
        for rule in rules:
            per = [r["test_r2_log_per_metric"] for r in by_rule[rule].get(n, []) if "test_r2_log_per_metric" in r]
            if per:
                rows.append({"B simulations": n, "rule": rule,
                             **{c: f"{statistics.mean(p[c] for p in per):.3f}" for c in per[0]}})
    return pd.DataFrame(rows) if rows else None


def coverage_table(rules, by_rule: dict, counts: list):
    """Rows every PER_METRIC_EVERY simulations, a column per rule: the 95 % interval coverage on target_test
    (``test_cov95``) as "mean (min–max)" over seeds; None when no run recorded it."""
    rows = []
    for n in (n for n in counts if n % PER_METRIC_EVERY == 0):
        row = {"B simulations": n}
        for rule in rules:
            cov = [r["test_cov95"] for r in by_rule[rule].get(n, []) if "test_cov95" in r]
            row[rule] = f"{statistics.mean(cov):.3f} ({min(cov):.3f}–{max(cov):.3f})" if cov else "–"
        rows.append(row)
    return pd.DataFrame(rows) if any(v != "–" for r in rows for k, v in r.items() if k != "B simulations") else None


TAIL_RANGE = 125   # simulations per row of the tails table


def tail_table(args):
    """Rows (simulation range, rule), a column per metric: where each rule's simulated designs fall in the
    distribution of the circuit's target data (``<data-dir>/<opamp>/target``), as "% below q10 / % above q90" of
    the designs it simulated successfully in that range; None without target data or ledgers."""
    try:
        reference = read_domain(args.data_dir, args.opamp, "target")
    except ToolkitError:
        return None
    y = reference.targets if reference.status is None else reference.targets[reference.status == "ok"]
    lo, hi = y.quantile(0.1), y.quantile(0.9)
    ledgers = {rule: [] for rule in args.rules}
    for rule in args.rules:
        for seed in args.seeds:
            path = run_dir(args, rule, seed) / "acquired.csv"
            if path.is_file():
                led = pd.read_csv(path)
                led["simulation"] = range(1, len(led) + 1)   # the ledger is in the order simulated
                ledgers[rule].append(led)
    rows = []
    # to the longest ledger: loops taken past --budget too, as the R² table shows them
    last = max((len(led) for leds in ledgers.values() for led in leds), default=0)
    for start in range(args.init + 1, last + 1, TAIL_RANGE):
        end = min(start + TAIL_RANGE - 1, last)
        for rule in args.rules:
            picked = [led[(led["simulation"] >= start) & (led["simulation"] <= end) & (led[STATUS] == "ok")]
                      for led in ledgers[rule]]
            picked = pd.concat(picked) if picked else pd.DataFrame()
            cols = [c for c in y.columns if c in picked.columns]
            if picked.empty or not cols:
                continue
            rows.append({"B simulations": f"{start}–{end}", "rule": rule, "designs": len(picked),
                         **{c: f"{100 * (picked[c] < lo[c]).mean():.0f} / {100 * (picked[c] > hi[c]).mean():.0f}"
                            for c in cols}})
    return pd.DataFrame(rows) if rows else None


def loop_argv(args, rule: str, seed: int, out: Path) -> list:
    """The ``python -m active`` arguments of one (rule, seed) loop."""
    return ["--opamp", args.opamp, "--data-dir", args.data_dir, "--rule", base_rule(rule),
            "--warm-start", "true" if variant(rule)[1] else "false",
            "--val-designs", "uniform" if variant(rule)[2] else "picks",
            "--seed", str(seed), "--budget", str(args.budget), "--init", str(args.init),
            "--batch", str(split_batch(rule)[1] or args.batch), "--out", str(out), "--no-plot", *args.extra]


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    if not args.report_only:
        todo = []
        for seed in args.seeds:
            for rule in args.rules:
                out = run_dir(args, rule, seed)
                done = read_progress(out)
                if not (done and done[-1]["simulations"] >= args.budget):
                    active.prepare(loop_argv(args, rule, seed, out))   # its one-line refusal now, not in a log later
                    todo.append((seed, rule, out))
        for seed, rule, out in todo:
            cmd = [sys.executable, "-m", "active", *loop_argv(args, rule, seed, out)]
            print(f"[active-bench] {rule} seed {seed}: {' '.join(cmd[1:])}", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            with open(out.parent / f"{rule}_seed{seed}.log", "a", encoding="utf-8") as log:
                rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                raise ToolkitError(f"python -m active failed for {rule} seed {seed} (exit {rc}); see "
                                   f"{out.parent / f'{rule}_seed{seed}.log'}")
            print(f"[active-bench] {rule} seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    text, curves = summarise(args)
    if not any(curves.values()):   # a mistyped root must not replace a published block with an empty table
        raise ToolkitError(f"No finished rounds under {args.results_root} for rules {' '.join(args.rules)}, seeds "
                           f"{' '.join(map(str, args.seeds))}: nothing to tabulate, nothing written. Fix: the "
                           f"--results-root the loops wrote to" + (" (or drop --report-only to run them)."
                                                                   if args.report_only else "."))
    png_dir = Path(args.docs_path).parent if args.docs_path else Path(args.results_root)
    name = block_name(args)
    png = png_dir / f"learning_curve_{name.replace(':', '_')}.png"
    reference = ("all target rows, random sample (harness)", args.reference) if args.reference is not None else None
    learning_curve(png, {r: c for r, c in curves.items() if c}, title=f"{args.opamp}: active learning, "
                   f"seeds {', '.join(map(str, args.seeds))}", reference=reference)
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    cmd = "python -m benchmarks.active_benchmark " + " ".join(shown)
    title = {"active-spec": "active learning toward a spec", "active-warm": "warm-started rounds vs retraining",
             "active": "active learning vs random sampling"}.get(name.split(":")[0], " vs ".join(args.rules))
    block = (f"### {args.opamp}: {title}\n\n{reproducing_commands(args, cmd)}\n\n{text}\n\n"
             f"![active learning {args.opamp}]({png.name})\n")
    atomic_write_text(Path(args.results_root) / f"{name.replace(':', '_')}.md", block)
    if args.docs_path:
        replace_block(Path(args.docs_path), name, block)
    print(text)
    return {"text": text, "curves": curves}


if __name__ == "__main__":
    run_main(main)
