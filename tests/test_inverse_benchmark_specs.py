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


def test_within_std_records_of_many_specs_pool_per_metric():
    """The benchmark's honesty line for opt's candidates: counts summed over specs, then shares; a spec without a
    record (no simulation OK) adds nothing, and the failing-side share counts one-sided goals only."""
    from benchmarks.inverse_benchmark import pooled_within_std
    a = {"n": {"dc_gain": 8, "ugf": 8}, "within_1_std": {"dc_gain": 2, "ugf": 6}, "within_2_std": {"dc_gain": 4, "ugf": 8},
         "short": {"dc_gain": 7}}
    b = {"n": {"dc_gain": 2}, "within_1_std": {"dc_gain": 2}, "within_2_std": {"dc_gain": 2}, "short": {"dc_gain": 1}}
    got = pooled_within_std([a, None, b])
    assert got["dc_gain"] == {"n": 10, "within_1_std": 0.4, "within_2_std": 0.6, "n_one_sided": 10, "short": 0.8}
    assert got["ugf"] == {"n": 8, "within_1_std": 0.75, "within_2_std": 1.0, "n_one_sided": 0, "short": None}
    assert pooled_within_std([None]) == {}
