"""inverse/refine.py: the model corrected by simulated designs, and the optimise -> simulate -> correct loop."""
import numpy as np
import pandas as pd
import torch
from sklearn.gaussian_process.kernels import Matern

from benchmarks.inverse_benchmark import PM_MIN, hard_spec, infeasible_spec
from inverse.forward import FunctionForward
from inverse.goals import Spec
from inverse.optimise import design_keys, hybrid_starts, model_bounds, propose
from inverse.refine import TAU, CorrectedForward, observed, search
from inverse.snap import GRID
from tests.synthetic import X_COLS, Y_COLS
from tests.test_inverse import _pre


def _constant(pre, std=0.5, dim=1):
    return FunctionForward(lambda x: (torch.zeros(len(x), dim), torch.full((len(x), dim), std)), pre)


class _Cols:
    x_cols, y_cols = ["a", "b"], ["y"]


def test_correction_is_the_gp_posterior_with_the_models_std_as_prior_scale():
    rng = np.random.default_rng(0)
    x_obs = rng.normal(size=(10, 2))
    y_obs = np.sin(2 * x_obs[:, :1])
    fwd = CorrectedForward(_constant(_Cols()), x_obs, y_obs)
    mean, std = fwd.predict(torch.tensor(x_obs, dtype=torch.float32))
    assert np.abs(mean.numpy() - y_obs).max() < 5 * TAU and (std.numpy() < 2 * TAU).all()   # pulled to the data
    far_mean, far_std = fwd.predict(torch.tensor([[40.0, 40.0]]))
    # far away the mean is the model's; its std is widened by c >= 1 (errors larger than the model's std)
    assert abs(float(far_mean)) < 1e-6 and abs(float(far_std) - 0.5 * float(fwd.gain[0])) < 1e-6
    assert float(fwd.gain[0]) >= 1.0
    # the textbook posterior (scikit-learn's kernel) at new points: prior (c 0.5)^2 * Matern(l), noise TAU^2
    length, c2 = float(fwd.length[0]), float(fwd.gain[0]) ** 2
    kernel = c2 * 0.25 * Matern(length_scale=length, nu=2.5)
    x_new = rng.normal(size=(5, 2))
    k = kernel(x_obs) + TAU ** 2 * np.eye(10)
    ks = kernel(x_new, x_obs)
    ref_mean = ks @ np.linalg.solve(k, y_obs[:, 0])
    ref_var = c2 * 0.25 - np.einsum("ij,ji->i", ks, np.linalg.solve(k, ks.T))
    mean, std = fwd.predict(torch.tensor(x_new, dtype=torch.float32))
    np.testing.assert_allclose(mean.numpy()[:, 0], ref_mean, atol=1e-5)
    np.testing.assert_allclose(std.numpy()[:, 0] ** 2, np.maximum(ref_var, TAU ** 2 / 10), atol=1e-5)
    # differentiable w.r.t. x, like every forward model
    x = torch.tensor(x_new, dtype=torch.float32, requires_grad=True)
    fwd.predict(x)[0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_point_model_gets_the_residual_scale_and_failed_rows_teach_nothing():
    pre = _pre()
    x_phys = pre.inverse_x(np.zeros((3, len(X_COLS)), np.float32))
    y_phys = pre.inverse_y(np.zeros((3, len(Y_COLS))))
    y_phys[1, 2] = -2.0          # a failed measurement: no model-space value (ugf is modelled as log1p)
    x, y = observed(pre, x_phys, y_phys, ok=np.array([True, True, False]))
    assert len(x) == len(y) == 1
    fwd = CorrectedForward(_constant(_Cols(), std=0.0), np.array([[0.0, 0.0]]), np.array([[0.3]]))
    _, std = fwd.predict(torch.tensor([[30.0, 30.0]]))
    assert float(std) > 0.02     # std 0 alone would make the correction impossible


def _world():
    """A true circuit whose slew rate (model space) is tanh(x_0), and a model that also believes in a spurious
    peak (height 1.8, width 0.3) where x_0 is low and the true slew rate is poor."""
    pre = _pre()
    a = torch.randn(7, 5, generator=torch.Generator().manual_seed(3)) * 0.6
    lo, hi = model_bounds(pre, GRID)
    centre = float(lo[0]) / 2

    def truth(x):
        y = torch.tanh(x @ a)
        return torch.cat([torch.tanh(x[:, :1]), y[:, 1:]], dim=1)

    def believed(x):
        mean = truth(x)
        bump = 1.8 * torch.exp(-((x[:, :1] - centre) / 0.3) ** 2)
        mean = torch.cat([mean[:, :1] + bump, mean[:, 1:]], dim=1)
        return mean, torch.full_like(mean, 0.05)
    return pre, truth, FunctionForward(believed, pre), 0.8 * float(torch.tanh(hi[0]))


def _simulator(pre, truth, spec, calls):
    def simulate(table):
        calls.append(design_keys(table, X_COLS).tolist())
        y = pre.inverse_y(truth(torch.as_tensor(pre.transform_x(table[X_COLS]))).numpy())
        out = pd.DataFrame({"rank": table["rank"].to_numpy()})
        for j, c in enumerate(Y_COLS):
            out[f"sim_{c}"] = y[:, j]
        out["status"] = "ok"
        out["pass_all"] = spec.meets(y).all(axis=1)
        return out
    return simulate


def _run(fwd, spec, simulate, rounds, top_k=4, log=lambda *_: None):
    pre = fwd.preprocessing
    lo, hi = model_bounds(pre, GRID)

    def propose_round(model, x0, exclude):
        return propose(model, spec, x0, steps=120, lr=0.05, lbfgs_steps=10, top_k=top_k, exclude=exclude, grid=GRID)
    return search(fwd, spec, starts=lambda model, rnd: hybrid_starts(48, lo, hi, seed=rnd), rounds=rounds,
                  propose_round=propose_round, simulate=simulate, log=log)


def test_refinement_learns_the_models_error_and_then_meets_the_spec():
    pre, truth, fwd, reachable = _world()
    # a slew rate the truth reaches only where x_0 is high; the model ranks its spurious peak first
    y_hi = pre.inverse_y(np.array([[reachable, -3, -3, -3, -3]]))[0]
    open_ = {c: (-np.inf, np.inf) for c in Y_COLS[1:]}
    spec = Spec.build(Y_COLS, ["min", "range", "range", "range", "range"], y_hi, bands=open_)
    calls = []
    one = _run(fwd, spec, _simulator(pre, truth, spec, calls), rounds=1)
    assert one.success_at is None and one.rounds[0]["n_predicted_ok"] > 0   # fooled by the bias: all fail
    calls.clear()
    found = _run(fwd, spec, _simulator(pre, truth, spec, calls), rounds=4)
    assert found.success_at is not None and found.success_at <= 16
    flat = [k for c in calls for k in c]
    assert len(flat) == len(set(flat)) == found.rounds[-1]["n_simulated"]    # nothing simulated twice
    assert [r["round"] for r in found.rounds] == list(range(1, len(found.rounds) + 1))
    assert found.verified[0]["round"].eq(1).all() and set(X_COLS) <= set(found.verified[0].columns)


def test_refinement_stops_before_simulating_when_the_corrected_model_sees_no_way():
    pre, truth, fwd, _ = _world()
    y_hi = pre.inverse_y(np.array([[1.9, -3, -3, -3, -3]]), clip=False)[0]   # above even the spurious peak
    spec = Spec.build(Y_COLS, ["min", "range", "range", "range", "range"], y_hi,
                      bands={c: (-np.inf, np.inf) for c in Y_COLS[1:]})
    calls = []
    found = _run(fwd, spec, _simulator(pre, truth, spec, calls), rounds=5)
    assert found.success_at is None and len(calls) < 5 and found.rounds[-1]["n_pass"] is None
    assert found.rounds[-1]["n_predicted_ok"] == 0 and found.rounds[-1]["n_simulated"] == 4 * len(calls)
    # n_simulated counts every round so far; the round that stopped before simulating says it simulated none
    assert found.rounds[-1]["simulated_this_round"] == 0
    assert [r["simulated_this_round"] for r in found.rounds[:-1]] == [4] * len(calls)
    # a metric no goal bounds is marked free for a reader (its target is only the MDN's condition), not in a key
    assert spec.to_dict()["dc_gain"]["free"] is True and "free" not in spec.to_dict()["slewrate_pos"]
    assert "free" not in spec.to_dict(units=False)["dc_gain"]


def test_benchmark_hard_specs_are_met_by_some_simulated_design_and_infeasible_by_none():
    rng = np.random.default_rng(0)
    y_all = np.column_stack([rng.lognormal(17, 1, 500), rng.lognormal(4, 0.5, 500), rng.lognormal(15, 1, 500),
                             rng.uniform(30, 90, 500), rng.lognormal(9, 1, 500)])
    for seed in range(5):
        spec, q = hard_spec(Y_COLS, y_all, np.random.default_rng(seed))
        met = spec.meets(y_all).all(axis=1)
        assert met.any() and met.mean() < 0.2 and 0.5 < q <= 0.9
        assert sum(g == "min" for g in spec.goals) == 4 and spec.lo[Y_COLS.index("phase_margin")] == PM_MIN
        spec, _ = infeasible_spec(Y_COLS, y_all, np.random.default_rng(seed))
        assert not spec.meets(y_all).all(axis=1).any()


def test_a_round_in_which_every_simulation_failed_ends_the_search():
    pre, truth, fwd, reachable = _world()
    y_hi = pre.inverse_y(np.array([[reachable, -3, -3, -3, -3]]))[0]
    spec = Spec.build(Y_COLS, ["min", "range", "range", "range", "range"], y_hi,
                      bands={c: (-np.inf, np.inf) for c in Y_COLS[1:]})
    calls, said = [], []
    ok_sim = _simulator(pre, truth, spec, calls)

    def failing(table):
        out = ok_sim(table)
        out["status"], out["pass_all"] = "incomplete_step", False
        return out
    found = _run(fwd, spec, failing, rounds=4, log=said.append)
    assert len(calls) == 1 and len(found.rounds) == 1 and found.rounds[0]["n_failed_sims"] == 4
    assert "every simulated design failed ({'incomplete_step': 4})" in said[-1]
