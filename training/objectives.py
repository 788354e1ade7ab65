"""Training objectives built from the seed's losses (see losses/loss_function.py for formulas).

* hetero:  NLL(mu, logvar, y) + ALPHA_R2 * (1 - batch_R2(y, mu))       (target-only, align); batch_R2 is
           averaged over the metrics that vary in the batch (``losses.varying_r2``: a constant one is undefined)
* align:   hetero on the target batch + LAMBDA_CORAL * CORAL(feat_src, feat_tgt)
"""
import torch.nn.functional as F

from losses import coral_loss, heteroscedastic_nll, varying_r2


def hetero_objective(mu, logvar, y, *, alpha_r2: float):
    nll = heteroscedastic_nll(mu, logvar, y)
    r2 = varying_r2(y, mu)                              # batch_R2 over the metrics that vary in the batch
    return nll + alpha_r2 * (1.0 - r2), {"nll": float(nll.detach()), "r2": float(r2.detach())}


def _call(model, x):
    return model(x)                                                     # (mu, logvar, features)


def make_hetero_loss(alpha_r2: float, forward=_call):
    """``forward(model, x) -> (mu, logvar, _)``; the default calls an AlignHeteroMLP."""
    def loss_fn(model, batch):
        x, y = batch
        mu, logvar, _ = forward(model, x)                               # (N, M), (N, M), ...
        return hetero_objective(mu, logvar, y, alpha_r2=alpha_r2)
    return loss_fn


def make_align_loss(alpha_r2: float, lambda_coral: float):
    """Loss on a (target batch, source batch) pair from ``PairedBatches``."""
    def loss_fn(model, batch):
        (x_tgt, y_tgt), (x_src, _) = batch
        mu, logvar, feat_tgt = model(x_tgt)                             # feat: (N_t, H)
        loss, parts = hetero_objective(mu, logvar, y_tgt, alpha_r2=alpha_r2)
        if lambda_coral > 0:
            feat_src = model.backbone(x_src)                            # (N_s, H)
            coral = coral_loss(feat_src, feat_tgt)
            loss = loss + lambda_coral * coral
            parts["coral"] = float(coral.detach())
        return loss, parts
    return loss_fn


def mse_objective(model_forward):
    """Plain MSE for point-prediction models; ``model_forward(model, x)`` picks the head."""
    def loss_fn(model, batch):
        x, y = batch
        return F.mse_loss(model_forward(model, x), y), {}
    return loss_fn


def val_hetero(x_val, y_val, *, alpha_r2: float, forward=_call):
    """Validation numbers for heteroscedastic models; early stopping minimises 'nll'."""
    def evaluate(model):
        mu, logvar, _ = forward(model, x_val)
        nll = heteroscedastic_nll(mu, logvar, y_val).item()
        return {"nll": nll, "mse": F.mse_loss(mu, y_val).item(), "r2": varying_r2(y_val, mu).item()}
    return evaluate
