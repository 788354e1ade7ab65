"""Mixture density network p(x | y): the inverse model that proposes designs for a spec.

    pi   = softmax(pi_logits)                       mixing weights,  (N, K)
    p(x | y) = sum_k pi_k * prod_d Normal(x_d; mu_kd, sigma_kd)      diagonal Gaussians

All in model space (x and y log/standardised by the data loader's Preprocessing).  The
likelihood uses log-softmax and logsumexp (tonyduan/mixture-density-network) so it stays
finite when one component's density underflows:

    log p(x | y) = logsumexp_k [ log_softmax(pi_logits)_k
                                 + sum_d ( -0.5 ((x_d - mu_kd) / sigma_kd)^2 - log sigma_kd - 0.5 log 2 pi ) ]

The network is ``models.mdn.MDN`` (``log_sigma`` clamped to [-7, 3]).  Its checkpoint is the
toolkit's one format (``models.model_utils``; stage "mdn", the sampling box in ``extra``), so
``save_mdn``/``load_mdn`` are that format with the MDN's extra fields.  MDN files written before
it (their own ``format_version``, box at the top level) still load.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.errors import ToolkitError
from data_loader.preprocessing import Preprocessing
from models.mdn import LOG_SIGMA_MAX, LOG_SIGMA_MIN, MDN  # noqa: F401  (MDN: its old home)
from models.model_utils import load_checkpoint, save_checkpoint, sidecar_path

_LOG_2PI = math.log(2.0 * math.pi)
MAKE_MDN = "python -m inverse_mdn --opamp <circuit> (writes results/mdn_<circuit>.pth)"


def mdn_log_prob(pi_logits, mu, log_sigma, x):
    """log p(x | y) per row, shape (N,).  Formula in the module docstring."""
    if pi_logits.ndim != 2 or mu.ndim != 3 or mu.shape != log_sigma.shape:
        raise ValueError(f"expected pi_logits (N, K), mu and log_sigma (N, K, D); got "
                         f"{tuple(pi_logits.shape)}, {tuple(mu.shape)}, {tuple(log_sigma.shape)}")
    if x.ndim != 2 or x.shape[0] != mu.shape[0] or x.shape[1] != mu.shape[2] or pi_logits.shape[:2] != mu.shape[:2]:
        raise ValueError(f"x must have shape (N, D) = ({mu.shape[0]}, {mu.shape[2]}) matching mu {tuple(mu.shape)} "
                         f"and pi_logits {tuple(pi_logits.shape)}; got x {tuple(x.shape)}")
    z = (x.unsqueeze(1) - mu) * torch.exp(-log_sigma)                      # (N, K, D)
    comp = (-0.5 * z.pow(2) - log_sigma - 0.5 * _LOG_2PI).sum(dim=-1)     # (N, K)
    return torch.logsumexp(torch.log_softmax(pi_logits, dim=-1) + comp, dim=-1)  # (N,)


def mdn_nll(pi_logits, mu, log_sigma, x):
    """Mean negative log-likelihood -mean_n log p(x_n | y_n) (a scalar)."""
    return -mdn_log_prob(pi_logits, mu, log_sigma, x).mean()


@torch.no_grad()
def mdn_sample(model: MDN, y: torch.Tensor, n: int, *, lo=None, hi=None, generator=None,
               max_rounds: int = 20) -> torch.Tensor:
    """``n`` samples of x ~ p(x | y) for one condition row ``y`` (shape (y_dim,) or (1, y_dim)).

    With box bounds ``lo``/``hi`` (model space, (D,)) each coordinate that falls outside the
    box is redrawn from its own component (the components are diagonal, so this samples the
    component truncated to the box exactly; the mixing weights are not re-weighted by each
    component's mass inside the box) up to ``max_rounds`` times, then clipped onto the box:
    every returned row is within bounds.  Returns (n, D).
    """
    model.eval()
    y = y.reshape(1, -1).float()
    pi_logits, mu, log_sigma = model(y)                                     # (1, K), (1, K, D), (1, K, D)
    probs = torch.softmax(pi_logits[0], dim=-1)                             # (K,)
    k = torch.multinomial(probs, n, replacement=True, generator=generator)  # (n,)
    mu_k, sigma_k = mu[0, k], torch.exp(log_sigma[0, k])                    # (n, D) each
    out = mu_k + sigma_k * torch.randn(n, model.x_dim, generator=generator)  # (n, D)
    if lo is None:
        return out
    lo_t = torch.as_tensor(lo, dtype=torch.float32)
    hi_t = torch.as_tensor(hi, dtype=torch.float32)
    for _ in range(max_rounds):
        bad = (out < lo_t) | (out > hi_t)                                   # (n, D)
        if not bad.any():
            break
        redraw = mu_k + sigma_k * torch.randn(n, model.x_dim, generator=generator)
        out = torch.where(bad, redraw, out)
    return torch.maximum(torch.minimum(out, hi_t), lo_t)


# ---------------------------------------------------------------- checkpoint
def mdn_sidecar(path) -> Path:
    return sidecar_path(path)


def save_mdn(path, model: MDN, *, x_cols, y_cols, preprocessing: dict, config: dict, seed,
             x_lo, x_hi, metrics=None, history=None, split=None, code=None, design_space=None) -> dict:
    """Write the MDN checkpoint (.pth) and its JSON sidecar atomically; return the metadata.

    ``x_lo``/``x_hi``: model-space box the samples are kept inside (from the training data), in ``extra``.
    """
    return save_checkpoint(path, model, stage="mdn", x_cols=x_cols, y_cols=y_cols, preprocessing=preprocessing,
                           config=config, seed=seed, split=split, metrics=metrics, history=history, code=code,
                           design_space=design_space,
                           extra={"x_lo": [float(v) for v in x_lo], "x_hi": [float(v) for v in x_hi]})


def load_mdn(path):
    """Rebuild the MDN of ``path``; return ``(model, meta)`` with the model in eval() and the box in
    ``meta["extra"]`` (files from before the one format: moved there from the top level)."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"MDN checkpoint not found: {path}. Make it with: {MAKE_MDN}.")
    model, meta = load_checkpoint(path, expect_class=MDN)
    extra = dict(meta.get("extra") or {})
    for key in ("x_lo", "x_hi"):
        if key not in extra and key in meta:
            extra[key] = meta.pop(key)   # an MDN file written before the one checkpoint format
    if "x_lo" not in extra or "x_hi" not in extra:
        raise ToolkitError(f"{path} records no sampling box (x_lo/x_hi); retrain it: {MAKE_MDN}.")
    meta["extra"] = extra
    return model, meta


def sample_designs(model, meta, y_target_phys, n: int, *, seed: int = 0):
    """(x_scaled (n, D) float32, designs in physical units DataFrame) for one physical y-target."""
    pre = Preprocessing.from_dict(meta["preprocessing"])
    y_scaled = torch.as_tensor(pre.transform_y(np.asarray(y_target_phys, float)[None, :]))[0]
    g = torch.Generator().manual_seed(seed)
    box = meta["extra"]
    xs = mdn_sample(model, y_scaled, n, lo=torch.tensor(box["x_lo"]), hi=torch.tensor(box["x_hi"]), generator=g)
    xs = xs.numpy().astype(np.float32)
    return xs, pd.DataFrame(pre.inverse_x(xs), columns=pre.x_cols)
