"""The GP member: torch predictions equal scikit-learn's, one checkpoint format, the stage end to end."""
import numpy as np
import pytest
import torch

from core.errors import ToolkitError
from models import MLP
from models.gp import NUS, StackedGP, matern
from models.model_utils import load_checkpoint, save_checkpoint
from training import train, train_gp
from inference import infer_ensemble

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2"]


def _fitted(nu, seed=0, n=40, d=3, m=2):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    baseline = MLP(d, m, hidden_dim=8, num_layers=2, dropout=0.0).eval()
    x = torch.as_tensor(rng.uniform(-1, 1, size=(n, d)), dtype=torch.float32)
    with torch.no_grad():
        z = torch.cat([x, baseline(x)], 1).double().numpy()
    y = np.stack([np.sin(3 * z[:, 0]) + 0.1 * rng.normal(size=n), z[:, 1] ** 2 + 0.5 * z[:, d]], 1)
    gps = train_gp.fit_gps(z, y, nu=nu, restarts=0, seed=seed)
    return baseline, gps, train_gp.to_module(gps, baseline, z, nu), rng


@pytest.mark.parametrize("nu", NUS)
def test_torch_prediction_equals_sklearn(nu):
    baseline, gps, model, rng = _fitted(nu)
    x = torch.as_tensor(rng.uniform(-1.2, 1.2, size=(25, 3)), dtype=torch.float32)
    with torch.no_grad():
        z = torch.cat([x, baseline(x)], 1).double().numpy()
        mean, var = model.mean_var(x)
    for j, gp in enumerate(gps):
        mu, sd = gp.predict(z, return_std=True)
        assert np.allclose(mean[:, j].numpy(), mu, rtol=1e-6, atol=1e-8)
        assert np.allclose(var[:, j].sqrt().numpy(), sd, rtol=1e-5, atol=1e-7)


def test_matern_closed_forms_and_bad_nu():
    r = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    from sklearn.gaussian_process.kernels import Matern
    pts = np.array([[0.0], [0.5], [2.0]])
    for nu in NUS:
        assert np.allclose(matern(r, nu).numpy(), Matern(1.0, nu=nu)(np.zeros((1, 1)), pts)[0])
    with pytest.raises(ValueError, match="nu"):
        StackedGP(3, 2, nu=3.5)


def test_checkpoint_round_trip_and_gradients(tmp_path):
    _, _, model, rng = _fitted(2.5)
    path = tmp_path / "gp.pth"
    prep = {"x_cols": list("abc"), "y_cols": ["p", "q"], "log_x_cols": [], "log_y_cols": [], "x_mean": [0.0] * 3,
            "x_scale": [1.0] * 3, "y_mean": [0.0] * 2, "y_scale": [1.0] * 2}
    save_checkpoint(path, model, stage="gp_stack", x_cols=list("abc"), y_cols=["p", "q"], preprocessing=prep,
                    config={}, seed=0)
    assert torch.load(path, weights_only=True)                       # plain tensors only
    loaded, meta = load_checkpoint(path, expect_class=StackedGP)
    x = torch.tensor(rng.uniform(-1, 1, size=(7, 3)), dtype=torch.float32, requires_grad=True)
    for a, b in zip(model.mean_logvar(x), loaded.mean_logvar(x)):
        assert torch.equal(a, b)
    assert meta["model_kwargs"]["n_train"] == 40
    mean, logvar = loaded.mean_logvar(x)
    (mean.sum() + logvar.sum()).backward()                            # inverse design optimises through it
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_stage_end_to_end_and_as_ensemble_member(tiny_data, tmp_path):
    data, res = tiny_data(200, 120), tmp_path / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", "--quiet", *TINY]
    train.main([*common, "--epochs", "3"])
    summary = train_gp.main(common)
    assert summary["stage"] == "gp_stack" and np.isfinite(summary["test"]["mean"]["r2_log"])
    ckpt = res / "5t_opamp_gp_stack.pth"
    model, meta = load_checkpoint(ckpt, expect_class=StackedGP)
    assert meta["parent"].endswith("5t_opamp_baseline_model.pth") and meta["extra"]["n_rows"] > 0
    # the GP never looks at target_val: its val MSE is reported, not used to pick anything
    assert meta["history"]["gp_stack"][0]["epoch"] == 1
    record = infer_ensemble.main(["--data-dir", str(data), "--results-dir", str(res), "--members", "gp_stack",
                                  "--no-plots", "--dry-run"])
    assert list(record["members"]) == ["gp_stack"] and np.isfinite(record["ensemble"]["metrics"]["mean"]["r2_log"])


def test_gp_max_rows_subsets_and_bad_settings(tiny_data, tmp_path):
    data, res = tiny_data(200, 120), tmp_path / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", "--quiet", *TINY]
    train.main([*common, "--epochs", "2"])
    train_gp.main([*common, "--set", "GP_MAX_ROWS=10", "--set", "GP_RESTARTS=0"])
    _, meta = load_checkpoint(res / "5t_opamp_gp_stack.pth", expect_class=StackedGP)
    assert meta["extra"]["n_rows"] == 10 and meta["model_kwargs"]["n_train"] == 10
    for bad, needle in (("GP_NU=2.0", "GP_NU must be one of"), ("GP_MAX_ROWS=1", "GP_MAX_ROWS must be")):
        with pytest.raises(ToolkitError, match=needle):
            train_gp.main([*common, "--set", bad])
