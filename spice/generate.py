"""Generate a dataset: random designs simulated with ngspice, written in the data layout.

    python -m spice.generate --opamp 5t_opamp --domain source --n 10000 --seed 0 --workers 2 --out data/
    python -m spice.generate --opamp two_stage_opamp --domain target --n 1000 --seed 1 --out data/
    python -m spice.generate --opamp 5t_opamp --domain target --process sky130 --n 200 --out /tmp/d
    python -m spice.generate ... --backend dask --scheduler tcp://head:8786    # an existing cluster
    python -m spice.generate ... --process sky130 --corner ss --temp 85 --vdd 1.62  # run conditions (spice/conditions.py)
    python -m spice.generate --opamp 5t_opamp --domain target --designs my_designs.csv --out /tmp/mine  # your designs

--opamp is a shipped circuit name or a circuit file (.toml, docs/SPICE.md 'Your own circuit'),
whose ``name`` is the output folder.  Writes <out>/<name>/<domain>/features.csv, targets.csv, metric_signs.csv
(rows matched by position; the sign of Re(Adm/Acm) per design, ``spice.measure``) and meta.json (with the design space).  --n counts designs that simulated OK: designs are drawn by index (design i depends
only on (seed, i)) until n of them are OK; the files hold the first n OK designs in index order,
so the result is the same for any --workers, --chunk or backend.  Failed designs are left out
(meta.json counts them by status); --keep-failed writes every drawn design with a status column.
--domain source uses process A and target process B unless --process says otherwise; run conditions
(--temp, --vdd, --corner) are recorded in meta.json under ``conditions``.
--designs FILE simulates the designs of a CSV (a header naming the circuit's variables, in its units; other
columns such as an id are left out of the data files) instead of --n random ones: every design, in the file's
order, failed ones kept with their status (as --keep-failed), so row i of the output is row i of the file.

Resumable: each finished chunk is saved under <out>/<opamp>/<domain>/.partial/ at once; running
the same command again skips the chunks already there.  The partial folder is removed after the
final files are written (atomically).  A run that stops with an error (exit 2) before any design
simulated OK leaves nothing behind: the .partial folder, the lock and the folders it made are removed;
what existed before it (a resumed run's chunks, a folder of yours) is never touched.
"""
import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from core.atomic import atomic_path, atomic_write_text
from core.cli import run_main
from core.errors import ToolkitError, name_list
from core.freshness import file_sha256
from core.executor import check_backend, parallel
from core.outputs import LOCK_NAME, check_writable_dir, results_lock
from spice.batch import AC_CMD
from spice.circuits import BENCH_VERSION, BUILTINS, circuit
from spice.measure import (METRIC_UNITS, METRICS, OK, OP_METRIC_UNITS, SIGN_COLUMNS, SIGNED_METRICS, STATUSES,
                           sign_column)
from spice.processes import DOMAIN_PROCESS, library_path
from spice.sampling import sample_designs
from spice.conditions import Conditions, apply as apply_conditions
from spice.simulate import (check_design_space, check_designs, netlist_errors, ngspice_version, resolve_process,
                            simulate)
from data_loader.layout import read_designs

FLOAT_FORMAT = "%.7g"   # inverse.optimise.KEY_DIGITS (what "the same design" means) is this precision
PROGRESS_EVERY_S = 10   # redirected output: a plain progress line per finished chunk, at most this often
MAX_FAILED_START = 4   # chunks: a circuit with no OK design among this many is stopped with the fix


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m spice.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--opamp", required=True,
                   help=f"a shipped circuit ({', '.join(BUILTINS)}) or a circuit file (.toml; docs/SPICE.md)")
    p.add_argument("--domain", required=True, choices=sorted(DOMAIN_PROCESS),
                   help="output folder name; picks process A (source) or B (target) by default")
    p.add_argument("--process", help="override the domain's process: A, B, sky130 or a process file (.toml)")
    p.add_argument("--pdk-path", help="SKY130 ngspice model folder (default $PDK_ROOT/sky130A/libs.tech/ngspice, else the installed sky130 package)")
    p.add_argument("--temp", type=float, help="run condition: temperature in C [the simulator's nominal 27]")
    p.add_argument("--vdd", type=float, help="run condition: supply in V [the process's]")
    p.add_argument("--corner", help="run condition: a .lib section of the process's library, e.g. ss with sky130 "
                                    "[its typical]")
    p.add_argument("--n", type=int, help="number of OK designs to write (random designs; or --designs)")
    p.add_argument("--designs", help="CSV of designs to simulate instead of --n random ones (a header naming the "
                                     "circuit's variables; every row is written, in order, with its status)")
    p.add_argument("--seed", type=int, default=None, help="random designs: design i depends only on (seed, i) [0]")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (local backend)")
    p.add_argument("--chunk", type=int, default=25, help="designs per task (the unit of resume)")
    p.add_argument("--backend", choices=["local", "dask"], default="local",
                   help="local process pool (joblib/loky) or a Dask distributed cluster")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.1:8786 (with --backend dask)")
    p.add_argument("--sim-backend", choices=["auto", "shared", "batch"], default="auto",
                   help="libngspice in each worker (shared), ngspice -b per design (batch), or auto")
    p.add_argument("--keep-failed", action="store_true", help="also write failed designs, with a status column")
    p.add_argument("--power", action="store_true",
                   help="also write the supply power (W, from the operating point) as a metric column 'power': the "
                        "surrogate then models it, and inverse_opt can bound it (power = \"<= 1 mW\") or minimise "
                        "it (--objective min:power)")
    p.add_argument("--out", default="data", help="data root; files go to <out>/<opamp>/<domain>/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-chunk progress line")
    p.add_argument("--overwrite", action="store_true",
                   help="replace data already in <out>/<opamp>/<domain>/ that another command made (or yours)")
    args = p.parse_args(argv)
    if (args.n is None) == (args.designs is None):
        raise ToolkitError("give --n N (that many random designs that simulate OK) or --designs FILE (the designs of "
                           "a CSV)" + (", not both" if args.designs else ""))
    if args.designs is not None and args.seed is not None:
        raise ToolkitError("--seed draws random designs; --designs simulates the file's. Drop --seed (or --designs).")
    args.seed = 0 if args.seed is None else args.seed
    counts = {"--n": args.n, "--chunk": args.chunk, "--workers": args.workers}
    low = {k: v for k, v in counts.items() if v is not None and v < 1}
    if low:
        raise ToolkitError(f"{', '.join(low)} must be >= 1, got {', '.join(f'{k} {v}' for k, v in low.items())}")
    if args.designs is not None and not args.designs.strip():
        raise ToolkitError("--designs is empty: pass the CSV file of designs to simulate.")
    args.circuit = circuit(args.opamp)  # a bad name or file is one line, before any simulation
    args.rows = args.designs_sha256 = None
    if args.designs is not None:   # every design of the file, in order, failed ones with their status
        text, rows = read_designs(args.designs, args.circuit.features)
        args.rows = rows.rename_axis("index")
        args.n, args.keep_failed = len(rows), True
        args.designs_sha256 = file_sha256(Path(args.designs))   # the rows read: what a rerun must simulate again
        left = [c for c in text.columns if c not in args.circuit.features]
        if left:   # an id, notes -- or another circuit's variables: said before anything is simulated
            print(f"note: {len(left)} column(s) of {args.designs} ({name_list(left)}) are not variables of {args.circuit.name} "
                  f"{args.circuit.features}: left out of the data files (rows stay in the file's order)")
    args.conditions = Conditions(args.temp, args.vdd, args.corner)
    if args.opamp not in BUILTINS:
        args.opamp = str(Path(args.opamp).resolve())  # workers load the same file from any folder
    check_backend(args.backend, args.scheduler, workers=args.workers)
    return args


def simulate_chunk(opamp, process, pdk_path, seed, start, stop, sim_backend, conditions=None,
                   power: bool = False, designs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Designs start..stop-1: features, metrics and status, indexed by design index (runs in a worker);
    ``conditions``: the run conditions as keywords of ``simulate`` (temp, vdd, corner); ``power``: the
    operating point's supply power (W) as one more metric column; ``designs``: those designs (a --designs
    file's rows start..stop-1) instead of the random ones of ``seed``."""
    x = sample_designs(opamp, seed, start, stop) if designs is None else designs
    y = simulate(opamp, x, process, backend=sim_backend, pdk_path=pdk_path, op=power, **(conditions or {}))
    return pd.concat([x, y[METRICS + (["power"] if power else []) + SIGN_COLUMNS + ["status"]]], axis=1)


def _counts(done: dict) -> tuple[int, int]:
    """(OK designs, designs simulated) in the finished chunks ``done``."""
    return sum(int((d["status"] == OK).sum()) for d in done.values()), sum(len(d) for d in done.values())


def _chunk_path(partial: Path, start: int) -> Path:
    return partial / f"chunk_{start:09d}.csv"


def _load_done(partial: Path, chunk: int, total: int | None = None) -> dict[int, pd.DataFrame]:
    """The finished chunks of ``partial``; ``total``: the designs of a --designs file (its last chunk is shorter)."""
    done = {}
    for f in sorted(partial.glob("chunk_*.csv")):
        start = int(f.stem.split("_")[1])
        if start % chunk:
            raise ToolkitError(f"{f} was written with another --chunk than {chunk}; rerun with the "
                               f"original --chunk, or delete {partial} to start over")
        try:
            df = pd.read_csv(f, index_col="index", keep_default_na=True)
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            df, why = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            size = chunk if total is None else min(chunk, total - start)
            why = f"{len(df)} of {size} rows" if len(df) < size else None
        if why or len(df) > chunk or "status" not in df.columns:
            raise ToolkitError(f"{f} is damaged ({why or 'not a chunk of this run'}: truncated by a full disk or a "
                               f"cut copy?). Delete that file and rerun the same command: its designs are simulated "
                               f"again and the other chunks are kept")
        done[start] = df
    return done


def run_key(circuit, process: str, seed: int, chunk: int, pdk_path, conditions: dict | None = None,
            power: bool = False, designs_sha256: str | None = None) -> dict:
    """What must match for a rerun to resume an interrupted run's chunks (the circuit file's, a
    process file's and its model library's bytes included: an edited netlist, supply or model card must not mix
    with designs simulated before the edit).  The shipped processes are named, not hashed, so their keys are as
    before."""
    return {"opamp": circuit.name, "process": process, "seed": None if designs_sha256 else seed, "chunk": chunk,
            "pdk_path": pdk_path, "circuit_sha256": file_sha256(circuit.path), **process_digests(process),
            **({"conditions": conditions} if conditions else {}), **({"power": True} if power else {}),
            **({"designs_sha256": designs_sha256} if designs_sha256 else {})}


def process_digests(process: str) -> dict:
    """``process_sha256`` of a process file and ``library_sha256`` of the model library it names (an edited model
    card changes every row as much as an edited process file); {} for a shipped process, named not hashed."""
    if not process.endswith(".toml"):
        return {}
    lib = library_path(process)
    return {"process_sha256": file_sha256(process), **({"library_sha256": file_sha256(lib)} if lib and lib.is_file()
                                                       else {})}


def _check_same_run(partial: Path, key: dict) -> None:
    """Refuse to resume chunks that an interrupted run with other settings left behind."""
    stamp = partial / "run.json"
    if stamp.exists() and not any(partial.glob("chunk_*.csv")):
        stamp.unlink()          # an interrupted run that finished no chunk: nothing of it to keep or to mix
    if stamp.exists():
        old = json.loads(stamp.read_text())
        if old != key:
            diff = {k: (old.get(k), v) for k, v in key.items() if old.get(k) != v}
            raise ToolkitError(f"{partial} holds chunks of an interrupted run with other settings "
                               f"(saved vs now: {diff}); rerun with the saved settings to resume, "
                               f"or delete {partial} to start over")
    else:
        atomic_write_text(stamp, json.dumps(key) + "\n")


def _remove_partial(partial: Path) -> None:
    """Delete the resume folder: its chunks, its run stamp, then the folder."""
    for f in [*partial.glob("chunk_*.csv"), partial / "run.json"]:
        f.unlink()
    partial.rmdir()


def _all_simulated(done: dict[int, pd.DataFrame], total: int, chunk: int) -> int | None:
    """``total`` when every chunk of a --designs file is done, else None."""
    return total if all(s in done for s in range(0, total, chunk)) else None


def _first_ok_enough(done: dict[int, pd.DataFrame], n: int) -> int | None:
    """Number of designs drawn up to and including the n-th OK one, if the done prefix has n OK."""
    ok, start = 0, 0
    while start in done:
        status = done[start]["status"].to_numpy()
        for j, s in enumerate(status):
            ok += s == OK
            if ok == n:
                return start + j + 1
        start += len(status)
    return None


def _blame(circuit, process: str, conditions: Conditions) -> tuple[str, str]:
    """(who, fix) for an error that may lie in the circuit file or in a user's process file.  The shipped
    processes are known good (the shipped data were made with them), so with one only the circuit is blamed."""
    who = f"{circuit.path} with process {process}"
    fix = "fix the netlist or the design space in the circuit file"
    if process.endswith(".toml"):
        fix = "fix the netlist or design space in the circuit file, or vdd, cl and the models in the process file"
    if not conditions.nominal:
        fix += f", or the run conditions ({conditions.describe()})"
    return who, fix


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    process = args.process or DOMAIN_PROCESS[args.domain]
    if process.endswith(".toml"):
        process = str(Path(process).resolve())  # workers load the same file from any folder
    # fails early if SKY130 is missing or the process has no such corner
    proc = apply_conditions(resolve_process(process, pdk_path=args.pdk_path), args.conditions, pdk_path=args.pdk_path)
    check_design_space(args.opamp, proc)   # sizes the process forbids: refused now, not part-way through
    version = ngspice_version(args.sim_backend)
    if version == "not installed":
        raise ToolkitError("ngspice is not installed; sudo apt-get install ngspice libngspice0 (docs/SPICE.md)")
    # A netlist ngspice rejects fails here, in ngspice's words, before anything is written.  It is the
    # circuit with the process: a model name or library the process file gets wrong fails the same way.
    if args.rows is not None:   # the file's sizes against the declared space and the process, before any simulation
        check_designs(args.opamp, args.rows, proc)
    first = (sample_designs(args.opamp, args.seed, 0, 1) if args.rows is None else args.rows.iloc[:1]).iloc[0].to_dict()
    errors = netlist_errors(args.opamp, first, process, pdk_path=args.pdk_path, conditions=args.conditions)
    if errors:
        who, fix = _blame(args.circuit, process, args.conditions)
        # a shipped process is known good: the netlist is at fault; with a process file either may be
        what = f"{who}: ngspice rejects the netlist" if process.endswith(".toml") else \
            f"{args.circuit.path}: netlist: ngspice rejects it with process {process}"
        # ngspice splits one complaint over lines ("Error on line:", the line, the cause): up to three, joined
        said = " / ".join(e.strip() for e in errors[:3] if e.strip())
        raise ToolkitError(f"{what} ({said}); {fix}")
    out_dir = Path(args.out) / args.circuit.name / args.domain
    check_writable_dir(out_dir, "--out")
    recipe = _recipe(args, process)
    if not args.overwrite:
        check_not_replacing(out_dir, recipe)
    before = _existing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = {"ok": 0, "locked": False}   # OK designs this run simulated; whether it holds the lock
    try:
        # one generator per output folder: a second one would race on .partial/ (and die when the first removes it)
        with results_lock(out_dir, flag="--out"):
            run["locked"] = True
            return _generate(args, argv, out_dir, process, proc, version, t0, recipe, run)
    except ToolkitError:
        if run["ok"] == 0:
            _undo(out_dir, before, run["locked"])
        raise


def _recipe(args, process: str) -> dict:
    """What decides the rows a run writes (run_key without the chunking, plus n and keep_failed): the same
    recipe writes the same files again, so rerunning it over its own output replaces nothing."""
    key = run_key(args.circuit, process, args.seed, args.chunk, args.pdk_path,
                  None if args.conditions.nominal else args.conditions.to_dict(), args.power, args.designs_sha256)
    del key["chunk"]
    return {**key, "domain": args.domain, "n": args.n, "keep_failed": bool(args.keep_failed),
            "bench_version": BENCH_VERSION}


def check_not_replacing(out_dir: Path, recipe: dict) -> None:
    """Refuse to write over a data folder that other settings, another circuit-file version or a person made."""
    data = sorted(p.name for p in out_dir.glob("*.csv") if "features" in p.name or "targets" in p.name) \
        if out_dir.is_dir() else []
    if not data:
        return
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    old = meta.get("recipe")
    resume = (" (resuming an interrupted --overwrite run needs --overwrite again)"
              if (out_dir / ".partial").is_dir() else "")
    if old == recipe:
        edited = [name for name, digest in (meta.get("files_sha256") or {}).items()
                  if not (out_dir / name).is_file() or file_sha256(out_dir / name) != digest]
        if not edited:
            return                               # the same rows again: nothing of anyone's is lost
        raise ToolkitError(f"{out_dir}: {', '.join(edited)} changed since this command wrote them; rerunning it would "
                           f"undo those edits. Nothing was written. Fix: another --out, or --overwrite{resume}.")
    made = ("other settings" if old else
            "another command, an older version of this generator, or by hand (its meta.json records no recipe)")
    diff = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in recipe.items() if old.get(k) != v)[:300] if old else ""
    raise ToolkitError(f"{out_dir} already holds {', '.join(data)}, made with {made}" + (f" ({diff})" if diff else "")
                       + f". Nothing was written. Fix: another --out, or --overwrite to replace them{resume}.")


def _existing(out_dir: Path) -> set[Path]:
    """What of <out>/<name>/<domain> (its lock, its .partial, the folders down to it) exists before a run."""
    paths = [out_dir / LOCK_NAME, out_dir / ".partial", *[out_dir, *out_dir.parents]]
    return {p for p in paths if p.exists()}


def _undo(out_dir: Path, before: set[Path], locked: bool) -> None:
    """After a run that failed before any design simulated OK: remove what it made (its .partial folder,
    its lock file, the folders it created), so a failed first try leaves nothing behind.  Whatever
    existed before is kept: a resumed run's chunks, and any folder or file of the user's."""
    partial = out_dir / ".partial"
    if partial.is_dir() and partial not in before:
        for f in [*partial.glob("chunk_*.csv"), partial / "run.json"]:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        with contextlib.suppress(OSError):      # not empty: something else is in it, leave it
            partial.rmdir()
    if locked and out_dir / LOCK_NAME not in before:
        # Released by now (results_lock's exit ran); only this run made and held it.
        with contextlib.suppress(FileNotFoundError):
            (out_dir / LOCK_NAME).unlink()
    for folder in [out_dir, *out_dir.parents]:
        if folder in before:
            break
        try:
            folder.rmdir()                      # only when empty: never removes anything else
        except OSError:
            break


def _generate(args, argv, out_dir, process, proc, version, t0, recipe: dict, run_state=None):
    """The run itself (``recipe``: ``_recipe``'s, checked by ``main``, recorded in meta.json);
    ``run_state["ok"]`` counts the OK designs this run simulated (``main`` cleans up a failed run that had none)."""
    from joblib import delayed
    from tqdm import tqdm

    partial = out_dir / ".partial"
    resumed = partial.is_dir()
    partial.mkdir(parents=True, exist_ok=True)
    _check_same_run(partial, run_key(args.circuit, process, args.seed, args.chunk, args.pdk_path,
                                     args.conditions.to_dict(), args.power, args.designs_sha256))
    rows_given = args.rows is not None
    done = _load_done(partial, args.chunk, args.n if rows_given else None)
    reused = len(done)
    what = f"the {args.n} designs of {args.designs}" if rows_given else f"n={args.n} OK, seed={args.seed}"
    print(f"generate {args.circuit.name} {args.domain}: process {process} ({proc.description}), {what}, "
          f"{args.backend} x{args.workers}, ngspice {version}; {reused} chunks already done")

    # a bar on a terminal; redirected, plain lines (per batch of chunks, and per chunk every PROGRESS_EVERY_S)
    # instead of carriage-return fragments
    terminal = sys.stderr.isatty()
    plain = not terminal and not args.no_progress
    said = time.time()      # when the last plain progress line was printed

    def say(n_ok: int, n_sim: int) -> None:
        nonlocal said
        said = time.time()
        done_text = f"{n_sim}/{args.n} designs simulated ({n_ok} OK" if rows_given else \
            f"{n_ok}/{args.n} OK designs ({n_sim} simulated"
        print(f"{args.circuit.name}/{args.domain}: {done_text}, {said - t0:.0f} s)", flush=True)
    bar = tqdm(total=args.n, unit="design" if rows_given else "ok", disable=args.no_progress or not terminal,
               desc=f"{args.circuit.name}/{args.domain}")
    try:
        with parallel(args.backend, args.workers, args.scheduler) as run:
            while (requested := (_all_simulated(done, args.n, args.chunk) if rows_given
                                 else _first_ok_enough(done, args.n))) is None:
                n_ok, n_sim = _counts(done)
                if n_ok == 0 and n_sim >= MAX_FAILED_START * args.chunk:
                    counts = pd.concat(done.values())["status"].value_counts().to_dict()
                    who, fix = _blame(args.circuit, process, args.conditions)
                    kept = (f"; the earlier run's {partial} (holding {reused} chunk(s)) is kept: delete it to start over"
                            if resumed else "")
                    # main removes this run's .partial (no design was OK); an earlier run's is never deleted
                    raise ToolkitError(f"{who}: none of the first {n_sim} designs simulated OK ({counts}); "
                                       f"{fix}{kept}")
                bar.n = n_sim if rows_given else n_ok
                bar.refresh()
                if plain:
                    say(n_ok, n_sim)
                # Draw enough new chunks for the OK designs still missing, at the failure rate so far; until a
                # design has simulated OK, only the chunks that decide a dead circuit (one per worker at least), so
                # a circuit or process where nothing simulates stops after those, not after --n designs
                rate = (n_ok + 1) / (n_sim + 1)
                want = args.n - n_sim if rows_given else math.ceil((args.n - n_ok) / max(rate, 0.05) * 1.05) + args.chunk
                if n_ok == 0:
                    want = min(want, max(MAX_FAILED_START, args.workers) * args.chunk)
                starts, s = [], 0
                while len(starts) * args.chunk < want and not (rows_given and s >= args.n):
                    if s not in done:
                        starts.append(s)
                    s += args.chunk
                stop = (lambda st: min(st + args.chunk, args.n)) if rows_given else (lambda st: st + args.chunk)
                tasks = (delayed(simulate_chunk)(args.opamp, process, args.pdk_path, args.seed,
                                                 st, stop(st), args.sim_backend, args.conditions.to_dict(),
                                                 args.power, args.rows.iloc[st:stop(st)] if rows_given else None)
                         for st in starts)
                for df in run(tasks):
                    st = int(df.index[0])
                    with atomic_path(_chunk_path(partial, st)) as tmp:
                        df.to_csv(tmp, float_format=FLOAT_FORMAT)
                    done[st] = df
                    if run_state is not None:
                        run_state["ok"] += int((df["status"] == OK).sum())
                    bar.update(min(len(df) if rows_given else int((df["status"] == OK).sum()), args.n - bar.n))
                    if plain and time.time() - said >= PROGRESS_EVERY_S:
                        say(*_counts(done))
    finally:
        bar.close()

    rows = pd.concat([done[s] for s in sorted(done)]).loc[: requested - 1]
    kept = rows if args.keep_failed else rows[rows["status"] == OK]
    counts = rows["status"].value_counts().to_dict()
    feat_cols = args.circuit.features
    metrics = METRICS + (["power"] if args.power else [])
    tgt_cols = metrics + (["status"] if args.keep_failed else [])
    with atomic_path(out_dir / "features.csv") as tmp:
        kept[feat_cols].to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
    with atomic_path(out_dir / "targets.csv") as tmp:
        kept[tgt_cols].to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
    ok_rows = (kept["status"] == OK).to_numpy()
    signed = [m for m in SIGNED_METRICS if sign_column(m) in kept.columns
              and kept.loc[ok_rows, sign_column(m)].notna().all()]
    if signed:   # chunks saved before the signs were recorded have none: then no signs file (a failed design, kept
        # with --keep-failed, has no sign: its cell is empty, as its metrics are)
        with atomic_path(out_dir / "metric_signs.csv") as tmp:
            kept[[sign_column(m) for m in signed]].set_axis(signed, axis=1).to_csv(tmp, index=False, float_format="%g")
    if args.overwrite:   # "--overwrite to replace them": data files of another run or a person's go too, or the
        # folder would hold two *features*.csv (unreadable) or a signs file that no longer matches the rows
        written = {"features.csv", "targets.csv"} | ({"metric_signs.csv"} if signed else set())
        for old in sorted(out_dir.glob("*.csv")):
            if old.name not in written and any(k in old.name for k in ("features", "targets", "metric_signs")):
                old.unlink()
                print(f"[generate] --overwrite: removed {old} (replaced by this run's files)")
    ok = rows[rows["status"] == OK]
    meta = {
        "opamp": args.circuit.name, "domain": args.domain, "process": proc.name,
        **({"process_file": process} if process.endswith(".toml") else {}),
        "process_description": proc.description, "vdd_V": proc.vdd, "cl_F": proc.cl,
        "buffer_step_V": list(proc.step), "vcm_V": proc.vcm,
        **({"conditions": args.conditions.to_dict()} if not args.conditions.nominal else {}),
        "ngspice_version": version, "bench_version": BENCH_VERSION, "ac_sweep": AC_CMD,
        "seed": None if rows_given else args.seed,
        **({"designs_file": str(Path(args.designs).resolve()), "designs_sha256": args.designs_sha256}
           if rows_given else {}),
        "command": "python -m spice.generate " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "circuit_file": args.circuit.name if args.opamp in BUILTINS else args.opamp,
        "design_space": args.circuit.design_space(),
        "requested": int(requested), "ok": int(counts.get(OK, 0)),
        "failed": {s: int(counts[s]) for s in STATUSES if s != OK and s in counts},
        "rows_written": int(len(kept)), "keep_failed": bool(args.keep_failed),
        "negative_phase_margin_fraction": float((ok["phase_margin"] < 0).mean()),
        "feature_columns": feat_cols, "target_columns": metrics, "sign_columns": signed,
        "units": {**{k: v.unit for k, v in args.circuit.variables.items()}, **METRIC_UNITS,
                  **({"power": OP_METRIC_UNITS["power"]} if args.power else {})},
        "wall_time_s": round(time.time() - t0, 1), "resumed_chunks": reused,
        "backend": args.backend, "workers": args.workers, "chunk": args.chunk,
        "python": platform.python_version(),
        "recipe": recipe,
        # the files as written: a rerun of the same recipe refuses to undo a user's later edits to them
        "files_sha256": {f.name: file_sha256(f) for f in (out_dir / "features.csv", out_dir / "targets.csv",
                                                       out_dir / "metric_signs.csv") if f.is_file()},
    }
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    _remove_partial(partial)
    print(f"wrote {len(kept)} rows to {out_dir} (requested {requested}, ok {meta['ok']}, "
          f"failed {meta['failed']}, {meta['wall_time_s']} s)")
    return meta


if __name__ == "__main__":
    run_main(main)
