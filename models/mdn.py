"""MDN: the mixture density network p(x | y) of inverse design (its likelihood and sampling: inverse/mdn.py).

MLP trunk y -> hidden (SiLU), then per component k a mixing logit, a mean mu_k (D,) and a
log_sigma_k (D,) clamped to [LOG_SIGMA_MIN, LOG_SIGMA_MAX] = [-7, 3]: below, one component can
collapse onto a single training row and the NLL runs to -inf.  Saved and loaded like every model
(``models.model_utils.save_checkpoint`` / ``load_checkpoint``; its input is y, its output x).
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ToolkitError

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0


class MDN(nn.Module):
    """MLP trunk y -> hidden (SiLU) then three heads: pi_logits, mu, log_sigma."""

    def __init__(self, *, y_dim: int, x_dim: int, n_components: int = 10, hidden: int = 256,
                 layers: int = 4):
        super().__init__()
        if min(y_dim, x_dim, n_components, hidden, layers) < 1:
            raise ToolkitError(f"MDN sizes must be >= 1, got y_dim={y_dim} x_dim={x_dim} "
                               f"n_components={n_components} hidden={hidden} layers={layers}.")
        self.y_dim, self.x_dim, self.n_components = y_dim, x_dim, n_components
        self.hidden, self.layers = hidden, layers
        blocks, width = [], y_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*blocks)
        self.pi_head = nn.Linear(hidden, n_components)
        self.mu_head = nn.Linear(hidden, n_components * x_dim)
        self.log_sigma_head = nn.Linear(hidden, n_components * x_dim)

    def constructor_kwargs(self) -> dict:
        return dict(y_dim=self.y_dim, x_dim=self.x_dim, n_components=self.n_components,
                    hidden=self.hidden, layers=self.layers)

    def forward(self, y: torch.Tensor):
        if y.ndim != 2 or y.shape[1] != self.y_dim:
            raise ToolkitError(f"MDN input y must have shape (N, {self.y_dim}), got {tuple(y.shape)}.")
        h = self.trunk(y)                                                   # (N, H)
        k, d = self.n_components, self.x_dim
        pi_logits = self.pi_head(h)                                         # (N, K)
        mu = self.mu_head(h).view(-1, k, d)                                 # (N, K, D)
        log_sigma = self.log_sigma_head(h).view(-1, k, d).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)  # (N, K, D)
        return pi_logits, mu, log_sigma
