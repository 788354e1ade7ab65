"""One training stage's run around its own loop: start (seed, device, data), the parent checkpoint it
builds on, and finish (evaluate, save the checkpoint + metrics JSON, append the run log, summary).
Entry points pass the resolved settings dict in; nothing here imports config.  Checkpoint names
and commands come from the stage registry (``core.stages``).
"""
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from core.atomic import atomic_paths, atomic_write_text
from core.code_record import code_record
from core.errors import ToolkitError
from core.freshness import data_digests
from core.runtime import start_run
from core.stages import STAGES, checkpoint_path, command, metrics_path, rerun_command, stage as stage_of
from data_loader import load_run_data
from data_loader.preprocessing import same_preprocessing
from inference.evaluate import eval_split, evaluate_physical
from inference.metrics import format_report
from models.model_utils import is_dry_run, load_checkpoint, read_checkpoint_meta, save_checkpoint, sidecar_path

DRY_RUN_EPOCHS = 2       # --dry-run: epochs per stage / phase
DRY_RUN_BATCHES = 2      # --dry-run: batches per epoch


def start_stage(settings: dict, stage: str, *, dry_run: bool = False, checkpoint=None):
    """Threads, seed, device, data.  Returns ``(device, data, t0)``.  ``checkpoint``: the file a stage outside the
    registry (the MDN) writes, for the dry-run refusal."""
    if dry_run:
        refuse_dry_run_over_trained(settings, stage, checkpoint)
    device, t0 = start_run(settings, stage, dry_run=dry_run)
    return device, load_run_data(settings, stage), t0


def refuse_dry_run_over_trained(settings: dict, kind: str, path=None) -> None:
    """A --dry-run (a smoke test: DRY_RUN_EPOCHS of DRY_RUN_BATCHES batches) never replaces a trained checkpoint:
    one line before anything is loaded or written.  Its own earlier dry-run checkpoints it may replace.  ``path``:
    the checkpoint of a stage outside the registry (the MDN); a registered stage's comes from the registry."""
    if path is None and kind not in STAGES:
        return
    path = Path(path) if path is not None else checkpoint_path(settings, kind)
    if not path.is_file():
        return
    try:
        trained = not is_dry_run(read_checkpoint_meta(path))
    except ToolkitError:      # unreadable: the stage itself says so
        return
    if trained:
        raise ToolkitError(f"--dry-run would replace {path}, a trained checkpoint (a dry run trains "
                           f"{DRY_RUN_EPOCHS} epochs of {DRY_RUN_BATCHES} batches: a smoke test). Nothing was written. "
                           f"Fix: --results-dir for the dry run's own folder (e.g. /tmp/dry_run), or drop --dry-run.")


def tensors(data: dict, split: str, device) -> tuple:
    x, y = data[split]
    return torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)


def epochs_and_batches(settings: dict, dry_run: bool):
    if dry_run:
        return min(settings["EPOCHS"], DRY_RUN_EPOCHS), DRY_RUN_BATCHES
    return settings["EPOCHS"], None


def model_kwargs(settings: dict, data: dict) -> dict:
    return dict(input_dim=len(data["x_cols"]), output_dim=len(data["y_cols"]),
                hidden_dim=settings["HIDDEN_DIM"], num_layers=settings["NUM_LAYERS"],
                dropout=settings["DROPOUT_RATE"])


def require_parent(settings: dict, kind: str) -> Path:
    """The checkpoint a stage starts from, which must exist: checked in ``main`` before the stage loads data
    or writes anything in RESULTS_DIR (a missing parent is the most common mistake)."""
    path = checkpoint_path(settings, kind)
    if not path.is_file():
        raise ToolkitError(f"Missing {path} (the {kind} checkpoint this stage starts from). Make it with: "
                           f"{rerun_command(kind, settings)}")
    return path


def load_parent(settings: dict, data: dict, kind: str, *, expect_class, device, same_shape: bool = True):
    """Load the checkpoint a stage starts from; refuse one made for other data with the fix.  ``same_shape``:
    the stage copies the parent's network, so HIDDEN_DIM / NUM_LAYERS / DROPOUT_RATE must match (False for a
    stage that only reads the parent's predictions: the GP member)."""
    path = require_parent(settings, kind)
    make = rerun_command(kind, settings)
    meta = read_checkpoint_meta(path)
    made_for = meta.get("config", {}).get("OPAMP_TYPE")
    if made_for != settings["OPAMP_TYPE"]:
        raise ToolkitError(f"{path} was trained for circuit {made_for!r}, this run is for {settings['OPAMP_TYPE']!r}. "
                           f"Rerun {make}.")
    asked = {"hidden_dim": ("HIDDEN_DIM", "--hidden-dim"), "num_layers": ("NUM_LAYERS", "--num-layers"),
             "dropout": ("DROPOUT_RATE", "--set DROPOUT_RATE=")}
    has = meta.get("model_kwargs") or {}
    differ = [k for k, (key, _) in asked.items() if k in has and key in settings and has[k] != settings[key]]
    if differ and same_shape:   # the stage copies the parent's network: it would train the parent's shape
        theirs = ", ".join(f"{asked[k][0]}={has[k]}" for k in differ)
        mine = ", ".join(f"{asked[k][0]}={settings[asked[k][0]]}" for k in differ)

        def flags(values):
            return " ".join(f"{asked[k][1]}{'' if asked[k][1].endswith('=') else ' '}{values[k]}" for k in differ)
        raise ToolkitError(f"{path} was trained with {theirs} but this run asks for {mine}; this stage starts from "
                           f"its network. Retrain it the same way ({make} "
                           f"{flags({k: settings[asked[k][0]] for k in differ})}) or give this stage the parent's "
                           f"shape: {flags(has)}.")
    model, meta = load_checkpoint(path, expect_x_cols=data["x_cols"], expect_y_cols=data["y_cols"],
                                  expect_class=expect_class, map_location=device)
    if not same_preprocessing(meta["preprocessing"], data["preprocessing"].to_dict()):
        raise ToolkitError(f"{path} was trained with other preprocessing (scalers/log columns/split) than this run. "
                           f"Rerun {make} with the same settings first.")
    return model, meta, path


def warm_start_path(settings: dict, kind: str) -> Path | None:
    """The checkpoint of stage ``kind`` in ``WARM_START_FROM`` (a results folder) this run starts from, or None
    when WARM_START_FROM is "" (off).  A folder without that checkpoint is a ToolkitError with the fix."""
    folder = str(settings.get("WARM_START_FROM") or "").strip()
    if not folder:
        return None
    path = checkpoint_path({**settings, "RESULTS_DIR": folder}, kind)
    if not path.is_file():
        raise ToolkitError(f"WARM_START_FROM={folder} has no {path.name} (the {kind} checkpoint this stage would "
                           f"start from). Fix: point WARM_START_FROM at a results folder where {command(kind)} ran "
                           f"with the same columns and preprocessing, or set WARM_START_FROM='' to start fresh.")
    return path


def load_warm_start(settings: dict, data: dict, kind: str, *, expect_class, device):
    """``(model, meta, path)`` of the stage's own checkpoint in ``WARM_START_FROM`` (same class, columns,
    preprocessing and network shape, checked as a parent is), or None when warm start is off."""
    path = warm_start_path(settings, kind)
    if path is None:
        return None
    model, meta, path = load_parent({**settings, "RESULTS_DIR": str(path.parent)}, data, kind,
                                    expect_class=expect_class, device=device)
    print(f"[{kind}] warm start from {path}")
    return model, meta, path


def previous_best_path(path: Path) -> Path:
    return path.with_name(path.stem + ".previous_best.pth")


def _val_on_same_terms(meta: dict, monitor: str, split: dict, preprocessing: dict):
    """A checkpoint's val ``monitor``, or None when it cannot be compared with this run's (another val split, or
    other preprocessing: its val error is in another model space)."""
    if (meta.get("split") or {}).get("target_val_idx") != split.get("target_val_idx"):
        return None
    if not same_preprocessing(meta.get("preprocessing") or {}, preprocessing):
        return None
    return (meta.get("metrics") or {}).get("val", {}).get(monitor)


def _keep_aside(path: Path, keep: Path) -> None:
    """Copy a checkpoint and its JSON sidecar to ``keep`` as one unit (atomic: never half a copy)."""
    pairs = [(path, keep)] + ([(sidecar_path(path), sidecar_path(keep))] if sidecar_path(path).is_file() else [])
    with atomic_paths(*[dst for _, dst in pairs]) as tmps:
        for (src, _), tmp in zip(pairs, tmps if isinstance(tmps, list) else [tmps]):
            shutil.copy2(src, tmp)


def guard_better_checkpoint(path: Path, monitor: str, new_value: float, split: dict, preprocessing: dict) -> None:
    """Never silently replace a better checkpoint.  ``<name>.previous_best.pth`` holds one slot:

    * the one being replaced, when it is better on this run's terms (val split and preprocessing), unless the slot
      already holds one at least as good on those terms;
    * the one being replaced, when it cannot be ranked (other preprocessing: its val error is in another model
      space) and is not a dry run, unless the slot holds one that must stay (better than the new one on this
      run's terms, or better than the replaced one on its terms): then the replaced one is named as lost.
    """
    if not path.is_file():
        return
    try:
        old = read_checkpoint_meta(path)
    except ToolkitError:
        return
    keep = previous_best_path(path)
    kept = None
    if keep.is_file():
        try:
            kept = read_checkpoint_meta(keep)
        except ToolkitError:
            kept = None
    old_value = _val_on_same_terms(old, monitor, split, preprocessing)
    kept_value = _val_on_same_terms(kept, monitor, split, preprocessing) if kept is not None else None
    if old_value is not None:
        if old_value >= new_value:
            return
        if kept_value is not None and kept_value <= old_value:
            print(f"warning: the new val {monitor}={new_value:.5g} is worse than {kept_value:.5g} of the checkpoint "
                  f"kept at {keep}; it stays there.")
            return
        _keep_aside(path, keep)
        print(f"warning: the new val {monitor}={new_value:.5g} is worse than the previous checkpoint's "
              f"{old_value:.5g}; the previous one is kept at {keep}.")
        return
    same_split = (old.get("split") or {}).get("target_val_idx") == split.get("target_val_idx")
    if not same_split or is_dry_run(old):
        return
    old_val = (old.get("metrics") or {}).get("val", {}).get(monitor)
    kept_beats_old = (kept is not None and old_val is not None
                      and _val_on_same_terms(kept, monitor, old.get("split") or {}, old.get("preprocessing") or {})
                      is not None and kept["metrics"]["val"][monitor] <= old_val)
    if (kept_value is not None and kept_value < new_value) or kept_beats_old:
        print(f"warning: the previous checkpoint was trained with other preprocessing (val {monitor} not comparable "
              f"with this run's) and is replaced; {keep} keeps a better one.")
        return
    _keep_aside(path, keep)
    print(f"warning: the previous checkpoint was trained with other preprocessing, so its val {monitor} cannot "
          f"be compared with this run's; it is kept at {keep}.")


def finish_stage(settings: dict, data: dict, model, *, stage: str, kind: str, device, fit_results: dict,
                 monitor: str, val_value: float, t0: float, parent=None, extra=None, dry_run=False) -> dict:
    """Evaluate, save checkpoint + metrics JSON, append the run log, print the summary.  Without target_test rows
    the report is on target_val; a stage that learned from those rows too (the GP) is scored on the
    out-of-sample val predictions it keeps (``extra["oof_val"]``), not its in-sample fit (R^2 = 1)."""
    oof = (extra or {}).get("oof_val") if eval_split(data) == "target_val" else None
    report = evaluate_physical(model, data, device,
                               mean_scaled=None if oof is None else np.asarray(oof["mean"], float))
    path = checkpoint_path(settings, kind)
    wall = time.perf_counter() - t0
    metrics = {"val": {monitor: float(val_value)}, "test": report, "wall_s": round(wall, 2),
               "dry_run": bool(dry_run)}
    history = {name: r.history for name, r in fit_results.items()}
    guard_better_checkpoint(path, monitor, float(val_value), data["split"], data["preprocessing"].to_dict())
    save_checkpoint(path, model.cpu(), stage=stage, x_cols=data["x_cols"], y_cols=data["y_cols"],
                    preprocessing=data["preprocessing"].to_dict(), config=settings, seed=settings["SEED"],
                    split=data["split"], metrics=metrics, parent=parent, history=history, extra=extra,
                    code=code_record(stage_of(kind).module), design_space=data.get("design_space"),
                    data_sha256=data_digests(data["files"]))
    model.to(device)
    summary = {"stage": stage, "opamp": settings["OPAMP_TYPE"], "checkpoint": str(path), "seed": settings["SEED"],
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **metrics,
               "best_epochs": {n: r.best_epoch for n, r in fit_results.items()}, **({"extra": extra} if extra else {})}
    atomic_write_text(metrics_path(path), json.dumps(summary, indent=2) + "\n")
    log = Path(settings["RESULTS_DIR"]) / "runs.jsonl"
    with open(log, "a", encoding="utf-8") as f:  # one line per run: tables can be rebuilt from history
        f.write(json.dumps({k: summary[k] for k in ("time", "stage", "opamp", "seed", "checkpoint", "wall_s",
                                                     "dry_run")}
                           | {"val": metrics["val"], "test_mean": report["mean"], "test_split": report["split"]})
                + "\n")
    print()
    print(format_report(report, data["y_cols"], f"{stage} on {report['split']} (n={report['n']}, physical units)"))
    epochs = ", ".join(f"{n}: best epoch {r.best_epoch}/{len(r.history)}" for n, r in fit_results.items())
    print(f"[{stage}] {epochs}; val {monitor}={val_value:.5g}; wall {wall:.1f}s")
    print(f"[{stage}] wrote {path} (+ {sidecar_path(path).name}, {metrics_path(path).name})")
    return summary
