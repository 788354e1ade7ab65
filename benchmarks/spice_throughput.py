"""Simulator throughput: designs/s per circuit and process, shared library vs ``ngspice -b``.

    python -m benchmarks.spice_throughput                  # defaults below, ~3-4 min on 2 cores
    python -m benchmarks.spice_throughput --n 40 --repeats 1 --workers 2   # quick look

For each circuit and process (A, B) the same random designs (seed 0) are simulated with
--workers processes twice per repeat: with libngspice in each worker (the generator's path) and
with one ``ngspice -b`` process per design (the fallback).  Both run in the same invocation,
alternating, so machine load hits both alike; the table quotes medians over repeats and the
ratio.  Also printed: failure rate per status, and the median B/A ratio per metric on designs
that are OK in both processes.  Pool start-up is excluded (a warm-up task runs first).
"""
import argparse
import json
import os
import time

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from core.atomic import atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError
from core.outputs import check_writable_file
from spice.circuits import OPAMPS
from spice.measure import METRICS, OK
from spice.sampling import sample_designs
from spice.simulate import ngspice_version, simulate


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.spice_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="designs per circuit and process")
    p.add_argument("--n-batch", type=int, default=None,
                   help="designs for the ngspice -b comparison, <= --n (default: 100, or --n if fewer)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=25)
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    given_batch = args.n_batch is not None
    args.n_batch = args.n_batch if given_batch else min(100, max(args.n, 1))   # --n itself is checked below
    bad = {k: v for k, v in (("--n", args.n), ("--n-batch", args.n_batch), ("--repeats", args.repeats),
                             ("--workers", args.workers), ("--chunk", args.chunk)) if v < 1}
    if bad:
        raise ToolkitError(f"{', '.join(bad)} must be >= 1, got {', '.join(map(str, bad.values()))}. "
                           f"Example: --n 40 --repeats 1 --workers 2")
    if given_batch and args.n_batch > args.n:
        raise ToolkitError(f"--n-batch ({args.n_batch}) must be <= --n ({args.n}): the ngspice -b comparison runs on "
                           f"the first --n-batch of the --n designs. Example: --n 300 --n-batch 100")
    if args.json:
        check_writable_file(args.json, "--json")
    return args


def _chunk(opamp, x, process, backend):
    return simulate(opamp, x, process, backend=backend)


def _timed(parallel, opamp, x, process, backend, chunk) -> tuple[float, pd.DataFrame]:
    parts = [x.iloc[i:i + chunk] for i in range(0, len(x), chunk)]
    t0 = time.perf_counter()
    ys = parallel(delayed(_chunk)(opamp, part, process, backend) for part in parts)
    return len(x) / (time.perf_counter() - t0), pd.concat(ys)


def main(argv=None):
    args = parse_args(argv)
    rows, ratios, versions = [], {}, ngspice_version("shared")
    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    with Parallel(n_jobs=args.workers, backend="loky") as parallel:
        # Warm-up: start the pool and each worker's ngspice instance.
        parallel(delayed(_chunk)("5t_opamp", sample_designs("5t_opamp", 99, 0, 2), "A", "shared")
                 for _ in range(args.workers))
        for opamp in OPAMPS:
            x = sample_designs(opamp, 0, 0, args.n)
            results = {}
            for process in ("A", "B"):
                shared, batch = [], []
                for _ in range(args.repeats):
                    rate, y = _timed(parallel, opamp, x, process, "shared", args.chunk)
                    shared.append(rate)
                    rate_b, _ = _timed(parallel, opamp, x.iloc[:args.n_batch], process, "batch", args.chunk)
                    batch.append(rate_b)
                results[process] = y
                fail = y["status"].value_counts(normalize=True).to_dict()
                row = {"opamp": opamp, "process": process, "designs": args.n,
                       "shared_per_s": float(np.median(shared)), "batch_per_s": float(np.median(batch)),
                       "ratio": float(np.median(shared) / np.median(batch)),
                       "ok_fraction": float(fail.pop(OK, 0.0)), "failed_fraction": fail,
                       "negative_pm_fraction": float((y.loc[y["status"] == OK, "phase_margin"] < 0).mean())}
                rows.append(row)
                print(row, flush=True)
            both = (results["A"]["status"] == OK) & (results["B"]["status"] == OK)
            ratios[opamp] = {m: float(np.median(results["B"].loc[both, m] / results["A"].loc[both, m]))
                             for m in METRICS}
    load = (round(load_before, 1), round(os.getloadavg()[0], 1))
    print(f"\nngspice {versions}, {args.workers} workers, {os.cpu_count()} cores, medians of "
          f"{args.repeats} repeats, 1-min load average before/after {load[0]}/{load[1]}\n")
    print("| circuit | process | shared lib (designs/s) | ngspice -b (designs/s) | ratio | ok | failed by status | PM < 0 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        failed = ", ".join(f"{k} {v:.1%}" for k, v in r["failed_fraction"].items()) or "none"
        print(f"| {r['opamp']} | {r['process']} | {r['shared_per_s']:.1f} | {r['batch_per_s']:.1f} | "
              f"{r['ratio']:.1f}x | {r['ok_fraction']:.1%} | {failed} | {r['negative_pm_fraction']:.0%} |")
    print("\n| circuit | " + " | ".join(METRICS) + " |  (median B/A on the same designs)")
    print("|---|" + "---|" * len(METRICS))
    for opamp, r in ratios.items():
        print(f"| {opamp} | " + " | ".join(f"{r[m]:.3g}" for m in METRICS) + " |")
    if args.json:
        atomic_write_text(args.json, json.dumps({"ngspice": versions, "workers": args.workers,
                                                 "repeats": args.repeats, "load_average": load, "rows": rows,
                                                 "median_B_over_A": ratios}, indent=2) + "\n")
    return rows, ratios


if __name__ == "__main__":
    run_main(main)
