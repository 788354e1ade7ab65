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
