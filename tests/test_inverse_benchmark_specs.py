"""The benchmark's infeasible specs: beyond every simulated design, and not a handful repeated."""
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
