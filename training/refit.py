"""Refit on every non-test row (``REFIT``): after a stage has made its choices on target_val, train again
on target_train + target_val with those choices.

    REFIT = "off"        the seed's protocol: the saved model is the one early-stopped on target_val
    REFIT = "train+val"  the saved model is retrained from the same start on train + val rows, each training
                         phase for exactly the epochs early stopping chose for it (and, for align, at the
                         transfer depth val chose); the val rows then stop being a held-out set for it

Why: early stopping needs held-out rows, but once it has chosen the number of epochs those rows are
data a user paid for; with 50 training rows the ~160 val rows are three times more than the model saw.

The ensemble still needs out-of-sample val predictions for its fusion weights, temperatures and
interval multipliers.  The refitted model's val predictions are in-sample, so the checkpoint carries
the early-stopped model's instead (``extra["oof_val"]``, the mechanism the GP member uses), and the
early-stopped model's test report beside them (``extra["refit"]["early_stopped_test"]``, a report for the
benchmark tables, never used to choose anything).  The interval calibration is thus fitted on the model
before the refit and applied to the refitted one, whose own variances may be smaller or larger: the 95 %
coverage this gives on test is in docs/RESULTS.md#refit-and-deep-ensembles.
"""
import numpy as np
import torch

from inference.evaluate import evaluate_physical
from models.outputs import mean_and_variance


def refitting(settings: dict) -> bool:
    """``REFIT == "train+val"`` (the value itself is checked with every setting, ``core.settings.SETTING_RULES``)."""
    return settings.get("REFIT", "off") == "train+val"


def train_and_val(data: dict) -> dict:
    """``data`` with ``target_train`` replaced by target_train + target_val rows (the rows a refit learns from)."""
    (x_tr, y_tr), (x_val, y_val) = data["target_train"], data["target_val"]
    return {**data, "target_train": (np.concatenate([x_tr, x_val]), np.concatenate([y_tr, y_val]))}


@torch.no_grad()
def val_record(model, data: dict, device) -> dict:
    """The early-stopped ``model``'s model-space target_val predictions, in the ``extra["oof_val"]`` format the
    ensemble reads (``inference.predict.oof_val``).  A point model's variance is its val MSE per metric, as the
    ensemble would compute it."""
    model.eval()
    x_val = torch.as_tensor(data["target_val"][0], device=device)
    mean, var = mean_and_variance(model, x_val)
    mean = mean.double().cpu().numpy()
    if var is None:
        var = np.broadcast_to(np.mean((mean - data["target_val"][1]) ** 2, axis=0), mean.shape)
    else:
        var = var.double().cpu().numpy()
    return {"target_val_idx": list(data["split"]["target_val_idx"]),
            "method": "the model early-stopped on val, before the refit on train+val",
            "mean": mean.tolist(), "var": np.asarray(var).tolist()}


def refit_extra(stage: str, early_model, data: dict, device, epochs: dict) -> dict:
    """Announce the refit and return what the refitted checkpoint records beside its weights: ``oof_val`` (for the
    ensemble) and ``refit`` (rows, the epochs each phase is retrained for, the early-stopped model's test means)."""
    rows = len(data["target_train"][0]) + len(data["target_val"][0])
    print(f"[{stage}] refit on train+val ({rows} target rows) for the epochs val chose: "
          + ", ".join(f"{name} {n}" for name, n in epochs.items()))
    report = evaluate_physical(early_model, data, device)
    return {"oof_val": val_record(early_model, data, device),
            "refit": {"mode": "train+val", "rows": rows, "epochs": {k: int(v) for k, v in epochs.items()},
                      "early_stopped_test": report["mean"]}}
