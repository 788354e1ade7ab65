"""One way to read any of our models: model-space ``(mean, variance)`` for the target process.

    AlignHeteroMLP   mu, exp(logvar)
    DualHeadMLP      head B, exp(logvar_B) (None without the ``logvar_B`` head)
    MLP              its output, None
Variance None marks a point model.  Differentiable; the caller chooses train/eval mode and grad.
"""
import torch

from models.align_hetero import AlignHeteroMLP
from models.dual_head import DualHeadMLP


def has_variance(model) -> bool:
    """Whether ``model`` predicts its own variance (else it is a point model)."""
    if isinstance(model, DualHeadMLP):
        return model.has_variance
    return isinstance(model, AlignHeteroMLP)


def mean_and_variance(model, x: torch.Tensor):
    """``(mean, var)``, (N, M) each; ``var`` is None for a point model."""
    if isinstance(model, AlignHeteroMLP):
        mu, logvar, _ = model(x)                                        # (N, M), (N, M), (N, H)
        return mu, logvar.exp()
    if isinstance(model, DualHeadMLP):
        mu, logvar = model.predict_B(x)
        return mu, None if logvar is None else logvar.exp()
    return model(x), None
