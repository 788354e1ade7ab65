"""The one training loop shared by every stage (baseline, align+CORAL, target-only, the
three fine-tune phases, the MDN).

A stage supplies
  * ``loss_fn(model, batch) -> (loss, parts)``: the scalar to minimise and a dict of floats
    to log (``batch`` is whatever its loader yields);
  * ``evaluate(model) -> dict``: validation numbers; ``monitor`` names the one early stopping
    minimises.  Validation only ever sees ``target_val``: model selection never looks at
    ``target_test``.

``fit`` runs epochs of :func:`run_epoch`, keeps the best state (deep copy), stops after
``patience`` epochs without improvement, restores the best state and returns the history.
Without ``evaluate`` it trains exactly ``epochs`` epochs and keeps the last state: the refit on
train+val (``training.refit``) repeats a run whose length early stopping already chose.
A non-finite loss stops training with :class:`TrainingDiverged` (a ToolkitError) so the
caller never saves a broken model over a good one.
"""
import copy
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import ToolkitError
from losses import l2sp_penalty


def stderr_is_terminal() -> bool:
    """True when progress bars (written to stderr) reach a terminal, not a file or pipe."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):   # replaced or closed stream
        return False


class TrainingDiverged(ToolkitError):
    """The loss became NaN/inf; nothing was saved."""


class TensorBatches:
    """Mini-batches of aligned tensors, reshuffled each epoch by a seeded generator.

    Cheaper than a DataLoader for data that already sits in memory as tensors.  ``min_batches``:
    an epoch is at least that many batches (further reshuffled passes over the rows), so that
    EPOCHS and PATIENCE mean a similar amount of training whatever the number of rows -- with 50
    target rows and batch 64 an epoch would otherwise be one step, and patience 30 would stop
    training after 30 noisy steps.
    """

    def __init__(self, *tensors, batch_size: int, shuffle: bool = True, seed: int = 0,
                 max_batches: int | None = None, min_batches: int = 1):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors must have the same number of rows, got {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ToolkitError(f"BATCH_SIZE must be >= 1, got {batch_size}.")
        if min_batches < 1:
            raise ToolkitError(f"MIN_BATCHES_PER_EPOCH must be >= 1, got {min_batches}.")
        self.tensors, self.n, self.batch_size, self.shuffle = tensors, n, batch_size, shuffle
        self.max_batches, self.min_batches = max_batches, min_batches
        self.generator = torch.Generator().manual_seed(seed)

    def _per_pass(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _passes(self) -> int:
        return math.ceil(self.min_batches / self._per_pass())

    def __len__(self):
        full = self._per_pass() * self._passes()
        return min(full, self.max_batches) if self.max_batches else full

    def __iter__(self):
        left = len(self)
        for _ in range(self._passes()):
            order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
            for b in range(self._per_pass()):
                if left <= 0:
                    return
                left -= 1
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                if len(idx) < 2 and self.n >= 2:
                    continue  # a 1-row tail has no batch R^2 / covariance; its rows come back next pass
                yield tuple(t[idx] for t in self.tensors)


class PairedBatches:
    """Each step pairs a target batch with a random source batch of the same size.

    The epoch length is set by the (small) target set; the source batches are drawn without
    replacement from a reshuffled permutation and wrap around, so every source row is seen.
    """

    def __init__(self, target: TensorBatches, source_tensors, *, seed: int = 0):
        self.target, self.source = target, source_tensors
        self.generator = torch.Generator().manual_seed(seed + 1)
        self._order, self._pos = None, 0

    def __len__(self):
        return len(self.target)

    def _take(self, k):
        n = len(self.source[0])
        out = []
        while k > 0:
            if self._order is None or self._pos >= n:
                self._order, self._pos = torch.randperm(n, generator=self.generator), 0
            take = self._order[self._pos:self._pos + k]
            self._pos += len(take)
            k -= len(take)
            out.append(take)
        idx = torch.cat(out)
        return tuple(t[idx] for t in self.source)

    def __iter__(self):
        for tgt in self.target:
            yield tgt, self._take(len(tgt[0]))


def run_epoch(model, loader, optimizer, loss_fn, phase: str, pretrained_state=None, *,
              l2sp_lambda: float = 0.0, l2sp_params=None, frozen_modules=()) -> dict:
    """One pass over ``loader``.  ``phase`` is 'train' (backprop + step) or 'val' (no grad).

    With ``pretrained_state`` and ``l2sp_lambda > 0`` the training loss adds
    ``l2sp_lambda * sum ||w - w0||^2`` over ``l2sp_params`` (the parameters that move).
    ``frozen_modules`` stay in eval mode while training (no dropout noise in layers that do
    not learn).  Returns the mean of the loss and of each logged part over batches.
    """
    if phase not in ("train", "val"):
        raise ValueError(f"phase must be 'train' or 'val', got {phase!r}")
    training = phase == "train"
    model.train(training)
    for module in frozen_modules:
        module.eval()
    sums, count = {}, 0
    with torch.set_grad_enabled(training):
        for batch in loader:
            loss, parts = loss_fn(model, batch)
            if pretrained_state is not None and l2sp_lambda > 0:
                reg = l2sp_penalty(model, pretrained_state, param_names=l2sp_params)
                loss = loss + l2sp_lambda * reg
                parts = {**parts, "l2sp": float(reg.detach())}
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"The {phase} loss became {float(loss.detach())} (parts: "
                                       f"{ {k: round(v, 4) for k, v in parts.items()} }). Nothing was saved. "
                                       f"Lower the learning rate or check the data for extreme values.")
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}


class EarlyStopping:
    """The early-stopping rule of :func:`fit`, alone so a saved val curve can be replayed by it
    (``benchmarks.early_stop_whatif``).  A value is a new best when it is below the best by
    more than ``MARGIN``; stop once ``patience`` epochs in a row brought none."""

    MARGIN = 1e-12

    def __init__(self, patience: int):
        self.patience, self.waited = patience, 0
        self.best_value, self.best_epoch = float("inf"), 0

    def update(self, epoch: int, value: float) -> bool:
        """Record one epoch's monitored value; True when it is a new best."""
        if value < self.best_value - self.MARGIN:
            self.best_value, self.best_epoch, self.waited = value, epoch, 0
            return True
        self.waited += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.waited >= self.patience


@dataclass
class FitResult:
    history: list = field(default_factory=list)  # one dict per epoch: train_*, val_*
    best_epoch: int = 0
    best_value: float = float("inf")
    stopped_early: bool = False


def fit(model, *, loader, optimizer, loss_fn, evaluate, monitor: str, epochs: int, patience: int,
        desc: str = "train", pretrained_state=None, l2sp_lambda: float = 0.0, l2sp_params=None,
        progress: bool = True, on_epoch=None, frozen_modules=()) -> FitResult:
    """Train with early stopping on ``evaluate(model)[monitor]`` (lower is better).

    ``evaluate=None``: no validation; exactly ``epochs`` epochs, the last state kept (``best_epoch`` =
    ``epochs``, ``best_value`` NaN).  ``on_epoch(row)`` is called with each epoch's history row (e.g. to
    print a log line).
    """
    if epochs < 1:
        raise ToolkitError(f"EPOCHS must be >= 1, got {epochs}. Example: --epochs 50")
    if patience < 1:
        raise ToolkitError(f"PATIENCE must be >= 1, got {patience}.")
    if evaluate is None:
        patience = epochs + 1   # nothing to stop on: every epoch counts as a new best
    result, stopper = FitResult(), EarlyStopping(patience)
    best_state = copy.deepcopy(model.state_dict()) if evaluate is not None else None   # fixed epochs: the last state
    # a bar only on a terminal: redirected to a file, every refresh would be a carriage-return fragment
    # in the log; there the per-epoch lines of ``on_epoch`` are the progress
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress or not stderr_is_terminal(), leave=False,
               dynamic_ncols=True)
    for epoch in bar:
        train = run_epoch(model, loader, optimizer, loss_fn, "train", pretrained_state,
                          l2sp_lambda=l2sp_lambda, l2sp_params=l2sp_params, frozen_modules=frozen_modules)
        model.eval()
        with torch.no_grad():
            val = evaluate(model) if evaluate is not None else {monitor: -float(epoch)}
        value = float(val[monitor])
        if not np.isfinite(value):
            raise TrainingDiverged(f"Validation {monitor} became {value} at epoch {epoch}. Nothing was saved. "
                                   f"Lower the learning rate.")
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()},
               **({f"val_{k}": float(v) for k, v in val.items()} if evaluate is not None else {})}
        result.history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if stopper.update(epoch, value):
            result.best_value, result.best_epoch = stopper.best_value, stopper.best_epoch
            if best_state is not None:
                best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(train=f"{train['loss']:.4f}", **({monitor: f"{value:.4f}"} if evaluate is not None else {}),
                        best=result.best_epoch)
        if stopper.should_stop:
            result.stopped_early = True
            break
    bar.close()
    if best_state is None:
        result.best_value = float("nan")
    else:
        model.load_state_dict(best_state)
    return result
