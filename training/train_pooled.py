"""Pooled member: one MLP trained on source and target rows together, with a domain flag.

    python -m training.train_pooled
    python -m training.train_pooled --dry-run --data-dir /tmp/tiny --results-dir /tmp/res

Source and target_train rows are fitted together with MSE from a fresh initialisation.
``POOLED_SAMPLING`` says how they meet in a batch:

* ``"shuffled"`` (default): source and target rows shuffled together in batches of
  ``BASELINE_BATCH_SIZE`` (each row weighs the same, so the target's share of the loss is its
  share of the rows: 0.5 % with 50 target rows among 10,000 source rows);
* ``"balanced"``: every step is a target batch of ``BATCH_SIZE`` rows (cycled, at least
  ``MIN_BATCHES_PER_EPOCH`` steps an epoch, like the target-only stages) plus a source batch of the
  same size drawn without replacement, so both processes carry equal total weight in the loss.

Measured (two_stage_opamp, seed 0, log-space R^2 on target_test, 100 / all target rows):
shuffled 0.893 / 0.922, balanced 0.874 / 0.910, at a quarter of the time (50 s vs 190 s).
Equal weighting sees the source rows ~10 times before early stopping instead of ~150 times,
and the shared function is what carries the transfer here.

Target rows get a learned offset ``s`` (H,) on the first layer's pre-activation:
    h1 = act(W1 x + b1 + s * is_target)
which is exactly an extra 0/1 input column "is target" with weights ``s``, initialised like the
other input weights (uniform, +-1/sqrt(fan_in)).  The network shares everything it can between
the processes and spends ``s`` (and the nonlinearity after it) on what differs.  For the target
process ``s`` is a constant, so it is folded into the first bias (``b1 + s``) and the saved model
is a plain ``MLP`` of x, usable by the ensemble and inverse design like any member.  Early
stopping on target_val MSE.  Needs no baseline.

Why the flag marks the target rows (measured, two_stage_opamp, 50 target rows, seed 0, mean
log-space R^2 on target_test; docs/RESULTS.md): an earlier version put a zero-initialised
offset on the *source* rows and scored 0.215.  The shared weights fit the 10,000 source rows, so
the source rows' gradient on their offset is ~0 and the domains never separate; the 50 target
rows cannot move the shared function.  On the target rows the residual is large, so their
offset grows at once: 0.601.  (Starting from the baseline instead was tried: it stopped no
sooner, and with all target rows it stayed near the source solution.)

Its network has its own size and rate (``POOLED_HIDDEN_DIM`` x ``POOLED_NUM_LAYERS``, ``POOLED_LEARNING_RATE``;
this stage's ``--hidden-dim --num-layers --lr`` set them): every epoch passes all ~10,000 source rows, so at the
other members' 6 x 512 and 3e-4 it took 130-420 s a harness cell, most of the cell.  4 x 256 at 1e-3 took about a
sixth of that, and the ensemble's mean log-space R^2 stayed within 0.005 (3 seeds, n = 50 and all rows, three
circuits; docs/DECISIONS.md).

Writes ``results/{OPAMP}_pooled_flag.pth``.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.settings import setting_choice
from core.outputs import results_lock
from models import MLP
from training.cli import add_training_flags, epoch_printer
from training.loop import PairedBatches, TensorBatches, fit
from training.stage import epochs_and_batches, finish_stage, model_kwargs, start_stage, tensors


def parse_args(argv=None):
    cli = StageCLI("training.train_pooled", __doc__)
    add_training_flags(cli, {"--lr": "POOLED_LEARNING_RATE", "--hidden-dim": "POOLED_HIDDEN_DIM",
                             "--num-layers": "POOLED_NUM_LAYERS"})   # the network this stage trains
    return cli.parse(argv)


def forward_flagged(model: MLP, x: torch.Tensor, flag: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``offset`` (H,) added to the first pre-activation of rows where ``flag`` is 1."""
    blocks = list(model.backbone)
    h = blocks[0].linear(x) + flag.unsqueeze(1) * offset                 # (N, H)
    h = blocks[0].dropout(blocks[0].act(h))
    for block in blocks[1:]:
        h = block(h)
    return model.head(h)                                                 # (N, M)


class FlaggedMLP(nn.Module):
    """An MLP plus the target offset ``s``; one module, so early stopping keeps the best ``s`` too."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.mlp = mlp
        first = list(mlp.backbone)[0].linear
        bound = 1.0 / (first.in_features + 1) ** 0.5        # nn.Linear's init for one more input column
        self.target_offset = nn.Parameter(torch.empty(mlp.hidden_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
        return forward_flagged(self.mlp, x, is_target, self.target_offset)

    def target_model(self) -> MLP:
        """The target process's MLP of x: ``s`` folded into the first layer's bias."""
        out = copy.deepcopy(self.mlp)
        with torch.no_grad():
            list(out.backbone)[0].linear.bias += self.target_offset
        return out


SAMPLINGS = ("balanced", "shuffled")


def pooled_batches(data: dict, *, sampling: str, batch_size: int, seed: int, device="cpu", max_batches=None,
                   min_batches: int = 1):
    """Batches of ``(x, y, is_target)`` over source + target_train rows (see the module docstring)."""
    x_src, y_src = tensors(data, "source", device)
    x_tr, y_tr = tensors(data, "target_train", device)
    if sampling == "balanced":
        paired = PairedBatches(TensorBatches(x_tr, y_tr, batch_size=batch_size, seed=seed, max_batches=max_batches,
                                             min_batches=min_batches), (x_src, y_src), seed=seed)
        ones, zeros = torch.ones(batch_size, device=device), torch.zeros(batch_size, device=device)
        return _Balanced(paired, ones, zeros)
    if sampling == "shuffled":
        is_target = torch.cat([torch.zeros(len(x_src)), torch.ones(len(x_tr))]).to(device)
        return TensorBatches(torch.cat([x_src, x_tr]), torch.cat([y_src, y_tr]), is_target, batch_size=batch_size,
                             seed=seed, max_batches=max_batches)
    raise ToolkitError(f"POOLED_SAMPLING must be one of {SAMPLINGS}, got {sampling!r}.")


class _Balanced:
    """One batch = a target batch and a source batch of the same size, concatenated with their 0/1 flag."""

    def __init__(self, paired: PairedBatches, ones: torch.Tensor, zeros: torch.Tensor):
        self.paired, self.ones, self.zeros = paired, ones, zeros

    def __len__(self):
        return len(self.paired)

    def __iter__(self):
        for (xt, yt), (xs, ys) in self.paired:
            yield torch.cat([xt, xs]), torch.cat([yt, ys]), torch.cat([self.ones[:len(xt)], self.zeros[:len(xs)]])


def fit_pooled(model: MLP, data: dict, *, lr: float, weight_decay: float, batch_size: int, epochs: int,
               patience: int, seed: int, sampling: str = "shuffled", min_batches: int = 1, device="cpu",
               max_batches=None, progress: bool = False, on_epoch=None):
    """Train ``model`` (an MLP of x) on ``data`` (a ``get_data_and_scalers`` dict) pooled with a target
    offset; returns ``(FitResult, the target MLP with the offset folded in, offset norm)``.  ``model``
    itself is trained in place but holds no offset: predict for the target with the returned MLP.
    ``batch_size``: target rows per step when ``sampling="balanced"``, rows per step when "shuffled"."""
    net = FlaggedMLP(model).to(device)
    x_val, y_val = tensors(data, "target_val", device)
    ones_val = torch.ones(len(x_val), device=device)
    loader = pooled_batches(data, sampling=sampling, batch_size=batch_size, seed=seed, device=device,
                            max_batches=max_batches, min_batches=min_batches)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)

    def loss_fn(m, batch):
        x, y, flag = batch
        return F.mse_loss(m(x, flag), y), {}

    result = fit(net, loader=loader, optimizer=optimizer, loss_fn=loss_fn,
                 evaluate=lambda m: {"mse": F.mse_loss(m(x_val, ones_val), y_val).item()}, monitor="mse",
                 epochs=epochs, patience=patience, desc="pooled", progress=progress, on_epoch=on_epoch)
    return result, net.target_model().eval(), float(net.target_offset.detach().norm())


def preflight(settings: dict) -> str:
    """The stage's own settings checks, run before any data is read (the pipeline runs every stage's first);
    returns POOLED_SAMPLING."""
    return setting_choice(settings, "POOLED_SAMPLING", SAMPLINGS, default="shuffled",
                          fix="--set POOLED_SAMPLING=balanced (equal weight per process) or shuffled.")


def main(argv=None):
    args, settings = parse_args(argv)
    preflight(settings)
    with results_lock(settings["RESULTS_DIR"]):   # one run per results folder (issue 23)
        return run(args, settings)


def run(args, settings):
    device, data, t0 = start_stage(settings, "pooled", dry_run=args.dry_run)
    epochs, max_batches = epochs_and_batches(settings, args.dry_run)
    sampling = preflight(settings)
    # its own size and rate (POOLED_*): it fits every source row each epoch, so HIDDEN_DIM x NUM_LAYERS would cost it
    # several times the other members' training for no better ensemble (docs/DECISIONS.md)
    model = MLP(**{**model_kwargs(settings, data), "hidden_dim": settings["POOLED_HIDDEN_DIM"],
                   "num_layers": settings["POOLED_NUM_LAYERS"]}).to(device)
    result, model, offset_norm = fit_pooled(
        model, data, lr=settings["POOLED_LEARNING_RATE"], weight_decay=settings["WEIGHT_DECAY"],
        batch_size=settings["BATCH_SIZE" if sampling == "balanced" else "BASELINE_BATCH_SIZE"],
        sampling=sampling, min_batches=settings["MIN_BATCHES_PER_EPOCH"], epochs=epochs, patience=settings["PATIENCE"],
        seed=settings["SEED"], device=device, max_batches=max_batches, progress=not args.quiet,
        on_epoch=None if args.quiet else epoch_printer("Train MSE", "Val MSE", val_key="val_mse"))
    return finish_stage(settings, data, model, stage="pooled", kind="pooled", device=device,
                        fit_results={"pooled": result}, monitor="mse", val_value=result.best_value, t0=t0,
                        dry_run=args.dry_run,
                        extra={"target_offset_norm": offset_norm, "n_source": len(data["source"][0])})


if __name__ == "__main__":
    run_main(main)
