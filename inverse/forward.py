"""Forward models for inverse design: one interface, ``predict(x_scaled) -> (mean, std)``.

Model space in, model space out, torch tensors, differentiable w.r.t. ``x_scaled`` (N, D):
    align_hetero   AlignHeteroMLP: mean = mu, std = exp(logvar / 2)
    dualhead_b     DualHeadMLP head B: mean = head_B(x); std = exp(logvar_B / 2) when the model has
                   a logvar_B head (FINETUNE_OBJECTIVE "hetero", the default, or "auto"), else sqrt(val MSE) of its
                   checkpoint when recorded, else 0 (a point model)
    ensemble       inference.predict.Ensemble: the fused, calibrated members (mean, std)
    FunctionForward  any torch function (tests, analytic models)
Each carries the ``Preprocessing`` that maps physical designs/metrics to its model space.
"""
from pathlib import Path

import numpy as np
import torch

from core.errors import ToolkitError
from data_loader.preprocessing import Preprocessing

MODEL_TYPES = ("align_hetero", "dualhead_b", "ensemble")
MAKES = {"align_hetero": "python -m training.train_align_coral",
         "dualhead_b": "python -m fine_tune.fine_tune",
         "ensemble": "python -m pipeline (or python -m inference.infer_ensemble after the stages)"}


class Forward:
    name = "forward"

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        self.x_cols, self.y_cols = list(preprocessing.x_cols), list(preprocessing.y_cols)

    def predict(self, x_scaled: torch.Tensor):
        raise NotImplementedError

    @torch.no_grad()
    def predict_np(self, x_scaled, batch: int = 4096):
        """(mean, std) as float64 numpy, in batches, no grad."""
        x = torch.as_tensor(np.asarray(x_scaled), dtype=torch.float32)
        out = [self.predict(x[i:i + batch]) for i in range(0, len(x), batch)]
        return (torch.cat([m for m, _ in out]).double().numpy(), torch.cat([s for _, s in out]).double().numpy())


class FunctionForward(Forward):
    """Wrap ``fn(x_scaled) -> mean`` or ``-> (mean, std)``."""
    name = "function"

    def __init__(self, fn, preprocessing: Preprocessing):
        super().__init__(preprocessing)
        self.fn = fn

    def predict(self, x_scaled):
        out = self.fn(x_scaled)
        if isinstance(out, tuple):
            return out
        return out, torch.zeros_like(out)


class HeteroForward(Forward):
    name = "align_hetero"

    def __init__(self, model, preprocessing):
        super().__init__(preprocessing)
        self.model = model.eval()

    def predict(self, x_scaled):
        mu, logvar, _ = self.model(x_scaled)                               # (N, M), (N, M), (N, H)
        return mu, torch.exp(0.5 * logvar)


class DualHeadForward(Forward):
    name = "dualhead_b"

    def __init__(self, model, preprocessing, std: float = 0.0):
        super().__init__(preprocessing)
        self.model, self.std = model.eval(), float(std)

    def predict(self, x_scaled):
        mean, logvar = self.model.predict_B(x_scaled)                      # (N, M), (N, M) or None
        if logvar is not None:
            return mean, torch.exp(0.5 * logvar)
        return mean, torch.full_like(mean, self.std)


class EnsembleForward(Forward):
    name = "ensemble"

    def __init__(self, ensemble):
        super().__init__(ensemble.preprocessing)
        self.ensemble = ensemble
        for member in ensemble.members:
            for p in member.model.parameters():
                p.requires_grad_(False)   # only x is optimised

    def predict(self, x_scaled):
        return self.ensemble.predict_scaled(x_scaled)


def _val_mse(meta: dict):
    """A point model's val MSE (model space) from its checkpoint metrics, if recorded."""
    val = (meta.get("metrics") or {}).get("val") or {}
    for key in ("mse", "val_mse", "mse_B"):
        if isinstance(val.get(key), (int, float)) and np.isfinite(val[key]):
            return float(val[key])
    return None


def load_forward(model_type: str, ckpt, *, opamp: str, results_dir, device="cpu") -> Forward:
    """Load the forward model; a missing checkpoint names the command that makes it."""
    if model_type not in MODEL_TYPES:
        raise ToolkitError(f"--model-type must be one of {list(MODEL_TYPES)}, got {model_type!r}.")
    from models import AlignHeteroMLP, DualHeadMLP
    from models.model_utils import load_checkpoint
    if model_type == "ensemble":
        from inference.predict import Ensemble, ensemble_json_path
        root = Path(ckpt).parent if ckpt is not None and Path(ckpt).suffix == ".json" else Path(ckpt or results_dir)
        if not ensemble_json_path(root, opamp).is_file():
            raise ToolkitError(f"No ensemble for {opamp!r}: {ensemble_json_path(root, opamp)} is missing. Make it "
                               f"with: python -m pipeline --opamp {opamp} --results-dir {root}")
        return EnsembleForward(Ensemble.load(root, opamp, device=device))
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ToolkitError(f"Forward checkpoint not found: {ckpt}. Make it with: {MAKES[model_type]} "
                           f"--opamp {opamp} --results-dir {ckpt.parent}")
    cls = AlignHeteroMLP if model_type == "align_hetero" else DualHeadMLP
    model, meta = load_checkpoint(ckpt, expect_class=cls, map_location=device)
    made_for = (meta.get("config") or {}).get("OPAMP_TYPE")
    if made_for is not None and made_for != opamp:
        raise ToolkitError(f"{ckpt} was trained for circuit {made_for!r}, not {opamp!r}. Pass --opamp {made_for} "
                           f"or the checkpoint of {opamp}.")
    if meta.get("preprocessing") is None:
        raise ToolkitError(f"{ckpt} records no preprocessing; re-create it with {MAKES[model_type]}.")
    pre = Preprocessing.from_dict(meta["preprocessing"])
    for p in model.parameters():
        p.requires_grad_(False)   # only x is optimised
    if model_type == "align_hetero":
        return HeteroForward(model, pre)
    mse = _val_mse(meta)
    return DualHeadForward(model, pre, std=np.sqrt(mse) if mse is not None else 0.0)
