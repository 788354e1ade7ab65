"""Active learning: let the calibrated ensemble choose which target-process (B) designs to simulate.

    python -m active --opamp 5t_opamp --budget 250                         # shipped data: A rows + B test rows
    python -m active --opamp 5t_opamp --rule mixed --seed 1 --budget 100 --out results/active/mixed_s1
    python -m active --opamp my_ota --data-dir mydata --circuit my_ota.toml --process my_node.toml

Starts from ``--init`` random B designs (drawn from the circuit's design space on its buildable grid), or
from the B designs you simulated already (``--init-from FOLDER``: one *features*.csv and one *targets*.csv;
they are not simulated again and do not count against ``--budget``, which then counts the loop's own
simulations), and the source (A) rows of ``--data-dir/<opamp>/source``; each round trains the transfer ensemble
(``python -m pipeline`` with ``--members``, config ACTIVE_MEMBERS, on every B design simulated so far:
VAL_SPLIT of each round's designs, fixed once simulated, for early stopping and calibration -- with
``--val-designs uniform`` (the default ``auto`` for every rule but spec) a uniform draw from the pool in every batch,
the rule picking the rest; with ``--warm-start true`` the neural members start from the previous round's weights),
scores ``--pool`` fresh candidates and simulates the ``--batch`` that ``--rule`` picks (``active_learning.acquisition``:
random | uncertainty | diverse | integrated | mixed | mixed_integrated | spec) in process B, until ``--budget``
simulations.
Failed simulations count against the budget, are kept with their status and are never simulated again.

Scored on a fixed test set nothing here trains, selects or calibrates on: the target_test split
(TEST_SPLIT, --seed; the rows marked test when its targets file has a split column) of
``--data-dir/<opamp>/target`` when that folder exists (the shipped data); its designs are never simulated by the
loop.  Without it, only the validation R^2 is reported.

Writes under ``--out`` (default ``results/active/<opamp>_<rule>_seed<seed>``):
  acquired.csv           every simulated design: round, rule, seed, features, metrics, status
  data/<opamp>/          the training data of the rounds (source copied once; target = acquired designs)
  rounds/rNN/            round NN's checkpoints, ensemble and pipeline log; batch.csv = the designs it chose
  progress.jsonl, active.md, learning_curve.png    per round: simulations, failures, val/test R^2, times
Resumable: the same command again continues where it stopped (after Ctrl-C at any point) and a larger
``--budget`` extends a finished run; nothing simulated is lost or simulated twice.  Bad input (budget
below the initial set, a pool or batch of 0, no ngspice, data without a design space) is one line and
exit 2 before anything is written.
"""
import contextlib
import difflib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import pipeline
from active_learning.acquisition import GP_RULES, RULES
from active_learning.choose import choose, uniform_draws, val_designs
from active_learning.given import GIVEN, check_given_provenance, given_designs
from active_learning.ledger import STATUS, UNIFORM, append_rows, assign_split, read_ledger, write_training_data
from core.atomic import atomic_path, atomic_write_text
from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.executor import BACKENDS, check_backend, connect, parallel
from core.markdown import markdown_table
from core.outputs import check_writable_dir, results_lock
from core.settings import parse_set_pairs, resolve, toolkit_config
from data_loader import data_kwargs_from_settings, get_data_and_scalers
from data_loader.layout import read_domain
from data_loader.split import MIN_TRAIN_ROWS, MIN_VAL_ROWS, split_target_rows
from inference.members import parse_members
from inference.evaluate import half_min_positive
from inference.metrics import regression_report
from inference.predict import Ensemble
from inverse.optimise import design_keys
from inverse.verify import (POWER, check_circuit_columns, measured_metrics, recorded_conditions, require_ngspice,
                            simulator_for, unmeasured_metrics)
from spice.conditions import Conditions
from spice.measure import SIGNED_METRICS

config = toolkit_config()   # the toolkit's config.py, for resolving a resumed run's recorded --set values

PREPROCESSING = "preprocessing.json"   # the run's one preprocessing (fitted on round 0's data)
CHUNK = 5            # designs per simulation task: the ledger is saved after each, so Ctrl-C loses little
KEY_FIELDS = ("opamp", "circuit", "process", "conditions", "data_dir", "rule", "seed", "init", "batch", "pool",
              "members", "set", "init_from", "spec", "warm_start", "val_designs")


def parse_args(argv=None):
    cli = StageCLI("active", __doc__)
    cli.flag("--rule", "ACTIVE_RULE", "acquisition rule: " + " | ".join(RULES))
    cli.flag("--budget", "ACTIVE_BUDGET", "simulations in process B in all (the --init random ones included; "
                                          "--init-from designs are not simulated, so not counted)")
    cli.flag("--init", "ACTIVE_INIT", "random designs simulated first")
    cli.flag("--batch", "ACTIVE_BATCH", "designs simulated per round")
    cli.flag("--pool", "ACTIVE_POOL", "candidates scored per round")
    cli.flag("--members", "ACTIVE_MEMBERS", "ensemble members retrained each round (comma-separated)")
    cli.flag("--jobs", "PIPELINE_JOBS", "training stages and simulations run at once")
    cli.flag("--warm-start", "ACTIVE_WARM_START", "true: each round's neural members start from the previous round's")
    cli.flag("--val-designs", "ACTIVE_VAL_DESIGNS", "uniform: each round's validation designs are a uniform draw "
             "from the pool, the rule picks the rest | picks: a share of the rule's own picks | auto: picks for "
             "rule spec, uniform for the others")
    cli.add_argument("--spec", default=None, metavar="FILE",
                     help="a spec file (as for inverse_opt --spec): rule 'spec' simulates where it is likely met; "
                          "with any rule each round reports how many simulated designs met it")
    cli.add_argument("--init-from", default=None, metavar="FOLDER",
                     help="B designs simulated already (one *features*.csv, one *targets*.csv, optional status "
                          "column) as the initial set instead of --init random ones; not counted in --budget")
    cli.add_argument("--out", default=None, help="run folder [<--results-dir>/active/<opamp>_<rule>_seed<seed>]")
    cli.add_argument("--circuit", default=None,
                     help="circuit file (.toml) to simulate [the data's meta.json circuit, else the shipped circuit "
                          "named --opamp]")
    cli.add_argument("--process", default=None, help="process to simulate in: A, B, sky130 or a process file "
                                                     "[the target data's meta.json process, else B]")
    cli.add_argument("--backend", choices=list(BACKENDS), default="local", help="where simulations run")
    cli.add_argument("--scheduler", default=None, help="Dask scheduler address (with --backend dask)")
    cli.add_argument("--no-plot", action="store_true", help="no learning_curve.png")
    return cli.parse(argv)


# ---------------------------------------------------------------- checks before anything is written
def check_sizes(settings: dict, n_given: int | None = None) -> None:
    """``n_given``: the OK designs of --init-from (then --init is not used and --budget counts new simulations)."""
    init, budget, batch, pool = (settings[k] for k in ("ACTIVE_INIT", "ACTIVE_BUDGET", "ACTIVE_BATCH", "ACTIVE_POOL"))
    if n_given is None and budget < init:
        raise ToolkitError(f"--budget {budget} is smaller than the initial set --init {init}: the loop could not "
                           f"even simulate its first designs. Fix: --budget {init + batch} or more, or a smaller --init.")
    if pool < batch:
        raise ToolkitError(f"--pool {pool} is smaller than --batch {batch}: a batch is chosen among the pool. "
                           f"Fix: --pool {max(batch * 20, 1000)}.")
    if n_given is not None and n_given < 10:   # as ACTIVE_INIT's floor: the first round splits train and val
        raise ToolkitError(f"--init-from has {n_given} designs with every metric simulated (test-set designs left "
                           f"out); the first round needs >= 10. Fix: more designs in that folder, or --init N random.")
    split_target_rows(init if n_given is None else n_given, val_split=settings["VAL_SPLIT"], test_split=0.0,
                      seed=settings["SEED"])


def check_simulated_metrics(folder: Path, y_cols: list) -> None:
    """Every metric column of the data is one the simulator measures (``spice.measure.METRICS``, or ``power``
    from the operating point): the loop appends simulated rows to the data, and a column it cannot fill would
    stop it after its first simulations."""
    unknown = unmeasured_metrics(y_cols)
    if unknown:
        raise ToolkitError(f"{folder}: metric columns {unknown} are not ones the simulator measures (expected "
                           f"{measured_metrics()}), so the loop cannot simulate new rows of them. Fix: rename them to "
                           f"the simulator's names, or copy the data without those columns.")


def split_is_short(ledger: pd.DataFrame, settings: dict) -> bool:
    """True when the ledger's OK designs would leave the round fewer than MIN_TRAIN_ROWS training or MIN_VAL_ROWS
    validation rows (split as the training data will be, ``assign_split``): round 0 then simulates more before it
    trains, instead of failing on every resume."""
    ok = (ledger[STATUS] == "ok").to_numpy()
    split = assign_split(ledger, settings["VAL_SPLIT"], settings["SEED"]).to_numpy()
    return (ok & (split == "train")).sum() < MIN_TRAIN_ROWS or (ok & (split == "val")).sum() < MIN_VAL_ROWS


def loop_simulations(ledger: pd.DataFrame) -> int:
    """Designs the loop simulated itself (the --init-from ones excluded): what --budget counts."""
    return int((ledger["rule"] != GIVEN).sum())


def run_key(args, settings, circuit: str, process: str, spec=None, conditions=None) -> dict:
    """What makes a rerun the same run (resume) rather than a different one; --budget may grow."""
    return {"opamp": settings["OPAMP_TYPE"], "circuit": circuit, "process": process, "conditions": conditions or {},
            "data_dir": str(Path(settings["DATA_DIR"]).resolve()), "rule": settings["ACTIVE_RULE"],
            "seed": settings["SEED"], "init": settings["ACTIVE_INIT"], "batch": settings["ACTIVE_BATCH"],
            "pool": settings["ACTIVE_POOL"], "members": parse_members(settings["ACTIVE_MEMBERS"]),
            "set": resolved_pairs(args.set),
            "init_from": None if args.init_from is None else str(Path(args.init_from).resolve()),
            # the goals, not the file's bytes (comments may change); units are printing, not the run
            "spec": None if spec is None else spec.to_dict(units=False),
            "warm_start": bool(settings["ACTIVE_WARM_START"]), "val_designs": settings["ACTIVE_VAL_DESIGNS"]}


# --set keys the run key holds by their own field (or that may change on a resume): not again under "set"
KEYED_SETTINGS = {"ACTIVE_BUDGET", "PIPELINE_JOBS", "ACTIVE_RULE", "SEED", "ACTIVE_INIT", "ACTIVE_BATCH", "ACTIVE_POOL",
                  "ACTIVE_MEMBERS", "ACTIVE_WARM_START", "ACTIVE_VAL_DESIGNS", "OPAMP_TYPE", "DATA_DIR"}


def resolved_pairs(pairs: list) -> list:
    """The run key's ``set``: ``--set`` pairs as resolved values (``epochs=05`` and ``EPOCHS=5`` are one setting),
    without the ones another field of the run key holds (``--set ACTIVE_RULE=integrated`` is the rule).  Also reads
    a run recorded before the key resolved them (its raw text); a key config.py no longer has stays as written."""
    out = []
    for key, value in parse_set_pairs(pairs).items():
        if key in KEYED_SETTINGS:
            continue
        try:
            out.append(f"{key}={resolve(config, {key: value})[key]}")
        except ToolkitError:
            out.append(f"{key}={value}")
    return sorted(out)


def check_same_run(out: Path, key: dict) -> None:
    path = out / "state.json"
    if not path.is_file():
        return
    # a run made before warm start existed retrained from scratch every round; one made before the key held the
    # run conditions simulated nominal ones; one made before it held the data folder is taken to be on this one;
    # one made before ACTIVE_VAL_DESIGNS validated on a share of the rule's picks
    old = {"warm_start": False, "conditions": {}, "data_dir": key.get("data_dir"), "val_designs": "picks",
           **json.loads(path.read_text(encoding="utf-8")).get("key", {})}
    # a run made before the key resolved --set values recorded their text ("epochs=5", "LEARNING_RATE=1e-3")
    if isinstance(old.get("set"), list):
        old["set"] = resolved_pairs(old["set"])
    diff = [k for k in KEY_FIELDS if old.get(k) != key.get(k)]
    if diff:
        raise ToolkitError(f"{out} holds an active-learning run with other settings ({', '.join(diff)}: "
                           f"{', '.join(f'{old.get(k)!r} there vs {key.get(k)!r} now' for k in diff[:2])}). "
                           f"Fix: --out NEW_FOLDER, or rerun with that run's settings to continue it.")


# ---------------------------------------------------------------- data
def test_set(settings: dict, data_dir, opamp: str):
    """(X, y) physical DataFrames of the fixed target_test split of the target data in ``data_dir``, or None: the
    rows a split column marks "test" when the targets file has one (whatever TEST_SPLIT is, as every stage reads
    it), else TEST_SPLIT of them (none when it is 0)."""
    if not (Path(data_dir) / opamp / "target").is_dir():
        return None
    kwargs = {**data_kwargs_from_settings(settings), "data_dir": data_dir, "opamp_type": opamp, "n_target_train": 0}
    if kwargs["test_split"] <= 0 and read_domain(data_dir, opamp, "target").split is None:
        return None
    return _load_data(kwargs)["raw"].get("target_test")


def _load_data(kwargs: dict) -> dict:
    """``get_data_and_scalers(**kwargs)`` without its data warnings (the round's pipeline prints them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_data_and_scalers(**kwargs)


def copy_source(src, dest: Path) -> None:
    """The source files of ``src`` (a ``read_domain`` result), copied once (a later change of the original
    does not change a running loop)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = [(src.features_file, "features.csv"), (src.targets_file, "targets.csv")]
    files += [(src.signs_file, "metric_signs.csv")] if src.signs_file else []
    for f, name in files:
        if not (dest / name).is_file():
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(f, tmp)


def draw(circuit: str, seed: int, start: int, stop: int, exclude: set) -> pd.DataFrame:
    """Designs start..stop-1 of the run's design stream (``spice.sampling``: design i depends only on (seed, i)),
    with a ``design`` column, minus those whose key is in ``exclude`` (simulated already, or test designs) and
    repeats of an earlier one (a small grid draws the same design twice; it would be simulated twice)."""
    from spice.sampling import sample_designs
    x = sample_designs(circuit, seed, start, stop)
    keys = design_keys(x, x.columns)
    x = x[(~keys.isin(exclude) & ~keys.duplicated()).to_numpy()]
    return x.reset_index(names="design")


# ---------------------------------------------------------------- simulation
def _simulate_chunk(circuit: str, process: str, rows: pd.DataFrame, x_cols: list, conditions: dict,
                    power: bool) -> pd.DataFrame:
    """``conditions``: the target data's run conditions (simulate's temp / vdd / corner); ``power``: the data have
    a power column, which the operating point gives."""
    from spice.simulate import simulate
    sim = simulate(circuit, rows[x_cols].reset_index(drop=True), process, op=power, **conditions)
    out = rows.reset_index(drop=True).copy()
    for c in sim.columns:
        out[c] = sim[c].to_numpy()
    return out


def simulate_batch(batch: pd.DataFrame, ledger: pd.DataFrame, ledger_path: Path, *, circuit, process, x_cols,
                   y_cols, workers: int, backend: str, scheduler, desc: str, conditions=None) -> pd.DataFrame:
    """Simulate the rows of ``batch`` not in the ledger yet, appending each finished chunk; the new ledger."""
    from joblib import delayed
    from tqdm import tqdm
    todo = batch[~batch["design"].isin(ledger["design"])]
    if todo.empty:
        return ledger
    chunks = [todo.iloc[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    with tqdm(total=len(todo), unit="sim", desc=desc, disable=not sys.stderr.isatty(), leave=False) as bar, \
            parallel(backend, workers, scheduler) as run:
        for done in run(delayed(_simulate_chunk)(circuit, process, c, x_cols, conditions or {}, POWER in y_cols)
                        for c in chunks):
            for col in y_cols:
                done[col] = pd.to_numeric(done[col], errors="coerce")
            ledger = append_rows(ledger_path, ledger, done[list(ledger.columns)])
            bar.update(len(done))
    return ledger


# ---------------------------------------------------------------- one round
def user_set_keys(args) -> set:
    """The config keys the user's ``--set`` pairs name."""
    return set(parse_set_pairs(args.set))


def loop_settings(args, out: Path) -> list:
    """``--set`` pairs of every round: the user's, plus (unless the user set them) one preprocessing for all
    rounds and a baseline early-stopped on source rows, so the source baseline is trained once (round 0)."""
    given = user_set_keys(args)
    extra = [] if "PREPROCESSING_FROM" in given else [f"PREPROCESSING_FROM={(out / PREPROCESSING).resolve()}"]
    extra += [] if "BASELINE_VAL" in given else ["BASELINE_VAL=source"]
    return list(args.set) + extra


def pin_preprocessing(settings: dict, out: Path) -> None:
    """Fit the preprocessing once, on the source rows and the first round's target rows, for every round."""
    path = out / PREPROCESSING
    if path.is_file():
        return
    pre = _load_data(data_kwargs_from_settings({**settings, "DATA_DIR": str(out / "data"), "TEST_SPLIT": 0.0,
                                                "N_TARGET_TRAIN": 0, "PREPROCESSING_FROM": ""}))["preprocessing"]
    atomic_write_text(path, json.dumps(pre.to_dict(), indent=1) + "\n")


def reuse_baseline(settings: dict, previous_round: Path, round_dir: Path) -> None:
    """Copy the previous round's source baseline (checkpoint, sidecar, metrics; times kept) into the next round's
    folder, where the pipeline finds it up to date (same preprocessing, source rows unchanged) and trains only the
    rest.  Round 0 trains it; a round that had to retrain it (the run resumed after a toolkit upgrade, or from a
    moved folder) hands the new one on, so that happens once, not every round after."""
    from core.stages import checkpoint_path, metrics_path
    from models.model_utils import sidecar_path
    ckpt = checkpoint_path({**settings, "RESULTS_DIR": str(previous_round)}, "baseline")
    for f in (ckpt, sidecar_path(ckpt), metrics_path(ckpt)):
        if f.is_file() and not (round_dir / f.name).exists():
            with atomic_path(round_dir / f.name) as tmp:   # a half-copied file would count as there on resume
                shutil.copy2(f, tmp)


def round_folder(out: Path, round_no: int) -> Path:
    """The folder of round ``round_no`` of the run in ``out``: its batch, checkpoints and pipeline.log."""
    return out / "rounds" / f"r{round_no:02d}"


def train_round(args, settings, out: Path, round_no: int) -> dict:
    """python -m pipeline on the data so far into the round's folder (output in its pipeline.log); its summary."""
    round_dir = round_folder(out, round_no)
    # the data folder as an absolute path: the checkpoints record it, and a run resumed from another working
    # directory must find them up to date
    argv = ["--opamp", settings["OPAMP_TYPE"], "--data-dir", str((out / "data").resolve()),
            "--results-dir", str(round_dir), "--seed", str(settings["SEED"]), "--device", str(settings["DEVICE"]),
            "--test-split", "0", "--members", ",".join(parse_members(settings["ACTIVE_MEMBERS"])),
            "--jobs", str(settings["PIPELINE_JOBS"]), "--quiet", "--no-plots"]
    for pair in loop_settings(args, out):
        argv += ["--set", pair]
    round_dir.mkdir(parents=True, exist_ok=True)
    if round_no > 0:
        previous = round_folder(out, round_no - 1)
        reuse_baseline(settings, previous, round_dir)
        if settings["ACTIVE_WARM_START"] and "WARM_START_FROM" not in user_set_keys(args):
            argv += ["--set", f"WARM_START_FROM={previous.resolve()}"]
    with open(round_dir / "pipeline.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipeline.main(argv)


def score_test(ens: Ensemble, test, floor) -> dict:
    """Mean R^2 (physical and log space) and 95 % interval coverage of the round's ensemble on the test set."""
    x, y = test
    mean, _ = ens.predict(x, out_of_domain="off")
    report = regression_report(y.to_numpy(float), mean[ens.y_cols].to_numpy(float), ens.y_cols, floor=floor)
    lo, hi = ens.predict_interval(x, 0.95)
    inside = ((y[ens.y_cols] >= lo) & (y[ens.y_cols] <= hi)).to_numpy().mean()
    return {"test_r2": report["mean"]["r2"], "test_r2_log": report["mean"]["r2_log"], "test_cov95": float(inside),
            "test_r2_log_per_metric": {c: report[c]["r2_log"] for c in ens.y_cols}}


def read_spec(path, y_cols: list, typical: np.ndarray, data_dir=None, opamp=None):
    """The --spec file as an ``inverse.goals.Spec`` over the data's metrics (one line on a bad file); units the
    data's meta.json records are the data units."""
    from inverse.spec_file import load_spec, recorded_units
    units, where = recorded_units(data_dir, opamp) if data_dir is not None else ({}, None)
    spec = load_spec(path, y_cols, typical, warn=print, recorded=units, recorded_where=where)   # as inverse_opt
    if spec.free:
        raise ToolkitError(f"--spec {path}: no goal bounds any metric (each is 'any' or absent), so every design "
                           f"meets it and --rule spec has nothing to aim at. Fix: a goal such as dc_gain = '>= 40 dB'.")
    return spec


def spec_met(spec, rows: pd.DataFrame) -> int:
    """Simulated designs among ``rows`` that meet every goal of ``spec`` (failed simulations never do)."""
    ok = (rows[STATUS] == "ok").to_numpy()
    return int((spec.meets(rows[spec.y_cols].to_numpy(float)).all(axis=1) & ok).sum())


# ---------------------------------------------------------------- the loop
def main(argv=None):
    loop = prepare(argv)
    with results_lock(loop["out"], flag="--out"):     # one loop per folder: two would simulate the same designs
        check_same_run(loop["out"], loop["key"])      # again under the lock (a run started meanwhile)
        return run_loop(**loop)


def prepare(argv=None) -> dict:
    """Every check of a loop's inputs (one line, exit 2 each), reading but writing nothing: ``run_loop``'s
    keywords.  ``benchmarks.active_benchmark`` calls it for every loop before it starts any."""
    args, settings = parse_args(argv)
    opamp, seed, rule = settings["OPAMP_TYPE"], settings["SEED"], settings["ACTIVE_RULE"]
    if rule not in RULES:
        close = difflib.get_close_matches(str(rule), RULES, n=1)
        raise ToolkitError(f"ACTIVE_RULE must be one of {list(RULES)}, got {rule!r}. "
                           + (f"Did you mean --rule {close[0]}?" if close else "Fix: --rule random"))
    settings = {**settings, "ACTIVE_VAL_DESIGNS": val_designs(settings["ACTIVE_VAL_DESIGNS"], rule)}
    given = None
    if args.init_from is None:
        check_sizes(settings)
    check_backend(args.backend, args.scheduler, workers=settings["PIPELINE_JOBS"])
    members = parse_members(settings["ACTIVE_MEMBERS"])
    pipeline.preflight(settings, members)
    data_dir = Path(settings["DATA_DIR"])
    src = read_domain(data_dir, opamp, "source")                     # readable source rows, or one line
    x_cols = list(src.features.columns)
    circuit, process = simulator_for(data_dir, opamp, args.circuit, args.process, required=True)
    check_circuit_columns(circuit, x_cols)
    check_simulated_metrics(data_dir / opamp / "source", list(src.targets.columns))
    conditions = recorded_conditions(data_dir, opamp)
    require_ngspice("python -m active", "It simulates every design it chooses.")
    from spice.simulate import check_design_space, resolve_process
    check_design_space(circuit, resolve_process(process))   # an unknown process, or sizes it forbids: one line now
    out = Path(args.out or Path(settings["RESULTS_DIR"]) / "active" / f"{opamp}_{rule}_seed{seed}")
    check_writable_dir(out, "--out")
    if rule in GP_RULES and "gp_stack" not in members:
        raise ToolkitError(f"--rule {rule} (ACTIVE_RULE) needs the GP member (its covariance says where a simulation "
                           f"teaches most), got members {','.join(members)}. Fix: --members {','.join(members)},gp_stack, "
                           f"or --rule random")
    if rule == "spec" and args.spec is None:
        raise ToolkitError("--rule spec needs --spec FILE.toml: the goals to simulate towards (docs/USAGE.md).")
    spec = None if args.spec is None else read_spec(args.spec, list(src.targets.columns),
                                                    np.nanmedian(src.targets.to_numpy(float), axis=0),
                                                    data_dir, opamp)
    key = run_key(args, settings, circuit, process, spec, conditions)
    check_same_run(out, key)                  # before the lock: a refused run leaves no lock file behind
    test = test_set(settings, data_dir, opamp)
    if args.init_from is not None:   # read and checked before anything is written
        given = given_designs(args.init_from, x_cols, list(src.targets.columns), seed,
                              set(design_keys(test[0], x_cols)) if test is not None else set())
        check_given_provenance(args.init_from, given, x_cols, circuit, process, conditions)
        check_sizes(settings, n_given=int((given[STATUS] == "ok").sum()))
    if args.backend == "dask":   # reachable now, before anything is written (a run connects per batch)
        connect(args.scheduler).close()
    return dict(args=args, settings=settings, out=out, key=key, test=test, src=src, circuit=circuit, process=process,
                given=given, spec=spec, conditions=conditions)


def run_loop(args, settings, out: Path, key: dict, test, src, circuit: str, process: str, given=None,
             spec=None, conditions=None) -> dict:
    """The rounds, from wherever ``out`` stopped (see the module docstring)."""
    opamp, seed, rule = settings["OPAMP_TYPE"], settings["SEED"], settings["ACTIVE_RULE"]
    x_cols, y_cols = list(src.features.columns), list(src.targets.columns)
    members = parse_members(settings["ACTIVE_MEMBERS"])
    atomic_write_text(out / "state.json", json.dumps({"key": key, "budget": settings["ACTIVE_BUDGET"]}, indent=2) + "\n")
    copy_source(src, out / "data" / opamp / "source")
    ledger_path, progress_path = out / "acquired.csv", out / "progress.jsonl"
    ledger = read_ledger(ledger_path, x_cols, y_cols, signed=[m for m in SIGNED_METRICS if m in y_cols])
    progress = [json.loads(line) for line in progress_path.read_text().splitlines()] if progress_path.is_file() else []
    exclude = set(design_keys(test[0], x_cols)) if test is not None else set()
    # the log-space R^2 floor, the same for every round: half the smallest positive source value per metric
    floor = half_min_positive(src.targets[y_cols].to_numpy(float)) if test is not None else None
    budget, init, batch, pool_n = (settings[k] for k in ("ACTIVE_BUDGET", "ACTIVE_INIT", "ACTIVE_BATCH", "ACTIVE_POOL"))
    first = f"{len(given)} given designs first" if given is not None else f"{init} random first"
    print(f"[active] {opamp}: rule {rule}, seed {seed}, budget {budget} ({first}, then {batch} a round, "
          f"chosen among {pool_n}); simulating {circuit} in {process}"
          + (f" at {Conditions(**conditions).describe()} (the target data's meta.json)" if conditions else "")
          + f"; members {','.join(members)}; "
          f"test {'none (val only)' if test is None else f'{len(test[0])} target_test rows'}; {out}"
          + (f"; resuming with {len(ledger)} designs simulated" if len(ledger) else ""), flush=True)
    sim_kw = dict(circuit=circuit, process=process, x_cols=x_cols, y_cols=y_cols, workers=settings["PIPELINE_JOBS"],
                  backend=args.backend, scheduler=args.scheduler, conditions=conditions)
    t_run, round_no = time.perf_counter(), 0
    while True:
        round_dir = round_folder(out, round_no)
        batch_path = round_dir / "batch.csv"
        t0 = time.perf_counter()
        if not batch_path.is_file():
            want = min(init if round_no == 0 else batch, budget - loop_simulations(ledger))
            if want <= 0 and not (round_no == 0 and given is not None):
                break
            taken = exclude | set(design_keys(ledger, x_cols))
            if round_no == 0 and given is not None:   # the user's designs: recorded, not simulated
                chosen = given.drop(columns=y_cols + [STATUS, "round", "rule", "seed"])
                chosen["score"], chosen["p_ok"] = np.nan, np.nan
            elif round_no == 0:
                chosen = draw(circuit, seed, 0, 4 * init, taken).head(want)
                chosen["score"], chosen["p_ok"] = np.nan, np.nan
            else:
                start = 4 * init + (round_no - 1) * pool_n
                pool = draw(circuit, seed, start, start + pool_n, taken)
                prev = Ensemble.load(round_folder(out, round_no - 1), opamp)
                chosen = choose(prev, rule, pool, ledger, want, seed, round_no, spec,
                                n_uniform=uniform_draws(rule, want, settings))
            chosen.insert(1, "round", round_no)
            chosen.insert(2, "rule", chosen.pop("rule") if "rule" in chosen
                          else GIVEN if given is not None else UNIFORM)
            chosen.insert(3, "seed", seed)
            round_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(batch_path) as tmp:
                chosen.to_csv(tmp, index=False)
        chosen = pd.read_csv(batch_path)
        t_select = time.perf_counter() - t0
        t0 = time.perf_counter()
        if round_no == 0 and given is not None:
            if ledger.empty:
                ledger = append_rows(ledger_path, ledger, given)
        else:
            ledger = simulate_batch(chosen, ledger, ledger_path, desc=f"round {round_no} simulations", **sim_kw)
            while round_no == 0 and split_is_short(ledger, settings):   # too many of the first designs failed
                chosen = pd.concat([chosen, top_up(ledger, chosen, x_cols, circuit, seed, init, budget, exclude)])
                with atomic_path(batch_path) as tmp:   # recorded before simulated: a resume simulates the rest
                    chosen.to_csv(tmp, index=False)
                ledger = simulate_batch(chosen, ledger, ledger_path, desc="round 0 simulations (more)", **sim_kw)
        t_sim = time.perf_counter() - t0
        if not any(p["round"] == round_no for p in progress):
            t0 = time.perf_counter()
            write_training_data(ledger, out / "data" / opamp / "target", x_cols, y_cols,
                                val_split=settings["VAL_SPLIT"], seed=seed)
            if "PREPROCESSING_FROM" not in user_set_keys(args):
                pin_preprocessing(settings, out)
            summary = train_round(args, settings, out, round_no)
            t_train = time.perf_counter() - t0
            ens_record = summary["ensemble"]["ensemble"]
            row = {"round": round_no, "rule": rule, "seed": seed, "simulations": loop_simulations(ledger),
                   "given": int(len(ledger)) - loop_simulations(ledger),
                   "failed": int((ledger[STATUS] != "ok").sum()),
                   "val_r2_log": float(ens_record["metrics"]["mean"]["r2_log"]),
                   "select_s": round(t_select, 1), "simulate_s": round(t_sim, 1), "train_s": round(t_train, 1)}
            if spec is not None:   # designs meeting the spec: this round's, and every one simulated so far
                row["spec_met"] = spec_met(spec, ledger[ledger["round"] == round_no])
                row["spec_met_total"] = spec_met(spec, ledger)
            if test is not None:
                row.update(score_test(Ensemble.load(round_dir, opamp), test, floor))
            progress.append(row)
            # one line per finished round, the file rewritten atomically: a resume point never half written
            atomic_write_text(progress_path, "".join(json.dumps(p) + "\n" for p in progress))
            print(f"[active] round {round_no}: {row['simulations']} simulations"
                  + (f" + {row['given']} given" if row["given"] else "") + f" ({row['failed']} failed) | val R2_log "
                  f"{row['val_r2_log']:.4f}" + (f" | test R2_log {row['test_r2_log']:.4f}" if test is not None else "")
                  + (f" | spec met by {row['spec_met']} ({row['spec_met_total']} so far)" if spec is not None else "")
                  + f" | select {row['select_s']:.0f} s, simulate {row['simulate_s']:.0f} s, train "
                  f"{row['train_s']:.0f} s", flush=True)   # the numbers active.md shows
        # the budget is spent, unless a later round was simulated and stopped before its training (Ctrl-C)
        if loop_simulations(ledger) >= budget and not (round_folder(out, round_no + 1) / "batch.csv").is_file():
            break
        round_no += 1
    write_summary(out, progress, opamp, plot=not args.no_plot)
    print(f"[active] done: {loop_simulations(ledger)} simulations ({int((ledger[STATUS] != 'ok').sum())} failed"
          + (f", {len(ledger) - loop_simulations(ledger)} designs given" if given is not None else "") + ") in "
          f"{time.perf_counter() - t_run:.0f} s this call; {out / 'active.md'}")
    return {"progress": progress, "ledger": ledger, "out": str(out)}


def top_up(ledger: pd.DataFrame, chosen: pd.DataFrame, x_cols: list, circuit: str, seed: int, init: int,
           budget: int, exclude: set) -> pd.DataFrame:
    """More random designs for round 0 -- enough for ``init`` OK ones if none fails (at least one), within the
    budget -- from the same first 4 x init of the stream; one line when the budget or those designs run out."""
    failed = int((ledger[STATUS] != "ok").sum())
    room = budget - loop_simulations(ledger)
    want = min(room, max(1, init - (len(ledger) - failed)))
    more = draw(circuit, seed, 0, 4 * init, exclude | set(design_keys(chosen, x_cols))).head(max(want, 0))
    if more.empty:
        raise ToolkitError(f"Round 0: {failed} of the first {len(ledger)} designs failed to simulate, leaving too few "
                           f"to train and validate on (>= {MIN_TRAIN_ROWS} and >= {MIN_VAL_ROWS} OK), and "
                           + ("the budget is spent" if room <= 0 else f"the first {4 * init} designs are used up")
                           + f" ({', '.join(f'{s}: {n}' for s, n in ledger[STATUS].value_counts().items())}). Fix: "
                           f"a larger --budget resumes this run; if most designs fail, check the circuit and process "
                           f"(python -m spice.generate reports why).")
    more["score"], more["p_ok"] = np.nan, np.nan
    more.insert(1, "round", 0)
    more.insert(2, "rule", UNIFORM)
    more.insert(3, "seed", seed)
    return more[list(chosen.columns)]


def write_summary(out: Path, progress: list, opamp: str, *, plot: bool) -> None:
    """active.md (the round table) and learning_curve.png (R^2 vs simulations)."""
    has_test = any("test_r2_log" in p for p in progress)
    has_spec = any("spec_met" in p for p in progress)
    head = ["round", "simulations", "failed", "val R²_log"] + (["test R²_log", "test R² (phys)", "test 95 % cov."]
                                                               if has_test else []) \
        + (["met the spec (so far)"] if has_spec else []) + ["select s", "simulate s", "train s"]
    rows = [[p["round"], f"{p['simulations']}" + (f" + {p['given']} given" if p.get("given") else ""), p["failed"],
             f"{p['val_r2_log']:.4f}"]
            + ([f"{p['test_r2_log']:.4f}", f"{p['test_r2']:.4f}", f"{100 * p['test_cov95']:.1f} %"] if has_test else [])
            + ([f"{p['spec_met']} ({p['spec_met_total']})"] if has_spec else [])
            + [f"{p['select_s']:.0f}", f"{p['simulate_s']:.0f}", f"{p['train_s']:.0f}"] for p in progress]
    text = markdown_table(pd.DataFrame(rows, columns=head))
    atomic_write_text(out / "active.md", f"# active learning: {opamp}\n\n{text}\n")
    print(text)
    if plot and progress:
        from active_learning.plots import learning_curve
        # x: every B simulation the model learned from, the --init-from designs included (they are B simulations)
        given = progress[0].get("given", 0)
        series = {"validation (the loop's own rows)": [(p["simulations"] + given, p["val_r2_log"]) for p in progress]}
        if has_test:
            series["target_test (fixed)"] = [(p["simulations"] + given, p["test_r2_log"]) for p in progress]
        learning_curve(out / "learning_curve.png", series,
                       title=f"{opamp}: {progress[0]['rule']}, seed {progress[0]['seed']}"
                       + (f"; the first {given} designs given (--init-from)" if given else ""))


if __name__ == "__main__":
    run_main(main)
