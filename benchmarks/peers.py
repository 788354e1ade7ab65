"""Peer baselines for ``benchmarks.run``: what a user would try instead of our transfer methods.

Every peer works from the same ``get_data_and_scalers`` dict as the stages (identical splits
and preprocessing: log features / log1p metrics, standardised) and returns *model-space*
predictions for ``target_test`` of shape (N_test, M); ``benchmarks.run`` converts them to
physical units with ``preprocessing.inverse_y`` (clipped) and scores every method with the
same ``inference.metrics.regression_report``.

    target_mlp  the seed's plain MLP (HIDDEN_DIM x NUM_LAYERS) on target_train only, MSE,
                early stopping on target_val MSE
    target_gbm  scikit-learn HistGradientBoosting, one per metric, on target_train; the number
                of boosting iterations is picked on target_val (staged predictions)
    target_gp   scikit-learn GaussianProcessRegressor per metric, kernel
                C * RBF(ARD length scales, one per feature) + White, normalize_y; at most
                ``gp_max_rows`` seeded training rows
    pooled      an MLP of its own size (POOLED_HIDDEN_DIM x POOLED_NUM_LAYERS) on source + target_train rows with a domain flag (0/1 input column,
                as a learned first-layer offset), MSE, early stopping on target_val; this is
                ``training.train_pooled``, which the ensemble also uses as a member
    stack_gbm   target_gbm with the source model's model-space prediction as M extra features
    stack_gp    target_gp with the same extra features

Hyperparameters arrive explicitly in ``hp`` (a dict built by ``peer_params``); nothing here
reads config.py.
"""
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from core.runtime import seed_everything
from models import MLP
from training.loop import TensorBatches, fit

GP_MAX_ROWS = 800        # training rows per GP (O(n^3)); every target_train here has fewer
GBM_MAX_ITER = 500       # boosting iterations tried; the best count on target_val is kept
GBM_LEARNING_RATE = 0.05


def peer_params(settings: dict, **extra) -> dict:
    """The explicit hyperparameters every peer reads, from resolved config settings."""
    hp = dict(hidden_dim=settings["HIDDEN_DIM"], num_layers=settings["NUM_LAYERS"],
              dropout=settings["DROPOUT_RATE"], lr=settings["LEARNING_RATE"],
              weight_decay=settings["WEIGHT_DECAY"], batch_size=settings["BATCH_SIZE"],
              pooled_batch_size=settings["BASELINE_BATCH_SIZE"], epochs=settings["EPOCHS"],
              patience=settings["PATIENCE"], gp_max_rows=GP_MAX_ROWS, gbm_max_iter=GBM_MAX_ITER)
    hp.update(extra)
    return hp


# ---- neural peers
def _mlp(input_dim, output_dim, hp) -> MLP:
    return MLP(input_dim, output_dim, hidden_dim=hp["hidden_dim"], num_layers=hp["num_layers"],
               dropout=hp["dropout"])


def _train_mse(model, x, y, x_val, y_val, *, hp, batch_size, seed, desc):
    loader = TensorBatches(x, y, batch_size=batch_size, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    fit(model, loader=loader, optimizer=opt, loss_fn=lambda m, b: (F.mse_loss(m(b[0]), b[1]), {}),
        evaluate=lambda m: {"mse": F.mse_loss(m(x_val), y_val).item()}, monitor="mse",
        epochs=hp["epochs"], patience=hp["patience"], desc=desc, progress=False)
    model.eval()
    return model


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def target_mlp(data: dict, *, seed: int, hp: dict, source_pred=None) -> np.ndarray:
    seed_everything(seed)
    (x, y), (xv, yv), (xt, _) = data["target_train"], data["target_val"], data["target_test"]
    model = _mlp(x.shape[1], y.shape[1], hp)
    _train_mse(model, _t(x), _t(y), _t(xv), _t(yv), hp=hp, batch_size=hp["batch_size"], seed=seed,
               desc="target-mlp")
    with torch.no_grad():
        return model(_t(xt)).double().numpy()                           # (N_test, M)


# ---- scikit-learn peers (one regressor per metric)
def _gbm_fit_predict(x, y, xv, yv, xt, *, seed: int, hp: dict) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor
    out = np.empty((len(xt), y.shape[1]))
    leaf = int(max(2, min(20, len(x) // 10)))  # sklearn's default 20 leaves 50-row trees a stump or two
    for j in range(y.shape[1]):
        gbm = HistGradientBoostingRegressor(max_iter=hp["gbm_max_iter"], learning_rate=GBM_LEARNING_RATE,
                                            min_samples_leaf=leaf, early_stopping=False, random_state=seed)
        gbm.fit(x, y[:, j])
        val_mse = [np.mean((p - yv[:, j]) ** 2) for p in gbm.staged_predict(xv)]
        best = int(np.argmin(val_mse))  # iteration count chosen on target_val, like early stopping
        for k, p in enumerate(gbm.staged_predict(xt)):
            if k == best:
                out[:, j] = p
                break
    return out


def _gp_fit_predict(x, y, xt, *, seed: int, hp: dict) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    if len(x) > hp["gp_max_rows"]:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), hp["gp_max_rows"], replace=False))
        x, y = x[keep], y[keep]
    out = np.empty((len(xt), y.shape[1]))
    for j in range(y.shape[1]):
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(x.shape[1]), (1e-2, 1e3))
                  + WhiteKernel(1e-2, (1e-6, 1e0)))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # length scales at a bound: legal, noisy
            gp.fit(np.asarray(x, float), y[:, j].astype(float))
        out[:, j] = gp.predict(np.asarray(xt, float))
    return out


def _stacked(data: dict, source_pred: dict) -> tuple:
    if source_pred is None:
        raise ValueError("stacking peers need source_pred={split: source-model prediction (model space)}")
    return tuple(np.hstack([data[s][0], source_pred[s]]) for s in ("target_train", "target_val", "target_test"))


def target_gbm(data: dict, *, seed: int, hp: dict, source_pred=None) -> np.ndarray:
    (x, y), (xv, yv), (xt, _) = data["target_train"], data["target_val"], data["target_test"]
    return _gbm_fit_predict(x, y, xv, yv, xt, seed=seed, hp=hp)


def target_gp(data: dict, *, seed: int, hp: dict, source_pred=None) -> np.ndarray:
    return _gp_fit_predict(data["target_train"][0], data["target_train"][1], data["target_test"][0],
                           seed=seed, hp=hp)


def stack_gbm(data: dict, *, seed: int, hp: dict, source_pred=None) -> np.ndarray:
    x, xv, xt = _stacked(data, source_pred)
    return _gbm_fit_predict(x, data["target_train"][1], xv, data["target_val"][1], xt, seed=seed, hp=hp)


def stack_gp(data: dict, *, seed: int, hp: dict, source_pred=None) -> np.ndarray:
    x, _, xt = _stacked(data, source_pred)
    return _gp_fit_predict(x, data["target_train"][1], xt, seed=seed, hp=hp)


# name -> (function, needs the source model's predictions, label for tables); function None: a toolkit stage
PEERS = {
    "target_mlp": (target_mlp, False, "target-only MLP"),
    "target_gbm": (target_gbm, False, "target-only GBM"),
    "target_gp": (target_gp, False, "target-only GP (ARD)"),
    "pooled": (None, False, "pooled MLP + domain flag"),   # the pooled stage: benchmarks.run trains it (training.train_pooled)
    "stack_gbm": (stack_gbm, True, "stacking: GBM on x + source pred"),
    "stack_gp": (stack_gp, True, "stacking: GP on x + source pred"),
}
