"""Forward models for inverse design: one interface, ``predict(x_scaled) -> (mean, std)``.

Model space in, model space out, torch tensors, differentiable w.r.t. ``x_scaled`` (N, D):
    a member stage  (``--model-type``: any ensemble member of ``core.stages``, old names accepted,
                    e.g. align_hetero, dualhead / dualhead_b): ``ModelForward`` reads the model's
                    ``mean_logvar``: std = exp(logvar / 2); a point model (an MLP, a dual-head
                    fine-tuned with FINETUNE_OBJECTIVE="mse") gets sqrt(val MSE) of its checkpoint
                    when recorded, else 0
    ensemble        inference.predict.Ensemble: the fused, calibrated members (mean, std)
    FunctionForward any torch function (tests, analytic models)
Each carries the ``Preprocessing`` that maps physical designs/metrics to its model space.
"""
from pathlib import Path

import numpy as np
import torch

from core.errors import ToolkitError
from core.stages import canonical, command, members, stage as stage_of
from data_loader.preprocessing import Preprocessing
from inference.predict import Ensemble
from models.model_utils import check_trained_for, is_dry_run, load_checkpoint

ENSEMBLE = "ensemble"


def model_types() -> list:
    """``--model-type`` choices: the member stages of the registry, then the ensemble."""
    return [*members(), ENSEMBLE]


def canonical_model_type(name: str) -> str:
    """The registry name of a ``--model-type`` (old names such as dualhead_b accepted)."""
    return ENSEMBLE if str(name).strip() == ENSEMBLE else canonical(name, what="--model-type", among=model_types())


class Forward:
    name = "forward"

    def __init__(self, preprocessing: Preprocessing, design_space: dict | None = None):
        self.preprocessing = preprocessing
        self.x_cols, self.y_cols = list(preprocessing.x_cols), list(preprocessing.y_cols)
        self.design_space = design_space    # what the checkpoint recorded from its data (None: not recorded)

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


class ModelForward(Forward):
    """One trained model through its ``mean_logvar``; ``std`` is the point model's constant std."""

    def __init__(self, model, preprocessing, std: float = 0.0, name: str = "model", design_space=None):
        super().__init__(preprocessing, design_space)
        self.model, self.std, self.name = model.eval(), float(std), name

    def predict(self, x_scaled):
        mean, logvar = self.model.mean_logvar(x_scaled)                   # (N, M), (N, M) or None
        if logvar is not None:
            return mean, torch.exp(0.5 * logvar)
        return mean, torch.full_like(mean, self.std)


class EnsembleForward(Forward):
    name = "ensemble"

    def __init__(self, ensemble):
        super().__init__(ensemble.preprocessing, ensemble.members[0].meta.get("design_space"))
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
    model_type = canonical_model_type(model_type)
    if model_type == ENSEMBLE:
        root = Path(ckpt).parent if ckpt is not None and Path(ckpt).suffix == ".json" else Path(ckpt or results_dir)
        ens = Ensemble.load(root, opamp, device=device)   # a missing one: the circuits the folder holds, or the fix
        if ens.record.get("dry_run") or any(is_dry_run(m.meta) for m in ens.members):
            print(f"warning: the ensemble in {root} was fitted on dry-run members (--dry-run: 2 epochs of 2 batches, "
                  f"a smoke test): its predictions mean nothing. Fix: python -m pipeline without --dry-run.")
        return EnsembleForward(ens)
    make = command(model_type)
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ToolkitError(f"Forward checkpoint not found: {ckpt}. Make it with: {make} "
                           f"--opamp {opamp} --results-dir {ckpt.parent}")
    model, meta = load_checkpoint(ckpt, expect_class=stage_of(model_type).model_class, map_location=device)
    check_trained_for(meta, ckpt, opamp, "the checkpoint")
    if meta.get("preprocessing") is None:
        raise ToolkitError(f"{ckpt} records no preprocessing; re-create it with {make}.")
    if is_dry_run(meta):
        print(f"warning: {ckpt} is a dry-run checkpoint (--dry-run: 2 epochs of 2 batches, a smoke test): its "
              f"predictions mean nothing. Fix: {make} without --dry-run.")
    pre = Preprocessing.from_dict(meta["preprocessing"])
    for p in model.parameters():
        p.requires_grad_(False)   # only x is optimised
    mse = None if model.has_variance else _val_mse(meta)
    return ModelForward(model, pre, std=np.sqrt(mse) if mse is not None else 0.0, name=model_type,
                        design_space=meta.get("design_space"))
