"""Objectives under the spec (inverse/objective.py): figures as differentiable closed forms, the Pareto front,
the search trading the objective without giving up the goals, the CLI's outputs and its bad input."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import inverse_opt
from core.errors import ToolkitError
from inverse.goals import Spec
from inverse.objective import (figure_circuit, figure_values, figures_table, make_objective, pareto_front,
                               parse_objective)
from inverse.optimise import model_bounds, propose, random_starts
from inverse.snap import GRID
from inverse.verify import ngspice_available
from spice.circuits import circuit
from tests.test_inverse import FAST_OPT, REPO, _analytic, _opt, trained  # noqa: F401  (module fixture)
from tests.synthetic import X_COLS, Y_COLS


def _designs(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.choice([0.5, 1.0, 1.5, 2.0], n) if c.startswith("l") else
                         (rng.choice([5e-6, 1e-5, 2e-5], n) if c == "ibias" else rng.uniform(0.5, 50, n))
                         for c in X_COLS})


@pytest.mark.parametrize("opamp", ["5t_opamp", "two_stage_opamp"])
def test_figures_of_many_designs_equal_the_per_design_closed_form(opamp):
    c = circuit(opamp)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({k: rng.uniform(v.lo, v.hi, 20) for k, v in c.variables.items()})
    table = figures_table(c, frame)
    assert set(table) == {"gate_area", "bias_current"} and c.figure_units == {"gate_area": "um^2", "bias_current": "A"}
    for i in range(len(frame)):
        one = c.figures_of(frame.iloc[i].to_dict())
        for k, v in one.items():
            assert table[k][i] == pytest.approx(v, rel=1e-12)
    # the 5T's gate area by hand: m1/m2 (w1 l1), m3/m4 (w2 l2), m5/m6 (w3 l3)
    if opamp == "5t_opamp":
        f = frame
        np.testing.assert_allclose(table["gate_area"], 2 * (f.w1 * f.l1 + f.w2 * f.l2 + f.w3 * f.l3), rtol=1e-12)


def test_a_figure_is_differentiable_through_the_models_scaling():
    fwd = _analytic()
    pre = fwd.preprocessing
    obj = make_objective("min", "gate_area", y_cols=Y_COLS, circuit=figure_circuit("5t_opamp", X_COLS))
    frame = _designs(6)
    x = torch.tensor(pre.transform_x(frame), dtype=torch.float64, requires_grad=True)
    area = figure_values(obj, pre, x)
    np.testing.assert_allclose(area.detach().numpy(), figures_table(obj.circuit, frame)["gate_area"], rtol=1e-5)
    area.sum().backward()
    # d area / d w1 = 2 l1 (m1 and m2), through x_model = (log w1 - mean) / scale: d/dx = 2 l1 w1 scale
    j = X_COLS.index("w1")
    assert "w1" in pre.log_x_cols
    expect = 2 * frame["l1"].to_numpy() * frame["w1"].to_numpy() * pre.x_scale[j]
    np.testing.assert_allclose(x.grad[:, j].numpy(), expect, rtol=1e-4)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=60), rng.normal(size=60)
    a[5], b[5] = a[7], b[7]                                       # an exact duplicate keeps one
    front = pareto_front(a, b)
    dominated = [i for i in range(60) if any((a[k] <= a[i]) and (b[k] <= b[i]) and (a[k] < a[i] or b[k] < b[i])
                                             for k in range(60))]
    expect = sorted(set(range(60)) - set(dominated) - {max(5, 7)}, key=lambda i: a[i])
    assert list(front) == expect
    assert np.all(np.diff(a[front]) > 0) and np.all(np.diff(b[front]) < 0)


def _area_search():
    """The analytic forward model, a spec with one goal (slew rate >= 0.8 of a mid design's: room to trade area),
    the 5T circuit, its gate-area objective, the box and the search settings."""
    fwd = _analytic()
    pre = fwd.preprocessing
    design = pd.DataFrame([[20.0, 35.5, 8.0, 1.0, 1.5, 0.5, 10e-6]], columns=X_COLS)
    y0 = pre.inverse_y(fwd.predict_np(pre.transform_x(design))[0])[0]
    spec = Spec.build(Y_COLS, ["min", "range", "range", "range", "range"], y0 * 0.8,
                      bands={c: (-np.inf, np.inf) for c in Y_COLS[1:]})
    c = figure_circuit("5t_opamp", X_COLS)
    obj = make_objective("min", "gate_area", y_cols=Y_COLS, circuit=c)
    lo, hi = model_bounds(pre, GRID)
    return fwd, pre, spec, obj, (lo, hi), dict(steps=120, lr=0.05, lbfgs_steps=10, top_k=4, grid=GRID, circuit=c,
                                                  objective_margin=0.0, plain_slots=0)   # each test turns one on


def test_the_objective_shrinks_the_area_and_keeps_the_goals():
    fwd, pre, spec, obj, (lo, hi), kw = _area_search()
    plain = propose(fwd, spec, random_starts(48, lo, hi, seed=0), **kw).table
    small = propose(fwd, spec, random_starts(48, lo, hi, seed=0), objectives=[obj], **kw).table
    assert plain["meets_all"].all() and small["meets_all"].all() and (small["fails_pessimistic"] == 0).all()
    assert small["gate_area"].iloc[0] < 0.5 * plain["gate_area"].iloc[0]         # control: the same search without it
    assert small["gate_area"].is_monotonic_increasing                             # ordered by the objective
    np.testing.assert_allclose(small["objective"], small["gate_area"])


def test_maximising_a_metric_and_the_front_of_two_objectives():
    fwd = _analytic()
    pre = fwd.preprocessing
    spec = Spec.build(Y_COLS, ["range"] * 5, np.ones(5), bands={col: (-np.inf, np.inf) for col in Y_COLS})
    c = figure_circuit("5t_opamp", X_COLS)
    objs = [make_objective("min", "gate_area", y_cols=Y_COLS, circuit=c), make_objective("max", "ugf", y_cols=Y_COLS)]
    lo, hi = model_bounds(pre, GRID)
    prop = propose(fwd, spec, random_starts(48, lo, hi, seed=0), steps=80, lr=0.05, lbfgs_steps=5, top_k=4,
                   grid=GRID, objectives=objs, circuit=c)
    front = prop.table.attrs["pareto"]
    assert len(front) >= 3
    a, b = front["objective_gate_area"].to_numpy(), front["objective_ugf"].to_numpy()
    assert np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)      # more area buys more ugf along the front
    # the ugf on the front is the pessimistic prediction: below the mean
    assert (b <= front["pred_ugf"].to_numpy() * (1 + 1e-9)).all()


@pytest.mark.parametrize("text, phrase", [
    ("min:area", "neither a metric of the model nor a figure"),
    ("smallest:gate_area", "is not min or max"),
    ("gate_area", "must be min:NAME or max:NAME"),
])
def test_bad_objectives_name_what_is_known(text, phrase):
    with pytest.raises(ToolkitError, match=phrase) as e:
        parse_objective(text, y_cols=Y_COLS, circuit=circuit("5t_opamp"))
    assert "\n" not in str(e.value)
    with pytest.raises(ToolkitError, match="need the circuit file"):
        parse_objective("min:gate_area", y_cols=Y_COLS, circuit=None)
    assert figure_circuit("my_own_data", X_COLS) is None and figure_circuit("two_stage_opamp", X_COLS) is None


def test_cli_objective_and_front_outputs(trained, tmp_path):  # noqa: F811
    common, _, _ = trained
    (tmp_path / "s.toml").write_text('[goals]\nphase_margin = ">= 0 deg"\n')     # loose: the tiny model meets it
    out = inverse_opt.main([*common, "--spec", str(tmp_path / "s.toml"), *FAST_OPT, "--objective", "min:gate_area",
                            "--pareto", "max:ugf", "--top-k", "3", "--plain-slots", "0", "--save-dir", str(tmp_path / "o"),
                            "--quiet"])
    table, record = out["table"], out["record"]
    assert {"gate_area", "bias_current", "objective"} <= set(table.columns)
    assert record["objectives"] == [{"name": "gate_area", "sense": "min", "kind": "figure", "unit": "um^2"},
                                    {"name": "ugf", "sense": "max", "kind": "metric", "unit": "Hz"}]
    front = pd.read_csv(tmp_path / "o" / "pareto.csv")
    assert len(front) == len(record["pareto"]) >= 1 and (tmp_path / "o" / "pareto.png").stat().st_size > 1000
    ok = table[table["meets_all"]]
    assert ok["objective"].is_monotonic_increasing and record["settings"]["plain_slots"] == 0


@pytest.mark.parametrize("extra, body, phrase", [
    (["--pareto", "max:ugf"], None, "give the first with --objective"),
    (["--objective", "min:gate_area", "--pareto", "max:gate_area"], None, "two different quantities"),
    (["--objective", "min:area"], None, "neither a metric"),
    (["--objective", "min:gate_area"], '[goals]\nugf = ">= 1 MHz"\n[objective]\nminimize = "gate_area"\n',
     "the objective is given twice"),
    ([], '[goals]\nugf = ">= 1 MHz"\n[objective]\nsmallest = "gate_area"\n', r"\[objective\] must hold one line"),
    ([], '[goals]\nugf = "any"\n', "nothing to search for"),          # every design meets it: was a 7 s search
])
def test_cli_bad_objective_input_writes_nothing(trained, tmp_path, extra, body, phrase):  # noqa: F811
    common, _, _ = trained
    if body is None:
        argv = _opt(common, *extra)
    else:
        (tmp_path / "s.toml").write_text(body)
        argv = [*common, "--spec", str(tmp_path / "s.toml"), *FAST_OPT, *extra]
    with pytest.raises(ToolkitError, match=phrase):
        inverse_opt.main([*argv, "--save-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_cli_bad_objective_is_one_line_exit_2(trained):  # noqa: F811
    common, _, _ = trained
    out = subprocess.run([sys.executable, "-m", "inverse_opt", *_opt(common, "--objective", "max:speed")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
    assert json.dumps("speed") in out.stderr or "'speed'" in out.stderr


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_verification_measures_supply_current_near_the_ideal_mirror_figure():
    from inverse.verify import verify_designs
    from spice.simulate import resolve_process
    designs = _designs(3, seed=4)
    table = designs.assign(rank=[1, 2, 3], **{f"pred_{c}": 1.0 for c in Y_COLS})
    spec = Spec.build(Y_COLS, ["range"] * 5, np.ones(5), bands={c: (-np.inf, np.inf) for c in Y_COLS})
    ver = verify_designs("5t_opamp", table, spec, process="B", power=True)
    plain = verify_designs("5t_opamp", table, spec, process="B")
    assert "sim_power" not in plain and (ver["status"] == "ok").all()
    np.testing.assert_allclose(ver["sim_power"], resolve_process("B").vdd * ver["sim_supply_current"], rtol=1e-9)
    ideal = figures_table(circuit("5t_opamp"), designs)["bias_current"]       # 2 ibias
    assert np.all(np.abs(ver["sim_supply_current"] / ideal - 1) < 0.2)


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_figure_check_compares_a_figure_with_the_simulator():
    from benchmarks import figure_check
    rows = figure_check.main(["--opamp", "5t_opamp", "--n", "12"])
    q = rows["5t_opamp"]["quantiles"]
    assert rows["5t_opamp"]["n_ok"] >= 10 and 0.7 < q["0.5"] < 1.1 and q["0.05"] <= q["0.5"] <= q["0.95"]
    assert rows["5t_opamp"]["spearman"] > 0.5
    with pytest.raises(ToolkitError, match="has figures"):
        figure_check.main(["--opamp", "5t_opamp", "--figure", "area"])
    with pytest.raises(ToolkitError, match="not an operating-point column"):
        figure_check.main(["--opamp", "5t_opamp", "--measured", "watts"])


def test_figure_check_refuses_an_unknown_process_before_printing_its_table(capsys):
    from benchmarks import figure_check
    with pytest.raises(ToolkitError, match="unknown process 'C'"):
        figure_check.main(["--opamp", "5t_opamp", "--process", "C"])
    assert capsys.readouterr().out == ""                # the header used to print first


def test_an_objective_margin_ranks_the_designs_with_room_to_spare_first():
    fwd, pre, spec, obj, (lo, hi), kw = _area_search()
    kw["objectives"] = [obj]
    lo_model = spec.model_space(pre).lo[0].item()

    def slack(table):   # model-space distance of the slew rate's mean above its bound, in units of std (0.05)
        mean, std = fwd.predict_np(pre.transform_x(table[X_COLS]))
        return (mean[:, 0] - lo_model) / std[:, 0]
    edge = propose(fwd, spec, random_starts(48, lo, hi, seed=0), **kw).table
    margin = float(np.ceil(slack(edge)[0]))                           # more room than the smallest design has
    safe = propose(fwd, spec, random_starts(48, lo, hi, seed=0), **{**kw, "objective_margin": margin}).table
    assert slack(safe)[0] >= 1 + margin - 1e-6 > slack(edge)[0]       # kappa 1 + the margin
    assert safe["gate_area"].iloc[0] > edge["gate_area"].iloc[0]      # room costs area


def test_plain_slots_hedge_the_top_k_with_the_spec_alone_ranking():
    fwd, pre, spec, obj, (lo, hi), kw = _area_search()
    x0 = random_starts(48, lo, hi, seed=0)
    plain = propose(fwd, spec, x0, **kw).table
    only = propose(fwd, spec, x0, objectives=[obj], **kw).table
    hedged = propose(fwd, spec, x0, objectives=[obj], **{**kw, "plain_slots": 2}).table
    key = lambda t: [tuple(r) for r in t[X_COLS].to_numpy()]                   # noqa: E731
    assert key(hedged)[:2] == key(only)[:2]                                     # the objective's best first
    assert set(key(plain)[:2]) <= set(key(hedged))                              # then the spec-alone ranking's best
    assert len(set(key(hedged))) == len(hedged) == 4


def test_library_defaults_equal_the_command_line_defaults():
    import inspect

    import inverse_opt
    from inverse.optimise import rank_designs
    args, _ = inverse_opt.parse_args(["--opamp", "5t_opamp"])
    for fn in (propose, rank_designs):
        params = inspect.signature(fn).parameters
        assert params["objective_margin"].default == args.objective_margin == 1.0
        assert params["plain_slots"].default == args.plain_slots == 4


def test_cli_metric_objective_summary_says_the_value_is_pessimistic(trained, tmp_path, capsys):  # noqa: F811
    common, _, _ = trained
    (tmp_path / "s.toml").write_text('[goals]\nphase_margin = ">= 0 deg"\n')
    out = inverse_opt.main([*common, "--spec", str(tmp_path / "s.toml"), *FAST_OPT, "--objective", "max:ugf",
                            "--top-k", "3", "--plain-slots", "0", "--save-dir", str(tmp_path / "o"), "--quiet"])
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("[objective]"))
    top = out["table"].iloc[0]
    assert f"ugf = {top['objective']:.4g} (pessimistic prediction, mean - 1 std; mean {top['pred_ugf']:.4g})" in line
    assert top["objective"] < top["pred_ugf"]          # a maximised metric is ranked by mean - kappa std


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_cli_the_simulated_front_is_in_verify_csv(trained, tmp_path):  # noqa: F811
    """--pareto --verify simulated the front and left it out of verify.csv and the simulated_* files."""
    common, _, _ = trained
    (tmp_path / "s.toml").write_text('[goals]\nphase_margin = ">= 0 deg"\n')
    inverse_opt.main([*common, "--spec", str(tmp_path / "s.toml"), *FAST_OPT, "--objective", "min:gate_area",
                      "--pareto", "max:ugf", "--top-k", "2", "--save-dir", str(tmp_path / "o"), "--verify", "--quiet"])
    ver = pd.read_csv(tmp_path / "o" / "verify.csv")
    front = pd.read_csv(tmp_path / "o" / "pareto.csv")
    keys = lambda frame: set(map(tuple, frame[X_COLS].round(12).to_numpy()))   # noqa: E731
    assert keys(front) <= keys(ver) and not ver[X_COLS].duplicated().any()
    assert set(ver["set"]) <= {"top-k", "pareto"}
    assert len(pd.read_csv(tmp_path / "o" / "simulated_features.csv")) == len(ver)
