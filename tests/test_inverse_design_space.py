"""Snapping and the search box come from the design space that travels with the data, never from
feature names: the shipped data give the old grid exactly; data without one are not clamped."""
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ToolkitError
from inverse.snap import (GRID, check_data_against_space, feature_bounds, grid_for, rules_from_design_space,
                          snap_designs)
from spice.circuit_file import check_variable
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


def test_step_grids_snap_to_the_generators_points_lo_plus_k_step():
    """A step grid is lo + k*step (what spice.generate draws), not the multiples of step: an offset range snaps
    onto its own points, and a step that does not reach hi stops at the last point inside."""
    spec = {"unit": "um", "range": [0.3, 10.3], "grid": {"step": 1}, "sample": "grid"}
    rule, = rules_from_design_space({"w": spec})
    x = np.array([0.3, 5.3, 5.9, 5.81, 0.0, 11.0, 7.0])
    np.testing.assert_array_equal(rule.snap(x), [0.3, 5.3, 6.3, 6.3, 0.3, 10.3, 7.3])
    points = check_variable("test", "w", spec).values()
    assert np.isin(rule.snap(np.random.default_rng(0).uniform(-1, 12, 500)), points).all()
    # control: the multiples of the step (the former rule) are not the generator's points
    assert not np.isin(np.round(x / 1.0) * 1.0, points).all()
    short, = rules_from_design_space({"v": {"unit": "V", "range": [0.0, 1.0], "grid": {"step": 0.3}}})
    np.testing.assert_allclose(short.snap(np.array([1.0, 0.5, 0.44])), [0.9, 0.6, 0.3])
    assert short.snap(np.array([0.1 + 0.2]))[0] == 0.3            # float noise cleaned: reads as the grid point


def test_data_in_other_units_than_the_design_space_are_refused_in_one_line():
    """Data in metres against a micrometre space (a unit slip) would be searched decades away from the data: refused
    naming the feature, the declared range and unit, the data range and where the space came from."""
    rules, source = grid_for(DATA, "5t_opamp", LIBRARY / "5t_opamp.toml")
    cols = ["w1", "w2", "w3", "l1", "l2", "l3", "ibias"]
    um = (np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 5e-6]), np.array([50, 50, 50, 2, 2, 2, 2e-5]))
    check_data_against_space(rules, cols, *um, source)                             # control: the shipped units pass
    check_data_against_space(rules, cols, um[0] * 0.2, um[1] * 5, source)          # a wider sweep is not a slip
    metres = (um[0] * np.r_[[1e-6] * 6, 1.0], um[1] * np.r_[[1e-6] * 6, 1.0])
    with pytest.raises(ToolkitError) as e:
        check_data_against_space(rules, cols, *metres, source)
    msg = str(e.value)
    assert "'w1'" in msg and "[0.5, 50] um" in msg and "[5e-07, 5e-05]" in msg and "5t_opamp.toml" in msg
    assert "--design-space" in msg and "\n" not in msg
    with pytest.raises(ToolkitError, match=r"declares no variable for feature\(s\) \['vx'\]"):
        check_data_against_space(rules, [*cols, "vx"], np.r_[um[0], 1], np.r_[um[1], 2], source)
    check_data_against_space([], cols, *metres, "none")                # no design space: the data's own box
    check_data_against_space(rules, cols, None, None, source)          # a checkpoint without recorded ranges


def test_bad_design_space_in_a_meta_json_is_one_line(tmp_path):
    """A meta.json given to --design-space (or travelling with the data) is checked like a circuit file's
    variables: lo > hi, no range, a bad grid or unit are one line naming the file and the entry, never a KeyError."""
    space = json.loads((DATA / "5t_opamp" / "target" / "meta.json").read_text())["design_space"]
    meta = tmp_path / "meta.json"
    for edit, message in [
        (lambda w: {**w, "range": [50, 0.5]}, r"design_space.w1: range \[50, 0.5\] needs finite lo <= hi"),
        (lambda w: {k: v for k, v in w.items() if k != "range"}, r"design_space.w1: range must be \[lo, hi\]"),
        (lambda w: {**w, "grid": {"step": -1}}, r"design_space.w1: grid step must be > 0"),
        (lambda w: {**w, "grid": {"values": [0.1, 100]}}, r"design_space.w1: grid values \[0.1, 100\] lie outside"),
        (lambda w: {**w, "unit": "m"}, r"design_space.w1: unit 'm' is not one of"),
    ]:
        meta.write_text(json.dumps({"design_space": {**space, "w1": edit(space["w1"])}}))
        with pytest.raises(ToolkitError, match=message) as e:
            grid_for(tmp_path, "mine", meta)
        assert str(meta) in str(e.value) and "\n" not in str(e.value)
    meta.write_text(json.dumps({"design_space": space}))                   # control: the shipped entries load
    assert [r.pattern for r in grid_for(tmp_path, "mine", meta)[0]] == list(space)
    with pytest.raises(ToolkitError, match=r"checkpoint.*design_space.w1: range"):
        grid_for(tmp_path, "mine", None, {**space, "w1": {**space["w1"], "range": [50, 0.5]}})


def test_inverse_opt_refuses_a_design_space_in_other_units_than_the_models_data(tmp_path, capsys):
    """End to end: a model trained on metre-unit CSVs and a micrometre --design-space stop before the search, one
    line, exit 2, nothing written; a space in the data's units passes the same check."""
    import pandas as pd

    import inverse_opt
    from core.cli import run_main
    from inverse.forward import load_forward
    from tests.synthetic import write_dataset
    from training import train_target_only
    data = write_dataset(tmp_path / "data", "5t_opamp", n_source=120, n_target=80)
    for domain in ("source", "target"):
        f = data / "5t_opamp" / domain / "features.csv"
        x = pd.read_csv(f)
        x[["w1", "w2", "w3", "l1", "l2", "l3"]] *= 1e-6
        x.to_csv(f, index=False)
    res = tmp_path / "res"
    common = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu"]
    train_target_only.main([*common, "--dry-run", "--set", "HIDDEN_DIM=8", "--set", "NUM_LAYERS=1", "--quiet"])
    ckpt = res / "5t_opamp_target_only_hetero.pth"
    argv = [*common, "--model-type", "target_only", "--ckpt", str(ckpt), "--y-target", "1e7,100,5e7,60,2000",
            "--goal", "min,min,range,range,min", "--n-init", "4", "--steps", "2", "--save-dir", str(tmp_path / "out"),
            "--design-space", str(LIBRARY / "5t_opamp.toml")]
    with pytest.raises(SystemExit) as e:
        run_main(inverse_opt.main, argv)
    assert e.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'w1' spans [5e-07, 5e-05]" in err[0] and "[0.5, 50] um" in err[0], err
    # control: the same model and a space in metres
    space = {c: {"unit": "um" if c != "ibias" else "A", "range": [lo, hi], "grid": {}, "sample": "uniform"}
             for c, lo, hi in (("w1", 5e-7, 5e-5), ("w2", 5e-7, 5e-5), ("w3", 5e-7, 5e-5), ("l1", 5e-7, 2e-6),
                               ("l2", 5e-7, 2e-6), ("l3", 5e-7, 2e-6), ("ibias", 5e-6, 2e-5))}
    fwd = load_forward("target_only", ckpt, opamp="5t_opamp", results_dir=res)
    rules = rules_from_design_space(space)
    check_data_against_space(rules, fwd.x_cols, fwd.preprocessing.x_min, fwd.preprocessing.x_max, "metres")


def test_a_verifying_circuit_narrower_than_the_searched_space_is_refused_before_the_search(tmp_path):
    from inverse.snap import check_space_inside_circuit
    from spice.circuits import circuit
    shipped = circuit("5t_opamp")
    grid = rules_from_design_space(shipped.design_space())
    check_space_inside_circuit(grid, shipped.features, shipped, "the data")             # the same space: fine
    text = (LIBRARY / "5t_opamp.toml").read_text()
    narrow = tmp_path / "my5t.toml"
    narrow.write_text(text.replace('name = "5t_opamp"', 'name = "my5t"')
                      .replace("range = [0.5, 50]", "range = [2, 40]", 1))
    with pytest.raises(ToolkitError, match=r"lets w1 range over \[0.5, 50\] um, but .*my5t.toml declares \[2, 40\]"):
        check_space_inside_circuit(grid, shipped.features, circuit(str(narrow)), "the data")
