"""Snapping and the search box come from the design space that travels with the data, never from
feature names: the shipped data give the old grid exactly; data without one are not clamped."""
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ToolkitError
from inverse.snap import GRID, feature_bounds, grid_for, rules_from_design_space, snap_designs
from spice.circuits import LIBRARY
from spice.sampling import sample_designs

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("opamp", ["5t_opamp", "two_stage_opamp"])
def test_shipped_design_space_gives_the_same_grid_as_before(opamp):
    rules, source = grid_for(DATA, opamp)
    assert source.endswith(f"{opamp}/target/meta.json") and len(rules) == len(sample_designs(opamp, 0, 0, 1).columns)
    x = sample_designs(opamp, 5, 0, 200)
    cols = list(x.columns)
    rng = np.random.default_rng(0)
    jitter = x.to_numpy(float) * rng.uniform(0.8, 1.25, size=x.shape)          # off-grid, some outside the box
    np.testing.assert_array_equal(snap_designs(jitter, cols, rules), snap_designs(jitter, cols, GRID))
    for a, b in zip(feature_bounds(cols, grid=rules), feature_bounds(cols, grid=GRID)):
        np.testing.assert_array_equal(a, b)


def test_data_without_a_design_space_are_not_snapped_or_clamped(tmp_path):
    (tmp_path / "mine" / "target").mkdir(parents=True)
    rules, source = grid_for(tmp_path, "mine")
    assert rules == [] and source.startswith("none")
    x = np.array([[2e-6, 1.5e-7, 7e-6]])                                        # metres and amps: a user's units
    np.testing.assert_array_equal(snap_designs(x, ["w1", "l1", "ibias"], rules), x)
    # the old name-pattern table would have turned these into our micrometre grid
    assert snap_designs(x, ["w1", "l1", "ibias"], GRID)[0, 0] == 0.5


def test_design_space_file_overrides_and_bad_files_are_one_line(tmp_path):
    rules, source = grid_for(tmp_path, "mine", LIBRARY / "5t_opamp.toml")
    assert [r.pattern for r in rules] == ["w1", "w2", "w3", "l1", "l2", "l3", "ibias"]
    (tmp_path / "meta.json").write_text(json.dumps({"opamp": "x"}))
    with pytest.raises(ToolkitError, match="holds no design_space"):
        grid_for(tmp_path, "mine", tmp_path / "meta.json")
    with pytest.raises(ToolkitError, match="--design-space .* not found"):
        grid_for(tmp_path, "mine", tmp_path / "nope.toml")
    cont = rules_from_design_space({"ib": {"unit": "A", "range": [5e-6, 2e-5], "grid": {}, "sample": "loguniform"}})
    assert cont[0].kind == "range" and snap_designs(np.array([[1e-6]]), ["ib"], cont)[0, 0] == 5e-6
