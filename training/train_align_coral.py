"""Stage 2: AlignHeteroMLP + CORAL, starting from the baseline's backbone.

    python -m training.train_align_coral
    python -m training.train_align_coral --lambda-coral 0.01 --alpha-r2 1.0
    python -m training.train_align_coral --reinit-layers 0          # the seed: transfer every layer
    python -m training.train_align_coral --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

Each step pairs a target batch with a source batch:
    loss = NLL(mu, logvar, y_tgt) + ALPHA_R2 * (1 - R2_batch(y_tgt, mu))
           + LAMBDA_CORAL * CORAL(backbone(x_src), backbone(x_tgt))
Early stopping on val NLL (target_val).

Transfer depth (ALIGN_REINIT_LAYERS): the backbone and ``mu_head`` start from the baseline, then
the last k backbone layers (and ``mu_head`` when k > 0) are re-initialised, so only the first
NUM_LAYERS-k layers carry source knowledge.  Where a metric depends on sizing differently in the
two processes, the top layers encode the source mapping and full transfer (k = 0) is negative
transfer for that metric; where the processes agree, k = 0 helps most.  ``auto`` trains both
ends, k = 0 and k = NUM_LAYERS-1, and keeps the one with the lower val NLL (never test).

With REFIT = "train+val" the kept depth is then retrained from its start on train + val rows for its best
epoch count (``training.refit``).

With WARM_START_FROM (a results folder) it starts from that folder's align checkpoint instead, at its
transfer depth, with no layer re-initialised (python -m active: the previous round's model).

Needs ``results/{OPAMP}_baseline_model.pth`` (``python -m training.train``).
Writes ``results/{OPAMP}_align_hetero_lambda{LAMBDA_CORAL:.3f}.pth``.
"""
import copy

import torch

from core.cli import StageCLI, run_main
from core.outputs import results_lock
from core.settings import check_weights, layer_count
from models import AlignHeteroMLP, MLP
from models.model_utils import load_backbone_from_trained_mlp
from training.cli import add_training_flags, epoch_printer
from training.loop import PairedBatches, TensorBatches, fit
from training.objectives import make_align_loss, val_hetero
from training.refit import refit_extra, refitting, train_and_val
from training.stage import (epochs_and_batches, finish_stage, load_parent, load_warm_start, require_parent, start_stage,
                            tensors, warm_start_path)


def parse_args(argv=None):
    cli = StageCLI("training.train_align_coral", __doc__)
    add_training_flags(cli)
    cli.flag("--lambda-coral", "LAMBDA_CORAL", "weight of the CORAL term (>= 0)")
    cli.flag("--alpha-r2", "ALPHA_R2", "weight of (1 - batch R^2) (>= 0)")
    cli.flag("--reinit-layers", "ALIGN_REINIT_LAYERS",
             "last backbone layers re-initialised before training: 0..NUM_LAYERS-1, or auto")
    return cli.parse(argv)


def preflight(settings: dict) -> None:
    """The stage's own settings checks, run before any data is read (the pipeline runs every stage's first)."""
    check_weights(settings, "LAMBDA_CORAL", "ALPHA_R2")
    reinit_candidates(settings["ALIGN_REINIT_LAYERS"], settings["NUM_LAYERS"])   # the baseline has NUM_LAYERS


def reinit_candidates(value, num_layers: int) -> list:
    """``ALIGN_REINIT_LAYERS`` -> the transfer depths to train: ``[k]`` or ``[0, num_layers-1]`` for auto."""
    k = layer_count(value, key="ALIGN_REINIT_LAYERS", keyword="auto", lo=0, hi=num_layers - 1,
                    why="NUM_LAYERS-1; at least the first layer is transferred",
                    example="--reinit-layers 0 (transfer every layer, as in the seed)")
    if k is None:
        return [0] if num_layers == 1 else [0, num_layers - 1]
    return [k]


def build_model(baseline: MLP, reinit_layers: int, device) -> AlignHeteroMLP:
    """Backbone and mu_head from the baseline; the last ``reinit_layers`` layers (+ mu_head) fresh."""
    model = AlignHeteroMLP(**baseline.constructor_kwargs())  # same backbone shape as the baseline
    load_backbone_from_trained_mlp(baseline, model)
    if reinit_layers > 0:
        for block in list(model.backbone)[-reinit_layers:]:
            block.linear.reset_parameters()
        model.mu_head.reset_parameters()  # it reads the re-initialised features
    return model.to(device)


def main(argv=None):
    args, settings = parse_args(argv)
    preflight(settings)
    require_parent(settings, "baseline")
    warm_start_path(settings, "align_hetero")   # a missing warm-start checkpoint is refused before any work
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings)


def run(args, settings):
    device, data, t0 = start_stage(settings, "align_hetero", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    baseline, _, parent = load_parent(settings, data, "baseline", expect_class=MLP, device=device)
    depths = reinit_candidates(settings["ALIGN_REINIT_LAYERS"], baseline.num_layers)
    warm = load_warm_start(settings, data, "align_hetero", expect_class=AlignHeteroMLP, device=device)
    if warm:   # the previous model at its own transfer depth; nothing re-initialised
        depths = [int((warm[1].get("extra") or {}).get("reinit_layers", depths[0]))]
        parent = warm[2]
    x_val, y_val = tensors(data, "target_val", device)
    x_src, y_src = tensors(data, "source", device)

    def train(model, rows: dict, epochs: int, evaluate, k: int):
        x_tr, y_tr = tensors(rows, "target_train", device)
        target = TensorBatches(x_tr, y_tr, batch_size=settings["BATCH_SIZE"], seed=settings["SEED"],
                               max_batches=max_batches, min_batches=settings["MIN_BATCHES_PER_EPOCH"])
        loader = PairedBatches(target, (x_src, y_src), seed=settings["SEED"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings["LEARNING_RATE"],
                                      weight_decay=settings["WEIGHT_DECAY"])
        return fit(model, loader=loader, optimizer=optimizer,
                   loss_fn=make_align_loss(settings["ALPHA_R2"], settings["LAMBDA_CORAL"]),
                   evaluate=evaluate, monitor="nll", epochs=epochs, patience=settings["PATIENCE"],
                   desc=f"align+coral k={k}", progress=not args.quiet,
                   on_epoch=None if args.quiet or evaluate is None else
                   epoch_printer("Train loss", "Val NLL", val_key="val_nll"))

    tried, starts = {}, {}
    for k in depths:
        torch.manual_seed(settings["SEED"] + k)  # each candidate's fresh layers / dropout: seeded, independent
        model = warm[0] if warm else build_model(baseline, k, device)
        starts[k] = copy.deepcopy(model.state_dict())   # a refit starts where its run started
        result = train(model, data, epochs, val_hetero(x_val, y_val, alpha_r2=settings["ALPHA_R2"]), k)
        tried[k] = (model, result)
        print(f"[align_hetero] reinit_layers={k}: best val NLL {result.best_value:.5g} "
              f"(epoch {result.best_epoch}/{len(result.history)})")
    chosen = min(tried, key=lambda k: tried[k][1].best_value)
    model, result = tried[chosen]
    if len(tried) > 1:
        print(f"[align_hetero] kept reinit_layers={chosen} (lower val NLL)")
    fits, refit = {"align_hetero": result}, {}
    if refitting(settings):
        plan = {"align_hetero": result.best_epoch}
        refit = refit_extra("align_hetero", model, data, device, plan)
        model = AlignHeteroMLP(**model.constructor_kwargs()).to(device)
        model.load_state_dict(starts[chosen])
        torch.manual_seed(settings["SEED"] + chosen)   # the same dropout stream as the run it repeats
        fits["refit"] = train(model, train_and_val(data), result.best_epoch, None, chosen)
    return finish_stage(settings, data, model, stage="align_hetero", kind="align_hetero", device=device,
                        fit_results=fits, monitor="nll", val_value=result.best_value,
                        t0=t0, parent=parent, dry_run=args.dry_run,
                        extra={"lambda_coral": settings["LAMBDA_CORAL"], "alpha_r2": settings["ALPHA_R2"],
                               "reinit_layers": chosen, "warm_start": str(warm[2]) if warm else None,
                               "reinit_val_nll": {str(k): r.best_value for k, (_, r) in tried.items()}, **refit})


if __name__ == "__main__":
    run_main(main)
