"""SignedRatio: a network that learns a ratio metric through its sign, read as a model of the metric itself.

A metric such as cmrr = |Adm/Acm| spikes wherever the denominator passes through zero inside the design space
(the 5T OTA's common-mode gain changes sign when the tail's and the mirror's contributions cancel): log cmrr has
sharp peaks a smooth regressor cannot follow, while the signed reciprocal Acm/Adm = sign / cmrr is smooth
there.  When the data carry that sign (``*metric_signs*.csv``, written by ``spice.generate``), the network
learns, for each such metric,

    u = asinh(k * sign / y)          k = exp(median(log y)) over the rows it was fitted on,
                                    so u is about +-0.9 at a typical y, ~0 at a spike, ~log(2k/y) at a low y

standardised (``u_mean``, ``u_scale``), and predicts a Gaussian ``N(mu_u, sigma_u^2)`` there (its own
heteroscedastic head).  ``mean_logvar`` maps that to the toolkit's model space of the metric,
m = (log1p(y) - y_mean) / y_scale (or the linear one), by Gauss-Hermite quadrature:

    y(u) = k / |sinh(u)|,   mean = E[m(y(u))],   var = Var[m(y(u))]      under u ~ N(mu_u, sigma_u^2)

so the ensemble's fusion, calibration, intervals and inverse design read it like any member (the moments of
a distribution that is not Gaussian where the interval of u covers 0: a wide, right-skewed cmrr).  The other
metrics pass through unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.errors import ToolkitError
from models.align_hetero import AlignHeteroMLP
from models.backbone import LOGVAR_MAX, LOGVAR_MIN
from models.deep_ensemble import DeepEnsemble
from models.gp import StackedGP

INNER = {"AlignHeteroMLP": AlignHeteroMLP, "DeepEnsemble": DeepEnsemble, "StackedGP": StackedGP}   # what it can wrap
NODES = 41          # Gauss-Hermite nodes: the log singularity of y(u) at u = 0 is integrable
U_MAX = 30.0        # |u| cap before sinh (y below k * 1e-13: far beyond any data)
SINH_MIN = 1e-12    # |sinh(u)| floor: y at most k * 1e12 (a cmrr spike of 1e8 is k * 1e4 on our data)


def fit_signed_transform(y: np.ndarray, sign: np.ndarray) -> dict:
    """``k``, ``u_mean``, ``u_scale`` of one metric from its physical values ``y`` (> 0) and signs (+-1)."""
    y, sign = np.asarray(y, float), np.asarray(sign, float)
    if len(y) < 2 or not np.all(y > 0) or not np.all(np.isin(sign, (-1.0, 1.0))):
        raise ToolkitError("a signed ratio metric needs >= 2 rows, every value > 0 and every sign +1 or -1.")
    k = float(np.exp(np.median(np.log(y))))
    u = np.arcsinh(k * sign / y)
    return {"k": k, "u_mean": float(u.mean()), "u_scale": float(max(u.std(), 1e-6))}


def signed_targets(y: np.ndarray, sign: np.ndarray, transform: dict) -> np.ndarray:
    """Standardised u of physical ``y`` with ``sign`` under a fitted ``transform`` (float32)."""
    u = np.arcsinh(transform["k"] * np.asarray(sign, float) / np.asarray(y, float))
    return ((u - transform["u_mean"]) / transform["u_scale"]).astype(np.float32)


class SignedRatio(nn.Module):
    """``inner`` (an ``INNER`` class: the target-only networks or the GP member) predicting standardised u in
    ``columns``, the model space elsewhere.

    ``transforms``: per signed column, ``{"k", "u_mean", "u_scale"}`` (``fit_signed_transform``) and the
    metric's model space ``{"log": bool, "y_mean", "y_scale"}`` (from the run's ``Preprocessing``)."""

    def __init__(self, inner_class: str, inner_kwargs: dict, columns: list, transforms: list):
        super().__init__()
        if inner_class not in INNER:
            raise ToolkitError(f"SignedRatio inner_class must be one of {sorted(INNER)}, got {inner_class!r}.")
        if len(columns) != len(transforms) or not columns:
            raise ToolkitError(f"SignedRatio needs one transform per signed column, got {len(columns)} columns and "
                               f"{len(transforms)} transforms.")
        self.inner_class, self.inner_kwargs = inner_class, dict(inner_kwargs)
        self.columns, self.transforms = [int(c) for c in columns], [dict(t) for t in transforms]
        self.inner = INNER[inner_class](**inner_kwargs)
        self.input_dim, self.output_dim = self.inner.input_dim, self.inner.output_dim
        z, w = np.polynomial.hermite_e.hermegauss(NODES)
        self.register_buffer("_z", torch.tensor(z, dtype=torch.float32), persistent=False)
        self.register_buffer("_w", torch.tensor(w / w.sum(), dtype=torch.float32), persistent=False)

    @classmethod
    def of(cls, inner: nn.Module, columns: list, transforms: list) -> "SignedRatio":
        """A SignedRatio holding (copies of the weights of) the trained ``inner`` network."""
        model = cls(type(inner).__name__, inner.constructor_kwargs(), columns, transforms)
        model.inner.load_state_dict(inner.state_dict())
        return model.to(next(inner.parameters()).device)

    def constructor_kwargs(self) -> dict:
        return {"inner_class": self.inner_class, "inner_kwargs": dict(self.inner_kwargs),
                "columns": list(self.columns), "transforms": [dict(t) for t in self.transforms]}

    @property
    def has_variance(self) -> bool:
        return True

    def _metric_moments(self, mu: torch.Tensor, logvar: torch.Tensor, t: dict):
        """Model-space mean and variance of one metric from its standardised u ~ N(mu, exp(logvar))."""
        u_mu = mu * t["u_scale"] + t["u_mean"]                                   # (N,)
        u_sd = torch.exp(0.5 * logvar) * t["u_scale"]
        u = (u_mu[:, None] + u_sd[:, None] * self._z[None, :]).clamp(-U_MAX, U_MAX)   # (N, NODES)
        y = t["k"] / torch.sinh(u).abs().clamp_min(SINH_MIN)
        m = ((torch.log1p(y) if t["log"] else y) - t["y_mean"]) / t["y_scale"]
        mean = (m * self._w).sum(-1)
        var = (((m - mean[:, None]) ** 2) * self._w).sum(-1)
        return mean, var.clamp_min(float(np.exp(LOGVAR_MIN))).log().clamp(LOGVAR_MIN, LOGVAR_MAX)

    def mean_logvar(self, x: torch.Tensor):
        """Model-space ``(mean, logvar)``, (N, out) each, every metric in the toolkit's model space."""
        mu, logvar = self.inner.mean_logvar(x)
        return self.to_model_space(mu, logvar)

    def to_model_space(self, mu: torch.Tensor, logvar: torch.Tensor):
        """The inner model's ``(mu, logvar)`` (u space in ``columns``) as model-space ``(mean, logvar)``."""
        means, logvars = list(mu.unbind(-1)), list(logvar.unbind(-1))
        for col, t in zip(self.columns, self.transforms):
            means[col], logvars[col] = self._metric_moments(mu[:, col], logvar[:, col], t)
        return torch.stack(means, -1), torch.stack(logvars, -1)

    def forward(self, x: torch.Tensor):
        """``(mean, logvar, None)``: the (mu, logvar, features) shape the training objectives read."""
        mean, logvar = self.mean_logvar(x)
        return mean, logvar, None
