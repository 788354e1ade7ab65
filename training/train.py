"""Stage 1: baseline MLP trained on the source domain (process A), validated on target_val.

    python -m training.train
    python -m training.train --opamp two_stage_opamp --epochs 30 --seed 0
    python -m training.train --dry-run --data-dir /tmp/tiny --results-dir /tmp/res   # seconds

Loss: MSE in model space (log1p on LOG_Y_COLS, standardised).  Early stopping on the
target_val MSE (PATIENCE).  Writes ``results/{OPAMP}_baseline_model.pth`` (+ JSON sidecar,
``*_metrics.json``), logs Train/Val MSE per epoch and prints a test summary in physical units:
applied to process B as is, this is the "source-only" reference every transfer stage must beat.
"""
import torch
import torch.nn.functional as F

from core.cli import StageCLI, run_main
from models import MLP
from training.common import (add_training_flags, epoch_printer, epochs_and_batches, finish_stage,
                             model_kwargs, start_stage, tensors)
from training.loop import TensorBatches, fit


def parse_args(argv=None):
    cli = StageCLI("training.train", __doc__)
    add_training_flags(cli)
    cli.flag("--baseline-batch-size", "BASELINE_BATCH_SIZE", "rows per source batch")
    return cli.parse(argv)


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y), {}                                  # model(x): (N, n_metrics)


def main(argv=None):
    args, settings = parse_args(argv)
    device, data, t0 = start_stage(settings, "baseline", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    model = MLP(**model_kwargs(settings, data)).to(device)
    x_src, y_src = tensors(data, "source", device)
    x_val, y_val = tensors(data, "target_val", device)
    loader = TensorBatches(x_src, y_src, batch_size=settings["BASELINE_BATCH_SIZE"], seed=settings["SEED"],
                           max_batches=max_batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["LEARNING_RATE"],
                                  weight_decay=settings["WEIGHT_DECAY"])
    result = fit(model, loader=loader, optimizer=optimizer, loss_fn=mse_loss,
                 evaluate=lambda m: {"mse": F.mse_loss(m(x_val), y_val).item()},
                 monitor="mse", epochs=epochs, patience=settings["PATIENCE"], desc="baseline",
                 progress=not args.quiet, on_epoch=None if args.quiet else epoch_printer("Train MSE", "Val MSE (B)"))
    return finish_stage(settings, data, model, stage="baseline", kind="baseline", device=device,
                        fit_results={"baseline": result}, monitor="mse", val_value=result.best_value, t0=t0,
                        dry_run=args.dry_run)


if __name__ == "__main__":
    run_main(main)
