"""One way to read any of our models: model-space ``(mean, variance)`` for the target process.

Every model class has ``mean_logvar(x) -> (mean, logvar or None)`` (AlignHeteroMLP: mu, logvar;
DualHeadMLP: head B, logvar_B or None; MLP: its output, None) and ``has_variance``; these two
helpers read them.  Variance None marks a point model.  Differentiable; the caller chooses
train/eval mode and grad.
"""
import torch


def has_variance(model) -> bool:
    """Whether ``model`` predicts its own variance (else it is a point model)."""
    return bool(model.has_variance)


def mean_and_variance(model, x: torch.Tensor):
    """``(mean, var)``, (N, M) each; ``var`` is None for a point model."""
    mean, logvar = model.mean_logvar(x)                                 # (N, M), (N, M) or None
    return mean, None if logvar is None else logvar.exp()
