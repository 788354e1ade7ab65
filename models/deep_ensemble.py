"""DeepEnsemble: several networks of one architecture, trained from different seeds, read as one model.

It predicts the equally weighted Gaussian mixture of its networks (Lakshminarayanan et al. 2017):

    mean = (1/K) sum_k mu_k
    var  = (1/K) sum_k (sigma_k^2 + mu_k^2) - mean^2        (their own variances + their disagreement)

so the rest of the toolkit (the ensemble's fusion, inverse design, the MDN's teacher) reads it through
``mean_logvar`` like any single network.  A point-model architecture (no variance head) gives the
disagreement alone as its variance.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ToolkitError
from models.align_hetero import AlignHeteroMLP
from models.backbone import LOGVAR_MAX, LOGVAR_MIN
from models.dual_head import DualHeadMLP
from models.mlp import MLP

NETWORKS = {"MLP": MLP, "AlignHeteroMLP": AlignHeteroMLP, "DualHeadMLP": DualHeadMLP}   # what it can hold


class DeepEnsemble(nn.Module):
    """``size`` networks ``member_class(**member_kwargs)``; ``nets`` holds them (an ``nn.ModuleList``)."""

    def __init__(self, member_class: str, member_kwargs: dict, size: int):
        super().__init__()
        if member_class not in NETWORKS:
            raise ToolkitError(f"DeepEnsemble member_class must be a network class, one of {sorted(NETWORKS)}, got "
                               f"{member_class!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ToolkitError(f"DeepEnsemble size must be an integer >= 1, got {size!r}.")
        self.member_class, self.member_kwargs, self.size = member_class, dict(member_kwargs), size
        self.nets = nn.ModuleList(NETWORKS[member_class](**member_kwargs) for _ in range(size))
        self.input_dim, self.output_dim = self.nets[0].input_dim, self.nets[0].output_dim

    @classmethod
    def of(cls, nets) -> "DeepEnsemble":
        """A DeepEnsemble holding (copies of the weights of) the trained ``nets``."""
        nets = list(nets)
        model = cls(type(nets[0]).__name__, nets[0].constructor_kwargs(), len(nets))
        for mine, theirs in zip(model.nets, nets):
            mine.load_state_dict(theirs.state_dict())
        return model.to(next(nets[0].parameters()).device)

    def constructor_kwargs(self) -> dict:
        return {"member_class": self.member_class, "member_kwargs": dict(self.member_kwargs), "size": self.size}

    @property
    def has_variance(self) -> bool:
        return True   # the networks' disagreement is a variance even when each one is a point model

    def mean_logvar(self, x: torch.Tensor):
        """The mixture's ``(mean, logvar)``, (N, out) each."""
        means, second = [], []
        for net in self.nets:
            mu, logvar = net.mean_logvar(x)                             # (N, out), (N, out) or None
            means.append(mu)
            second.append(mu ** 2 + (0.0 if logvar is None else logvar.exp()))
        mean = torch.stack(means).mean(0)                               # (N, out)
        var = (torch.stack(second).mean(0) - mean ** 2).clamp_min(torch.exp(torch.tensor(LOGVAR_MIN)))
        return mean, var.log().clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(self, x: torch.Tensor):
        """``(mean, logvar, None)``: the (mu, logvar, features) shape the training objectives read."""
        mean, logvar = self.mean_logvar(x)
        return mean, logvar, None
