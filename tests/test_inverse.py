"""Inverse design: MDN likelihood and sampling, goals, snapping, the optimiser on a known
forward model (reachable vs unreachable spec), bad input, SPICE verification, the CLIs end to end."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import inverse_mdn
import inverse_opt
from core.errors import ToolkitError
from data_loader.preprocessing import fit_preprocessing
from inverse import verify as verify_mod
from inverse.forward import FunctionForward, ModelForward
from inverse.goals import Spec, goal_loss, parse_bands, parse_goals, parse_weights, parse_y_target
from inverse.mdn import MDN, load_mdn, mdn_log_prob, mdn_nll, mdn_sample, save_mdn
from inverse.optimise import model_bounds, optimise, propose, random_starts, rank_designs
from inverse.snap import GRID, snap_designs
from spice.sampling import IBIAS_GRID, L_GRID, W_GRID
from tests.synthetic import X_COLS, Y_COLS, make_domain

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--quiet"]
FAST_OPT = ["--n-init", "16", "--steps", "30", "--lr", "0.05", "--finish-lbfgs", "5"]


# ---------------------------------------------------------------- MDN
def test_mdn_likelihood_matches_mixture_same_family(seeded):
    model = MDN(y_dim=5, x_dim=7, n_components=4, hidden=16, layers=2)
    y, x = torch.randn(32, 5), torch.randn(32, 7) * 2
    pi_logits, mu, log_sigma = model(y)
    ref = MixtureSameFamily(Categorical(logits=pi_logits), Independent(Normal(mu, log_sigma.exp()), 1)).log_prob(x)
    torch.testing.assert_close(mdn_log_prob(pi_logits, mu, log_sigma, x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mdn_nll(pi_logits, mu, log_sigma, x), -ref.mean(), atol=1e-5, rtol=1e-5)


def test_mdn_likelihood_stable_far_from_every_component():
    pi_logits, mu, log_sigma = torch.zeros(2, 3), torch.zeros(2, 3, 4), torch.full((2, 3, 4), -7.0)
    lp = mdn_log_prob(pi_logits, mu, log_sigma, torch.full((2, 4), 50.0))
    assert torch.isfinite(lp).all()    # naive sum of densities would underflow to log(0)


def test_mdn_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 2, 4, generator=g, dtype=torch.float64, requires_grad=True),
            (0.3 * torch.randn(3, 2, 4, generator=g, dtype=torch.float64)).requires_grad_(),
            torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(mdn_nll, args)


@pytest.mark.parametrize("shapes", [((4, 3), (4, 3, 2), (4, 3, 2), (4, 3)), ((4, 3), (4, 3, 2), (4, 3, 1), (4, 2)),
                                    ((4, 2), (4, 3, 2), (4, 3, 2), (4, 2)), ((4, 3), (4, 3, 2), (4, 3, 2), (5, 2))])
def test_mdn_bad_shapes(shapes):
    with pytest.raises(ValueError):
        mdn_log_prob(*[torch.zeros(s) for s in shapes])


def test_mdn_samples_within_bounds_and_checkpoint_round_trip(tmp_path, seeded):
    model = MDN(y_dim=5, x_dim=7, n_components=3, hidden=8, layers=1)
    with torch.no_grad():
        model.log_sigma_head.bias.fill_(1.0)  # wide components: many raw draws fall outside the box
    lo, hi = -torch.ones(7), torch.ones(7) * 0.5
    s = mdn_sample(model, torch.zeros(5), 500, lo=lo, hi=hi, generator=torch.Generator().manual_seed(1))
    assert s.shape == (500, 7) and (s >= lo).all() and (s <= hi).all()
    assert len(torch.unique(s[:, 0])) > 400     # redrawn, not all clipped onto the edges
    pre = _pre()
    save_mdn(tmp_path / "m.pth", model, x_cols=X_COLS, y_cols=Y_COLS, preprocessing=pre.to_dict(), config={},
             seed=0, x_lo=lo, x_hi=hi)
    again, meta = load_mdn(tmp_path / "m.pth")
    torch.load(tmp_path / "m.pth", weights_only=True)
    y = torch.randn(4, 5)
    for a, b in zip(model(y), again(y)):
        torch.testing.assert_close(a, b)
    assert meta["x_cols"] == X_COLS and json.loads((tmp_path / "m.json").read_text())["stage"] == "mdn"


# ---------------------------------------------------------------- goals and snapping
def test_snapping_yields_grid_values():
    rng = np.random.default_rng(0)
    cols = ["w1", "l1", "ibias", "cc", "cr", "vdd"]
    x = np.column_stack([rng.uniform(0, 60, 50), rng.uniform(0.3, 2.5, 50), rng.uniform(1e-6, 3e-5, 50),
                         rng.uniform(0.05e-12, 3e-12, 50), 10 ** rng.uniform(2.5, 5.5, 50), rng.uniform(1, 2, 50)])
    s = snap_designs(x, cols, GRID)
    assert np.isin(s[:, 0], W_GRID).all() and np.isin(s[:, 1], L_GRID).all() and np.isin(s[:, 2], IBIAS_GRID).all()
    cc_steps = s[:, 3] / 0.01e-12
    assert np.allclose(cc_steps, np.round(cc_steps)) and (s[:, 3] >= 0.1e-12 - 1e-24).all() and (s[:, 3] <= 2e-12).all()
    mant = s[:, 4] / 10 ** (np.floor(np.log10(s[:, 4])) - 2)
    assert np.allclose(mant, np.round(mant)) and (s[:, 4] >= 1e3).all() and (s[:, 4] <= 1e5).all()
    np.testing.assert_array_equal(s[:, 5], x[:, 5])       # no rule: stays continuous
    np.testing.assert_array_equal(snap_designs(s, cols, GRID), s)  # idempotent
    # no grid given: nothing is snapped or clamped by its name (a w1 in metres stays as it is)
    np.testing.assert_array_equal(snap_designs(x, cols), x)


def test_spec_meets_and_goal_loss_signs():
    spec = Spec.build(["a", "b", "c", "d"], ["min", "max", "range", "target"], [10, 5, 3, 100],
                      bands={"c": (2, 4)})
    assert spec.meets([[11, 4, 3, 103]]).all()
    assert spec.meets([[9, 6, 5, 110]]).tolist() == [[False, False, False, False]]
    assert not spec.meets([[np.nan, 4, 3, 100]])[0, 0]
    pre = fit_preprocessing(x_fit=pd.DataFrame({"x": [1.0, 2.0]}), y_fit=pd.DataFrame(
        {"a": [0.0, 20], "b": [0.0, 10], "c": [0.0, 6], "d": [0.0, 200]}), y_range=pd.DataFrame(
        {"a": [0.0, 20], "b": [0.0, 10], "c": [0.0, 6], "d": [0.0, 200]}), log_x_cols=[], log_y_cols=[])
    ms = spec.model_space(pre)
    good = torch.tensor(pre.transform_y(np.array([[15, 2, 3, 100.0]])))
    bad = torch.tensor(pre.transform_y(np.array([[5, 8, 5.5, 150.0]])))
    zero = torch.zeros(1, 4)
    assert goal_loss(good, zero, ms) < 0.1 * goal_loss(bad, zero, ms)
    # pessimism: the same mean with a large std costs more
    assert goal_loss(good, zero + 1.0, ms) > goal_loss(good, zero, ms)


# ---------------------------------------------------------------- optimiser on a known forward model
def _pre():
    x, y = make_domain(300, seed=0)
    return fit_preprocessing(x_fit=x, y_fit=y, y_range=y, log_x_cols=["w1", "w2", "w3", "ibias"],
                             log_y_cols=["ugf", "cmrr"])


def _analytic():
    """A smooth known forward model in model space: mean = tanh(x A), std = 0.05."""
    pre = _pre()
    a = torch.randn(7, 5, generator=torch.Generator().manual_seed(3)) * 0.6

    def fn(x):
        mean = torch.tanh(x @ a)
        return mean, torch.full_like(mean, 0.05)
    return FunctionForward(fn, pre)


def test_optimiser_meets_reachable_spec():
    fwd = _analytic()
    pre = fwd.preprocessing
    design = pd.DataFrame([[20.0, 35.5, 8.0, 1.0, 1.5, 0.5, 10e-6]], columns=X_COLS)    # on the grid
    y0 = pre.inverse_y(fwd.predict_np(pre.transform_x(design))[0])[0]
    spec = Spec.build(Y_COLS, ["min", "min", "range", "range", "min"], y0 * np.array([0.9, 0.9, 1, 1, 0.9]),
                      bands={"ugf": (0.8 * y0[2], 1.2 * y0[2]), "phase_margin": (y0[3] - 10, y0[3] + 10)})
    lo, hi = model_bounds(pre, GRID)
    prop = propose(fwd, spec, random_starts(32, lo, hi, seed=0), steps=150, lr=0.05, lbfgs_steps=10, top_k=4, grid=GRID)
    top = prop.table
    assert top["meets_all"].iloc[0] and top["fails_pessimistic"].iloc[0] == 0
    assert np.isin(top["w1"], W_GRID).all() and np.isin(top["l2"], L_GRID).all()     # snapped
    assert not top[X_COLS].duplicated().any()                                        # deduplicated
    # the ranking used the snapped prediction: re-predicting the snapped design gives the table's numbers
    again = pre.inverse_y(fwd.predict_np(pre.transform_x(top[X_COLS].iloc[:1]))[0])[0]
    np.testing.assert_allclose(again, top[[f"pred_{c}" for c in Y_COLS]].iloc[0].to_numpy(float), rtol=1e-5)
    # control: without optimisation the random starts rarely meet the spec
    ctrl, _, _ = rank_designs(fwd, spec, pre.inverse_x(random_starts(32, lo, hi, seed=0).numpy()), top_k=32, grid=GRID)
    assert ctrl["meets_all"].mean() < 0.5


def test_optimiser_holds_a_feature_constant_in_the_data_fixed():
    """A feature with one value in the data has lo == hi: the search keeps it there (it once went 0/0 = NaN and
    ranked an all-NaN design first)."""
    fwd = _analytic()
    pre = fwd.preprocessing
    lo, hi = model_bounds(pre, None)
    lo[6] = hi[6] = 0.25 * lo[6] + 0.75 * hi[6]
    spec = Spec.build(Y_COLS, ["max"] * 5, pre.inverse_y(np.full((1, 5), 0.5))[0])
    x, loss = optimise(fwd, spec.model_space(pre), random_starts(8, lo, hi, seed=0), lo, hi, steps=20,
                       lbfgs_steps=3)
    assert torch.isfinite(x).all() and torch.isfinite(loss).all()
    torch.testing.assert_close(x[:, 6], lo[6].expand(8))


def test_a_target_of_zero_needs_an_interval():
    """'target' / 'range' tolerances are fractions of |t|: at 0 nothing could pass, so it is refused (it used to
    run and report the goal as beyond the model's reach); with a band the same goal is fine."""
    for goal, bands in (("target", None), ("range", None), ("target", {"dc_gain": (-0.5, 0.5)})):
        with pytest.raises(ToolkitError, match="--band dc_gain=LO:HI"):
            Spec.build(Y_COLS, ["min", goal, "min", "min", "min"], [1.0, 0.0, 1.0, 1.0, 1.0], bands=bands)
    spec = Spec.build(Y_COLS, ["min", "range", "min", "min", "min"], [1.0, 0.0, 1.0, 1.0, 1.0],
                      bands={"dc_gain": (-0.5, 0.5)})
    assert spec.meets(np.array([[2.0, 0.1, 2.0, 2.0, 2.0]])).all()


def test_optimiser_reports_unreachable_spec():
    fwd = _analytic()
    pre = fwd.preprocessing
    # tanh <= 1 in model space: a slew rate of model value 3 is out of reach
    y_hi = pre.inverse_y(np.full((1, 5), 3.0), clip=False)[0]
    y_any = pre.inverse_y(np.zeros((1, 5)))[0]
    spec = Spec.build(Y_COLS, ["min", "max", "max", "max", "max"], [y_hi[0], *(y_any[1:] * 1e3)])
    lo, hi = model_bounds(pre, GRID)
    prop = propose(fwd, spec, random_starts(16, lo, hi, seed=0), steps=100, lr=0.05, lbfgs_steps=5, top_k=4, grid=GRID)
    assert not prop.table["meets_all"].any() and not prop.table["meets_slewrate_pos"].any()
    assert prop.table[["meets_dc_gain", "meets_ugf"]].all().all()     # the reachable goals still pass
    assert (prop.table["fails_pessimistic"] >= 1).all()
    # every design searched was checked: slew rate is the goal nothing reaches, the others are not to blame
    assert prop.feasibility["never_met"] == ["slewrate_pos"] and prop.feasibility["n_meet_all"] == 0
    assert prop.feasibility["best_tradeoff"]["misses"] == ["slewrate_pos"]
    assert set(prop.feasibility["best_tradeoff"]["design"]) == set(pre.x_cols)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, phrase", [
    (lambda: parse_y_target("1,2,3", Y_COLS), "needs 5 comma-separated"),
    (lambda: parse_y_target("1,2,x,4,5", Y_COLS), "is not a number"),
    (lambda: parse_goals("min,min,range,range,best", Y_COLS), "unknown goal 'best'"),
    (lambda: parse_goals("min,min", Y_COLS), "needs 5 words"),
    (lambda: parse_bands(Y_COLS, ugf_band="2e6:8e5"), "lo must be < hi"),
    (lambda: parse_bands(Y_COLS, bands=["gain=1:2"]), "unknown metric 'gain'"),
    (lambda: parse_bands(Y_COLS, pm_band="60"), "lo:hi"),
    (lambda: parse_weights("1,1,1,1,-1", Y_COLS), ">= 0"),
])
def test_bad_input_table(call, phrase):
    with pytest.raises(ToolkitError, match=phrase):
        call()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """Tiny data, dry-run forward stages, a tiny MDN."""
    from fine_tune import fine_tune
    from training import train, train_align_coral
    root = tmp_path_factory.mktemp("inv")
    data = tiny_data(200, 100)
    res = root / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu"]
    for stage in (train, train_align_coral, fine_tune):
        stage.main([*common, *TINY, "--dry-run"])
    summary = inverse_mdn.main([*common, "--hidden", "16", "--layers", "2", "--epochs", "8", "--quiet"])
    return common, res, summary


def _opt(common, *extra):
    return [*common, "--y-target", "1e7,100,5e7,60,2000", "--goal", "min,min,range,range,min", *FAST_OPT, *extra]


@pytest.mark.parametrize("extra, phrase", [
    (["--goal", "min,min,range,range"], "needs 5 words"),
    (["--goal", "min,min,range,range,huge"], "unknown goal"),
    (["--y-target", "1e7,100,5e7,60"], "needs 5 comma-separated"),
    (["--ugf-band", "3:1"], "lo must be < hi"),
    (["--band", "slew=1:2"], "unknown metric"),
    (["--ckpt", "nowhere.pth"], "python -m training.train_align_coral"),
    (["--model-type", "dualhead_b", "--ckpt", "nowhere.pth"], "python -m fine_tune.fine_tune"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--rounds", "3"], "add --verify"),
    (["--init-mdn", "nowhere.npy"], "not found"),
])
def test_cli_bad_input_writes_nothing(trained, tmp_path, extra, phrase):
    common, _, _ = trained
    with pytest.raises(ToolkitError, match=phrase):
        inverse_opt.main(_opt(common, "--save-dir", str(tmp_path / "out"), *extra))
    assert not (tmp_path / "out").exists()


def test_verify_without_ngspice_says_how_to_install(trained, tmp_path, monkeypatch):
    common, _, _ = trained
    monkeypatch.setattr(verify_mod, "ngspice_available", lambda: False)
    with pytest.raises(ToolkitError, match="apt-get install ngspice libngspice0"):
        inverse_opt.main(_opt(common, "--verify", "--save-dir", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_cli_bad_input_is_one_line_exit_2(trained, tmp_path):
    common, _, _ = trained
    out = subprocess.run([sys.executable, "-m", "inverse_opt", *_opt(common, "--goal", "min,max,best,range,min")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "unknown goal 'best'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "inverse_mdn", "--sample", "--model", str(tmp_path / "no.pth"),
                          "--y-target", "1,2,3,4,5"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "python -m inverse_mdn" in out.stderr


def test_cli_unreachable_spec_exits_3_with_the_reason(trained, tmp_path):
    """Searched, nothing meets the spec: a report and exit status 3 (not 2, which is bad input)."""
    common, _, _ = trained
    out = subprocess.run([sys.executable, "-m", "inverse_opt", *common, "--y-target", "1e30,1e30,5e7,60,2000",
                          "--goal", "min,min,range,range,min", *FAST_OPT, "--save-dir", str(tmp_path / "out")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr
    # the goals as a designer reads them, with units (was the goal word: "slewrate_pos (min)")
    assert "infeasible in prediction" in out.stdout and "slewrate_pos (>= 1e+30 V/s)" in out.stdout
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["feasible"] is False and "dc_gain" in record["feasibility"]["never_met"]


# ---------------------------------------------------------------- end to end
def test_end_to_end_mdn_sample_and_hybrid_optimisation(trained, tmp_path):
    common, res, summary = trained
    assert Path(summary["checkpoint"]).name == "mdn_5t_opamp.pth" and np.isfinite(summary["val"]["nll"])
    meta = json.loads((res / "mdn_5t_opamp.json").read_text())
    assert meta["history"]["mdn"][-1]["val_nll"] < meta["history"]["mdn"][0]["val_nll"]   # it learned
    npy = tmp_path / "init_16.npy"
    inverse_mdn.main(["--sample", "--model", str(res / "mdn_5t_opamp.pth"), "--y-target", "1e7,100,5e7,60,2000",
                      "--n", "16", "--out", str(npy)])
    xs, designs = np.load(npy), pd.read_csv(npy.with_suffix(".csv"))
    assert xs.shape == (16, 7) and list(designs.columns) == X_COLS
    # another circuit named: one line, not that circuit's designs from this MDN
    with pytest.raises(ToolkitError, match="trained for circuit '5t_opamp', not 'two_stage_opamp'"):
        inverse_mdn.main(["--sample", "--opamp", "two_stage_opamp", "--model", str(res / "mdn_5t_opamp.pth"),
                          "--y-target", "1e7,100,5e7,60,2000", "--n", "4", "--out", str(tmp_path / "other.npy")])
    assert not (tmp_path / "other.npy").exists()
    lo, hi = np.array(meta["extra"]["x_lo"]), np.array(meta["extra"]["x_hi"])
    assert ((xs >= lo - 1e-5) & (xs <= hi + 1e-5)).all()
    assert (designs["w1"] >= 0.5 - 1e-9).all() and (designs["ibias"] <= 20e-6 * (1 + 1e-6)).all()
    out = inverse_opt.main(_opt(common, "--init-mdn", str(npy), "--top-k", "3", "--save-dir", str(tmp_path / "run"),
                                "--ugf-band", "1e7:1e8", "--quiet"))
    table = pd.read_csv(tmp_path / "run" / "candidates.csv")
    assert 1 <= len(table) <= 3 and {"pred_ugf", "std_ugf", "meets_ugf", "meets_all"} <= set(table.columns)
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["command"].startswith("python -m inverse_opt") and "--init-mdn" in record["command"]
    assert record["spec"]["ugf"] == {"goal": "range", "target": 5e7, "lo": 1e7, "hi": 1e8, "weight": 1.0,
                                     "unit": "Hz"}
    assert out["record"]["n_predicted_ok"] == int(table["meets_all"].sum())
    # MDN checkpoint as the hybrid start, and the dual-head forward model
    inverse_opt.main(_opt(common, "--init-mdn", str(res / "mdn_5t_opamp.pth"), "--model-type", "dualhead_b",
                          "--save-dir", str(tmp_path / "run2"), "--quiet"))
    assert (tmp_path / "run2" / "candidates.csv").is_file()


def test_dualhead_forward_uses_its_variance_head_when_it_has_one():
    from models import DualHeadMLP
    torch.manual_seed(0)
    x = torch.randn(6, 7)
    het = DualHeadMLP(7, 5, hidden_dim=8, num_layers=2, logvar_head=True)
    mean, std = ModelForward(het, _pre(), std=0.3).predict(x)
    assert torch.allclose(std, torch.exp(0.5 * het.predict_B(x)[1])) and std.std() > 0   # per design
    plain = DualHeadMLP(7, 5, hidden_dim=8, num_layers=2)
    mean, std = ModelForward(plain, _pre(), std=0.3).predict(x)
    assert torch.allclose(std, torch.full_like(mean, 0.3))                             # val-MSE constant


# ---------------------------------------------------------------- SPICE
needs_ngspice = pytest.mark.skipif(not verify_mod.ngspice_available(), reason="ngspice not installed")


@needs_ngspice
def test_verify_two_designs_in_ngspice():
    from spice.simulate import simulate
    designs = pd.DataFrame([[20.0, 35.5, 8.0, 1.0, 1.5, 0.5, 10e-6], [1.0, 50.0, 2.0, 2.0, 0.5, 2.0, 5e-6]],
                           columns=X_COLS)
    sim0 = simulate("5t_opamp", designs.iloc[:1], "B")[Y_COLS].to_numpy(float)[0]
    spec = Spec.build(Y_COLS, ["min", "min", "range", "range", "min"], sim0 * np.array([0.9, 0.9, 1, 1, 0.9]),
                      bands={"ugf": (0.8 * sim0[2], 1.2 * sim0[2]), "phase_margin": (sim0[3] - 10, sim0[3] + 10)})
    table = designs.copy()
    table.insert(0, "rank", [1, 2])
    for c in Y_COLS:
        table[f"pred_{c}"] = 1.0
    ver = verify_mod.verify_designs("5t_opamp", table, spec, process="B")
    assert ver["pass_all"].tolist()[0] and (ver["status"] == "ok").all()
    np.testing.assert_allclose(ver[[f"sim_{c}" for c in Y_COLS]].iloc[0].to_numpy(float), sim0, rtol=1e-6)
    text = verify_mod.format_verification(ver, spec)
    assert "candidates meet every goal in SPICE" in text


@needs_ngspice
def test_cli_verify_on_two_candidates(trained, tmp_path):
    common, _, _ = trained
    out = inverse_opt.main(_opt(common, "--verify", "--top-k", "2", "--save-dir", str(tmp_path / "v"), "--quiet"))
    ver = pd.read_csv(tmp_path / "v" / "verify.csv")
    assert 1 <= len(ver) <= 2 and {"pred_ugf", "sim_ugf", "pass_ugf", "pass_all", "status"} <= set(ver.columns)
    assert out["record"]["verification"]["n_pass"] == int(ver["pass_all"].sum())
    assert out["record"]["feasible"] == bool(ver["pass_all"].any())
    assert out["record"]["verification"]["circuit"] == "5t_opamp"       # which circuit the simulations used
    within = out["record"]["verification"]["within_std"]                 # the candidates' stds went with them
    assert "std_ugf" in ver.columns
    assert (within is not None) == bool(((ver["std_ugf"] > 0) & (ver["status"] == "ok")).any())
    assert within is None or within["n"]["ugf"] == int(((ver["std_ugf"] > 0) & (ver["status"] == "ok")).sum())
    # a rerun into the folder (another spec) would replace these simulations: refused before the search ...
    with pytest.raises(ToolkitError, match="holds the simulated designs of an earlier run.*--overwrite"):
        inverse_opt.main(_opt(common, "--top-k", "2", "--save-dir", str(tmp_path / "v"), "--quiet"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "v" / "verify.csv"), ver)
    # ... unless told; and an unverified run does not leave the old simulations beside its candidates
    inverse_opt.main(_opt(common, "--top-k", "2", "--save-dir", str(tmp_path / "v"), "--quiet", "--overwrite"))
    assert not (tmp_path / "v" / "verify.csv").exists() and not (tmp_path / "v" / "simulated_targets.csv").exists()


def test_verify_lines_call_a_metric_left_free_free():
    spec = Spec.build(Y_COLS, ["min", "range", "range", "range", "min"], [1, 1, 1e6, 60, 1],
                      bands={"dc_gain": (-np.inf, np.inf), "ugf": (5e5, 2e6)})
    spec.units = {"ugf": "Hz", "phase_margin": "deg", "slewrate_pos": "V/s", "dc_gain": "V/V"}
    row = {"rank": 1, "pass_all": True, "status": "ok"}
    for c in Y_COLS:
        row.update({f"pass_{c}": True, f"pred_{c}": 1e6, f"sim_{c}": 1e6})
    text = verify_mod.format_verification(pd.DataFrame([row]), spec)
    assert "dc_gain[free]" in text and "ugf[5e+05 .. 2e+06 Hz] pred 1e+06 sim 1e+06 Hz ok" in text
    assert "phase_margin[54 .. 66 deg]" in text and "slewrate_pos[>= 1 V/s]" in text


def test_verify_counts_simulated_values_inside_the_predicted_mean_plus_minus_one_and_two_std():
    """A calibrated model holds ~68 % / 95 % of random designs inside mean +- 1 / 2 std; on optimised designs the
    realised share is what tells a designer how far --kappa's margin can be trusted."""
    spec = Spec.build(Y_COLS, ["min", "min", "range", "range", "max"], [1, 1, 1e6, 60, 200],
                      bands={"ugf": (5e5, 2e6), "phase_margin": (50, 70)})
    rows = []
    for k, (sim_gain, status) in enumerate([(100.5, "ok"), (101.5, "ok"), (103.0, "ok"), (0.0, "failed")]):
        row = {"rank": k + 1, "pass_all": True, "status": status}
        for c in Y_COLS:
            row.update({f"pass_{c}": True, f"pred_{c}": 100.0, f"std_{c}": 1.0, f"sim_{c}": 100.0})
        row["sim_dc_gain"] = sim_gain
        row["sim_slewrate_pos"] = 99.0 if k == 0 else 100.0    # below a min bound's prediction: short
        row["sim_cmrr"] = 100.5 if k < 2 else 99.5             # above a max bound's prediction: short
        row["std_ugf"] = 0.0                                   # no std (a point model): left out
        rows.append(row)
    ver = pd.DataFrame(rows)
    got = verify_mod.within_std(ver, spec)
    assert got["n"]["dc_gain"] == 3 and "ugf" not in got["n"]               # the failed design is not counted
    assert (got["within_1_std"]["dc_gain"], got["within_2_std"]["dc_gain"]) == (1, 2)   # |z| = 0.5, 1.5, 3
    assert got["within_1_std"]["phase_margin"] == got["within_2_std"]["phase_margin"] == 3
    text = verify_mod.format_verification(ver, spec)
    # one-sided goals only: how many fell on the side of the prediction that fails the bound
    assert got["short"] == {"slewrate_pos": 1, "dc_gain": 0, "cmrr": 2}
    assert "dc_gain 1/3 / 2/3" in text and "68 % / 95 %" in text
    assert "failing side of the prediction (one-sided goals): slewrate_pos 1/3, dc_gain 0/3, cmrr 2/3" in text
    assert verify_mod.within_std(ver.drop(columns=[c for c in ver if c.startswith("std_")]), spec) is None
    assert "std" not in verify_mod.format_verification(ver.drop(columns=[c for c in ver if c.startswith("std_")]),
                                                       spec)


@needs_ngspice
def test_cli_verify_that_no_design_passes_is_exit_3_even_when_some_are_predicted_to(trained, tmp_path, monkeypatch):
    """With --verify the simulation decides: it used to report success (exit 0) on a design only predicted to pass."""
    common, _, _ = trained
    real = inverse_opt.verify_designs

    def all_fail(*a, **k):
        ver = real(*a, **k)
        ver["pass_all"] = False
        return ver
    monkeypatch.setattr(inverse_opt, "verify_designs", all_fail)
    out = inverse_opt.main(_opt(common, "--verify", "--top-k", "2", "--save-dir", str(tmp_path / "v"), "--quiet",
                                "--y-target", "1,1,1,-1000,1", "--goal", "min,min,min,min,min"))   # a loose spec
    assert out["table"]["meets_all"].any()                     # predicted to pass ...
    assert out["record"]["feasible"] is False                  # ... but none did in simulation: exit 3


@needs_ngspice
def test_cli_rounds_keep_every_simulated_design_and_never_simulate_one_twice(trained, tmp_path):
    common, res, _ = trained
    out = inverse_opt.main(_opt(common, "--verify", "--top-k", "2", "--rounds", "3", "--save-dir", str(tmp_path / "r"),
                                "--quiet", "--y-target", "1e30,100,5e7,60,2000"))   # slew out of reach: never met
    record = out["record"]
    assert record["settings"]["init_mdn"] == str(res / "mdn_5t_opamp.pth")           # --init-mdn auto found it
    assert 1 <= len(record["rounds"]) <= 3 and record["simulations_until_success"] is None
    ver = pd.read_csv(tmp_path / "r" / "verify.csv")
    feats = pd.read_csv(tmp_path / "r" / "simulated_features.csv")
    targets = pd.read_csv(tmp_path / "r" / "simulated_targets.csv")
    assert list(feats.columns) == X_COLS and list(targets.columns) == [*Y_COLS, "status", "round"]
    assert len(ver) == len(feats) == len(targets) == record["rounds"][-1]["n_simulated"]
    assert not feats.duplicated().any() and set(ver["round"]) == set(range(1, ver["round"].max() + 1))
    none = inverse_opt.main(_opt(common, "--init-mdn", "none", "--save-dir", str(tmp_path / "n"), "--quiet"))
    assert none["record"]["settings"]["init_mdn"] is None and none["record"]["rounds"][0]["n_simulated"] == 0


def test_feasibility_names_unreachable_and_conflicting_goals():
    from inverse.feasibility import analyse, describe
    cols, goals = ["a", "b", "c"], ["min", "min", "max"]
    meets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]], bool)   # a and b each met, never together
    s = analyse(cols, goals, meets, loss=np.array([3.0, 2.0, 1.0, 4.0]))
    assert s["never_met"] == ["c"] and s["conflicts"] == [["a", "b"]] and s["n_meet_all"] == 0
    assert s["best_tradeoff"] == {"index": 2, "goals_met": 1, "misses": ["b", "c"]}   # ties: lowest loss
    text = "\n".join(describe(s))
    assert "never met" in text and "c (max)" in text and "a vs b" in text
    ok = analyse(cols, goals, np.ones((2, 3), bool), loss=np.zeros(2))
    assert ok["conflicts"] == [] and ok["never_met"] == [] and describe(ok) == []     # control: feasible says nothing


def test_inverse_mdn_says_a_forward_stage_key_does_nothing_there(capsys):
    """--set EPOCHS=5 was accepted and ignored (the MDN trained to epoch 44): its key is MDN_EPOCHS."""
    _, settings = inverse_mdn.parse_args(["--set", "EPOCHS=5", "--set", "MDN_LR=1e-3"])
    out = capsys.readouterr().out
    assert "--set EPOCHS=... does nothing here: inverse_mdn reads MDN_EPOCHS" in out and "MDN_LR" not in out
    assert settings["MDN_LR"] == 1e-3


def test_a_dry_run_or_a_worse_mdn_never_replaces_a_trained_one(trained, tmp_path, capsys):
    """The MDN shares the checkpoint format: a dry run over a trained MDN, or a worse one, kept nothing."""
    import shutil
    common, res, _ = trained
    folder = tmp_path / "res"
    shutil.copytree(res, folder)
    argv = [a if a != str(res) else str(folder) for a in common]
    mdn = folder / "mdn_5t_opamp.pth"
    before = mdn.read_bytes()
    with pytest.raises(ToolkitError, match="--dry-run would replace .*mdn_5t_opamp.pth, a trained checkpoint"):
        inverse_mdn.main([*argv, "--hidden", "16", "--layers", "2", "--dry-run", "--quiet"])
    assert mdn.read_bytes() == before
    inverse_mdn.main([*argv, "--hidden", "16", "--layers", "2", "--epochs", "1", "--set", "MDN_LR=1e-9", "--quiet"])
    assert (folder / "mdn_5t_opamp.previous_best.pth").read_bytes() == before
    assert "previous one is kept" in capsys.readouterr().out


@needs_ngspice
def test_ctrl_c_during_verify_keeps_the_designs_simulated_so_far(trained, tmp_path, monkeypatch):
    """Ctrl-C in the middle of the verification lost every simulation (the files were written only at the end)."""
    import importlib
    simulate_mod = importlib.import_module("spice.simulate")   # the module (the package exports the function)
    common, _, _ = trained
    real, calls = simulate_mod.simulate, []

    def third_is_interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(simulate_mod, "simulate", third_is_interrupted)
    out = tmp_path / "v"
    with pytest.raises(KeyboardInterrupt):
        inverse_opt.main(_opt(common, "--verify", "--top-k", "4", "--save-dir", str(out), "--quiet",
                              "--y-target", "1,1,1,-1000,1", "--goal", "min,min,min,min,min"))
    ver = pd.read_csv(out / "verify.csv")
    assert len(ver) == 2 and list(ver["rank"]) == [1, 2] and set(ver["round"]) == {1}
    assert len(pd.read_csv(out / "simulated_features.csv")) == len(pd.read_csv(out / "simulated_targets.csv")) == 2
    record = json.loads((out / "result.json").read_text())
    assert record["interrupted"] is True and len(record["verification"]["rows"]) == 2
    assert not (out / "candidates.csv").exists()                      # nothing claims a finished search


def test_round_names_and_the_spec_line(trained, tmp_path, capsys):
    """The candidates say which round proposed them; the spec is printed as read, with units."""
    common, _, _ = trained
    out = inverse_opt.main(_opt(common, "--save-dir", str(tmp_path / "r"), "--quiet"))
    assert list(out["table"]["round"].unique()) == [1]
    assert "round" in pd.read_csv(tmp_path / "r" / "candidates.csv").columns
    text = capsys.readouterr().out
    assert "[spec] slewrate_pos >= 1e+07 V/s; dc_gain >= 100 V/V (40.0 dB); ugf 4.5e+07 .. 5.5e+07 Hz; " \
           "phase_margin 54 .. 66 deg; cmrr >= 2000 V/V (66.0 dB)" in text
