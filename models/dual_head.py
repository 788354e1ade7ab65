"""DualHeadMLP: one backbone, one head per domain (seed: ``model(x, domain='B')``).

``head_A`` keeps the source-domain mapping, ``head_B`` is fine-tuned on the target domain
(phases: head_B.bias -> head_B weights + L2-SP -> backbone layers + head_B).

``logvar_head=True`` (not in the seed) adds ``logvar_B``, a per-metric log-variance head for
domain B trained by fine-tuning with the heteroscedastic NLL (in phase 3, or alone after an MSE
phase 3; see fine_tune.fine_tune): the point prediction is
still ``model(x, domain='B')``, and ``predict_B(x)`` returns ``(mu, logvar)``.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ToolkitError
from models.backbone import LOGVAR_MAX, LOGVAR_MIN, BackboneModel

DOMAINS = ("A", "B")


class DualHeadMLP(BackboneModel):
    """``backbone`` + ``head_A`` + ``head_B`` (Linear hidden -> out); forward(x, domain='B').

    With ``logvar_head=True`` also ``logvar_B`` (Linear hidden -> out), clamped to
    ``[LOGVAR_MIN, LOGVAR_MAX]`` like AlignHeteroMLP's ``logvar_head``.
    """

    def __init__(self, input_dim: int, output_dim: int, *, hidden_dim: int = 512,
                 num_layers: int = 6, dropout: float = 0.1, activation: str = "silu",
                 logvar_head: bool = False):
        super().__init__(input_dim, output_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                         dropout=dropout, activation=activation)
        if not isinstance(logvar_head, bool):
            raise ToolkitError(f"logvar_head must be True or False, got {logvar_head!r}.")
        self.head_A = nn.Linear(hidden_dim, output_dim)
        self.head_B = nn.Linear(hidden_dim, output_dim)
        self.logvar_B = nn.Linear(hidden_dim, output_dim) if logvar_head else None

    @property
    def has_variance(self) -> bool:
        return self.logvar_B is not None

    def constructor_kwargs(self) -> dict:
        return {**super().constructor_kwargs(), "logvar_head": self.has_variance}

    def forward(self, x: torch.Tensor, domain: str = "B") -> torch.Tensor:
        if domain not in DOMAINS:
            raise ToolkitError(f"domain must be 'A' (source head) or 'B' (target head), "
                               f"got {domain!r}.")
        self._check_input(x)                                            # x: (N, input_dim)
        feat = self.backbone(x)                                         # (N, hidden_dim)
        head = self.head_A if domain == "A" else self.head_B
        return head(feat)                                               # (N, output_dim)

    def predict_B(self, x: torch.Tensor):
        """Domain B ``(mu, logvar)``, (N, output_dim) each; ``logvar`` is None without ``logvar_B``."""
        self._check_input(x)
        feat = self.backbone(x)                                         # (N, hidden_dim)
        if self.logvar_B is None:
            return self.head_B(feat), None
        return self.head_B(feat), self.logvar_B(feat).clamp(LOGVAR_MIN, LOGVAR_MAX)

    def mean_logvar(self, x: torch.Tensor):
        """Domain B ``(mu, logvar)`` (logvar None without ``logvar_B``): the one (mean, var) method of every model."""
        return self.predict_B(x)
