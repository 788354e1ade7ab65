"""Baseline MLP (seed: ``MLP(input_dim, output_dim)``; forward(x) -> y_hat)."""
from __future__ import annotations

import torch
from torch import nn

from models.backbone import BackboneModel


class MLP(BackboneModel):
    """``backbone`` (num_layers x [Linear -> act -> Dropout]) + ``head`` (Linear hidden -> out).

    ``MLP(input_dim, output_dim)`` works positionally as in the seed; the rest is keyword-only.
    """

    def __init__(self, input_dim: int, output_dim: int, *, hidden_dim: int = 512,
                 num_layers: int = 6, dropout: float = 0.1, activation: str = "silu"):
        super().__init__(input_dim, output_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                         dropout=dropout, activation=activation)
        self.head = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)                                            # x: (N, input_dim)
        feat = self.backbone(x)                                         # (N, hidden_dim)
        return self.head(feat)                                          # (N, output_dim)

    has_variance = False   # a point model

    def mean_logvar(self, x: torch.Tensor):
        """``(mean, None)``: the model-space output, no variance (the one (mean, var) method of every model)."""
        return self(x), None                                            # (N, output_dim), None
