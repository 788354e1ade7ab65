"""Stage 2: AlignHeteroMLP + CORAL, starting from the baseline's backbone.

    python -m training.train_align_coral
    python -m training.train_align_coral --lambda-coral 0.01 --alpha-r2 1.0
    python -m training.train_align_coral --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

Each step pairs a target batch with a source batch:
    loss = NLL(mu, logvar, y_tgt) + ALPHA_R2 * (1 - R2_batch(y_tgt, mu))
           + LAMBDA_CORAL * CORAL(backbone(x_src), backbone(x_tgt))
Early stopping on val NLL (target_val).  Needs ``results/{OPAMP}_baseline_model.pth``
(``python -m training.train``).  Writes ``results/{OPAMP}_align_hetero_lambda{LAMBDA_CORAL:.3f}.pth``.
"""
import torch

from core.cli import StageCLI, run_main
from models import AlignHeteroMLP, MLP
from models.model_utils import load_backbone_from_trained_mlp
from training.common import (add_training_flags, check_weights, epoch_printer, epochs_and_batches,
                             finish_stage, load_parent, start_stage, tensors)
from training.loop import PairedBatches, TensorBatches, fit
from training.objectives import make_align_loss, val_hetero


def parse_args(argv=None):
    cli = StageCLI("training.train_align_coral", __doc__)
    add_training_flags(cli)
    cli.flag("--lambda-coral", "LAMBDA_CORAL", "weight of the CORAL term (>= 0)")
    cli.flag("--alpha-r2", "ALPHA_R2", "weight of (1 - batch R^2) (>= 0)")
    return cli.parse(argv)


def main(argv=None):
    args, settings = parse_args(argv)
    check_weights(settings, "LAMBDA_CORAL", "ALPHA_R2")
    device, data, t0 = start_stage(settings, "align_hetero", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    baseline, _, parent = load_parent(settings, data, "baseline", expect_class=MLP, device=device)
    model = AlignHeteroMLP(**baseline.constructor_kwargs()).to(device)  # same backbone shape as the baseline
    load_backbone_from_trained_mlp(baseline, model)
    x_tr, y_tr = tensors(data, "target_train", device)
    x_val, y_val = tensors(data, "target_val", device)
    x_src, y_src = tensors(data, "source", device)
    target = TensorBatches(x_tr, y_tr, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"],
                           max_batches=max_batches)
    loader = PairedBatches(target, (x_src, y_src), seed=settings["SEED"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["LEARNING_RATE"],
                                  weight_decay=settings["WEIGHT_DECAY"])
    result = fit(model, loader=loader, optimizer=optimizer,
                 loss_fn=make_align_loss(settings["ALPHA_R2"], settings["LAMBDA_CORAL"]),
                 evaluate=val_hetero(x_val, y_val, alpha_r2=settings["ALPHA_R2"]), monitor="nll",
                 epochs=epochs, patience=settings["PATIENCE"], desc="align+coral", progress=not args.quiet,
                 on_epoch=None if args.quiet else epoch_printer("Train loss", "Val NLL", val_key="val_nll"))
    return finish_stage(settings, data, model, stage="align_hetero", kind="align_hetero", device=device,
                        fit_results={"align_hetero": result}, monitor="nll", val_value=result.best_value,
                        t0=t0, parent=parent, dry_run=args.dry_run,
                        extra={"lambda_coral": settings["LAMBDA_CORAL"], "alpha_r2": settings["ALPHA_R2"]})


if __name__ == "__main__":
    run_main(main)
