"""Mixture density network p(x | y): train it, or sample designs for a target spec.

Train (target_train rows, early stopping on target_val NLL; --with-source adds the source rows):
    python -m inverse_mdn --opamp 5t_opamp --components 10 --hidden 256 --layers 4 \\
        --batch-size 128 --epochs 60 --lr 1e-3
    python -m inverse_mdn --dry-run --data-dir /tmp/tiny --results-dir /tmp/res    # seconds
  writes results/mdn_{OPAMP}.pth (+ .json sidecar): weights, preprocessing (the data loader's
  scalers), columns, the sampling box, config snapshot, seed, val/test NLL.

Sample (y-target in physical units, metric column order of the checkpoint):
    python -m inverse_mdn --sample --model results/mdn_5t_opamp.pth \\
        --y-target "2.5e8,200,1.5e6,65,20000" --n 64 --out results/inverse/init_64.npy
  writes the x_scaled samples (N, D) as .npy and the same designs in physical units as a CSV
  beside it (init_64.csv).  Every sample lies inside the buildable box (redrawn, then clipped).
"""
import time
from pathlib import Path

import numpy as np
import torch

from core.atomic import atomic_path
from core.cli import StageCLI, run_main
from core.code_record import code_record
from core.errors import ToolkitError
from core.outputs import check_writable_file, results_lock
from core.settings import parse_set_pairs
from inverse.goals import parse_y_target
from inverse.mdn import MDN, load_mdn, mdn_nll, mdn_sidecar, sample_designs, save_mdn  # noqa: F401
from inverse.optimise import model_bounds
from inverse.snap import grid_for
from models.model_utils import check_trained_for
from training.cli import epoch_printer
from training.loop import TensorBatches, fit
from training.stage import guard_better_checkpoint, start_stage


def parse_args(argv=None):
    cli = StageCLI("inverse_mdn", __doc__)
    for flag, key in (("--components", "MDN_COMPONENTS"), ("--hidden", "MDN_HIDDEN"), ("--layers", "MDN_LAYERS"),
                      ("--batch-size", "MDN_BATCH_SIZE"), ("--epochs", "MDN_EPOCHS"), ("--lr", "MDN_LR"),
                      ("--patience", "PATIENCE"), ("--val-split", "VAL_SPLIT"), ("--test-split", "TEST_SPLIT")):
        cli.flag(flag, key)
    cli.add_argument("--with-source", action="store_true", help="train on source rows too (default: target only)")
    cli.add_argument("--dry-run", action="store_true", help="2 epochs of 2 batches (smoke test)")
    cli.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    cli.add_argument("--sample", action="store_true", help="sample mode (needs --y-target)")
    cli.add_argument("--model", default=None, help="MDN checkpoint to sample from [results/mdn_{OPAMP}.pth]")
    cli.add_argument("--y-target", default=None, help="physical metrics, comma-separated, metric column order")
    cli.add_argument("--n", type=int, default=64, help="number of samples [64]")
    cli.add_argument("--out", default=None, help="x_scaled .npy to write [results/inverse/init_{n}.npy]; "
                                                 "a CSV in physical units goes beside it")
    args, settings = cli.parse(argv)
    # the forward stages' keys, which the MDN does not read (it has its own): a --set of one would do nothing
    own = {"EPOCHS": "MDN_EPOCHS", "LEARNING_RATE": "MDN_LR", "BATCH_SIZE": "MDN_BATCH_SIZE",
           "HIDDEN_DIM": "MDN_HIDDEN", "NUM_LAYERS": "MDN_LAYERS"}
    for key in sorted(set(parse_set_pairs(args.set)) & set(own)):
        print(f"warning: --set {key}=... does nothing here: inverse_mdn reads {own[key]} (--set {own[key]}=..., or "
              f"its flag).")
    return args, settings


def mdn_path(settings) -> Path:
    return Path(settings["RESULTS_DIR"]) / f"mdn_{settings['OPAMP_TYPE']}.pth"


def train(args, settings):
    for key in ("MDN_COMPONENTS", "MDN_HIDDEN", "MDN_LAYERS", "MDN_BATCH_SIZE", "MDN_EPOCHS"):
        if settings[key] < 1:
            raise ToolkitError(f"{key} must be >= 1, got {settings[key]}.")
    device, data, t0 = start_stage(settings, "mdn", dry_run=args.dry_run, checkpoint=mdn_path(settings))
    pre = data["preprocessing"]

    def t(split):
        x, y = data[split]
        return torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    x_tr, y_tr = t("target_train")
    if args.with_source:
        x_src, y_src = t("source")
        x_tr, y_tr = torch.cat([x_tr, x_src]), torch.cat([y_tr, y_src])
    x_val, y_val = t("target_val")
    model = MDN(y_dim=len(data["y_cols"]), x_dim=len(data["x_cols"]), n_components=settings["MDN_COMPONENTS"],
                hidden=settings["MDN_HIDDEN"], layers=settings["MDN_LAYERS"]).to(device)
    epochs = min(settings["MDN_EPOCHS"], 2) if args.dry_run else settings["MDN_EPOCHS"]
    loader = TensorBatches(y_tr, x_tr, batch_size=settings["MDN_BATCH_SIZE"], seed=settings["SEED"],
                           max_batches=2 if args.dry_run else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["MDN_LR"])

    def loss_fn(m, batch):
        y, x = batch
        return mdn_nll(*m(y), x), {}                                      # y: (B, M) -> x: (B, D)
    result = fit(model, loader=loader, optimizer=optimizer, loss_fn=loss_fn,
                 evaluate=lambda m: {"nll": mdn_nll(*m(y_val), x_val).item()}, monitor="nll",
                 epochs=epochs, patience=settings["PATIENCE"], desc="mdn", progress=not args.quiet,
                 on_epoch=None if args.quiet else epoch_printer("Train NLL", "Val NLL", val_key="val_nll"))
    metrics = {"val": {"nll": result.best_value}, "wall_s": round(time.perf_counter() - t0, 2),
               "dry_run": bool(args.dry_run), "train_rows": int(len(x_tr))}
    if "target_test" in data:
        x_te, y_te = t("target_test")
        with torch.no_grad():
            metrics["test"] = {"nll": mdn_nll(*model(y_te), x_te).item(), "n": int(len(x_te))}
    lo, hi = model_bounds(pre, grid_for(settings["DATA_DIR"], settings["OPAMP_TYPE"])[0])
    path = mdn_path(settings)
    guard_better_checkpoint(path, "nll", result.best_value, data["split"], pre.to_dict())
    save_mdn(path, model.cpu(), x_cols=data["x_cols"], y_cols=data["y_cols"], preprocessing=pre.to_dict(),
             config=settings, seed=settings["SEED"], x_lo=lo.tolist(), x_hi=hi.tolist(), metrics=metrics,
             history={"mdn": result.history}, split=data["split"], code=code_record("inverse_mdn"),
             design_space=data.get("design_space"))
    test = f", test NLL {metrics['test']['nll']:.4f}" if "test" in metrics else ""
    print(f"[mdn] best epoch {result.best_epoch}/{len(result.history)}; val NLL {result.best_value:.4f}{test}; "
          f"wall {metrics['wall_s']:.1f}s")
    print(f"[mdn] wrote {path} (+ {mdn_sidecar(path).name})")
    return {"checkpoint": str(path), **metrics}


def sample(args, settings):
    if args.y_target is None:
        raise ToolkitError('--sample needs --y-target, e.g. --y-target "2.5e8,200,1.5e6,65,20000" '
                           '(physical units, metric column order).')
    if args.n < 1:
        raise ToolkitError(f"--n must be >= 1, got {args.n}.")
    path = Path(args.model) if args.model else mdn_path(settings)
    model, meta = load_mdn(path)
    check_trained_for(meta, path, settings["OPAMP_TYPE"], "the MDN")   # its designs would be another circuit's
    y = parse_y_target(args.y_target, meta["y_cols"])
    out = Path(args.out) if args.out else Path(settings["RESULTS_DIR"]) / "inverse" / f"init_{args.n}.npy"
    if out.suffix != ".npy":
        raise ToolkitError(f"--out must end in .npy (the x_scaled samples), got {out}.")
    check_writable_file(out, "--out")
    xs, designs = sample_designs(model, meta, y, args.n, seed=settings["SEED"])
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, xs)
    csv = out.with_suffix(".csv")
    with atomic_path(csv) as tmp:
        designs.to_csv(tmp, index=False)
    print(f"[mdn] {args.n} samples for y = {dict(zip(meta['y_cols'], y.tolist()))}")
    print(f"[mdn] wrote {out} (x_scaled, shape {xs.shape}) and {csv} (physical units, off the buildable grid: "
          f"starting points, which inverse_opt snaps)")
    return {"npy": str(out), "csv": str(csv), "n": args.n}


def main(argv=None):
    args, settings = parse_args(argv)
    torch.set_num_threads(max(1, settings["NUM_THREADS"]))
    if args.sample:
        return sample(args, settings)
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return train(args, settings)


if __name__ == "__main__":
    run_main(main)
