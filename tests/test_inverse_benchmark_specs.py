"""The benchmark's specs (infeasible ones: beyond the data, distinct) and its pooled records of many specs."""
import numpy as np

from benchmarks.inverse_benchmark import HIGHER_IS_BETTER, infeasible_spec

Y_COLS = ["slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"]


def test_infeasible_specs_are_distinct_and_beyond_the_data():
    rng = np.random.default_rng(0)
    y = np.exp(rng.normal(0, 1, (500, 5)))
    specs = [infeasible_spec(Y_COLS, y, np.random.default_rng(1 + i))[0] for i in range(50)]
    keys = {tuple(sorted((c, round(v["lo"], 9)) for c, v in s.to_dict().items() if v["lo"] is not None))
            for s in specs}
    assert len(keys) == 50                                     # fixed levels gave at most 12 distinct specs
    for s in specs:
        assert not s.meets(y).all(axis=1).any()                # no simulated design meets it
        beyond = [c for c in HIGHER_IS_BETTER if (s.to_dict()[c]["lo"] or 0) > y[:, Y_COLS.index(c)].max()]
        assert len(beyond) == 1


def test_standardised_errors_of_many_specs_pool_per_metric():
    """The benchmark's honesty table for opt's candidates: z pooled over specs; a spec with no usable simulation
    adds nothing; the failing side and the margin quantiles come from the specs where the metric had a one-sided
    goal (a hard spec leaves some metrics free), oriented by that goal."""
    from benchmarks.inverse_benchmark import pooled_std_errors
    a = {"dc_gain": {"side": -1, "z": [-3.0, -1.5, -0.5, 0.5]}, "ugf": {"side": 0, "z": [0.5, -2.5]}}
    b = {"dc_gain": {"side": 0, "z": [-2.5]}, "cmrr": {"side": 1, "z": [1.0, -1.0]}}
    c = {"dc_gain": {"side": -1, "z": [0.5, 1.0, -0.2]}}
    got = pooled_std_errors([a, None, b, c])
    g = got["dc_gain"]
    assert (g["n"], g["within_1_std"], g["within_2_std"]) == (8, 0.625, 0.75)               # every spec
    oriented = [3.0, 1.5, 0.5, -0.5, -0.5, -1.0, 0.2]                                       # specs a and c
    assert (g["n_one_sided"], g["side"], g["short"]) == (7, -1, 4 / 7)
    assert g["kappa_95"] == np.quantile(oriented, 0.95) and g["kappa_90"] < g["kappa_95"]
    assert g["specs_mostly_short"] == 0.5                    # a: 3 of 4 short, c: 1 of 3 (near-twins count once)
    assert got["ugf"] == {"n": 2, "within_1_std": 0.5, "within_2_std": 0.5, "n_one_sided": 0, "side": 0,
                          "short": None, "kappa_90": None, "kappa_95": None, "specs_mostly_short": None}
    assert got["cmrr"]["short"] == 0.5 and got["cmrr"]["side"] == 1
    assert got["cmrr"]["specs_mostly_short"] is None          # one spec: no share of specs
    assert pooled_std_errors([None]) == {}
