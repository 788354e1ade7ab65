"""Stage 3: DualHeadMLP staged fine-tuning on the target domain (process B).

    python -m fine_tune.fine_tune
    python -m fine_tune.fine_tune --l2sp-lambda 1e-3 --epochs 100
    python -m fine_tune.fine_tune --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

Starts from the baseline MLP: backbone and head A copied from it, head B a copy of head A.
Three phases on target_train, each early-stopping on val MSE and keeping its best state:
  1. bias     only ``head_B.bias``                                   lr LR_BIAS
  2. head     ``head_B`` weights (+ bias), L2-SP on head_B.weight     lr LR_HEAD
  3. unfreeze last UNFREEZE_LAYERS backbone layer(s) + head_B,
              L2-SP on all that moves                                 lr LR_UNFREEZE
              (default "all"; the seed's 1 leaves the source features frozen, and metrics whose
              sizing dependence differs between processes, cmrr here, cannot be re-learned)
L2-SP pulls toward the pretrained (baseline) weights with weight L2SP_LAMBDA.  Frozen layers
stay in eval mode (no dropout noise).  Writes ``results/{OPAMP}_dualhead_finetuned.pth``.
"""
import torch
import torch.nn.functional as F

from core.cli import StageCLI, run_main
from models import MLP, DualHeadMLP
from models.model_utils import load_backbone_from_trained_mlp
from training.common import (add_training_flags, check_weights, epoch_printer, epochs_and_batches,
                             finish_stage, layer_count, load_parent, start_stage, tensors)
from training.loop import TensorBatches, fit, run_epoch  # noqa: F401  (run_epoch: seed API, re-exported)
from training.objectives import mse_objective


def parse_args(argv=None):
    cli = StageCLI("fine_tune.fine_tune", __doc__)
    add_training_flags(cli)
    cli.flag("--l2sp-lambda", "L2SP_LAMBDA", "L2-SP weight toward the pretrained weights (>= 0)")
    cli.flag("--lr-bias", "LR_BIAS", "phase 1 learning rate")
    cli.flag("--lr-head", "LR_HEAD", "phase 2 learning rate")
    cli.flag("--lr-unfreeze", "LR_UNFREEZE", "phase 3 learning rate")
    cli.flag("--unfreeze-layers", "UNFREEZE_LAYERS", "phase 3: how many last backbone layers to unfreeze (1..NUM_LAYERS or all)")
    return cli.parse(argv)


def head_b(model, x):
    return model(x, domain="B")                                         # (N, n_metrics)


def unfrozen_backbone_params(model: DualHeadMLP, n_layers) -> list:
    """Parameter names of the last ``n_layers`` backbone blocks (phase 3); ``"all"`` = every block."""
    blocks = len(model.backbone)
    count = layer_count(n_layers, key="UNFREEZE_LAYERS", keyword="all", lo=1, hi=blocks,
                        why="the backbone's layers", example="--unfreeze-layers 1 (the seed)")
    count = blocks if count is None else count
    return [f"backbone.blocks.{i}.linear.{p}" for i in range(blocks - count, blocks) for p in ("weight", "bias")]


def phase_plan(model: DualHeadMLP, settings: dict) -> list:
    """(name, trainable parameter names, L2-SP parameter names, learning rate) per phase."""
    last = unfrozen_backbone_params(model, settings.get("UNFREEZE_LAYERS", "all"))
    return [
        ("bias", ["head_B.bias"], [], settings["LR_BIAS"]),
        ("head", ["head_B.weight", "head_B.bias"], ["head_B.weight"], settings["LR_HEAD"]),
        ("unfreeze", last + ["head_B.weight", "head_B.bias"], last + ["head_B.weight", "head_B.bias"],
         settings["LR_UNFREEZE"]),
    ]


def set_trainable(model, names) -> list:
    """Freeze everything but ``names``; return the modules left fully frozen (kept in eval mode)."""
    names = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return [m for m in model.backbone if not any(p.requires_grad for p in m.parameters())]


def main(argv=None):
    args, settings = parse_args(argv)
    check_weights(settings, "L2SP_LAMBDA", "LR_BIAS", "LR_HEAD", "LR_UNFREEZE")
    device, data, t0 = start_stage(settings, "dualhead", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    baseline, _, parent = load_parent(settings, data, "baseline", expect_class=MLP, device=device)
    model = DualHeadMLP(**baseline.constructor_kwargs()).to(device)
    load_backbone_from_trained_mlp(baseline, model)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x_tr, y_tr = tensors(data, "target_train", device)
    x_val, y_val = tensors(data, "target_val", device)
    loader = TensorBatches(x_tr, y_tr, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"],
                           max_batches=max_batches, min_batches=settings["MIN_BATCHES_PER_EPOCH"])
    evaluate = lambda m: {"mse": F.mse_loss(head_b(m, x_val), y_val).item()}  # noqa: E731
    results = {}
    for name, trainable, l2sp_names, lr in phase_plan(model, settings):
        frozen = set_trainable(model, trainable)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr)  # no weight decay: L2-SP is the regulariser here
        results[name] = fit(model, loader=loader, optimizer=optimizer, loss_fn=mse_objective(head_b),
                            evaluate=evaluate, monitor="mse", epochs=epochs, patience=settings["PATIENCE"],
                            desc=f"finetune:{name}", pretrained_state=pretrained,
                            l2sp_lambda=settings["L2SP_LAMBDA"] if l2sp_names else 0.0,
                            l2sp_params=l2sp_names or None, frozen_modules=frozen, progress=not args.quiet,
                            on_epoch=None if args.quiet else epoch_printer(f"[{name}] Train MSE", "Val MSE"))
    for p in model.parameters():
        p.requires_grad_(True)
    return finish_stage(settings, data, model, stage="dualhead", kind="dualhead", device=device,
                        fit_results=results, monitor="mse", val_value=results["unfreeze"].best_value, t0=t0,
                        parent=parent, dry_run=args.dry_run,
                        extra={"phases": [p[0] for p in phase_plan(model, settings)],
                               "l2sp_lambda": settings["L2SP_LAMBDA"]})


if __name__ == "__main__":
    run_main(main)
