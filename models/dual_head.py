"""DualHeadMLP: one backbone, one head per domain (seed: ``model(x, domain='B')``).

``head_A`` keeps the source-domain mapping, ``head_B`` is fine-tuned on the target domain
(phases: head_B.bias -> head_B weights + L2-SP -> last backbone layer + head_B).
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ToolkitError
from models.backbone import BackboneModel

DOMAINS = ("A", "B")


class DualHeadMLP(BackboneModel):
    """``backbone`` + ``head_A`` + ``head_B`` (Linear hidden -> out); forward(x, domain='B')."""

    def __init__(self, input_dim: int, output_dim: int, *, hidden_dim: int = 512,
                 num_layers: int = 6, dropout: float = 0.1, activation: str = "silu"):
        super().__init__(input_dim, output_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                         dropout=dropout, activation=activation)
        self.head_A = nn.Linear(hidden_dim, output_dim)
        self.head_B = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor, domain: str = "B") -> torch.Tensor:
        if domain not in DOMAINS:
            raise ToolkitError(f"domain must be 'A' (source head) or 'B' (target head), "
                               f"got {domain!r}.")
        self._check_input(x)                                            # x: (N, input_dim)
        feat = self.backbone(x)                                         # (N, hidden_dim)
        head = self.head_A if domain == "A" else self.head_B
        return head(feat)                                               # (N, output_dim)
