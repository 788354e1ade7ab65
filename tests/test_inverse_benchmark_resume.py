"""An interrupted inverse benchmark resumes after the specs it finished, only with the same arguments."""
import json

from benchmarks.inverse_benchmark import partial_path, resumed_specs


def test_resume_only_with_the_same_arguments(tmp_path, capsys):
    path = tmp_path / "inverse_benchmark_5t_opamp_hard_r4.json"
    assert resumed_specs(path, {"n_specs": 50}) == []            # nothing saved yet
    rows = [{"spec": {"dc_gain": [10.0, None]}, "opt": {"top1": True}}]
    partial_path(path).write_text(json.dumps({"args": {"n_specs": 50, "seed": 42}, "per_spec": rows}))
    assert partial_path(path).name == "inverse_benchmark_5t_opamp_hard_r4.partial.json"
    assert resumed_specs(path, {"n_specs": 50, "seed": 42}) == rows
    assert "1 specs done" in capsys.readouterr().out
    assert resumed_specs(path, {"n_specs": 50, "seed": 43}) == []   # other arguments: start over, say so
    assert "other arguments" in capsys.readouterr().out
    partial_path(path).write_text("{truncated")
    assert resumed_specs(path, {"n_specs": 50, "seed": 42}) == []
    # a finished run with the same arguments (models included) is summarised again, not simulated again
    partial_path(path).unlink()
    path.write_text(json.dumps({"args": {"n_specs": 50, "seed": 42}, "summary": {}, "per_spec": rows}))
    assert resumed_specs(path, {"n_specs": 50, "seed": 42}) == rows
    assert "without simulating" in capsys.readouterr().out
    assert resumed_specs(path, {"n_specs": 50, "seed": 42, "models": {"forward": "0" * 64}}) == []


def test_the_models_are_part_of_a_runs_arguments(tmp_path):
    """Retrained forward models or MDN in the folder make another run: never resumed from the old models' rows."""
    from benchmarks.inverse_benchmark import model_fingerprint
    res = tmp_path / "res"
    res.mkdir()
    (res / "5t_opamp_ensemble_metrics.json").write_text("{}")
    (res / "mdn_5t_opamp.pth").write_bytes(b"mdn")
    (res / "5t_opamp_target_only.pth").write_bytes(b"net")
    ens = model_fingerprint("ensemble", res, res, "5t_opamp")
    one = model_fingerprint("target_only", res / "5t_opamp_target_only.pth", res, "5t_opamp")
    assert ens["mdn"] == one["mdn"] and ens["forward"] != one["forward"]
    (res / "mdn_5t_opamp.pth").write_bytes(b"retrained")
    assert model_fingerprint("ensemble", res, res, "5t_opamp")["mdn"] != ens["mdn"]


def test_a_finished_benchmark_with_other_arguments_is_not_replaced(tmp_path):
    """Another --model-type into the same results folder used to overwrite the first run's file without a word."""
    import pytest
    from benchmarks.inverse_benchmark import check_not_replacing
    from core.errors import ToolkitError
    path = tmp_path / "inverse_benchmark_5t_opamp.json"
    check_not_replacing(path, {"model_type": "ensemble"})                       # nothing there yet
    path.write_text(json.dumps({"args": {"model_type": "target_only", "seed": 42}, "summary": {}}))
    check_not_replacing(path, {"model_type": "target_only", "seed": 42})          # a rerun of the same: fine
    with pytest.raises(ToolkitError, match=r"model_type: 'target_only' -> 'ensemble'.*move or rename"):
        check_not_replacing(path, {"model_type": "ensemble", "seed": 42})
