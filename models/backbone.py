"""The shared feature extractor used by MLP, AlignHeteroMLP and DualHeadMLP.

``Backbone`` is ``num_layers`` blocks of ``Linear -> activation -> Dropout``; block 0 maps
``input_dim -> hidden_dim`` and the others ``hidden_dim -> hidden_dim``.  Parameter names are::

    backbone.blocks.{i}.linear.weight / .bias      i = 0 .. num_layers-1

so the last backbone layer (unfrozen in fine-tune phase 3) is
``backbone.blocks.{num_layers-1}.linear`` -- also reachable as ``model.backbone.last_linear``,
and its parameter names as ``model.backbone.last_layer_param_names()``.

Activation: SiLU by default.  Inverse design optimises the *input* x through the trained
network with Adam and a final L-BFGS; a ReLU network is piecewise linear in x (input gradient
piecewise constant, zero curvature), which stalls L-BFGS and makes the optimum sit on kinks.
SiLU is smooth and trains as well as ReLU on these small tabular nets.  ``activation="relu"``
is available for comparison.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ToolkitError

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}
# Clamp of every log-variance head (variance e^-10 .. e^10 of a standardised target): below,
# exp(-logvar) in the NLL explodes; above, the model could explain away any error.
LOGVAR_MIN, LOGVAR_MAX = -10.0, 10.0


def check_arch(*, input_dim, output_dim, hidden_dim, num_layers, dropout, activation) -> None:
    """Validate constructor arguments with messages that say how to fix them."""
    for name, value in (("input_dim", input_dim), ("output_dim", output_dim),
                        ("hidden_dim", hidden_dim), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ToolkitError(f"{name} must be a positive int, got {value!r}. "
                               f"(input_dim = X.shape[1], output_dim = y.shape[1].)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ToolkitError(f"dropout must be a float in [0, 1), got {dropout!r}.")
    if activation not in ACTIVATIONS:
        raise ToolkitError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")


class Block(nn.Module):
    """Linear -> activation -> Dropout."""

    def __init__(self, in_dim: int, out_dim: int, *, dropout: float, activation: str):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.linear(x)))                  # (N, out_dim)


class Backbone(nn.Module):
    """``num_layers`` x [Linear -> activation -> Dropout]; indexable and iterable like nn.Sequential."""

    def __init__(self, *, input_dim: int, hidden_dim: int, num_layers: int, dropout: float,
                 activation: str = "silu"):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * num_layers
        self.blocks = nn.ModuleList(
            Block(dims[i], dims[i + 1], dropout=dropout, activation=activation)
            for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)                                                # (N, hidden_dim)
        return x

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Block:
        return self.blocks[i]

    def __iter__(self):
        return iter(self.blocks)

    @property
    def linears(self) -> list[nn.Linear]:
        return [block.linear for block in self.blocks]

    @property
    def last_linear(self) -> nn.Linear:
        """The last backbone Linear (fine-tune phase 3 unfreezes it)."""
        return self.blocks[-1].linear

    def last_layer_param_names(self, prefix: str = "backbone") -> list[str]:
        """Full parameter names of the last Linear, e.g. ``backbone.blocks.5.linear.weight``."""
        base = f"{prefix}.blocks.{len(self.blocks) - 1}.linear"
        return [f"{base}.weight", f"{base}.bias"]


class BackboneModel(nn.Module):
    """Common base: stores the architecture, builds ``self.backbone``, validates inputs."""

    def __init__(self, input_dim: int, output_dim: int, *, hidden_dim: int, num_layers: int,
                 dropout: float, activation: str):
        super().__init__()
        check_arch(input_dim=input_dim, output_dim=output_dim, hidden_dim=hidden_dim,
                   num_layers=num_layers, dropout=dropout, activation=activation)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.activation = activation
        self.backbone = Backbone(input_dim=input_dim, hidden_dim=hidden_dim,
                                 num_layers=num_layers, dropout=dropout, activation=activation)

    def constructor_kwargs(self) -> dict:
        """The keyword arguments that rebuild this architecture: ``type(m)(**m.constructor_kwargs())``."""
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "hidden_dim": self.hidden_dim, "num_layers": self.num_layers,
                "dropout": self.dropout, "activation": self.activation}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.constructor_kwargs().items())

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise ToolkitError(f"{type(self).__name__} expects a torch.Tensor of shape "
                               f"(N, {self.input_dim}), got {type(x).__name__}. "
                               f"Fix: torch.as_tensor(x, dtype=torch.float32).")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            hint = ""
            if x.dim() == 1 and x.shape[0] == self.input_dim:
                hint = " For a single row use x.unsqueeze(0)."
            elif x.dim() == 2:
                hint = (" The number of feature columns differs from training: check that x has "
                        "the checkpoint's x_cols in the same order.")
            raise ToolkitError(f"{type(self).__name__} expects input of shape (N, {self.input_dim}), "
                               f"got {tuple(x.shape)}.{hint}")
