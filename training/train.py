"""Stage 1: baseline MLP trained on the source domain (process A).

    python -m training.train
    python -m training.train --opamp two_stage_opamp --epochs 30 --seed 0
    python -m training.train --baseline-val source        # early stopping on held-out source rows
    python -m training.train --dry-run --data-dir /tmp/tiny --results-dir /tmp/res   # seconds

Loss: MSE in model space (log1p on LOG_Y_COLS, standardised).  Early stopping (PATIENCE) on
BASELINE_VAL: "target" (default, the seed) = MSE on target_val; "source" = MSE on a seeded holdout
of SOURCE_VAL_SPLIT of the source rows, which are then not trained on (target_val MSE is still
logged).  On target_val the source model stops early (5t_opamp: after 3-56 epochs), at the epoch
whose fit to B is best; trained to convergence on A instead, the transfer stages gain from 100
target rows up and lose at 50 (docs/RESULTS.md), so the seed's rule stays the default.

Writes ``results/{OPAMP}_baseline_model.pth`` (+ JSON sidecar, ``*_metrics.json``), logs
Train/Val MSE per epoch and prints a test summary in physical units:
applied to process B as is, this is the "source-only" reference every transfer stage must beat.
"""
import torch
import torch.nn.functional as F

from core.cli import StageCLI, run_main
from core.outputs import results_lock
from core.settings import setting_choice
from data_loader import split_source_rows
from models import MLP
from training.cli import add_training_flags, epoch_printer
from training.loop import TensorBatches, fit
from training.stage import epochs_and_batches, finish_stage, model_kwargs, start_stage, tensors

BASELINE_VALS = ("source", "target")


def parse_args(argv=None):
    cli = StageCLI("training.train", __doc__)
    add_training_flags(cli)
    cli.flag("--baseline-batch-size", "BASELINE_BATCH_SIZE", "rows per source batch")
    cli.flag("--baseline-val", "BASELINE_VAL", "early stopping on: source (a holdout of the source rows) or target "
             "(target_val, the seed)")
    cli.flag("--source-val-split", "SOURCE_VAL_SPLIT", "fraction of the source rows held out (--baseline-val source)")
    return cli.parse(argv)


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y), {}                                  # model(x): (N, n_metrics)


def main(argv=None):
    args, settings = parse_args(argv)
    preflight(settings)
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings)


def run(args, settings):
    validate_on = baseline_val(settings)
    device, data, t0 = start_stage(settings, "baseline", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    model = MLP(**model_kwargs(settings, data)).to(device)
    x_src, y_src = tensors(data, "source", device)
    x_tgt_val, y_tgt_val = tensors(data, "target_val", device)
    extra = {"baseline_val": validate_on}
    if validate_on == "source":
        rows = split_source_rows(len(x_src), val_split=settings["SOURCE_VAL_SPLIT"], seed=settings["SEED"])
        x_hold, y_hold = x_src[rows["val"]], y_src[rows["val"]]
        x_src, y_src = x_src[rows["train"]], y_src[rows["train"]]
        extra.update(source_val_split=settings["SOURCE_VAL_SPLIT"], source_val_rows=len(rows["val"]))
        # the checkpoint's split records the holdout rows (of the failure-filtered source data) beside target's
        data = {**data, "split": {**data["split"], "source_val_idx": sorted(rows["val"].tolist())}}
    monitor, label = ("source_mse", "Val MSE (A holdout)") if validate_on == "source" else ("mse", "Val MSE (B)")

    def evaluate(m):                                                    # target_val MSE is logged either way
        val = {"mse": F.mse_loss(m(x_tgt_val), y_tgt_val).item()}
        if validate_on == "source":
            val["source_mse"] = F.mse_loss(m(x_hold), y_hold).item()
        return val
    loader = TensorBatches(x_src, y_src, batch_size=settings["BASELINE_BATCH_SIZE"], seed=settings["SEED"],
                           max_batches=max_batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["LEARNING_RATE"],
                                  weight_decay=settings["WEIGHT_DECAY"])
    result = fit(model, loader=loader, optimizer=optimizer, loss_fn=mse_loss, evaluate=evaluate,
                 monitor=monitor, epochs=epochs, patience=settings["PATIENCE"], desc="baseline",
                 progress=not args.quiet, on_epoch=None if args.quiet else epoch_printer("Train MSE", label, val_key=f"val_{monitor}"))
    return finish_stage(settings, data, model, stage="baseline", kind="baseline", device=device,
                        fit_results={"baseline": result}, monitor=monitor, val_value=result.best_value, t0=t0,
                        dry_run=args.dry_run, extra=extra)


def preflight(settings: dict) -> None:
    """The stage's own settings checks, run before any data is read (the pipeline runs every stage's first)."""
    baseline_val(settings)


def baseline_val(settings: dict) -> str:
    return setting_choice(settings, "BASELINE_VAL", BASELINE_VALS, default="target",
                          fix="--baseline-val target (target_val, the seed) or source (a holdout of the source rows).")


if __name__ == "__main__":
    run_main(main)
