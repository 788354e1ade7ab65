"""Pooled member: one MLP trained on source and target rows together, with a domain flag.

    python -m training.train_pooled
    python -m training.train_pooled --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

Source and target_train rows are shuffled together (batch ``BASELINE_BATCH_SIZE``) and fitted
with MSE; source rows get a learned offset ``s`` (H,) on the first layer's pre-activation:
    h1 = act(W1 x + b1 + s * is_source)
which is exactly an extra 0/1 input column "is source" with weights ``s``.  The network shares
everything it can between the processes and spends ``s`` (and the nonlinearity after it) on
what differs.  At prediction time the flag is 0, so the saved model is a plain ``MLP`` of x for
the target process, usable by the ensemble and inverse design like any member.  Early stopping
on target_val MSE.  Needs no baseline.  Writes ``results/{OPAMP}_pooled_flag.pth``.

Why a member: in the benchmark harness the pooled MLP peer was the strongest method at
50-400 target rows on 5t_opamp, mostly on cmrr, whose sizing dependence differs between the
processes (``docs/BENCHMARKS.md``); the ensemble weights it per metric on val.
"""
import torch
import torch.nn.functional as F

from core.cli import StageCLI, run_main
from models import MLP
from training.common import (add_training_flags, epoch_printer, epochs_and_batches, finish_stage, model_kwargs,
                             start_stage, tensors)
from training.loop import TensorBatches, fit


def parse_args(argv=None):
    cli = StageCLI("training.train_pooled", __doc__)
    add_training_flags(cli)
    return cli.parse(argv)


def forward_flagged(model: MLP, x: torch.Tensor, is_source: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``offset`` (H,) added to the first pre-activation of rows where ``is_source`` is 1."""
    blocks = list(model.backbone)
    h = blocks[0].linear(x) + is_source.unsqueeze(1) * offset           # (N, H)
    h = blocks[0].dropout(blocks[0].act(h))
    for block in blocks[1:]:
        h = block(h)
    return model.head(h)                                                 # (N, M)


def fit_pooled(model: MLP, data: dict, *, lr: float, weight_decay: float, batch_size: int, epochs: int,
               patience: int, seed: int, device="cpu", max_batches=None, progress: bool = False, on_epoch=None):
    """Train ``model`` (an MLP of x) on ``data`` (a ``get_data_and_scalers`` dict) pooled with a source
    offset; returns ``(FitResult, offset)``."""
    offset = torch.zeros(model.hidden_dim, device=device, requires_grad=True)
    x_src, y_src = tensors(data, "source", device)
    x_tr, y_tr = tensors(data, "target_train", device)
    x_val, y_val = tensors(data, "target_val", device)
    is_source = torch.cat([torch.ones(len(x_src)), torch.zeros(len(x_tr))]).to(device)
    loader = TensorBatches(torch.cat([x_src, x_tr]), torch.cat([y_src, y_tr]), is_source, batch_size=batch_size,
                           seed=seed, max_batches=max_batches)
    optimizer = torch.optim.AdamW([*model.parameters(), offset], lr=lr, weight_decay=weight_decay)

    def loss_fn(m, batch):
        x, y, src = batch
        return F.mse_loss(forward_flagged(m, x, src, offset), y), {}

    result = fit(model, loader=loader, optimizer=optimizer, loss_fn=loss_fn,
                 evaluate=lambda m: {"mse": F.mse_loss(m(x_val), y_val).item()}, monitor="mse",
                 epochs=epochs, patience=patience, desc="pooled", progress=progress, on_epoch=on_epoch)
    return result, offset.detach()


def main(argv=None):
    args, settings = parse_args(argv)
    device, data, t0 = start_stage(settings, "pooled", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    model = MLP(**model_kwargs(settings, data)).to(device)
    result, offset = fit_pooled(
        model, data, lr=settings["LEARNING_RATE"], weight_decay=settings["WEIGHT_DECAY"],
        batch_size=settings["BASELINE_BATCH_SIZE"], epochs=epochs, patience=settings["PATIENCE"],
        seed=settings["SEED"], device=device, max_batches=max_batches, progress=not args.quiet,
        on_epoch=None if args.quiet else epoch_printer("Train MSE", "Val MSE", val_key="val_mse"))
    return finish_stage(settings, data, model, stage="pooled", kind="pooled", device=device,
                        fit_results={"pooled": result}, monitor="mse", val_value=result.best_value, t0=t0,
                        dry_run=args.dry_run,
                        extra={"source_offset_norm": float(offset.norm()), "n_source": len(data["source"][0])})


if __name__ == "__main__":
    run_main(main)
