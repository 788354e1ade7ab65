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


def test_checkpoints_record_the_design_space_and_inverse_design_uses_it_without_the_data(tmp_path):
    """A model carries the design space of the data it learned from: inverse design snaps to it even when the data
    folder is gone (a model shared without its data); --design-space still wins."""
    import shutil

    from inverse.forward import load_forward
    from models.model_utils import read_checkpoint_meta
    from tests.synthetic import write_dataset
    from training import train_target_only
    data = write_dataset(tmp_path / "data", "5t_opamp", n_source=120, n_target=80)
    space = json.loads((DATA / "5t_opamp" / "target" / "meta.json").read_text())["design_space"]
    (data / "5t_opamp" / "target" / "meta.json").write_text(json.dumps({"design_space": space}))
    res = tmp_path / "res"
    train_target_only.main(["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", "--dry-run",
                            "--set", "HIDDEN_DIM=8", "--set", "NUM_LAYERS=1", "--quiet"])
    ckpt = res / "5t_opamp_target_only_hetero.pth"
    assert read_checkpoint_meta(ckpt)["design_space"] == space
    fwd = load_forward("target_only", ckpt, opamp="5t_opamp", results_dir=res)
    shutil.rmtree(data)
    rules, source = grid_for(data, "5t_opamp", None, fwd.design_space)
    assert "checkpoint" in source and [r.pattern for r in rules] == list(space)
    x = np.array([[3.3, 7.7, 12.2, 0.6, 1.9, 1.2, 7e-6]])
    assert snap_designs(x, list(space), rules).tolist() == [[3.5, 7.5, 12.0, 0.5, 2.0, 1.0, 5e-6]]
    # control: with neither the record nor the data, nothing is snapped
    assert grid_for(data, "5t_opamp")[0] == []
    assert grid_for(data, "5t_opamp", LIBRARY / "5t_opamp.toml", fwd.design_space)[1].endswith("5t_opamp.toml")
