"""A Gaussian process on [x, source-model prediction], one per metric, as a torch module.

The GP is fitted by scikit-learn (``training.train_gp``); this module holds what prediction
needs, as buffers, so it saves in the one checkpoint format (``torch.load(weights_only=True)``)
and predicts in torch: batched, on any device, differentiable w.r.t. x (inverse design
optimises through it like through any member).

Inputs: ``z = [x, s(x)]`` where ``s`` is the source baseline MLP (a frozen submodule, model
space).  Per metric j, with y standardised by the GP's own mean/std (sklearn ``normalize_y``):

    k_j(z, z')   = a_j * Matern_nu(r),  r = || (z - z') / l_j ||          (ARD length scales l_j)
    Matern_2.5   = (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r);  1.5: (1 + sqrt3 r) exp(-sqrt3 r);  0.5: exp(-r)
    mean_j(z)    = y_mean_j + y_std_j * k_j(z, Z) @ alpha_j,        alpha_j = (K_j + s_j I)^-1 y_j
    var_j(z)     = y_std_j^2 * (a_j + s_j - || L_j^-1 k_j(Z, z) ||^2),   L_j L_j^T = K_j + s_j I

where Z are the training inputs and s_j the fitted white-noise level (so var is the predictive
variance of a new observation, the quantity intervals are about).  These are scikit-learn's
``GaussianProcessRegressor.predict(return_std=True)`` formulas for the kernel
``C * Matern(ARD) + White``; tests/test_gp.py checks the two agree.
"""
import math

import torch
from torch import nn

from models.backbone import LOGVAR_MAX, LOGVAR_MIN
from models.mlp import MLP

NUS = (0.5, 1.5, 2.5)


def matern(r: torch.Tensor, nu: float) -> torch.Tensor:
    """Matern correlation of the scaled distance ``r`` (>= 0) for nu in {0.5, 1.5, 2.5}."""
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        s = math.sqrt(3.0) * r
        return (1.0 + s) * torch.exp(-s)
    if nu == 2.5:
        s = math.sqrt(5.0) * r
        return (1.0 + s + s * s / 3.0) * torch.exp(-s)
    raise ValueError(f"nu must be one of {NUS}, got {nu!r}")


class StackedGP(nn.Module):
    """Per-metric GPs on ``[x, source(x)]``; ``mean_logvar(x)`` like every model class."""

    has_variance = True

    def __init__(self, input_dim: int, output_dim: int, *, n_train: int = 1, hidden_dim: int = 512,
                 num_layers: int = 6, dropout: float = 0.1, activation: str = "silu", nu: float = 2.5):
        super().__init__()
        if nu not in NUS:
            raise ValueError(f"nu must be one of {NUS}, got {nu!r}")
        if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
            raise ValueError(f"n_train must be a positive int, got {n_train!r}")
        self.source = MLP(input_dim, output_dim, hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout,
                          activation=activation)
        self.input_dim, self.output_dim, self.n_train, self.nu = input_dim, output_dim, n_train, float(nu)
        d, m = input_dim + output_dim, output_dim
        f64 = dict(dtype=torch.float64)
        # unfitted: random training inputs and weights (like an untrained net, a fresh instance predicts noise);
        # training.train_gp.to_module fills every buffer from the fitted GPs
        self.register_buffer("train_z", torch.randn(n_train, d, **f64))         # (n, D+M)
        self.register_buffer("length_scale", torch.ones(m, d, **f64))          # (M, D+M)
        self.register_buffer("amplitude", torch.ones(m, **f64))                # (M,)
        self.register_buffer("noise", torch.ones(m, **f64))                    # (M,)
        self.register_buffer("alpha", torch.randn(m, n_train, **f64))          # (M, n)
        self.register_buffer("chol", torch.eye(n_train, **f64).repeat(m, 1, 1))  # (M, n, n) lower
        self.register_buffer("y_mean", torch.zeros(m, **f64))                  # (M,)
        self.register_buffer("y_std", torch.ones(m, **f64))                    # (M,)

    def constructor_kwargs(self) -> dict:
        src = self.source.constructor_kwargs()
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "n_train": self.n_train,
                "hidden_dim": src["hidden_dim"], "num_layers": src["num_layers"], "dropout": src["dropout"],
                "activation": src["activation"], "nu": self.nu}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[x, source(x)]`` in float64, (N, D+M); the source MLP runs in eval mode (no dropout)."""
        was_training = self.source.training
        self.source.eval()
        s = self.source(x)                                               # checks x's shape
        self.source.train(was_training)
        return torch.cat([x, s], dim=1).double()

    def kernel(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``k_j(p, q)`` for every metric j, (M, P, Q), of GP inputs ``z`` (``features``), (P, D+M) and (Q, D+M)."""
        ls = self.length_scale[:, None, :]                               # (M, 1, D+M)
        # exact pairwise distances (no |a|^2 + |b|^2 - 2ab cancellation), without an (M, P, Q, D+M) tensor
        r = torch.cdist(p[None] / ls, q[None] / ls, compute_mode="donot_use_mm_for_euclid_dist")   # (M, P, Q)
        return self.amplitude[:, None, None] * matern(r, self.nu)

    def mean_var(self, x: torch.Tensor):
        """Model-space ``(mean, var)``, (N, M) float64 each."""
        z = self.features(x)                                             # (N, D+M)
        k = self.kernel(z, self.train_z)                                 # (M, N, n)
        mean = torch.einsum("mNn,mn->mN", k, self.alpha)                 # (M, N)
        v = torch.linalg.solve_triangular(self.chol, k.transpose(1, 2), upper=False)   # (M, n, N)
        var = (self.amplitude + self.noise)[:, None] - (v * v).sum(1)    # (M, N)
        mean = self.y_mean[:, None] + self.y_std[:, None] * mean
        # >= 0 as in sklearn (round-off can make it slightly negative); tiny, not 0, keeps log finite
        var = (self.y_std ** 2)[:, None] * var.clamp_min(torch.finfo(torch.float64).tiny)
        return mean.T, var.T                                             # (N, M) each

    def posterior_cov(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """Model-space posterior covariance of the latent functions (no observation noise), (M, Na, Nb) float64:
        ``y_std_j^2 * (k_j(a, b) - (L_j^-1 k_j(Z, a))^T (L_j^-1 k_j(Z, b)))``.  Its diagonal plus
        ``observation_noise()`` is ``mean_var``'s variance; active learning uses it to tell how much simulating
        one design would shrink the variance elsewhere (``active_learning.acquisition.integrated``)."""
        za = self.features(xa)
        zb = za if xb is xa else self.features(xb)
        va = torch.linalg.solve_triangular(self.chol, self.kernel(self.train_z, za), upper=False)   # (M, n, Na)
        vb = va if xb is xa else torch.linalg.solve_triangular(self.chol, self.kernel(self.train_z, zb), upper=False)
        cov = self.kernel(za, zb) - va.transpose(1, 2) @ vb
        return (self.y_std ** 2)[:, None, None] * cov

    def observation_noise(self) -> torch.Tensor:
        """(M,) model-space variance of the fitted white noise (a new simulation's scatter about the latent mean)."""
        return self.y_std ** 2 * self.noise

    def mean_logvar(self, x: torch.Tensor):
        """``(mean, logvar)`` in x's dtype, logvar clamped to [LOGVAR_MIN, LOGVAR_MAX] like every variance head."""
        mean, var = self.mean_var(x)
        return mean.to(x.dtype), var.log().clamp(LOGVAR_MIN, LOGVAR_MAX).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean_logvar(x)[0]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.constructor_kwargs().items())
