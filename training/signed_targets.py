"""Training targets of a ratio metric through its sign (``SIGNED_RATIO``; ``models.signed_ratio``).

Which metrics: those the target data carry a sign for (``*metric_signs*.csv`` -> ``data["signs"]``), when
``SIGNED_RATIO`` is on.  The transform of each (k, u_mean, u_scale) is fitted on the target training rows,
or taken from the warm-start checkpoint so a refined network keeps the meaning of its outputs.
"""
import numpy as np

from core.errors import ToolkitError
from models.signed_ratio import fit_signed_transform, signed_targets


def signed_metrics(settings: dict, data: dict) -> list:
    """Metric names the target-only and GP members can learn through their sign ([] when off or without signs);
    with ``SIGNED_RATIO = 'auto'`` each stage trains them both ways and keeps the lower val NLL."""
    if not settings.get("SIGNED_RATIO", False):
        return []
    signs = data.get("signs") or {}
    train, val = signs.get("target_train"), signs.get("target_val")
    if train is None or val is None:
        return []
    return [c for c in data["y_cols"] if c in train.columns]


def fit_transforms(data: dict, metrics: list) -> list:
    """Per metric: ``fit_signed_transform`` on the target training rows plus its model space (the run's
    ``Preprocessing``: log1p or linear, mean, scale)."""
    pre, y, signs = data["preprocessing"], data["raw"]["target_train"][1], data["signs"]["target_train"]
    out = []
    for m in metrics:
        j = pre.y_cols.index(m)
        t = fit_signed_transform(y[m].to_numpy(float), signs[m].to_numpy(float))
        out.append({**t, "log": m in pre.log_y_cols, "y_mean": float(pre.y_mean[j]), "y_scale": float(pre.y_scale[j])})
    return out


def check_warm_transforms(warm_model, columns: list, where) -> list:
    """The warm-start SignedRatio's transforms, refused when it learned other metrics through their sign."""
    if list(warm_model.columns) != list(columns):
        raise ToolkitError(f"{where} learned metric columns {warm_model.columns} through their sign; this run's data "
                           f"give signs for columns {columns}. Fix: WARM_START_FROM='' to start fresh, or the same "
                           f"metric_signs.csv columns.")
    return warm_model.transforms


def with_signed_targets(data: dict, columns: list, transforms: list) -> dict:
    """``data`` with the target_train and target_val metric arrays in u space for the signed ``columns``."""
    out = dict(data)
    for split in ("target_train", "target_val"):
        x, y = data[split]
        y = np.array(y, copy=True)
        raw, signs = data["raw"][split][1], data["signs"][split]
        for j, t in zip(columns, transforms):
            name = data["y_cols"][j]
            y[:, j] = signed_targets(raw[name].to_numpy(float), signs[name].to_numpy(float), t)
        out[split] = (x, y)
    return out
