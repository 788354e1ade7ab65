"""Inverse optimisation: find buildable designs whose predicted metrics meet a spec.

    python -m inverse_opt --opamp 5t_opamp --model-type align_hetero \\
        --ckpt results/5t_opamp_align_hetero_lambda0.050.pth \\
        --y-target "2.5e8,200,1.5e6,65,20000" --goal "min,min,range,range,min" \\
        --ugf-band "8.0e5:2.0e6" --pm-band "60:75" --weights "0.05,0.40,0.90,0.10,0.65" \\
        --prior 1e-3 --n-init 512 --steps 800 --lr 0.002 --finish-lbfgs 80 \\
        --save-dir results/inverse/run_align
    # hybrid: start from MDN samples (an MDN checkpoint, or the .npy/.csv written by inverse_mdn --sample)
    ... --init-mdn results/mdn_5t_opamp.pth
    # the ensemble (python -m pipeline first), and check the top-k in ngspice (process B)
    ... --model-type ensemble --verify --top-k 8
    # the spec as a file with units instead of --y-target/--goal/--*band/--weights (inverse/spec_file.py)
    python -m inverse_opt --opamp 5t_opamp --model-type ensemble --spec spec.toml --verify
    # the smallest gate area that meets the spec; the trade-off of bias current against ugf (inverse/objective.py)
    ... --objective min:gate_area
    ... --objective min:bias_current --pareto max:ugf

Goals per metric (column order): min (y >= t), max (y <= t), target (|y - t| <= 5 % t),
range (inside --ugf-band / --pm-band / --band metric=lo:hi, else t +- 10 %).  Design
variables stay inside the buildable box; results are snapped to the grid of the design space
(the data's target meta.json, or --design-space FILE; none: no snapping, see inverse/snap.py),
re-predicted and ranked by the pessimistic prediction (mean -/+ kappa std).
Writes to --save-dir: candidates.csv (top-k designs in physical units, predicted metrics,
predicted std, goals met), result.json (command, spec, settings, candidates, verification),
and verify.csv with --verify (with the simulated supply current and power); with --objective the
candidates meeting the spec are ordered by it, with --pareto also pareto.csv and pareto.png.
A spec nothing meets is reported, not an error: the goals no searched design reaches, the pairs
of goals met separately but never together, the best trade-off (inverse/feasibility.py), and exit
status 3 (2 is bad input, 0 a design meets it: in simulation with --verify, else as predicted).
"""
import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.atomic import atomic_path, atomic_write_text
from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.outputs import check_writable_dir, results_lock
from core.stages import checkpoint_path
from inverse.forward import ENSEMBLE, canonical_model_type, load_forward, model_types
from inverse.goals import RANGE_TOL, TARGET_TOL, Spec, parse_bands, parse_goals, parse_weights, parse_y_target
from inverse.feasibility import INFEASIBLE_EXIT, describe
from inverse.mdn import load_mdn, sample_designs
from inverse.refine import SearchInterrupted, search, with_designs
from inverse.optimise import DEFAULTS, design_keys, hybrid_starts, mdn_condition, model_bounds, propose
from inverse.snap import check_data_against_space, check_space_inside_circuit, describe_grid, grid_for
from inverse.objective import MARGIN, PLAIN_SLOTS, figure_circuit, figures_table, make_objective, parse_objective
from inverse.plots import pareto_plot
from inverse.spec_file import load_objective, load_spec, metric_units, recorded_units
from inverse.verify import (SimulationInterrupted, check_circuit_columns, check_verifiable, format_verification,
                            read_meta, recorded_conditions, require_ngspice, same_process, simulator_for,
                            verify_designs, within_std)
from spice.conditions import Conditions, apply as apply_conditions
from spice.measure import SIGNED_METRICS, sign_column


def parse_args(argv=None):
    cli = StageCLI("inverse_opt", __doc__)
    a = cli.add_argument
    a("--spec", default=None, help="a spec file with units (TOML [goals], e.g. dc_gain = \">= 40 dB\"; "
                                   "docs/USAGE.md), instead of --y-target/--goal")
    a("--y-target", default=None, help="physical metrics, comma-separated, in the model's metric order")
    a("--goal", default=None, help="one of min|max|target|range per metric, comma-separated")
    a("--ugf-band", default=None, help="lo:hi band for ugf (goal 'range')")
    a("--pm-band", default=None, help="lo:hi band for phase_margin (goal 'range')")
    a("--band", action="append", default=[], metavar="METRIC=LO:HI", help="band for any metric (repeatable)")
    a("--weights", default=None, help="goal weight per metric, comma-separated [all 1]")
    a("--objective", default=None, metavar="min|max:NAME",
      help="among designs meeting the spec, minimise or maximise a figure of the circuit file (gate_area, "
           "bias_current) or a metric, e.g. min:gate_area; or [objective] in --spec [none]")
    a("--objective-margin", type=float, default=MARGIN,
      help=f"with an objective: designs meeting every goal with this many more stds of pessimism are ordered by "
           f"it first (room for the model's error at the spec's edge) [{MARGIN:g}]")
    a("--plain-slots", type=int, default=PLAIN_SLOTS,
      help=f"with an objective: the last N of the top-k are the best designs by the spec alone, a hedge when the "
           f"objective's designs sit at the spec's edge [{PLAIN_SLOTS}]")
    a("--pareto", default=None, metavar="min|max:NAME",
      help="with an objective: a second one (figure or metric); writes the predicted trade-off front "
           "(pareto.csv, pareto.png) among designs meeting the other goals, e.g. max:ugf [none]")
    d = DEFAULTS   # shared with benchmarks.inverse_benchmark, which measures them (docs/RESULTS.md)
    a("--prior", type=float, default=d["prior"], help=f"weight of mean(x_scaled^2), keeps x near the data "
                                                     f"[{d['prior']:g}]")
    a("--n-init", type=int, default=d["n_init"], help=f"number of starts [{d['n_init']}]")
    a("--steps", type=int, default=d["steps"], help=f"Adam steps [{d['steps']}]")
    a("--lr", type=float, default=d["lr"], help=f"Adam learning rate on the unconstrained variable [{d['lr']:g}]")
    a("--finish-lbfgs", type=int, default=d["lbfgs_steps"], help=f"L-BFGS iterations after Adam (0 = none) "
                                                                 f"[{d['lbfgs_steps']}]")
    a("--model-type", default="align_hetero", type=_model_type,
      help=f"forward model: {' | '.join(model_types())} (old names such as dualhead_b accepted) [align_hetero]")
    a("--ckpt", default=None, help="forward checkpoint [the stage's file in --results-dir; the results dir "
                                   "for ensemble]")
    a("--init-mdn", default="auto", help="hybrid starts (half MDN samples, half random): an MDN checkpoint (.pth), "
                                         "samples (.npy with its .csv), auto (the circuit's MDN in --results-dir "
                                         "when it exists: python -m inverse_mdn) or none [auto]")
    a("--rounds", type=int, default=1, help="simulator in the loop (with --verify): up to K rounds of optimise -> "
                                            "simulate the top-k -> correct the model with every simulated design, "
                                            "until one meets the spec (inverse/refine.py) [1]")
    a("--top-k", type=int, default=8, help="designs to report (and verify) [8]")
    a("--kappa", type=float, default=DEFAULTS["kappa"], help=f"pessimism: rank by mean -/+ kappa*std "
                                                              f"[{DEFAULTS['kappa']:g}]")
    a("--target-tol", type=float, default=TARGET_TOL, help=f"'target' tolerance, relative [{TARGET_TOL}]")
    a("--range-tol", type=float, default=RANGE_TOL, help=f"'range' without a band: t +- tol*t [{RANGE_TOL}]")
    a("--save-dir", default=None, help="output folder [results/inverse/{OPAMP}_{model-type}]")
    a("--overwrite", action="store_true", help="replace an earlier run's simulated designs in --save-dir (refused "
                                                "without it: simulations cost time)")
    a("--verify", action="store_true", help="simulate the top-k in ngspice and report pass/fail per goal")
    a("--process", default=None, help="process to verify in: A, B, sky130 or a process file (.toml) [the one the "
                                      "target data's meta.json records, else B]")
    a("--temp", type=float, default=None, help="--verify at this temperature, C [the target data's (meta.json), "
                                                 "else nominal 27]")
    a("--vdd", type=float, default=None, help="--verify at this supply, V [the target data's, else the process's]")
    a("--corner", default=None, help="--verify at this corner, a .lib section of the process's library (sky130: tt, "
                                     "ff, ss, sf, fs) [the target data's, else typical]")
    a("--design-space", default=None, help="grid and box for the designs: a circuit file (.toml) or a meta.json "
                                           "[the data's target meta.json; none: no snapping, the data's range]")
    a("--circuit", default=None, help="circuit file (.toml) to verify with [the target data's meta.json circuit, else the "
                                      "shipped circuit named --opamp]")
    a("--quiet", action="store_true")
    cli.flag("--out-of-domain", "OUT_OF_DOMAIN", "candidates outside the training inputs' ranges: warn | refuse | off")
    return cli.parse(argv)


def _model_type(raw):
    try:
        return canonical_model_type(raw)
    except ToolkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def default_ckpt(settings, model_type):
    if model_type == ENSEMBLE:
        return Path(settings["RESULTS_DIR"])
    return checkpoint_path(settings, model_type)


def check_numbers(args):
    if args.spec is not None and (args.y_target is not None or args.goal is not None or args.band
                                  or args.ugf_band or args.pm_band or args.weights):
        raise ToolkitError("--spec holds the goals, bands and weights; drop --y-target/--goal/--*band/--weights, "
                           "or drop --spec")
    if args.spec is None and (args.y_target is None or args.goal is None):
        raise ToolkitError("give the spec: --spec spec.toml, or --y-target with --goal (docs/USAGE.md, "
                           "'Inverse design')")
    for name, v, lo in (("--n-init", args.n_init, 1), ("--top-k", args.top_k, 1), ("--steps", args.steps, 0),
                        ("--finish-lbfgs", args.finish_lbfgs, 0), ("--rounds", args.rounds, 1),
                        ("--plain-slots", args.plain_slots, 0)):
        if v < lo:
            raise ToolkitError(f"{name} must be >= {lo}, got {v}.")
    for name, v in (("--prior", args.prior), ("--kappa", args.kappa), ("--lr", args.lr),
                    ("--objective-margin", args.objective_margin),
                    ("--target-tol", args.target_tol), ("--range-tol", args.range_tol)):
        if not np.isfinite(v) or v < 0:
            raise ToolkitError(f"{name} must be a finite number >= 0, got {v}.")
    args.spec_objective = load_objective(args.spec) if args.spec is not None else None   # (sense, name) or None
    if args.pareto is not None and args.objective is None and args.spec_objective is None:
        raise ToolkitError("--pareto is the second axis of a trade-off: give the first with --objective min|max:NAME "
                           "(or [objective] in --spec).")
    args.conditions = Conditions(args.temp, args.vdd, args.corner)   # bad values: one line, before any work
    if not args.conditions.nominal and not args.verify:
        raise ToolkitError(f"--temp/--vdd/--corner are the conditions --verify simulates in "
                           f"({args.conditions.describe()}); add --verify, or drop them.")
    if args.rounds > 1 and not args.verify:
        raise ToolkitError(f"--rounds {args.rounds} puts the simulator in the loop: add --verify (ngspice), "
                           f"or use --rounds 1.")


def mdn_starts(path, forward, spec: Spec, n: int, *, seed: int) -> np.ndarray:
    """Starts (<= n, D) in the forward model's space from an MDN checkpoint or sample files."""
    path = Path(path)
    pre = forward.preprocessing
    if path.suffix == ".pth":
        model, meta = load_mdn(path)
        if list(meta["y_cols"]) != pre.y_cols or list(meta["x_cols"]) != pre.x_cols:
            raise ToolkitError(f"--init-mdn {path} models x={meta['x_cols']}, y={meta['y_cols']}; the forward model "
                               f"has x={pre.x_cols}, y={pre.y_cols}. Use the MDN of the same circuit.")
        _, designs = sample_designs(model, meta, mdn_condition(spec), n, seed=seed)
        return pre.transform_x(designs)
    csv = path.with_suffix(".csv")
    if csv.is_file():            # physical units: independent of which scalers wrote the .npy
        return pre.transform_x(pd.read_csv(csv))[:n]
    if path.suffix == ".npy" and path.is_file():
        print(f"warning: {csv} not found; using {path} as x_scaled in the forward model's scaling.")
        x = np.load(path)
        if x.ndim != 2 or x.shape[1] != len(pre.x_cols):
            raise ToolkitError(f"--init-mdn {path} holds shape {x.shape}, expected (N, {len(pre.x_cols)}).")
        return x[:n].astype(np.float32)
    raise ToolkitError(f"--init-mdn {path} not found: pass an MDN checkpoint (python -m inverse_mdn) or the "
                       f".npy written by python -m inverse_mdn --sample.")


def build_spec(args, y_cols, preprocessing=None, data_dir=None, opamp=None, notes=None) -> Spec:
    """The spec from --spec or the positional flags, its units resolved; its notes (a metric left free, a band
    ignored) go to ``notes`` (a list) when given, else are printed."""
    say = print if notes is None else notes.append
    if args.spec is not None:
        units, where = recorded_units(data_dir, opamp) if data_dir is not None else ({}, None)
        return load_spec(args.spec, y_cols, typical_metrics(preprocessing), target_tol=args.target_tol,
                         recorded=units, recorded_where=where, warn=say)
    y = parse_y_target(args.y_target, y_cols)
    goals = parse_goals(args.goal, y_cols)
    bands = parse_bands(y_cols, ugf_band=args.ugf_band, pm_band=args.pm_band, bands=args.band)
    weights = parse_weights(args.weights, y_cols)
    spec = Spec.build(y_cols, goals, y, weights=weights, bands=bands, target_tol=args.target_tol,
                      range_tol=args.range_tol, warn=say)
    spec.units = metric_units(y_cols, recorded_units(data_dir, opamp)[0] if data_dir is not None else {})
    return spec


def build_objectives(args, forward, circuit) -> list:
    """[objective] or [objective, pareto axis] (inverse.objective.Objective), or []."""
    in_file = args.spec_objective
    if in_file is not None and args.objective is not None:
        raise ToolkitError(f"the objective is given twice: [objective] in {args.spec} and --objective; keep one.")
    out = []
    if in_file is not None:
        out.append(make_objective(*in_file, y_cols=forward.y_cols, circuit=circuit, where=f"{args.spec}: [objective]"))
    elif args.objective is not None:
        out.append(parse_objective(args.objective, y_cols=forward.y_cols, circuit=circuit))
    if args.pareto is not None:
        out.append(parse_objective(args.pareto, y_cols=forward.y_cols, circuit=circuit, flag="--pareto"))
        if out[1].name == out[0].name:
            raise ToolkitError(f"--pareto {args.pareto}: the front needs two different quantities; the objective is "
                               f"already {out[0].name}.")
    return out


def simulated_values(rows, objective, circuit) -> np.ndarray:
    """The objective of simulated designs ``rows`` (x columns + sim_*): a figure's closed form, a metric's
    simulated value."""
    return (figures_table(circuit, rows)[objective.name] if objective.kind == "figure"
            else rows[f"sim_{objective.name}"].to_numpy(float))


def best_verified(ver_all, objective, circuit):
    """(row index, value) of the simulated design meeting the spec with the best objective value, or None."""
    passed = ver_all[ver_all["pass_all"]]
    if not len(passed):
        return None
    values = simulated_values(passed, objective, circuit)
    i = int(np.argmin(objective.sense * values))
    return passed.index[i], float(values[i])


def typical_metrics(pre) -> np.ndarray:
    """Physical metrics at the centre of the model's y scaling (the source mean): what the MDN is
    conditioned on for a metric the spec leaves free."""
    y = np.asarray(pre.y_mean, float).copy()
    for j, col in enumerate(pre.y_cols):
        if col in pre.log_y_cols:
            y[j] = np.expm1(y[j])
    return y


def mdn_source(args, settings):
    """The MDN to start from: a path, or None (random starts only); ``auto`` = the circuit's MDN in the results
    folder when it exists."""
    value = str(args.init_mdn).strip()
    if value.lower() == "none":
        return None
    if value.lower() == "auto":
        path = Path(settings["RESULTS_DIR"]) / f"mdn_{settings['OPAMP_TYPE']}.pth"
        return path if path.is_file() else None
    if not Path(value).is_file():
        raise ToolkitError(f"--init-mdn {value}: MDN checkpoint not found. Fix: the path python -m inverse_mdn wrote "
                           f"(mdn_<circuit>.pth in its results folder), 'auto' or 'none'.")
    return Path(value)


def starts_for(args, forward, spec, seed, grid=None, mdn=None):
    """``--n-init`` starts in model space: half MDN samples (when ``mdn``), the rest random in the box."""
    lo, hi = model_bounds(forward.preprocessing, grid)
    mdn_x = None
    if mdn is not None:
        try:
            mdn_x = mdn_starts(mdn, forward, spec, args.n_init // 2, seed=seed)
        except ToolkitError as exc:
            if str(args.init_mdn).strip().lower() != "auto":
                raise
            print(f"warning: not starting from {mdn} ({exc}); random starts only.")
    return hybrid_starts(args.n_init, lo, hi, seed=seed, mdn_x=mdn_x)


def summary_lines(table, spec: Spec, k: int, label: str = "") -> list:
    """What the candidates are predicted to do; ``label`` names their round when there are several."""
    n_ok = int(table["meets_all"].sum())
    out = [f"[inverse] {label}{n_ok}/{len(table)} of the top-{k} are predicted to meet every goal"]
    if n_ok == 0:
        best = table.iloc[0]
        fails = [f"{c} ({spec.goal_text(c)}: predicted {spec.value_text(c, best[f'pred_{c}'])})"
                 for c in spec.y_cols if not best[f"meets_{c}"]]
        out.append(f"[inverse] {label}no design is predicted to meet the spec; rank 1 (ranked by the pessimistic "
                   f"prediction, then the goal loss) misses {', '.join(fails)}")
    return out


def flag_out_of_domain(table, forward, mode: str):
    flags = forward.preprocessing.out_of_domain(table[forward.x_cols])
    if flags is None:           # "" = inside the training inputs' ranges
        return
    table["out_of_domain"] = flags
    outside = [(r, f) for r, f in zip(table["rank"], flags) if f]
    if outside and mode == "refuse":
        raise ToolkitError(f"{len(outside)} of the top-{len(table)} candidates lie outside the training data "
                           f"(rank {outside[0][0]}: {outside[0][1]}); their predictions are extrapolations. "
                           f"Fix: --out-of-domain warn to keep them (marked), or narrow the design box.")
    if outside and mode == "warn":
        print(f"warning: {len(outside)} of the top-{len(table)} candidates lie outside the training data "
              f"(rank {outside[0][0]}: {outside[0][1]}); see the out_of_domain column.")


OUTPUTS = ("candidates.csv", "result.json", "verify.csv", "simulated_features.csv", "simulated_targets.csv",
           "simulated_metric_signs.csv",
           "pareto.csv", "pareto.png")   # what a run writes in --save-dir; a rerun removes those it does not write


def verify_conditions(data_dir, opamp: str, flags: Conditions, given_process, process: str) -> Conditions:
    """The conditions --verify simulates in: those the target data were simulated at (meta.json: temp, vdd, corner),
    each replaced by its flag when given; the data's apply only to the data's process (``--process`` naming another
    one starts from nominal).  A model learned at 85 C is checked at 85 C, not at the simulator's nominal 27 C.
    Printed whenever they are not nominal, with a warning where they differ from the data's."""
    meta = read_meta(data_dir, opamp, "target")
    recorded_process = meta.get("process_file") or meta.get("process")
    other_process = given_process is not None and not (recorded_process and same_process(given_process,
                                                                                          recorded_process))
    recorded = {} if other_process else recorded_conditions(data_dir, opamp)
    merged = Conditions(**{**recorded, **flags.to_dict()})
    if recorded:
        print(f"[inverse] --verify simulates at {merged.describe()}: the conditions the target data were simulated "
              f"at (their meta.json){'; flags override' if not flags.nominal else ''}")
    elif not merged.nominal:
        print(f"[inverse] --verify simulates at {merged.describe()} (flags; the target data's meta.json records no "
              f"conditions)")
    made_at = Conditions(**recorded)
    if recorded and merged != made_at:   # only against conditions the data say they were made at
        print(f"warning: the model learned from target data simulated at {made_at.describe()}, and "
              f"--verify simulates at {merged.describe()}: a design that misses may miss for the conditions, not "
              f"the model.")
    return merged


def check_no_earlier_simulations(save_dir: Path, overwrite: bool) -> None:
    """Refuse, before the search, a --save-dir that holds an earlier run's simulated designs (verify.csv), unless
    ``overwrite``: a rerun with another spec replaced them without a word."""
    earlier = save_dir / "verify.csv"
    if overwrite or not earlier.is_file():
        return
    command = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        command = json.loads((save_dir / "result.json").read_text(encoding="utf-8")).get("command")
    raise ToolkitError(f"{save_dir} holds the simulated designs of an earlier run ({earlier}"
                       + (f", from: {command}" if command else "") + "). Nothing was run. Fix: --save-dir "
                       "NEW_FOLDER, or --overwrite to replace them.")


def main(argv=None):
    args, settings = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # result.json's command
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, settings["NUM_THREADS"]))
    check_numbers(args)
    opamp = settings["OPAMP_TYPE"]
    # the circuit and process the data were simulated with (meta.json), unless --circuit / --process say otherwise
    given_process = args.process
    args.circuit, args.process = simulator_for(settings["DATA_DIR"], opamp, args.circuit, args.process)
    if args.verify:
        args.conditions = verify_conditions(settings["DATA_DIR"], opamp, args.conditions, given_process, args.process)
        require_ngspice()
        from spice.simulate import resolve_process   # the process and its corner, before the search
        apply_conditions(resolve_process(args.process), args.conditions)
    save_dir = Path(args.save_dir) if args.save_dir else Path(settings["RESULTS_DIR"]) / "inverse" / \
        f"{opamp}_{args.model_type}"
    check_writable_dir(save_dir, "--save-dir")      # before the optimisation, so no work is lost at save time
    with results_lock(save_dir, flag="--save-dir"):  # two runs into one folder would replace each other's simulations
        check_no_earlier_simulations(save_dir, args.overwrite)
        return _search_and_write(args, settings, save_dir, t0, opamp)


def _search_and_write(args, settings, save_dir: Path, t0: float, opamp: str) -> dict:
    """The run inside ``save_dir``'s lock: the rest of the checks, the search, the verification and the files."""
    ckpt = Path(args.ckpt) if args.ckpt else default_ckpt(settings, args.model_type)
    forward = load_forward(args.model_type, ckpt, opamp=opamp, results_dir=settings["RESULTS_DIR"])
    notes = []                                     # the spec's notes, printed once every check has passed
    spec = build_spec(args, forward.y_cols, forward.preprocessing, settings["DATA_DIR"], opamp, notes=notes)
    sim_circuit, unchecked = args.circuit, []
    if args.verify:
        check_circuit_columns(sim_circuit, forward.x_cols)
        unchecked = check_verifiable(spec)
        if unchecked and args.rounds > 1:
            raise ToolkitError(f"--rounds {args.rounds} corrects the model with every metric of the simulated designs, "
                               f"and the simulator does not measure {unchecked}. Fix: --rounds 1 (verify only), or a "
                               f"model without those metrics.")
        if unchecked:
            print(f"[inverse] --verify leaves {unchecked} unchecked: the simulator does not measure them (free in "
                  f"the spec)")
    circuit = figure_circuit(sim_circuit, forward.x_cols)        # its [figures]: columns, objectives
    objectives = build_objectives(args, forward, circuit)
    unsimulated = [o.name for o in objectives if o.kind == "metric" and o.name in unchecked]
    if unsimulated:
        raise ToolkitError(f"--verify cannot rank verified designs by {unsimulated}: the simulator does not measure "
                           f"it. Fix: an objective the simulator gives (a figure such as gate_area, or a simulated "
                           f"metric), or drop --verify.")
    if spec.free and not objectives:
        raise ToolkitError("No goal bounds any metric (each is 'any' or left free) and there is no --objective: "
                           "every design meets this spec, so there is nothing to search for. Fix: a goal such as "
                           "dc_gain = \">= 40 dB\", or an --objective.")
    torch.manual_seed(settings["SEED"])
    grid, grid_source = grid_for(settings["DATA_DIR"], opamp, args.design_space, forward.design_space)
    # before the search: a space in other units than the model's data would be searched decades away from them
    check_data_against_space(grid, forward.x_cols, forward.preprocessing.x_min, forward.preprocessing.x_max,
                             grid_source)
    if args.verify and circuit is not None:   # and not wider than the circuit simulating them (a narrower --circuit)
        check_space_inside_circuit(grid, forward.x_cols, circuit, grid_source)
    mdn = mdn_source(args, settings)
    for note in notes:
        print(note)
    print(f"[inverse] {opamp} {args.model_type} ({ckpt}); {args.n_init} starts "
          f"({'half MDN ' + str(mdn) + ', half random' if mdn else 'random'}), {args.steps} Adam + "
          f"{args.finish_lbfgs} L-BFGS; design space: {grid_source}"
          + (f"; up to {args.rounds} rounds of {args.top_k} simulations" if args.rounds > 1 else "")
          + "".join(f"; {'trade-off with' if i else 'objective:'} {o.describe()}" for i, o in enumerate(objectives)))
    print(f"[spec] {spec.describe()}")
    def simulate(table):
        return verify_designs(sim_circuit, table, spec, process=args.process, progress=not args.quiet, power=True,
                              conditions=args.conditions.to_dict())

    def propose_round(model, x0, exclude):
        prop = propose(model, spec, x0, steps=args.steps, lr=args.lr, lbfgs_steps=args.finish_lbfgs,
                       prior=args.prior, kappa=args.kappa, top_k=args.top_k, grid=grid, progress=not args.quiet,
                       exclude=exclude, objectives=objectives, circuit=circuit,
                       objective_margin=args.objective_margin, plain_slots=args.plain_slots)
        flag_out_of_domain(prop.table, forward, settings["OUT_OF_DOMAIN"])
        return prop

    def interrupted(verified: list):
        """Ctrl-C: the designs simulated so far go to the usual files before the one "interrupted" line."""
        ver_so_far = simulated_rows(verified)
        if ver_so_far is None:
            print(f"[inverse] interrupted before any design was simulated: nothing written in {save_dir}", flush=True)
        else:
            names = write_simulated(save_dir, ver_so_far, forward.x_cols, spec.y_cols) + ["result.json"]
            atomic_write_text(save_dir / "result.json", json.dumps({
                "command": command_line(args.argv), "opamp": opamp, "interrupted": True,
                "spec": spec.to_dict(), "verification": verification_record(args, ver_so_far, spec)}, indent=2) + "\n")
            remove_others(save_dir, names)
            print(f"[inverse] interrupted after {len(ver_so_far)} simulations; they are kept in {save_dir}/"
                  + ", ".join(names), flush=True)

    try:
        found = search(forward, spec, starts=lambda model, rnd: starts_for(args, model, spec,
                                                                              settings["SEED"] + rnd - 1, grid, mdn),
                       propose_round=propose_round, simulate=simulate if args.verify else None, rounds=args.rounds)
    except SearchInterrupted as exc:
        interrupted(exc.verified)
        raise
    prop, rounds, success = found.proposal, found.rounds, found.success_at
    table = prop.table
    last_round = rounds[-1]["round"]
    table.insert(0, "round", last_round)            # which round's model proposed these candidates
    ver = found.verified[-1] if found.verified else None
    several = args.rounds > 1
    if not args.quiet:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    ver_all = pd.concat(found.verified, ignore_index=True) if found.verified else None
    simulated_round = len(found.verified) or None   # rounds 1..k were simulated; a last one may not have been
    if ver is not None:
        if several:
            print(f"[verify] round {simulated_round}'s designs, simulated:")
        print(format_verification(ver.drop(columns=forward.x_cols + ["round"]), spec))
    unsimulated_last = simulated_round != last_round
    lines = summary_lines(table, spec, args.top_k,
                          label=f"round {last_round}{' (not simulated)' if args.verify and unsimulated_last else ''}: "
                          if several else "")
    lines += describe(prop.feasibility, {c: spec.goal_text(c) for c in spec.y_cols})
    if several:
        lines.append(f"[inverse] simulations until a design met the spec: {success}" if success else
                     f"[inverse] no simulated design met the spec in {len(rounds)} round(s), "
                     f"{rounds[-1]['n_simulated']} simulations")
    best = None
    if objectives:
        obj = objectives[0]
        ok = table[table["meets_all"]]
        if len(ok):
            how = ""
            if obj.kind == "metric":      # the ranking's pessimistic value: say so, with the mean beside it
                sign = "-" if obj.sense < 0 else "+"
                mean = table[f"pred_{obj.name}"].iloc[0] if f"pred_{obj.name}" in table else float("nan")
                how = f"(pessimistic prediction, mean {sign} {args.kappa:g} std; mean {mean:.4g}) "
            lines.append(f"[objective] {obj.describe()}: rank 1 {obj.name} = {table['objective'].iloc[0]:.4g} "
                         f"{how}among {len(ok)} candidates predicted to meet the spec")
    front = table.attrs.get("pareto")
    if front is not None and not len(front):
        lines.append("[pareto] no searched design is predicted to meet the spec: no front to draw")
        front = None
    if front is not None:
        verified_points = None
        if args.verify:    # simulate the front itself: what the trade-off really is in the process
            try:
                fv = simulate(front.assign(rank=np.arange(1, len(front) + 1)))
            except SimulationInterrupted as exc:
                interrupted([ver_all] + ([_front_rows(exc.rows, front, forward.x_cols, last_round, ver_all)]
                                         if len(exc.rows) else []))
                raise
            front = pd.concat([front, fv[[c for c in fv.columns if c.startswith("sim_")] + ["status", "pass_all"]]],
                              axis=1)
            vals = [simulated_values(front, o, circuit) for o in objectives]
            verified_points = (vals[0], vals[1], front["pass_all"].to_numpy(bool))
            lines.append(f"[pareto] simulated the {len(front)} front designs: {int(front['pass_all'].sum())} meet "
                         f"the spec in {args.process}")
            # every simulated design is in verify.csv and the simulated_* files (a front design the top-k
            # simulated already is there once)
            ver_all = simulated_rows([ver_all, _front_rows(fv, front, forward.x_cols, last_round, ver_all)])
        pareto_plot(save_dir / "pareto.png", front, objectives, verified=verified_points,
                    title=f"{opamp}: {objectives[0].describe()} vs {objectives[1].describe()}")
        spans = [f"{o.name} {front[f'objective_{o.name}'].min():.4g}..{front[f'objective_{o.name}'].max():.4g}"
                 for o in objectives]
        lines.append(f"[pareto] {len(front)} non-dominated designs predicted to meet the spec: {', '.join(spans)} "
                     f"(ranking values: a metric's is its pessimistic prediction, mean ∓ {args.kappa:g} std)")
    if objectives and ver_all is not None:
        best = best_verified(ver_all, objectives[0], circuit)
        if best is not None:
            r = ver_all.loc[best[0]]
            where = "the Pareto front" if r.get("set") == "pareto" else f"round {int(r['round'])}"
            lines.append(f"[objective] best simulated design meeting the spec: {where} rank {int(r['rank'])}, "
                         f"{objectives[0].name} = {best[1]:.4g} {objectives[0].unit}".rstrip()
                         + f"; supply current {r['sim_supply_current']:.4g} A, power {r['sim_power']:.4g} W")
    # feasible: with --verify, some design meets every goal in simulation (the check that counts: a design only
    # predicted to is not one); without, some candidate is predicted to
    feasible = bool(ver_all["pass_all"].any()) if ver_all is not None else bool(table["meets_all"].any())
    wall = time.perf_counter() - t0
    print("\n".join(lines) + f"\n[inverse] {prop.n_unique} unique {'snapped ' if grid else ''}designs from "
          f"{prop.n_starts} starts; "
          f"optimisation {sum(r['optimise_s'] for r in rounds):.1f}s, total {wall:.1f}s after start-up (imports)")
    record = {
        "command": command_line(args.argv),
        "opamp": opamp, "model_type": args.model_type, "checkpoint": str(ckpt), "spec": spec.to_dict(),
        "settings": {k: getattr(args, k) for k in ("prior", "n_init", "steps", "lr", "finish_lbfgs", "top_k",
                                                   "kappa", "process", "verify", "rounds", "objective_margin",
                                                   "plain_slots")}
        | {"seed": settings["SEED"], "init_mdn": str(mdn) if mdn else None},
        "grid": describe_grid(forward.x_cols, grid), "design_space": grid_source, "n_unique": prop.n_unique,
        "wall_s": round(wall, 2), "optimise_s": round(sum(r["optimise_s"] for r in rounds), 2),
        "n_predicted_ok": int(table["meets_all"].sum()), "feasible": feasible, "feasibility": prop.feasibility,
        "rounds": rounds, "simulations_until_success": success,
        "candidates": json.loads(table.to_json(orient="records")),
        "objectives": [o.to_dict() for o in objectives],
    }
    if best is not None:
        row = ver_all.loc[best[0]]
        record["best_verified"] = {"round": int(row["round"]), "rank": int(row["rank"]), objectives[0].name: best[1],
                                   "set": row.get("set", "top-k")}
    if ver_all is not None:
        record["verification"] = verification_record(args, ver_all, spec)
    with atomic_path(save_dir / "candidates.csv") as tmp:
        table.to_csv(tmp, index=False)
    written = ["candidates.csv", "result.json"]
    if ver_all is not None:   # every simulated design, every round: nothing simulated is thrown away
        written += write_simulated(save_dir, ver_all, forward.x_cols, spec.y_cols)
    if front is not None:
        with atomic_path(save_dir / "pareto.csv") as tmp:
            front.to_csv(tmp, index=False)
        written += ["pareto.csv", "pareto.png"]
        record["pareto"] = json.loads(front.to_json(orient="records"))
    atomic_write_text(save_dir / "result.json", json.dumps(record, indent=2) + "\n")
    remove_others(save_dir, written)
    print(f"[inverse] wrote {save_dir}/" + ", ".join(written))
    if not feasible:
        what = ("no design met the spec in simulation" + (f" ({int(table['meets_all'].sum())} predicted to)"
                                                           if table["meets_all"].any() else "")
                if ver_all is not None else "nothing meets the spec")
        print(f"[inverse] exit status {INFEASIBLE_EXIT}: the search ran, {what} (bad input exits 2)")
    return {"table": table, "verification": ver_all, "record": record, "save_dir": str(save_dir)}


def _front_rows(fv: pd.DataFrame, front: pd.DataFrame, x_cols, rnd: int, simulated=None) -> pd.DataFrame:
    """The simulated Pareto-front designs as verify.csv rows: the round whose candidates they are, ``set``
    'pareto', their x columns; a design among the ``simulated`` rows already (the top-k's) is left out."""
    rows = with_designs(fv, rnd, front, x_cols).assign(set="pareto")
    if simulated is not None:
        seen = set(design_keys(simulated, x_cols))
        rows = rows[~design_keys(rows, x_cols).isin(seen).to_numpy()]
    return rows


def simulated_rows(parts: list):
    """verify.csv's rows from the simulated parts (each round's, the front's) in one frame, or None; the column
    ``set`` ('top-k' / 'pareto') when the front is among them."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return None
    if any("set" in p for p in parts):
        parts = [p if "set" in p else p.assign(set="top-k") for p in parts]
    return pd.concat(parts, ignore_index=True)


def remove_others(save_dir: Path, written: list) -> None:
    """An earlier run's files in ``save_dir`` that this run did not write: removed, never mixed in."""
    for name in sorted(set(OUTPUTS) - set(written)):
        with contextlib.suppress(FileNotFoundError):
            (save_dir / name).unlink()


def command_line(argv) -> str:
    return "python -m inverse_opt " + " ".join(shlex.quote(a) for a in argv)


def verification_record(args, ver_all: pd.DataFrame, spec) -> dict:
    """result.json's ``verification``: where the designs were simulated, every simulated row, and how many sat
    inside the predicted mean +- 1 and 2 std (``inverse.verify.within_std``)."""
    by_set = ({str(k): int(v) for k, v in ver_all.groupby("set")["pass_all"].sum().items()}
              if "set" in ver_all else {})
    return {"circuit": str(args.circuit), "process": args.process, "conditions": args.conditions.to_dict(),
            "n_pass": int(ver_all["pass_all"].sum()), **({"n_pass_by_set": by_set} if by_set else {}),
            "within_std": within_std(ver_all, spec), "rows": json.loads(ver_all.to_json(orient="records"))}


def write_simulated(save_dir: Path, ver_all: pd.DataFrame, x_cols, y_cols) -> list:
    """verify.csv (every simulated design, every round) and the data layout's files for them (append them to
    your target data); returns the names written."""
    written = ["verify.csv", "simulated_features.csv", "simulated_targets.csv"]
    with atomic_path(save_dir / "verify.csv") as tmp:
        ver_all.to_csv(tmp, index=False)
    with atomic_path(save_dir / "simulated_features.csv") as tmp:
        ver_all[list(x_cols)].to_csv(tmp, index=False)
    with atomic_path(save_dir / "simulated_targets.csv") as tmp:
        ver_all[[f"sim_{c}" for c in y_cols]].set_axis(list(y_cols), axis=1).assign(
            status=ver_all["status"], round=ver_all["round"]).to_csv(tmp, index=False)
    signed = [m for m in SIGNED_METRICS if f"sim_{sign_column(m)}" in ver_all.columns]
    if signed:   # the data's metric_signs.csv rows for these designs (empty where a simulation failed)
        with atomic_path(save_dir / "simulated_metric_signs.csv") as tmp:
            ver_all[[f"sim_{sign_column(m)}" for m in signed]].set_axis(signed, axis=1).to_csv(
                tmp, index=False, float_format="%g")
        written.append("simulated_metric_signs.csv")
    return written


if __name__ == "__main__":
    result = run_main(main)
    sys.exit(0 if result["record"]["feasible"] else INFEASIBLE_EXIT)
