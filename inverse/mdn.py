"""Mixture density network p(x | y): the inverse model that proposes designs for a spec.

    pi   = softmax(pi_logits)                       mixing weights,  (N, K)
    p(x | y) = sum_k pi_k * prod_d Normal(x_d; mu_kd, sigma_kd)      diagonal Gaussians

All in model space (x and y log/standardised by the data loader's Preprocessing).  The
likelihood uses log-softmax and logsumexp (tonyduan/mixture-density-network) so it stays
finite when one component's density underflows:

    log p(x | y) = logsumexp_k [ log_softmax(pi_logits)_k
                                 + sum_d ( -0.5 ((x_d - mu_kd) / sigma_kd)^2 - log sigma_kd - 0.5 log 2 pi ) ]

``log_sigma`` is clamped to [LOG_SIGMA_MIN, LOG_SIGMA_MAX] = [-7, 3]: below, one component
can collapse onto a single training row and the NLL runs to -inf.

The checkpoint is the toolkit's format (a plain dict readable with
``torch.load(weights_only=True)`` plus a JSON sidecar, written atomically); the class lives
here, not in ``models.MODEL_CLASSES``, so ``save_mdn``/``load_mdn`` rebuild it by name from
``MDN_CLASSES``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_paths
from core.errors import ToolkitError

MDN_FORMAT_VERSION = 1
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0
_LOG_2PI = math.log(2.0 * math.pi)


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
MDN_CLASSES = {"MDN": MDN}


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, str):
        return str(v)
    return v


def mdn_sidecar(path) -> Path:
    return Path(path).with_suffix(".json")


def save_mdn(path, model: MDN, *, x_cols, y_cols, preprocessing: dict, config: dict, seed,
             x_lo, x_hi, metrics=None, history=None, split=None) -> dict:
    """Write the MDN checkpoint (.pth) and its JSON sidecar atomically; return the metadata.

    ``x_lo``/``x_hi``: model-space box the samples are kept inside (from the training data).
    """
    meta = _plain({
        "format_version": MDN_FORMAT_VERSION, "stage": "mdn", "model_class": type(model).__name__,
        "model_kwargs": model.constructor_kwargs(), "x_cols": list(x_cols), "y_cols": list(y_cols),
        "preprocessing": preprocessing, "config": config, "seed": seed, "split": split,
        "x_lo": list(map(float, x_lo)), "x_hi": list(map(float, x_hi)), "metrics": metrics,
        "history": history,
        "versions": {"torch": str(torch.__version__), "numpy": np.__version__,
                     "python": platform.python_version()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    payload = dict(meta)
    payload["state_dict"] = OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    with atomic_paths(path, mdn_sidecar(path)) as (tmp, tmp_json):     # one unit, like save_checkpoint
        torch.save(payload, tmp)
        tmp_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def load_mdn(path):
    """Rebuild the MDN of ``path``; return ``(model, meta)`` with the model in eval()."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"MDN checkpoint not found: {path}. Make it with: python -m inverse_mdn "
                           f"--opamp <circuit> (writes results/mdn_<circuit>.pth).")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # I/O boundary: corrupt or foreign file
        raise ToolkitError(f"Could not read MDN checkpoint {path} with torch.load(weights_only=True): "
                           f"{type(exc).__name__}. Re-create it with python -m inverse_mdn.") from None
    if not isinstance(raw, dict) or raw.get("stage") != "mdn" or raw.get("model_class") not in MDN_CLASSES:
        got = raw.get("stage") if isinstance(raw, dict) else type(raw).__name__
        raise ToolkitError(f"{path} is not an MDN checkpoint (stage {got!r}); pass the file written by "
                           f"python -m inverse_mdn (results/mdn_<circuit>.pth).")
    if raw["format_version"] > MDN_FORMAT_VERSION:
        raise ToolkitError(f"{path} has MDN format_version {raw['format_version']}, newer than this code "
                           f"({MDN_FORMAT_VERSION}). Update the toolkit or retrain the MDN.")
    model = MDN_CLASSES[raw["model_class"]](**raw["model_kwargs"])
    model.load_state_dict(raw["state_dict"], strict=True)
    model.eval()
    return model, {k: v for k, v in raw.items() if k != "state_dict"}
