"""What a shorter early-stopping patience would have done, replayed on saved training curves.

    python -m benchmarks.early_stop_whatif --opamp 5t_opamp --stage pooled_flag --patience 10 20
    python -m benchmarks.early_stop_whatif --opamp 5t_opamp --stage dualhead_finetuned --phase unfreeze --patience 30

Every stage saves its per-epoch history in the checkpoint's JSON sidecar.  This reads the
sidecars ``<results-root>/<opamp>/*/<opamp>_<stage>.json`` (the harness's task dirs; ``--runs``
takes sidecar paths instead) and, for each run and each patience P, replays the rule of
``training.loop.fit`` (stop after P epochs without a new best val value; keep the best) on the
saved val curve.  Up to the epoch where the shorter run would stop, training is the same
computation, so the replay is exact -- but only for P below the run's own patience (a stop
the saved curve cannot show is reported as not replayable).

Per P: how many runs would stop before their own best epoch, the val value they would keep
relative to the run's best (median, max), and the share of epochs saved (the time a shorter
patience buys).  Test data is never read.
"""
import argparse
import json
import statistics
from pathlib import Path

from core.cli import run_main
from core.errors import ToolkitError
from training.loop import EarlyStopping


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.early_stop_whatif", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--opamp", default="5t_opamp")
    p.add_argument("--results-root", default="results/benchmarks")
    p.add_argument("--stage", default="pooled_flag",
                   help="checkpoint name after '<opamp>_': pooled_flag, target_only_hetero, dualhead_finetuned, ...")
    p.add_argument("--phase", default=None, help="history phase (default: the only one; dual-head: bias, head, unfreeze)")
    p.add_argument("--monitor", default=None, help="history key without 'val_' (default: nll if logged, else mse)")
    p.add_argument("--patience", type=int, nargs="+", required=True)
    p.add_argument("--runs", nargs="*", default=None, help="sidecar JSON paths instead of the results-root glob")
    return p.parse_args(argv)


def replay(values: list, patience: int) -> tuple:
    """(stop epoch, kept epoch, kept value) of fit's rule on ``values`` (epoch 1 first); a curve
    the rule never stops on ends at its last epoch."""
    stopper = EarlyStopping(patience)
    for epoch, value in enumerate(values, start=1):
        stopper.update(epoch, value)
        if stopper.should_stop:
            return epoch, stopper.best_epoch, stopper.best_value
    return len(values), stopper.best_epoch, stopper.best_value


def read_sidecar(path) -> dict:
    """A checkpoint's JSON sidecar; a truncated file or a .pth is one clear error."""
    try:
        sidecar = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:        # JSONDecodeError is a ValueError
        raise ToolkitError(f"{path} is not a readable JSON sidecar ({type(exc).__name__}). Fix: pass the *.json "
                           f"beside a checkpoint, not the .pth; a truncated one is rewritten by rerunning its stage.") \
            from None
    if not isinstance(sidecar, dict):
        raise ToolkitError(f"{path} holds a {type(sidecar).__name__}, not a checkpoint sidecar (a JSON object). "
                           f"Fix: pass the *.json beside a checkpoint.")
    return sidecar


def run_curve(sidecar: dict, phase: str | None, monitor: str | None, where: str) -> dict:
    """One saved run: its val curve, best epoch and value, and its own patience (None when it
    ran to the epoch cap without stopping, so any patience replays)."""
    history = sidecar.get("history") or {}
    if not history:
        raise ToolkitError(f"{where} has no training history. Fix: point --runs at checkpoint sidecars (*.json "
                           f"beside *.pth) written by a training stage.")
    if phase is None:
        if len(history) != 1:
            raise ToolkitError(f"{where} has phases {list(history)}; choose one with --phase.")
        phase = next(iter(history))
    if phase not in history:
        raise ToolkitError(f"{where} has no phase {phase!r}; it has {list(history)}.")
    rows = history[phase]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ToolkitError(f"{where} phase {phase!r} has no per-epoch rows. Fix: rerun the stage that wrote it.")
    key = f"val_{monitor}" if monitor else ("val_nll" if "val_nll" in rows[0] else "val_mse")
    if key not in rows[0]:
        raise ToolkitError(f"{where} phase {phase!r} logs {sorted(rows[0])}, not {key!r}. Fix: --monitor "
                           f"with one of those names minus 'val_'.")
    values = [float(r[key]) for r in rows]
    _, best_epoch, best = replay(values, len(values) + 1)             # the run as saved: never stops early
    cap = int((sidecar.get("config") or {}).get("EPOCHS", len(values)))
    own = len(values) - best_epoch if len(values) < cap else None
    return {"values": values, "best_epoch": best_epoch, "best": best, "own_patience": own}


def find_runs(args) -> list:
    if args.runs:
        paths = [Path(p) for p in args.runs]
    else:
        root = Path(args.results_root) / args.opamp
        paths = sorted(root.glob(f"*/{args.opamp}_{args.stage}.json"))
        if not paths:
            raise ToolkitError(f"No {args.opamp}_{args.stage}.json under {root}/*/. Fix: run the harness first "
                               f"(python -m benchmarks.run --opamp {args.opamp} ...) or pass --runs.")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ToolkitError(f"Not found: {', '.join(missing)}")
    return paths


def whatif(paths: list, patiences: list, phase=None, monitor=None) -> dict:
    """Per patience: rows per run and a summary; see the module docstring."""
    if any(p < 1 for p in patiences):
        raise ToolkitError(f"--patience values must be >= 1, got {patiences}.")
    curves = {str(path): run_curve(read_sidecar(path), phase, monitor, str(path)) for path in paths}
    out = {}
    for patience in patiences:
        rows = []
        for name, c in curves.items():
            if c["own_patience"] is not None and patience > c["own_patience"]:
                rows.append({"run": name, "replayable": False})
                continue
            stop_epoch, kept_epoch, kept = replay(c["values"], patience)
            rows.append({"run": name, "replayable": True, "stop_epoch": stop_epoch, "epochs": len(c["values"]),
                         "kept_epoch": kept_epoch, "best_epoch": c["best_epoch"],
                         "val_ratio": kept / c["best"] if c["best"] > 0 else float("nan"),
                         "early": kept_epoch < c["best_epoch"], "saved": 1.0 - stop_epoch / len(c["values"])})
        done = [r for r in rows if r["replayable"]]
        ratios = [r["val_ratio"] for r in done]
        out[patience] = {"rows": rows, "runs": len(done), "not_replayable": len(rows) - len(done),
                         "stopped_before_best": sum(r["early"] for r in done),
                         "median_val_ratio": statistics.median(ratios) if ratios else None,
                         "max_val_ratio": max(ratios) if ratios else None,
                         "median_epochs_saved": statistics.median(r["saved"] for r in done) if done else None}
    return out


def main(argv=None):
    args = parse_args(argv)
    paths = find_runs(args)
    result = whatif(paths, args.patience, args.phase, args.monitor)
    print(f"{len(paths)} run(s): {args.stage}" + (f", phase {args.phase}" if args.phase else ""))
    print("| patience | runs | stopped before their best | val kept / best (median, max) | epochs saved (median) |")
    print("| --- | --- | --- | --- | --- |")
    for patience, s in result.items():
        if not s["runs"]:
            print(f"| {patience} | 0 (not replayable: {s['not_replayable']}) | – | – | – |")
            continue
        skipped = f" (+{s['not_replayable']} not replayable)" if s["not_replayable"] else ""
        print(f"| {patience} | {s['runs']}{skipped} | {s['stopped_before_best']} | "
              f"{s['median_val_ratio']:.3f}, {s['max_val_ratio']:.3f} | {100 * s['median_epochs_saved']:.0f} % |")
    return result


if __name__ == "__main__":
    run_main(main)
