"""A toy stage that only tests/test_registry.py registers: adding a stage is this module plus one entry.

    python -m tests.toy_stage --data-dir /tmp/tiny --results-dir /tmp/res --dry-run   # once registered

A target-only MLP trained with MSE on target_train, early stopping on target_val MSE: the pooled
stage without the source rows.  It uses only the shared pieces every stage uses (start, loop, finish).
"""
import torch
import torch.nn.functional as F

from core.cli import StageCLI, run_main
from core.outputs import results_lock
from models import MLP
from training.cli import add_training_flags
from training.loop import TensorBatches, fit
from training.stage import epochs_and_batches, finish_stage, model_kwargs, start_stage, tensors


def parse_args(argv=None):
    cli = StageCLI("tests.toy_stage", __doc__)
    add_training_flags(cli)
    return cli.parse(argv)


def main(argv=None):
    args, settings = parse_args(argv)
    with results_lock(settings["RESULTS_DIR"]):
        device, data, t0 = start_stage(settings, "toy", dry_run=args.dry_run)
        epochs, max_batches = epochs_and_batches(settings, args.dry_run)
        model = MLP(**model_kwargs(settings, data)).to(device)
        x_tr, y_tr = tensors(data, "target_train", device)
        x_val, y_val = tensors(data, "target_val", device)
        loader = TensorBatches(x_tr, y_tr, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"],
                               max_batches=max_batches)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings["LEARNING_RATE"])
        result = fit(model, loader=loader, optimizer=optimizer, loss_fn=lambda m, b: (F.mse_loss(m(b[0]), b[1]), {}),
                     evaluate=lambda m: {"mse": F.mse_loss(m(x_val), y_val).item()}, monitor="mse", epochs=epochs,
                     patience=settings["PATIENCE"], desc="toy", progress=False)
        return finish_stage(settings, data, model, stage="toy", kind="toy", device=device, fit_results={"toy": result},
                            monitor="mse", val_value=result.best_value, t0=t0, dry_run=args.dry_run)


if __name__ == "__main__":
    run_main(main)
