"""Loss functions of the toolkit (formulas from the seed README, "模型与损失 / 损失函数").

All functions are pure: they read their tensor arguments and return a tensor, nothing else.
Shapes are validated instead of broadcast: a ``(N,)`` target against an ``(N, 1)`` prediction
would otherwise broadcast to ``(N, N)`` and silently train on the wrong thing.  Bad input
raises ``core.errors.ToolkitError`` (a ``ValueError``) saying what was expected, what was got
and how to fix it.

Argument order follows the seed where it has a signature (``batch_r2(y_true, y_pred)`` is
target first, as in the seed and in scikit-learn); otherwise prediction first, target second.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Mapping

import torch
from torch import nn

from core.errors import ToolkitError

__all__ = ["heteroscedastic_nll", "batch_r2", "varying_r2", "coral_loss", "l2sp_penalty"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------- validation helpers
def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise ToolkitError(f"{name} must be a torch.Tensor, got {type(t).__name__}. "
                           f"Convert with torch.as_tensor({name}, dtype=torch.float32).")
    if not t.is_floating_point():
        raise ToolkitError(f"{name} must be a floating-point tensor, got dtype {t.dtype}. "
                           f"Convert with {name}.float().")
    if t.numel() == 0:
        raise ToolkitError(f"{name} is empty (shape {tuple(t.shape)}); a loss needs at least one row.")


def _check_same_shape(ref_name: str, ref: torch.Tensor, name: str, t: torch.Tensor) -> None:
    if t.shape == ref.shape:
        return
    hint = ""
    if t.dim() == 1 and ref.dim() == 2 and ref.shape[1] == 1 and t.shape[0] == ref.shape[0]:
        hint = f" Fix: {name}.reshape(-1, 1) (a (N,) vs (N, 1) pair would broadcast to (N, N))."
    elif ref.dim() == 1 and t.dim() == 2 and t.shape[1] == 1 and t.shape[0] == ref.shape[0]:
        hint = f" Fix: {name}.reshape(-1) (a (N, 1) vs (N,) pair would broadcast to (N, N))."
    else:
        hint = f" Fix: pass {name} with the same shape as {ref_name}; no broadcasting is done."
    raise ToolkitError(f"{name} has shape {tuple(t.shape)} but {ref_name} has shape "
                       f"{tuple(ref.shape)}; expected identical shapes.{hint}")


# ---------------------------------------------------------------- heteroscedastic NLL
def heteroscedastic_nll(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """Gaussian negative log-likelihood with a predicted log-variance (seed: heteroscedastic_nll).

    Elementwise, with the constant ``log(2*pi)/2`` dropped::

        nll = (y - mu)**2 / (2 * exp(logvar)) + logvar / 2

    ``reduction``: ``'mean'`` (default; mean over every element), ``'sum'``, or ``'none'``
    (elementwise tensor of the input shape).  ``mu``, ``logvar`` and ``y`` must have identical
    shapes, typically ``(N, D)``.  Equals ``F.gaussian_nll_loss(mu, y, exp(logvar), full=False)``
    up to that function's variance clamp ``eps``.
    """
    for name, t in (("mu", mu), ("logvar", logvar), ("y", y)):
        _check_tensor(name, t)
    _check_same_shape("mu", mu, "logvar", logvar)
    _check_same_shape("mu", mu, "y", y)
    if reduction not in _REDUCTIONS:
        raise ToolkitError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    # exp(-logvar) rather than 1/exp(logvar): one op, no overflow for large negative logvar.
    nll = 0.5 * (y - mu).pow(2) * torch.exp(-logvar) + 0.5 * logvar   # same shape as mu
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    return nll


# ---------------------------------------------------------------- batch R^2
def batch_r2(y_true: torch.Tensor, y_pred: torch.Tensor, eps: float = 1e-8, *,
             reduction: str = "mean") -> torch.Tensor:
    """Coefficient of determination per output column (seed: batch_r2, "R² 决定系数")::

        R2_j = 1 - SSE_j / (SST_j + eps)
        SSE_j = sum_i (y_ij - yhat_ij)**2,   SST_j = sum_i (y_ij - mean_i(y_ij))**2

    Note the seed's argument order: target first, prediction second.  Inputs are ``(N, D)``
    (or ``(N,)`` = one column) with identical shapes and ``N >= 2`` (one row has no variance).
    ``eps`` only guards a constant column (SST = 0) against division by zero; it is why this
    differs from ``sklearn.metrics.r2_score`` for constant columns (sklearn returns 1 or 0).

    ``reduction='mean'`` (default) returns the mean over columns, a scalar (training minimises
    ``ALPHA_R2 * (1 - batch_r2(y, mu))``); ``'none'`` returns the ``(D,)`` per-column tensor.
    """
    _check_tensor("y_true", y_true)
    _check_tensor("y_pred", y_pred)
    _check_same_shape("y_true", y_true, "y_pred", y_pred)
    if y_true.dim() not in (1, 2):
        raise ToolkitError(f"y_true must be (N,) or (N, D), got shape {tuple(y_true.shape)}. "
                           f"Fix: reshape to (N, D) rows x output columns.")
    if y_true.shape[0] < 2:
        raise ToolkitError(f"batch_r2 needs at least 2 rows, got {y_true.shape[0]} (R² of one row "
                           f"is undefined). Fix: use DataLoader(drop_last=True) or skip tiny batches.")
    if reduction not in ("mean", "none"):
        raise ToolkitError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    if not eps >= 0:
        raise ToolkitError(f"eps must be >= 0, got {eps!r}.")
    y = y_true if y_true.dim() == 2 else y_true.unsqueeze(1)        # (N, D)
    yhat = y_pred if y_pred.dim() == 2 else y_pred.unsqueeze(1)     # (N, D)
    sse = (y - yhat).pow(2).sum(dim=0)                              # (D,)
    sst = (y - y.mean(dim=0, keepdim=True)).pow(2).sum(dim=0)       # (D,)
    r2 = 1.0 - sse / (sst + eps)                                    # (D,)
    return r2.mean() if reduction == "mean" else r2


def varying_r2(y_true: torch.Tensor, y_pred: torch.Tensor, *, rel_tol: float = 1e-6) -> torch.Tensor:
    """``batch_r2`` averaged over the columns that vary in ``y_true``: mean_j R2_j over j with
    SST_j > rel_tol * N (1 when none does).

    What training minimises as ``ALPHA_R2 * (1 - R2)``.  R2 of a column that is constant in the batch (a metric
    with one value in every target row, standardised to one number) is undefined; the seed's ``eps`` makes it
    ``1 - SSE / 1e-8``, a loss of order 1e8 that swamps every other metric's gradient.  ``rel_tol``: in
    standardised units a varying column has SST of order N, float32 round-off on a constant one ~1e-14 N."""
    r2 = batch_r2(y_true, y_pred, reduction="none")                             # (D,), checks the inputs
    y = y_true if y_true.dim() == 2 else y_true.unsqueeze(1)
    sst = (y - y.mean(dim=0, keepdim=True)).pow(2).sum(dim=0)
    varying = sst > rel_tol * y.shape[0]
    return r2[varying].mean() if bool(varying.any()) else torch.ones((), dtype=r2.dtype, device=r2.device)


# ---------------------------------------------------------------- CORAL
def _covariance(feat: torch.Tensor, unbiased: bool, eps: float) -> torch.Tensor:
    n = feat.shape[0]
    centred = feat - feat.mean(dim=0, keepdim=True)                 # (n, d)
    denom = max(float(n - 1 if unbiased else n), eps)
    return centred.T @ centred / denom                              # (d, d)


def coral_loss(feat_a: torch.Tensor, feat_b: torch.Tensor, unbiased: bool = True,
               eps: float = 1e-6) -> torch.Tensor:
    """Deep CORAL distance between two feature batches (seed: coral_loss; Sun & Saenko 2016)::

        loss = || C_a - C_b ||_F**2 / (4 * d**2)
        C = Xc^T Xc / (n - 1)   (unbiased=True)   or   Xc^T Xc / n   (unbiased=False)

    where ``Xc`` is the batch minus its column means and ``d`` the feature width.  ``feat_a``
    is ``(n_a, d)``, ``feat_b`` is ``(n_b, d)``: the widths must match, the batch sizes may differ.

    Each batch needs at least 2 rows: a single row has no covariance and would silently pull
    the other domain's covariance towards zero, so it raises instead (use ``drop_last=True``).
    ``eps`` is a floor on the normaliser (``max(n - 1, eps)``); with the 2-row rule it never
    changes a valid result and is kept so the seed's positional calls still work.
    """
    _check_tensor("feat_a", feat_a)
    _check_tensor("feat_b", feat_b)
    for name, t in (("feat_a", feat_a), ("feat_b", feat_b)):
        if t.dim() != 2:
            raise ToolkitError(f"{name} must be (N, d) features, got shape {tuple(t.shape)}. "
                               f"Fix: pass the backbone output, e.g. feat.reshape(len(feat), -1).")
        if t.shape[0] < 2:
            raise ToolkitError(f"{name} has {t.shape[0]} row(s); CORAL needs >= 2 rows per domain "
                               f"to estimate a covariance. Fix: DataLoader(drop_last=True) or a "
                               f"batch size >= 2.")
    if feat_a.shape[1] != feat_b.shape[1]:
        raise ToolkitError(f"feat_a and feat_b must have the same feature width d: got "
                           f"{tuple(feat_a.shape)} vs {tuple(feat_b.shape)}. Fix: take both from "
                           f"the same backbone layer.")
    if not eps > 0:
        raise ToolkitError(f"eps must be > 0, got {eps!r}.")
    d = feat_a.shape[1]
    cov_a = _covariance(feat_a, unbiased, eps)                      # (d, d)
    cov_b = _covariance(feat_b, unbiased, eps)                      # (d, d)
    return (cov_a - cov_b).pow(2).sum() / (4.0 * d * d)


# ---------------------------------------------------------------- L2-SP
def l2sp_penalty(model: nn.Module, pretrained_state: Mapping[str, torch.Tensor], *,
                 param_names: Iterable[str] | None = None) -> torch.Tensor:
    """L2-SP: squared distance of parameters to their pretrained values (Li et al. 2018)::

        penalty = sum_{name in names} || w[name] - w0[name] ||_2**2

    ``names`` are ``param_names`` (state-dict style names such as
    ``"backbone.blocks.5.linear.weight"``) or, when ``None``, every parameter with
    ``requires_grad=True``.  ``pretrained_state`` maps those names to the starting tensors
    (e.g. ``{k: v.clone() for k, v in model.state_dict().items()}`` taken before fine-tuning);
    it is treated as a constant.  The caller multiplies by its weight (``L2SP_LAMBDA``).
    Returns a scalar tensor (0 when there are no names).
    """
    if not isinstance(model, nn.Module):
        raise ToolkitError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(pretrained_state, Mapping):
        raise ToolkitError(f"pretrained_state must be a dict name -> tensor (a state_dict), got "
                           f"{type(pretrained_state).__name__}.")
    params = dict(model.named_parameters())
    if param_names is None:
        names = [n for n, p in params.items() if p.requires_grad]
    else:
        if isinstance(param_names, str):
            raise ToolkitError(f"param_names must be a list of names, got the string "
                               f"{param_names!r}. Fix: param_names=[{param_names!r}].")
        names = list(param_names)
        unknown = [n for n in names if n not in params]
        if unknown:
            hints = "".join(f" ({u!r}: did you mean {close[0]!r}?)" for u in unknown
                            for close in [difflib.get_close_matches(u, list(params), n=1)] if close)
            raise ToolkitError(f"param_names not found among the model's parameters: {unknown}."
                               f"{hints} Names look like {list(params)[:3]}.")
    missing = [n for n in names if n not in pretrained_state]
    if missing:
        raise ToolkitError(f"pretrained_state has no entry for {missing}. Fix: take it from the "
                           f"same architecture (model.state_dict() before fine-tuning), or pass "
                           f"param_names to restrict the penalty.")
    total = None
    for name in names:
        w = params[name]
        w0 = pretrained_state[name]
        if not isinstance(w0, torch.Tensor) or w0.shape != w.shape:
            got = tuple(w0.shape) if isinstance(w0, torch.Tensor) else type(w0).__name__
            raise ToolkitError(f"pretrained_state[{name!r}] has shape {got} but the model's "
                               f"parameter has shape {tuple(w.shape)}; expected identical shapes.")
        term = (w - w0.detach().to(device=w.device, dtype=w.dtype)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        ref = next(iter(params.values()), None)
        return torch.zeros((), device=ref.device if ref is not None else None,
                           dtype=ref.dtype if ref is not None else None)
    return total
