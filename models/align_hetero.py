"""AlignHeteroMLP: heteroscedastic regressor whose features are aligned with CORAL.

Seed: ``AlignHeteroMLP(input_dim, output_dim)``; ``forward(x) -> (mu, logvar, features)``.
"""
from __future__ import annotations

import torch
from torch import nn

from models.backbone import LOGVAR_MAX, LOGVAR_MIN, BackboneModel


class AlignHeteroMLP(BackboneModel):
    """``backbone`` + ``mu_head`` + ``logvar_head`` (both Linear hidden -> out).

    ``forward(x)`` returns ``(mu, logvar, features)``: ``mu`` and ``logvar`` are ``(N, out)``
    (per-target mean and log-variance in scaled units), ``features`` is the backbone output
    ``(N, hidden_dim)`` fed to the CORAL loss.  ``logvar`` is clamped to
    ``[LOGVAR_MIN, LOGVAR_MAX] = [-10, 10]`` (variance e^-10 .. e^10 of a standardised target):
    below, ``exp(-logvar)`` in the NLL explodes; above, the model could explain away any error.
    The clamp has zero gradient outside the range, which only stops a runaway head.
    """

    LOGVAR_MIN = LOGVAR_MIN
    LOGVAR_MAX = LOGVAR_MAX

    def __init__(self, input_dim: int, output_dim: int, *, hidden_dim: int = 512,
                 num_layers: int = 6, dropout: float = 0.1, activation: str = "silu"):
        super().__init__(input_dim, output_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                         dropout=dropout, activation=activation)
        self.mu_head = nn.Linear(hidden_dim, output_dim)
        self.logvar_head = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor):
        self._check_input(x)                                            # x: (N, input_dim)
        feat = self.backbone(x)                                         # (N, hidden_dim)
        mu = self.mu_head(feat)                                         # (N, output_dim)
        logvar = self.logvar_head(feat).clamp(self.LOGVAR_MIN, self.LOGVAR_MAX)  # (N, output_dim)
        return mu, logvar, feat

    has_variance = True

    def mean_logvar(self, x: torch.Tensor):
        """``(mu, logvar)``, (N, out) each: the one (mean, var) method of every model."""
        mu, logvar, _ = self(x)                                         # (N, out), (N, out), (N, hidden)
        return mu, logvar
