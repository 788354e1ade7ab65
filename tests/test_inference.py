"""Ensemble inference: calibration, fusion, the report files, the prediction API, bad members."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from inference import infer_ensemble
from inference.calibration import (CURVE_LEVELS, calibration_summary, coverage, fit_coverage_temperature,
                                   fit_temperature, gaussian_nll, z_of)
from inference.fusion import apply_fusion, fit_fusion, fuse
from inference.predict import Ensemble, Member, check_agreement
from fine_tune import fine_tune
from training import train, train_align_coral, train_pooled, train_target_only

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--quiet"]


# ---------------------------------------------------------------- calibration
def _gaussian(n, m=3, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(n, m))
    sigma = np.exp(rng.normal(-1, 0.5, size=(n, m)))        # heteroscedastic true std
    y = mean + sigma * rng.normal(size=(n, m))
    return y, mean, (sigma / scale) ** 2                     # reported var = (sigma/scale)^2


def test_temperature_recovers_known_scale():
    y, mean, var = _gaussian(20000, scale=3.0)               # sigma reported 3x too small
    t = fit_temperature(y, mean, var)
    assert np.allclose(t, 3.0, rtol=0.05), t
    assert np.allclose(fit_coverage_temperature(y, mean, var), 3.0, rtol=0.05)
    y, mean, var = _gaussian(20000, scale=1.0)               # control: well calibrated -> T ~ 1
    assert np.allclose(fit_temperature(y, mean, var), 1.0, rtol=0.05)


def test_calibrated_coverage_on_held_out_gaussian_data():
    y_val, m_val, v_val = _gaussian(5000, seed=1, scale=3.0)
    y_te, m_te, v_te = _gaussian(5000, seed=2, scale=3.0)
    assert coverage(y_te, m_te, v_te, 0.68).mean() < 0.4     # control: mis-scaled intervals are far off
    for fit in (fit_temperature, fit_coverage_temperature):
        t = fit(y_val, m_val, v_val)
        cal = v_te * t ** 2
        assert np.all(np.abs(coverage(y_te, m_te, cal, 0.68) - 0.68) < 0.03)
        assert np.all(np.abs(coverage(y_te, m_te, cal, 0.95) - 0.95) < 0.03)
    summary = calibration_summary(y_te, m_te, v_te * fit_temperature(y_val, m_val, v_val) ** 2, ["a", "b", "c"])
    assert set(summary["a"]) == {"nll", "cov68", "cov95"} and "mean" in summary


def test_nll_matches_torch_and_z_values():
    y, mean, var = _gaussian(50)
    ref = torch.nn.functional.gaussian_nll_loss(torch.tensor(mean), torch.tensor(y), torch.tensor(var),
                                                full=True, reduction="none").mean(0).numpy()
    assert np.allclose(gaussian_nll(y, mean, var), ref)
    assert z_of(0.68) == pytest.approx(0.9945, abs=1e-3) and z_of(0.95) == pytest.approx(1.96, abs=1e-3)


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros((5,)), np.zeros((4, 3))])
def test_calibration_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="same shape"):
        fit_temperature(np.zeros((5, 3)), bad, np.ones((5, 3)))


# ---------------------------------------------------------------- fusion
def _members(n, seed, sd=(0.1, 0.4)):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 2))
    means = np.stack([y + s * rng.normal(size=y.shape) for s in sd])  # (K, N, M)
    variances = np.ones_like(means)                                    # both claim var 1 (uncalibrated)
    return y, means, variances


def test_fusion_favours_better_member():
    y, means, variances = _members(3000, 0)
    params = fit_fusion(["good", "bad"], means, variances, y)
    y_te, means_te, vars_te = _members(3000, 1)
    mean, var, w = apply_fusion(params, means_te, vars_te)
    assert w[0].mean() > 0.8                                           # the 4x better member dominates
    mse = ((means_te - y_te) ** 2).mean(axis=(1, 2))
    assert ((mean - y_te) ** 2).mean() <= mse.min()
    assert np.allclose(params.temperatures[0], 0.1, rtol=0.1)          # each member calibrated on its own
    # control: swap the members and the weight follows the better one
    params = fit_fusion(["bad", "good"], means[::-1], variances, y)
    assert apply_fusion(params, means_te[::-1], vars_te)[2][1].mean() > 0.8


def test_fuse_is_a_differentiable_mixture():
    means = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    variances = torch.rand(2, 4, 3, dtype=torch.float64) + 0.1
    mean, var, w = fuse(means, variances, val_mse=[[1.0] * 3, [1.0] * 3], beta=[0.0] * 3, gamma=[0.0] * 3)
    assert torch.allclose(mean, means.mean(0))                         # beta = gamma = 0: plain average
    mix = (variances + means ** 2).mean(0) - mean ** 2
    assert torch.allclose(var, mix)
    assert torch.autograd.gradcheck(lambda m: fuse(m, variances, val_mse=[[1.0, 2, 3], [2, 1, 1]],
                                                   beta=[1.0] * 3, gamma=[1.0] * 3)[0], (means,))
    with pytest.raises(ValueError, match=r"\(K, N, M\)"):
        fuse(means[0], variances[0], val_mse=[[1.0] * 3], beta=[1.0] * 3, gamma=[1.0] * 3)


# ---------------------------------------------------------------- end to end on test-made data
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("ens")
    data = tiny_data(200, 120)
    res = root / "res"
    args = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", *TINY, "--dry-run"]
    for stage in (train, train_align_coral, train_target_only, train_pooled, fine_tune):
        stage.main(args)
    record = infer_ensemble.main(args + ["--members", "align_hetero,target_only,pooled,dualhead"])
    return data, res, args, record


def test_report_files_written(trained):
    _, res, _, record = trained
    for name in ("ensemble_metrics.json", "ensemble_predictions.csv", "parity.png", "calibration.png",
                 "training_curves.png", "report.md"):
        assert (res / f"5t_opamp_{name}").is_file(), name
    saved = json.loads((res / "5t_opamp_ensemble_metrics.json").read_text())
    assert saved["split"] == "target_test" and saved["n"] == record["n"] > 0
    for col in saved["y_cols"]:
        assert set(saved["ensemble"]["metrics"][col]) >= {"mse", "mae", "r2", "r2_log", "mape"}
        for when in ("before", "after"):
            assert set(saved["ensemble"]["calibration"][when][col]) == {"nll", "cov68", "cov95"}
    assert set(saved["members"]) == {"align_hetero", "target_only", "pooled", "dualhead"}
    preds = pd.read_csv(res / "5t_opamp_ensemble_predictions.csv")
    assert len(preds) == saved["n"] and "ugf_mean" in preds and "ugf_std" in preds and (preds["ugf_std"] > 0).all()
    assert (preds["ugf_lo95"] <= preds["ugf_lo68"]).all() and (preds["ugf_hi68"] <= preds["ugf_hi95"]).all()
    assert set(saved["ensemble"]["interval_z"]) == {str(lv) for lv in CURVE_LEVELS}   # every level of the curve
    report = (res / "5t_opamp_report.md").read_text()
    assert "![Parity (test)](5t_opamp_parity.png)" in report and "| ensemble |" in report


def test_prediction_api_checks_columns_by_name(trained):
    data, res, _, record = trained
    ens = Ensemble.load(res, "5t_opamp")
    designs = pd.read_csv(data / "5t_opamp" / "target" / "features.csv").head(6)
    mean, std = ens.predict(designs)
    mean2, std2 = ens.predict(designs[designs.columns[::-1]])
    pd.testing.assert_frame_equal(mean, mean2)
    pd.testing.assert_frame_equal(std, std2)
    assert list(mean.columns) == record["y_cols"] and (std.to_numpy() > 0).all()
    with pytest.raises(ValueError, match="missing \\['w2'\\]"):
        ens.predict(designs.drop(columns=["w2"]))
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        ens.predict(designs.assign(extra=1.0))
    assert set(ens.temperatures) == {"align_hetero", "target_only", "pooled", "dualhead", "ensemble"}
    # the dual-head (default FINETUNE_OBJECTIVE="hetero") brings its own variance; pooled is a point model
    assert {m.name: m.point for m in ens.members} == {"align_hetero": False, "target_only": False,
                                                      "pooled": True, "dualhead": False}
    x = torch.tensor(ens.preprocessing.transform_x(designs), requires_grad=True)
    mu, sd = ens.predict_scaled(x)                                     # (N, M) each
    (mu.sum() + sd.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # physical mean == clipped inverse of the model-space mean
    assert np.allclose(ens.preprocessing.inverse_y(mu.detach().numpy().astype(float)), mean.to_numpy())
    lo68, hi68 = ens.predict_interval(designs, 0.68)
    lo95, hi95 = ens.predict_interval(designs, 0.95)
    assert (lo95.to_numpy() <= lo68.to_numpy()).all() and (hi68.to_numpy() <= hi95.to_numpy()).all()
    assert (lo68.to_numpy() <= mean.to_numpy() + 1e-9).all() and (mean.to_numpy() <= hi68.to_numpy() + 1e-9).all()


def test_missing_member_names_the_command(trained, tmp_path):
    _, res, args, _ = trained
    shutil.copytree(res, tmp_path / "res")
    (tmp_path / "res" / "5t_opamp_target_only_hetero.pth").unlink()
    args = [a if a != str(res) else str(tmp_path / "res") for a in args]
    with pytest.raises(ValueError, match="python -m training.train_target_only") as err:   # a member --members names
        infer_ensemble.main(args + ["--members", "align_hetero,target_only,dualhead"])
    data_dir = args[args.index("--data-dir") + 1]        # the user's own data folder: the fix runs as printed
    assert f"--data-dir {data_dir} --results-dir {tmp_path / 'res'} --seed" in str(err.value)


def test_member_from_other_circuit_refused(trained, tmp_path, tiny_data):
    _, res, args, _ = trained
    other = tiny_data(200, 120, "two_stage_opamp")
    train_target_only.main(["--opamp", "two_stage_opamp", "--data-dir", str(other), "--results-dir",
                            str(tmp_path / "o"), "--device", "cpu", *TINY, "--dry-run"])
    shutil.copytree(res, tmp_path / "res")
    shutil.copy(tmp_path / "o" / "two_stage_opamp_target_only_hetero.pth",
                tmp_path / "res" / "5t_opamp_target_only_hetero.pth")
    args = [a if a != str(res) else str(tmp_path / "res") for a in args]
    with pytest.raises(ValueError, match="two_stage_opamp"):
        infer_ensemble.main(args + ["--members", "align_hetero,target_only,dualhead"])


def test_members_with_other_columns_refused():
    meta = {"config": {"OPAMP_TYPE": "5t_opamp"}, "x_cols": ["a", "b"], "y_cols": ["y"],
            "preprocessing": {"x_mean": [0.0, 0.0]}, "split": {}}
    a = Member("align_hetero", Path("A.pth"), None, meta)
    b = Member("target_only", Path("B.pth"), None, {**meta, "x_cols": ["a", "c"]})
    with pytest.raises(ValueError, match="x_cols.*A.pth.*B.pth"):
        check_agreement([a, b])
    c = Member("target_only", Path("C.pth"), None, {**meta, "config": {"OPAMP_TYPE": "two_stage_opamp"}})
    with pytest.raises(ValueError, match="circuit"):
        check_agreement([a, c])
    check_agreement([a, Member("target_only", Path("D.pth"), None, dict(meta))])   # control: agreeing members pass


def test_conformal_interval_z_hits_both_levels_on_heavy_tails():
    """Student-t residuals: one temperature cannot match 68 % and 95 % at once; the multipliers do."""
    from inference.calibration import coverage, fit_coverage_temperature, fit_interval_z
    rng = np.random.default_rng(0)
    y_fit, y_new = rng.standard_t(2.5, size=(4000, 2)), rng.standard_t(2.5, size=(4000, 2))
    mean, var = np.zeros((4000, 2)), np.ones((4000, 2))
    z = fit_interval_z(y_fit, mean, var)
    for lv in (0.68, 0.95):
        assert np.all(np.abs(coverage(y_new, mean, var, lv, z[str(lv)]) - lv) < 0.02)
    t = fit_coverage_temperature(y_fit, mean, var)                   # control: a single scale misses one level
    miss = [np.abs(coverage(y_new, mean, var * t ** 2, lv) - lv).max() for lv in (0.68, 0.95)]
    assert max(miss) > 0.02


def test_multipliers_at_every_curve_level_and_between_them_cover_what_they_claim():
    """predict_interval(level=0.9) used the Gaussian z of a std calibrated for 68/95 %: 0.82-0.905 on 5t test."""
    from inference.calibration import coverage, fit_interval_z, interval_multiplier
    rng = np.random.default_rng(1)
    y_fit, y_new = rng.standard_t(2.5, size=(4000, 2)), rng.standard_t(2.5, size=(4000, 2))
    mean, var = np.zeros((4000, 2)), np.ones((4000, 2))
    z = fit_interval_z(y_fit, mean, var, levels=CURVE_LEVELS)
    for lv in (0.3, 0.8, 0.9, 0.85, 0.97):                          # fitted, and between two fitted levels
        assert np.all(np.abs(coverage(y_new, mean, var, lv, interval_multiplier(z, lv)) - lv) < 0.025), lv
    assert interval_multiplier(z, 0.995) is None and interval_multiplier(None, 0.9) is None   # Gaussian there


def test_the_python_api_is_the_script(trained, tmp_path):
    """Ensemble.fit/evaluate/save/load/predict give the numbers infer_ensemble wrote (it is a script over them)."""
    from core.stages import checkpoint_path
    from data_loader import data_kwargs_from_settings, get_data_and_scalers
    from inference.members import load_member
    _, res, args, record = trained
    _, settings = infer_ensemble.parse_args(args)
    data = get_data_and_scalers(**data_kwargs_from_settings(settings))
    names = ["align_hetero", "target_only", "pooled", "dualhead"]
    ens = Ensemble.fit([load_member(n, checkpoint_path(settings, n)) for n in names], data)
    result = ens.evaluate()
    assert result.record["ensemble"]["metrics"] == record["ensemble"]["metrics"]
    assert result.record["members"]["pooled"]["metrics"] == record["members"]["pooled"]["metrics"]
    saved = ens.save(tmp_path / "5t_opamp_ensemble_metrics.json", result)
    assert saved["fusion"] == record["fusion"] and saved["member_sha256"] == record["member_sha256"]
    loaded = Ensemble.load(res, "5t_opamp")
    mean, std = loaded.predict(data["raw"]["target_test"][0], out_of_domain="off")
    np.testing.assert_allclose(mean.to_numpy(), result.mean, rtol=1e-4)      # float32 torch path vs float64
    np.testing.assert_allclose(std.to_numpy(), result.std, rtol=1e-3)
    with pytest.raises(ValueError, match="evaluate needs data"):           # a loaded ensemble keeps no data
        loaded.evaluate()


def _correlated_members(rng, n, k=4, m=2):
    """k equally good members sharing an error term: the best fusion is the plain average, and any member
    that looks better on a few val rows does so by chance."""
    y = rng.normal(size=(n, m))
    shared = 0.5 * rng.normal(size=(n, m))
    means = y[None] + shared[None] + 0.3 * rng.normal(size=(k, n, m))
    return y, means, np.ones_like(means)


def test_cv_selection_does_not_reward_chance_on_val():
    """Scored in-sample, a weighting that follows the luckiest member on 40 val rows looks best; scored out of
    fold it does not.  Over 100 seeded val/test draws the cv choice has the lower test MSE on average and in
    most draws (measured: 0.280 vs 0.286, 88 % of 200 draws)."""
    rng = np.random.default_rng(0)
    test_mse = {"val": [], "cv": []}
    for _ in range(100):
        y, means, variances = _correlated_members(rng, 40)
        y_te, means_te, vars_te = _correlated_members(rng, 1000)
        for selection in test_mse:
            params = fit_fusion(list("abcd"), means, variances, y, selection=selection)
            assert params.selection == selection
            test_mse[selection].append(((apply_fusion(params, means_te, vars_te)[0] - y_te) ** 2).mean())
    cv, val = np.asarray(test_mse["cv"]), np.asarray(test_mse["val"])
    assert cv.mean() < val.mean()
    assert np.mean(cv <= val) > 0.7


def test_cv_selection_is_reproducible_and_falls_back_on_few_rows():
    rng = np.random.default_rng(1)
    y, means, variances = _correlated_members(rng, 60)
    a = fit_fusion(list("abcd"), means, variances, y, selection="cv")
    b = fit_fusion(list("abcd"), means, variances, y, selection="cv")
    assert a.to_dict() == b.to_dict()
    # the parameters fuse() uses are fitted on every val row either way
    v = fit_fusion(list("abcd"), means, variances, y, selection="val")
    assert np.allclose(a.temperatures, v.temperatures) and np.allclose(a.val_mse, v.val_mse)
    few = fit_fusion(list("abcd"), means[:, :12], variances[:, :12], y[:12], selection="cv")
    assert few.selection == "val"                       # 12 rows: folds of 2-3 rows would score nothing
    with pytest.raises(ValueError, match="selection"):
        fit_fusion(list("abcd"), means, variances, y, selection="oracle")


def test_a_member_trained_before_its_parent_or_on_other_rows_is_called_out_of_date(tmp_path):
    import os
    from inference.members import Member, out_of_date
    parent, child = tmp_path / "baseline.pth", tmp_path / "gp.pth"
    parent.write_text("p")
    child.write_text("c")
    os.utime(parent, (1_000, 1_000))
    os.utime(child, (2_000, 2_000))
    member = Member("gp_stack", child, None, {"parent": str(parent), "config": {"N_TARGET_TRAIN": 0}})
    assert out_of_date(member, {"N_TARGET_TRAIN": 0}) == []
    os.utime(parent, (3_000, 3_000))                                   # the baseline retrained since (--force)
    assert out_of_date(member, {"N_TARGET_TRAIN": 0}) == [f"its parent {parent} changed since it was trained"]
    assert "N_TARGET_TRAIN=0, this run uses 50" in out_of_date(member, {"N_TARGET_TRAIN": 50})[-1]
    os.utime(parent, (1_000, 1_000))
    data = tmp_path / "target" / "targets.csv"                         # rows appended after the member trained
    data.parent.mkdir()
    data.write_text("y")
    os.utime(data, (1_500, 1_500))
    assert out_of_date(member, {"N_TARGET_TRAIN": 0}, {"target_y": data}) == []
    os.utime(data, (2_500, 2_500))
    assert out_of_date(member, {"N_TARGET_TRAIN": 0}, {"target_y": data}) == [
        "the data changed after it was trained (target/targets.csv)"]


def test_an_empty_member_list_is_one_line(tmp_path):
    from core.errors import ToolkitError
    from inference import infer_ensemble
    with pytest.raises(ToolkitError, match="--members is empty"):
        infer_ensemble.main(["--members", "", "--results-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_a_metric_crossing_zero_is_left_out_of_the_mean_mape():
    """A phase margin crossing 0 (two-stage: 44 % of test rows negative): one row at 0.5 predicted -8.5 is 1752 %
    and the mean MAPE said nothing about the other metrics."""
    from inference.metrics import regression_report
    rng = np.random.default_rng(0)
    y = np.c_[rng.uniform(1, 2, 40), rng.uniform(-5, 5, 40)]
    pred = np.c_[y[:, 0] * 1.1, y[:, 1] + 1.0]
    report = regression_report(y, pred, ["a", "pm"])
    assert report["pm"]["mape"] > 50 and not report["pm"]["log_space"]
    assert report["mean"]["mape"] == pytest.approx(report["a"]["mape"])


def test_a_constant_metric_is_left_out_of_every_mean_over_metrics():
    from inference.calibration import coverage_curve
    from inference.metrics import regression_report
    rng = np.random.default_rng(0)
    y = np.c_[rng.uniform(1, 2, 40), np.full(40, 7.0)]                 # metric b: one value in every row
    pred = np.c_[y[:, 0] * 1.1, np.full(40, 7.0)]                       # a 10 % error on a, none on b
    report = regression_report(y, pred, ["a", "b"])
    assert np.isnan(report["b"]["r2"]) and report["b"]["mape"] == 0.0
    assert report["mean"]["mape"] == pytest.approx(report["a"]["mape"])   # not halved by b's 0 %
    var = np.c_[np.full(40, 1e-4), np.full(40, 1e-4)]
    summary = calibration_summary(y, pred, var, ["a", "b"])
    assert summary["b"]["cov95"] == 1.0 and summary["mean"]["cov95"] == pytest.approx(summary["a"]["cov95"])
    assert coverage_curve(y[:, :1], pred[:, :1], var[:, :1]) == coverage_curve(y, pred, var)
