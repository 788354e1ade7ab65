"""A model scored on a data split in physical units: the number every stage and the harness report.

    report = evaluate_physical(model, data, device)       # data: get_data_and_scalers(...) dict

Predictions are made in model space (``models.outputs.mean_and_variance``), inverted to physical
units (clipped, expm1 on log columns) and scored by ``inference.metrics.regression_report``, with
log-space R^2 floored at half the smallest positive training value per metric.
"""
import numpy as np
import torch

from inference.metrics import regression_report
from models.outputs import mean_and_variance


def eval_split(data: dict) -> str:
    """target_test, or target_val when TEST_SPLIT=0 left no test rows."""
    return "target_test" if "target_test" in data else "target_val"


@torch.no_grad()
def predict_scaled(model, x: torch.Tensor, *, batch: int = 8192):
    """Model-space mean and variance (variance None for point models), as float64 numpy."""
    model.eval()
    means, variances = [], []
    for i in range(0, len(x), batch):
        mu, var = mean_and_variance(model, x[i:i + batch])
        means.append(mu)
        if var is not None:
            variances.append(var)
    mean = torch.cat(means).double().cpu().numpy()
    var = torch.cat(variances).double().cpu().numpy() if variances else None
    return mean, var


def positive_floor(data: dict) -> np.ndarray:
    """Per metric, half the smallest positive training value: floor for log-space R^2."""
    return half_min_positive(np.vstack([data["raw"]["source"][1].to_numpy(float),
                                        data["raw"]["target_train"][1].to_numpy(float)]))


def half_min_positive(ys: np.ndarray) -> np.ndarray:
    """Per column of (N, M) values, half the smallest positive one (NaN ignored); 1e-30 for a column with none."""
    out = []
    for j in range(ys.shape[1]):
        pos = ys[:, j][ys[:, j] > 0]
        out.append(0.5 * pos.min() if len(pos) else 1e-30)
    return np.asarray(out)


def evaluate_physical(model, data: dict, device, split: str | None = None, mean_scaled=None) -> dict:
    """Report (physical units, clipped inverse transform) of ``model`` on ``split``; ``mean_scaled``: model-space
    predictions of those rows to score instead of the model's own (a GP's out-of-sample val predictions)."""
    split = split or eval_split(data)
    if mean_scaled is None:
        x = torch.as_tensor(data[split][0], device=device)
        mean_scaled, _ = predict_scaled(model, x)
    pred = data["preprocessing"].inverse_y(mean_scaled)
    truth = data["raw"][split][1].to_numpy(float)
    report = regression_report(truth, pred, data["y_cols"], floor=positive_floor(data))
    report["split"], report["n"] = split, int(len(truth))
    return report
