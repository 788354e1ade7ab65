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


def test_posterior_covariance_is_sklearns_and_its_diagonal_plus_noise_is_the_predictive_variance():
    baseline, gps, model, rng = _fitted(2.5)
    x = torch.as_tensor(rng.uniform(-1.2, 1.2, size=(9, 3)), dtype=torch.float32)
    with torch.no_grad():
        z = torch.cat([x, baseline(x)], 1).double().numpy()
        cov, noise = model.posterior_cov(x, x), model.observation_noise()
        var = model.mean_var(x)[1]
    for j, gp in enumerate(gps):
        _, sk_cov = gp.predict(z, return_cov=True)         # sklearn: with the white noise on the diagonal
        latent = sk_cov - np.eye(len(z)) * noise[j].item()
        assert np.allclose(cov[j].numpy(), latent, rtol=1e-5, atol=1e-8)
    assert np.allclose((torch.diagonal(cov, dim1=1, dim2=2) + noise[:, None]).T.numpy(), var.numpy(), rtol=1e-6)
    assert torch.allclose(model.posterior_cov(x, x[:4]), cov[:, :, :4])


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


def test_gp_max_rows_subsets_and_bad_settings(tiny_data, tmp_path, monkeypatch):
    data, res = tiny_data(200, 120), tmp_path / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", "--quiet", *TINY]
    train.main([*common, "--epochs", "2"])
    train_gp.main([*common, "--set", "GP_MAX_ROWS=10", "--set", "GP_RESTARTS=0", "--set", "GP_ROWS=train"])
    _, meta = load_checkpoint(res / "5t_opamp_gp_stack.pth", expect_class=StackedGP)
    assert meta["extra"]["n_rows"] == 10 and meta["model_kwargs"]["n_train"] == 10
    assert "oof_val" not in meta["extra"]                              # val was held out: nothing to replace
    searched, fit_gps = [], train_gp.fit_gps
    monkeypatch.setattr(train_gp, "fit_gps", lambda *a, **kw: searched.append(kw["hyper_rows"]) or fit_gps(*a, **kw))
    train_gp.main([*common, "--set", "GP_MAX_ROWS=25", "--set", "GP_RESTARTS=0",
                   "--set", "GP_HYPER_ROWS=12"])   # train+val: val rows all kept; hyperparameters searched on 12
    _, meta = load_checkpoint(res / "5t_opamp_gp_stack.pth", expect_class=StackedGP)
    assert meta["extra"]["n_rows"] == 25 and len(meta["extra"]["oof_val"]["mean"]) == 18
    assert meta["config"]["GP_HYPER_ROWS"] == 12 and searched and set(searched) == {12}
    for bad, needle in (("GP_NU=2.0", "GP_NU must be one of"), ("GP_MAX_ROWS=1", "GP_MAX_ROWS must be"),
                        ("GP_ROWS=all", "GP_ROWS must be one of"), ("GP_MAX_ROWS=10", "leaves no room"),
                        ("GP_HYPER_ROWS=-1", "GP_HYPER_ROWS must be"), ("GP_HYPER_ROWS=3", "GP_HYPER_ROWS must be")):
        with pytest.raises(ToolkitError, match=needle):
            train_gp.main([*common, "--set", bad])


def test_hyper_rows_restarts_on_a_subset_then_one_polish_on_every_row(monkeypatch):
    from sklearn.gaussian_process import GaussianProcessRegressor
    rng = np.random.default_rng(3)
    z = rng.uniform(-1, 1, size=(60, 3))
    y = np.stack([np.sin(3 * z[:, 0]) + 0.1 * rng.normal(size=60), z[:, 1] ** 2], 1)
    fits, original = [], GaussianProcessRegressor.fit

    def recording_fit(self, X, yy):
        start = self.kernel.theta.copy()
        original(self, X, yy)
        fits.append(dict(X=X.copy(), restarts=self.n_restarts_optimizer, start=start, end=self.kernel_.theta.copy()))
        return self

    monkeypatch.setattr(GaussianProcessRegressor, "fit", recording_fit)
    gps = train_gp.fit_gps(z, y, nu=2.5, restarts=2, seed=0, hyper_rows=25)
    subset = np.sort(np.random.default_rng(0).choice(60, 25, replace=False))     # seeded by SEED
    assert [(len(f["X"]), f["restarts"]) for f in fits] == [(25, 2), (60, 0)] * 2   # per metric: search, polish
    for j, gp in enumerate(gps):
        search, polish = fits[2 * j], fits[2 * j + 1]
        assert np.array_equal(search["X"], z[subset]) and np.array_equal(polish["X"], z)
        assert np.array_equal(polish["start"], search["end"])     # the polish starts at the subset's best kernel
        assert len(gp.X_train_) == 60 and np.array_equal(gp.kernel_.theta, polish["end"])
    fits.clear()
    full = train_gp.fit_gps(z, y, nu=2.5, restarts=0, seed=0, hyper_rows=60)   # no fewer rows: the usual fit
    assert [(len(f["X"]), f["restarts"]) for f in fits] == [(60, 0)] * 2
    usual = train_gp.fit_gps(z, y, nu=2.5, restarts=0, seed=0)
    assert all(np.allclose(a.kernel_.theta, b.kernel_.theta) for a, b in zip(full, usual))


def test_explains_nothing_tells_noise_from_a_fitted_function():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    rng = np.random.default_rng(4)
    z = rng.uniform(-1, 1, size=(80, 3))
    smooth = train_gp.fit_gps(z, np.sin(3 * z[:, :1]), nu=2.5, restarts=0, seed=0)[0]
    assert not train_gp.explains_nothing(smooth)
    # every length scale at its lower bound: rows uncorrelated, the LML of i.i.d. noise, -N/2 (1 + log 2 pi)
    kernel = ConstantKernel(1.0, "fixed") * Matern(np.full(3, 1e-2), "fixed", nu=2.5) + WhiteKernel(1e-4, "fixed")
    flat = GaussianProcessRegressor(kernel, normalize_y=True).fit(z, rng.normal(size=80))
    assert train_gp.explains_nothing(flat)
    assert flat.log_marginal_likelihood_value_ == pytest.approx(-40 * (1 + np.log(2 * np.pi)), abs=0.5)


def test_a_polish_that_explains_nothing_is_refitted_from_the_default_start(monkeypatch):
    from sklearn.gaussian_process import GaussianProcessRegressor
    rng = np.random.default_rng(3)
    z = rng.uniform(-1, 1, size=(60, 3))
    y = np.sin(3 * z[:, :1]) + 0.1 * rng.normal(size=(60, 1))
    fits, original = [], GaussianProcessRegressor.fit

    def recording_fit(self, X, yy):
        start = self.kernel.theta.copy()
        original(self, X, yy)
        fits.append(dict(n=len(X), restarts=self.n_restarts_optimizer, start=start,
                         lml=self.log_marginal_likelihood_value_))
        return self

    monkeypatch.setattr(GaussianProcessRegressor, "fit", recording_fit)
    monkeypatch.setattr(train_gp, "explains_nothing", lambda gp: True)     # as if the polish had collapsed
    gp = train_gp.fit_gps(z, y, nu=2.5, restarts=1, seed=0, hyper_rows=25)[0]
    search, polish, fresh = fits
    assert (search["n"], polish["n"], fresh["n"]) == (25, 60, 60) and fresh["restarts"] == 0
    assert np.array_equal(fresh["start"], search["start"])                # the default kernel, not the subset's
    assert gp.log_marginal_likelihood_value_ == max(polish["lml"], fresh["lml"])
    fits.clear()
    monkeypatch.setattr(train_gp, "explains_nothing", lambda gp: False)
    train_gp.fit_gps(z, y, nu=2.5, restarts=1, seed=0, hyper_rows=25)
    assert len(fits) == 2                                                  # a sound polish: no extra fit


def test_leave_one_out_equals_refitting_without_the_row():
    """The closed-form leave-one-out prediction of a row equals a GP with the same kernel fitted without it."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    baseline, gps, model, rng = _fitted(2.5, n=30)
    z = np.asarray(model.train_z)
    mean, var = train_gp.loo_predictions(gps, [3, 17])
    for j, gp in enumerate(gps):
        y = gp._y_train_std * np.ravel(gp.y_train_) + gp._y_train_mean          # back to model space
        for k, row in enumerate((3, 17)):
            keep = np.arange(len(z)) != row
            ref = GaussianProcessRegressor(gp.kernel_, optimizer=None, normalize_y=False).fit(
                z[keep], (y[keep] - gp._y_train_mean) / gp._y_train_std)
            mu, sd = ref.predict(z[row:row + 1], return_std=True)
            assert np.isclose(mean[k, j], mu[0] * gp._y_train_std + gp._y_train_mean, rtol=1e-6, atol=1e-8)
            assert np.isclose(var[k, j], sd[0] ** 2 * gp._y_train_std ** 2, rtol=1e-5)


def test_train_plus_val_keeps_val_out_of_sample_for_the_ensemble(tiny_data, tmp_path):
    from inference.members import load_member
    from inference.predict import Ensemble
    from data_loader import get_data_and_scalers
    data, res = tiny_data(200, 120), tmp_path / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", "--quiet", *TINY]
    train.main([*common, "--epochs", "2"])
    train_gp.main([*common, "--set", "GP_RESTARTS=0"])                  # GP_ROWS=train+val, the default
    member = load_member("gp_stack", res / "5t_opamp_gp_stack.pth")
    oof = member.meta["extra"]["oof_val"]
    d = get_data_and_scalers("5t_opamp", data, seed=42)             # the defaults the stage ran with
    assert member.meta["preprocessing"]["log_y_cols"] == d["log_y_cols"]
    assert member.meta["extra"]["n_rows"] == len(d["target_train"][0]) + len(d["target_val"][0])
    assert oof["target_val_idx"] == list(d["split"]["target_val_idx"])
    with torch.no_grad():
        in_sample = member.model(torch.as_tensor(d["target_val"][0])).double().numpy()
    y_val = d["target_val"][1]
    # fitted on the val rows, the model nearly interpolates them; the leave-one-out errors are honest (larger)
    assert np.mean((np.asarray(oof["mean"]) - y_val) ** 2) > 2 * np.mean((in_sample - y_val) ** 2)
    ens = Ensemble.fit([member], d, selection="val")
    assert np.allclose(ens.params.val_mse[0], np.mean((np.asarray(oof["mean"]) - y_val) ** 2, axis=0))
    # scored on val (a run without a test split), the member is judged on those out-of-sample predictions
    from inference.evaluate import positive_floor
    from inference.metrics import regression_report
    got = ens.evaluate("target_val", d).record["members"]["gp_stack"]["metrics"]["mean"]["r2"]
    honest = regression_report(d["raw"]["target_val"][1].to_numpy(float), d["preprocessing"].inverse_y(
        np.asarray(oof["mean"])), d["y_cols"], floor=positive_floor(d))["mean"]["r2"]
    fitted = regression_report(d["raw"]["target_val"][1].to_numpy(float), d["preprocessing"].inverse_y(in_sample),
                               d["y_cols"], floor=positive_floor(d))["mean"]["r2"]
    assert np.isclose(got, honest) and not np.isclose(got, fitted)


def test_crossfit_predicts_each_val_row_from_gps_that_never_saw_it():
    baseline, gps, model, rng = _fitted(2.5, n=40)
    z = np.asarray(model.train_z)
    y = np.stack([gp._y_train_std * np.ravel(gp.y_train_) + gp._y_train_mean for gp in gps], 1)
    rows = np.arange(30, 40)
    mean, var = train_gp.crossfit_predictions(gps, z, y, rows, folds=5, seed=0)
    in_sample = np.stack([gp.predict(z[rows]) for gp in gps], 1)
    assert mean.shape == var.shape == (10, 2) and (var > 0).all()
    assert np.mean((mean - y[rows]) ** 2) > 1.3 * np.mean((in_sample - y[rows]) ** 2)   # out of sample: larger (1.7x)
    again, _ = train_gp.crossfit_predictions(gps, z, y, rows, folds=5, seed=0)
    assert np.array_equal(mean, again)


def test_crossfit_with_fewer_val_rows_than_folds():
    """A tiny val split (4 rows, 5 folds: one fold empty) used to crash in sklearn's predict on 0 rows."""
    baseline, gps, model, rng = _fitted(2.5, n=40)
    z = np.asarray(model.train_z)
    y = np.stack([gp._y_train_std * np.ravel(gp.y_train_) + gp._y_train_mean for gp in gps], 1)
    mean, var = train_gp.crossfit_predictions(gps, z, y, np.arange(36, 40), folds=5, seed=0)
    assert mean.shape == var.shape == (4, 2) and np.isfinite(mean).all() and (var > 0).all()


def test_missing_baseline_is_refused_before_anything_is_written(tiny_data, tmp_path):
    res = tmp_path / "res"
    with pytest.raises(ToolkitError, match="python -m training.train"):
        train_gp.main(["--data-dir", str(tiny_data(200, 120)), "--results-dir", str(res), "--quiet"])
    assert not res.exists()          # no scalers, no lock file: the check runs before the stage starts


def test_without_test_rows_the_stage_reports_its_out_of_sample_val_score(tiny_data, tmp_path):
    """--test-split 0: the GP stage's own report (metrics JSON, runs.jsonl) was its in-sample fit of the val rows
    (R^2 = 1.0000 for four metrics)."""
    import json
    from data_loader import get_data_and_scalers
    from inference.evaluate import positive_floor
    from inference.metrics import regression_report
    data, res = tiny_data(200, 120), tmp_path / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", "--quiet", *TINY,
              "--test-split", "0"]
    train.main([*common, "--epochs", "2"])
    train_gp.main([*common, "--set", "GP_RESTARTS=0"])
    report = json.loads((res / "5t_opamp_gp_stack_metrics.json").read_text())["test"]
    meta = json.loads((res / "5t_opamp_gp_stack.json").read_text())
    d = get_data_and_scalers("5t_opamp", data, seed=42, test_split=0.0)
    honest = regression_report(d["raw"]["target_val"][1].to_numpy(float),
                               d["preprocessing"].inverse_y(np.asarray(meta["extra"]["oof_val"]["mean"])),
                               d["y_cols"], floor=positive_floor(d))["mean"]["r2_log"]
    assert report["split"] == "target_val" and np.isclose(report["mean"]["r2_log"], honest)
