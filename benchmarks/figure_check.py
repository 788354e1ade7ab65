"""How far a closed-form figure of a circuit file is from what the simulator measures.

    python -m benchmarks.figure_check                                   # the shipped circuits, B
    python -m benchmarks.figure_check --opamp my_ota.toml --process my_node.toml --n 500

For ``--n`` random designs of the circuit's design space (seed 0, ``spice.sampling``) it simulates the
operating point in ``--process`` and compares ``--figure`` (default bias_current: the supply current
with ideal mirrors) with the simulated ``--measured`` column (default supply_current): quantiles of
measured / figure and the Spearman rank correlation.  The rank correlation is what matters when the
figure is an objective of ``inverse_opt``: it orders designs; ``--verify`` reports the measured value.
"""
import argparse

import numpy as np
from scipy.stats import spearmanr

from core.cli import run_main
from core.errors import ToolkitError
from inverse.objective import figures_table
from spice.circuits import OPAMPS, circuit
from spice.operating_point import op_columns
from spice.sampling import sample_designs
from spice.simulate import simulate

QUANTILES = (0.05, 0.5, 0.95)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.figure_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--opamp", action="append", help=f"a circuit name or file (repeatable) [{', '.join(OPAMPS)}]")
    p.add_argument("--process", default="B")
    p.add_argument("--figure", default="bias_current")
    p.add_argument("--measured", default="supply_current", help="a column of simulate(..., op=True)")
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args(argv)
    args.opamp = args.opamp or list(OPAMPS)
    if args.n < 10:
        raise ToolkitError(f"--n must be >= 10 (quantiles need designs), got {args.n}")
    for opamp in args.opamp:
        c = circuit(opamp)
        if args.figure not in c.figures:
            raise ToolkitError(f"--figure {args.figure!r}: {c.path} has figures {list(c.figures)}")
        if args.measured not in op_columns(c):
            raise ToolkitError(f"--measured {args.measured!r} is not an operating-point column; e.g. supply_current, "
                               f"power, m1_id")
    from spice.simulate import resolve_process
    resolve_process(args.process)   # an unknown process: one line before the table starts, not after its header
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"{args.figure} vs simulated {args.measured} in {args.process}, {args.n} random designs per circuit\n"
          f"| circuit | OK designs | measured / figure: p5 | median | p95 | Spearman rank correlation |\n"
          f"|---|---|---|---|---|---|")
    rows = {}
    for opamp in args.opamp:
        c = circuit(opamp)
        designs = sample_designs(opamp, 0, 0, args.n)[c.features]
        sim = simulate(opamp, designs, args.process, op=True)
        measured = sim[args.measured].to_numpy(float)
        figure = figures_table(c, designs)[args.figure]
        ok = np.isfinite(measured) & (figure != 0)
        ratio = measured[ok] / figure[ok]
        q = np.quantile(ratio, QUANTILES)
        rho = float(spearmanr(measured[ok], figure[ok])[0])
        rows[c.name] = {"n_ok": int(ok.sum()), "quantiles": dict(zip(map(str, QUANTILES), map(float, q))),
                        "spearman": rho}
        print(f"| {c.name} | {int(ok.sum())} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {rho:.3f} |")
    return rows


if __name__ == "__main__":
    run_main(main)
