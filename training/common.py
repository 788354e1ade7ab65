"""Plumbing shared by the stage entry points: setup, data, checkpoint names, parent
checkpoints, evaluation in physical units, saving (with the better-checkpoint guard), the
run log and the one-screen summary.  Entry points pass the resolved settings dict in;
nothing here imports config.
"""
import json
import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.atomic import atomic_write_text
from core.code_record import code_record
from core.errors import ToolkitError
from core.runtime import resolve_device, seed_everything, set_threads
from data_loader import data_kwargs_from_settings, get_data_and_scalers
from inference.metrics import format_report, regression_report
from models.outputs import mean_and_variance
from models.model_utils import load_checkpoint, read_checkpoint_meta, save_checkpoint, sidecar_path

DRY_RUN_EPOCHS = 2       # --dry-run: epochs per stage / phase
DRY_RUN_BATCHES = 2      # --dry-run: batches per epoch

STAGE_MODULES = {  # the entry point that makes each checkpoint kind
    "baseline": "training.train",
    "align_hetero": "training.train_align_coral",
    "target_only": "training.train_target_only",
    "dualhead": "fine_tune.fine_tune",
    "pooled": "training.train_pooled",
}
COMMANDS = {kind: f"python -m {module}" for kind, module in STAGE_MODULES.items()}  # named in error messages


def checkpoint_path(settings: dict, kind: str) -> Path:
    """Seed file names under RESULTS_DIR."""
    opamp, root = settings["OPAMP_TYPE"], Path(settings["RESULTS_DIR"])
    names = {"baseline": f"{opamp}_baseline_model.pth",
             "align_hetero": f"{opamp}_align_hetero_lambda{settings['LAMBDA_CORAL']:.3f}.pth",
             "target_only": f"{opamp}_target_only_hetero.pth",
             "dualhead": f"{opamp}_dualhead_finetuned.pth",
             "pooled": f"{opamp}_pooled_flag.pth"}
    return root / names[kind]


def metrics_path(ckpt: Path) -> Path:
    return Path(ckpt).with_name(Path(ckpt).stem + "_metrics.json")


def start_stage(settings: dict, stage: str, *, dry_run: bool = False):
    """Threads, seed, device, data.  Returns ``(device, data, t0)``."""
    t0 = time.perf_counter()
    set_threads(settings["NUM_THREADS"])
    seed_everything(settings["SEED"])
    device = resolve_device(settings["DEVICE"])
    print(f"[{stage}] opamp={settings['OPAMP_TYPE']} data={settings['DATA_DIR']} results={settings['RESULTS_DIR']} "
          f"seed={settings['SEED']} device={device}{' DRY-RUN' if dry_run else ''}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = get_data_and_scalers(**data_kwargs_from_settings(settings),
                                    results_dir=settings["RESULTS_DIR"], verbose=True)
    for w in caught:
        print(f"warning: {w.message}")
    sizes = ", ".join(f"{k}={len(data[k][0])}" for k in ("source", "target_train", "target_val", "target_test")
                      if k in data)
    print(f"[{stage}] rows: {sizes}")
    return device, data, t0


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


def same_preprocessing(a: dict, b: dict) -> bool:
    for key in a:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, list) and va and isinstance(va[0], float):
            if len(va) != len(vb) or not np.allclose(va, vb, rtol=1e-6, atol=1e-9):
                return False
        elif va != vb:
            return False
    return True


def load_parent(settings: dict, data: dict, kind: str, *, expect_class, device):
    """Load the checkpoint a stage starts from; refuse one made for other data with the fix."""
    path = checkpoint_path(settings, kind)
    if not path.is_file():
        raise ToolkitError(f"Missing {path} (the {kind} checkpoint this stage starts from). Make it with: "
                           f"{COMMANDS[kind]} --opamp {settings['OPAMP_TYPE']} --results-dir {settings['RESULTS_DIR']}")
    meta = read_checkpoint_meta(path)
    made_for = meta.get("config", {}).get("OPAMP_TYPE")
    if made_for != settings["OPAMP_TYPE"]:
        raise ToolkitError(f"{path} was trained for circuit {made_for!r}, this run is for {settings['OPAMP_TYPE']!r}. "
                           f"Rerun {COMMANDS[kind]} --opamp {settings['OPAMP_TYPE']}.")
    asked = {"hidden_dim": ("HIDDEN_DIM", "--hidden-dim"), "num_layers": ("NUM_LAYERS", "--num-layers"),
             "dropout": ("DROPOUT_RATE", "--set DROPOUT_RATE=")}
    has = meta.get("model_kwargs") or {}
    differ = [k for k, (key, _) in asked.items() if k in has and key in settings and has[k] != settings[key]]
    if differ:   # the stage copies the parent's network: it would train the parent's shape and record this run's
        theirs = ", ".join(f"{asked[k][0]}={has[k]}" for k in differ)
        mine = ", ".join(f"{asked[k][0]}={settings[asked[k][0]]}" for k in differ)
        fix = " ".join(f"{asked[k][1]}{'' if asked[k][1].endswith('=') else ' '}{settings[asked[k][0]]}" for k in differ)
        raise ToolkitError(f"{path} was trained with {theirs} but this run asks for {mine}; this stage starts from "
                           f"its network. Retrain it the same way ({COMMANDS[kind]} {fix}) or drop those settings here.")
    model, meta = load_checkpoint(path, expect_x_cols=data["x_cols"], expect_y_cols=data["y_cols"],
                                  expect_class=expect_class, map_location=device)
    if not same_preprocessing(meta["preprocessing"], data["preprocessing"].to_dict()):
        raise ToolkitError(f"{path} was trained with other preprocessing (scalers/log columns/split) than this run. "
                           f"Rerun {COMMANDS[kind]} with the same settings first.")
    return model, meta, path


@torch.no_grad()
def predict_scaled(model, x: torch.Tensor, *, batch: int = 8192):
    """Model-space mean and variance (variance None for point models), as float64 numpy."""
    model.eval()
    means, variances = [], []
    for i in range(0, len(x), batch):
        mu, var = mean_and_variance(model, x[i:i + batch])
        means.append(mu)
        if var is not None:
            variances.append(var)
    mean = torch.cat(means).double().cpu().numpy()
    var = torch.cat(variances).double().cpu().numpy() if variances else None
    return mean, var


def positive_floor(data: dict) -> np.ndarray:
    """Per metric, half the smallest positive training value: floor for log-space R^2."""
    ys = np.vstack([data["raw"]["source"][1].to_numpy(float), data["raw"]["target_train"][1].to_numpy(float)])
    out = []
    for j in range(ys.shape[1]):
        pos = ys[:, j][ys[:, j] > 0]
        out.append(0.5 * pos.min() if len(pos) else 1e-30)
    return np.asarray(out)


def eval_split(data: dict) -> str:
    return "target_test" if "target_test" in data else "target_val"


def evaluate_physical(model, data: dict, device, split: str | None = None) -> dict:
    """Report (physical units, clipped inverse transform) of ``model`` on ``split``."""
    split = split or eval_split(data)
    x, _ = tensors(data, split, device)
    mean, _ = predict_scaled(model, x)
    pred = data["preprocessing"].inverse_y(mean)
    truth = data["raw"][split][1].to_numpy(float)
    report = regression_report(truth, pred, data["y_cols"], floor=positive_floor(data))
    report["split"], report["n"] = split, int(len(truth))
    return report


def _guard_better_checkpoint(path: Path, monitor: str, new_value: float, split: dict) -> None:
    """Never silently replace a better checkpoint made on the same split: keep it beside."""
    if not path.is_file():
        return
    try:
        old = read_checkpoint_meta(path)
    except ToolkitError:
        return
    old_value = (old.get("metrics") or {}).get("val", {}).get(monitor)
    same_split = (old.get("split") or {}).get("target_val_idx") == split.get("target_val_idx")
    if old_value is not None and same_split and old_value < new_value:
        keep = path.with_name(path.stem + ".previous_best.pth")
        shutil.copy2(path, keep)
        if sidecar_path(path).is_file():
            shutil.copy2(sidecar_path(path), sidecar_path(keep))
        print(f"warning: the new val {monitor}={new_value:.5g} is worse than the previous checkpoint's "
              f"{old_value:.5g}; the previous one is kept at {keep}.")


def finish_stage(settings: dict, data: dict, model, *, stage: str, kind: str, device, fit_results: dict,
                 monitor: str, val_value: float, t0: float, parent=None, extra=None, dry_run=False) -> dict:
    """Evaluate, save checkpoint + metrics JSON, append the run log, print the summary."""
    report = evaluate_physical(model, data, device)
    path = checkpoint_path(settings, kind)
    wall = time.perf_counter() - t0
    metrics = {"val": {monitor: float(val_value)}, "test": report, "wall_s": round(wall, 2),
               "dry_run": bool(dry_run)}
    history = {name: r.history for name, r in fit_results.items()}
    _guard_better_checkpoint(path, monitor, float(val_value), data["split"])
    save_checkpoint(path, model.cpu(), stage=stage, x_cols=data["x_cols"], y_cols=data["y_cols"],
                    preprocessing=data["preprocessing"].to_dict(), config=settings, seed=settings["SEED"],
                    split=data["split"], metrics=metrics, parent=parent, history=history, extra=extra,
                    code=code_record(STAGE_MODULES[kind]))
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


def add_training_flags(cli) -> None:
    """Flags every training stage shares (beyond --opamp/--data-dir/--results-dir/--device/--seed)."""
    for flag, key in (("--epochs", "EPOCHS"), ("--patience", "PATIENCE"), ("--lr", "LEARNING_RATE"),
                      ("--batch-size", "BATCH_SIZE"), ("--hidden-dim", "HIDDEN_DIM"), ("--num-layers", "NUM_LAYERS"),
                      ("--val-split", "VAL_SPLIT"), ("--test-split", "TEST_SPLIT"), ("--n-target", "N_TARGET_TRAIN")):
        cli.flag(flag, key)
    cli.add_argument("--dry-run", action="store_true", help="2 epochs of 2 batches per phase (smoke test)")
    cli.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")


def epoch_printer(train_label: str, val_label: str, *, train_key="train_loss", val_key=None):
    """A fit(on_epoch=...) callback printing the seed's per-epoch log line."""
    def show(row):
        vk = val_key or next(k for k in row if k.startswith("val_"))
        tqdm.write(f"  epoch {row['epoch']:>3}  {train_label}={row[train_key]:.5f}  {val_label}={row[vk]:.5f}")
    return show


def setting_choice(settings: dict, key: str, choices, *, default: str, fix: str) -> str:
    """A setting that must be one of ``choices`` (``default`` when absent); ``fix`` says how to set it."""
    value = settings.get(key, default)
    if value not in choices:
        raise ToolkitError(f"{key} must be one of {list(choices)}, got {value!r}. Fix: {fix}")
    return value


def layer_count(value, *, key: str, keyword: str, lo: int, hi: int, why: str, example: str):
    """A layer-count setting that is ``keyword`` or an integer in ``lo..hi``: None for the keyword, else the int."""
    text = str(value).strip().lower()
    if text == keyword:
        return None
    try:
        count = int(text)
    except ValueError:
        count = lo - 1
    if not lo <= count <= hi:
        raise ToolkitError(f"{key} must be '{keyword}' or an integer in {lo}..{hi} ({why}), got {value!r}. "
                           f"Example: {example}")
    return count


def check_weights(settings: dict, *keys) -> None:
    """Loss weights and learning rates must be >= 0 (a negative weight would reward the term)."""
    for key in keys:
        if settings[key] < 0:
            raise ToolkitError(f"{key} must be >= 0, got {settings[key]}. A negative weight would reward the term.")
