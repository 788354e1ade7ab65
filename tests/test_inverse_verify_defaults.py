"""--verify and the active loop simulate with the circuit and process the data were made with (meta.json)."""
import json

import pytest

from core.errors import ToolkitError
from inverse.verify import simulator_for


def _data(root, name, target=None, source=None):
    for domain, meta in (("target", target), ("source", source)):
        if meta is not None:
            (root / name / domain).mkdir(parents=True)
            (root / name / domain / "meta.json").write_text(json.dumps(meta))
    return root


def test_recorded_circuit_and_process_are_the_defaults_and_flags_win(tmp_path):
    circ, proc = tmp_path / "my_ota.toml", tmp_path / "my_node.toml"
    circ.write_text("name = 'my_ota'\n")
    data = _data(tmp_path / "d", "my_ota", target={"circuit_file": str(circ), "process": "my_node",
                                                    "process_file": str(proc)},
                 source={"circuit_file": str(circ), "process": "A"})
    assert simulator_for(data, "my_ota") == (str(circ), str(proc))
    assert simulator_for(data, "my_ota", "5t_opamp", "B") == ("5t_opamp", "B")
    # shipped data: their meta.json names the shipped circuit and B
    assert simulator_for("data", "two_stage_opamp") == ("two_stage_opamp", "B")
    # no meta.json at all: the shipped circuit of that name and B (a model shared without its data)
    assert simulator_for(tmp_path / "none", "5t_opamp") == ("5t_opamp", "B")


def test_an_unknown_circuit_is_refused_only_where_one_is_required(tmp_path):
    assert simulator_for(tmp_path, "my_amp") == ("my_amp", "B")          # inverse_opt: check_circuit_columns says more
    with pytest.raises(ToolkitError, match="no design space the loop can sample from"):
        simulator_for(tmp_path, "my_amp", required=True)
    with pytest.raises(ToolkitError, match="neither a shipped circuit"):
        simulator_for(tmp_path, "my_amp", "my_amp")
    with pytest.raises(ToolkitError, match="not found"):
        simulator_for(tmp_path, "my_amp", str(tmp_path / "missing.toml"))


def test_a_circuit_file_edited_since_the_data_is_refused_by_the_loop_and_named_by_verify(tmp_path, capsys):
    import hashlib
    circ = tmp_path / "my_ota.toml"
    circ.write_text("name = 'my_ota'\n")
    meta = {"circuit_file": str(circ), "process": "B",
            "recipe": {"circuit_sha256": hashlib.sha256(circ.read_bytes()).hexdigest()}}
    data = _data(tmp_path / "d", "my_ota", target=meta)
    assert simulator_for(data, "my_ota", required=True) == (str(circ), "B")        # unchanged: quiet
    assert "warning" not in capsys.readouterr().out
    circ.write_text("name = 'my_ota'\n# m4 l = 2\n")
    with pytest.raises(ToolkitError, match="changed since the data .* were simulated with it"):
        simulator_for(data, "my_ota", required=True)                                  # the loop: refused
    assert simulator_for(data, "my_ota") == (str(circ), "B")                          # verify: warned
    assert "simulations check the edited circuit" in capsys.readouterr().out
    with pytest.raises(ToolkitError, match="changed since"):                          # named by --circuit: the same
        simulator_for(data, "my_ota", str(circ), required=True)
    other = tmp_path / "other.toml"
    other.write_text("name = 'my_ota'\n")
    assert simulator_for(data, "my_ota", str(other), required=True) == (str(other), "B")   # another file: as told


def test_a_relative_path_of_the_recorded_process_file_is_the_same_process(tmp_path, capsys, monkeypatch):
    proc = tmp_path / "my_node.toml"
    proc.write_text("")
    data = _data(tmp_path / "d", "5t_opamp", target={"circuit_file": "5t_opamp", "process": "my_node",
                                                     "process_file": str(proc)})
    monkeypatch.chdir(tmp_path)
    simulator_for(data, "5t_opamp", None, "my_node.toml", required=True)
    assert "warning" not in capsys.readouterr().out


def test_a_recorded_circuit_file_that_is_gone_is_named(tmp_path):
    data = _data(tmp_path / "d", "my_ota", target={"circuit_file": str(tmp_path / "gone.toml"), "process": "B"})
    with pytest.raises(ToolkitError, match=r"names the circuit file .*gone.toml, which is not there"):
        simulator_for(data, "my_ota", required=True)


def test_the_loop_warns_when_told_to_simulate_in_another_process_than_the_data(tmp_path, capsys):
    data = _data(tmp_path / "d", "5t_opamp", target={"circuit_file": "5t_opamp", "process": "B"})
    assert simulator_for(data, "5t_opamp", None, "A", required=True) == ("5t_opamp", "A")
    assert "were simulated in B" in capsys.readouterr().out
    simulator_for(data, "5t_opamp", None, "B", required=True)                 # the same process: quiet
    simulator_for(data, "5t_opamp", None, "A")                                # a verification elsewhere: quiet
    assert "warning" not in capsys.readouterr().out


def test_the_loop_warns_when_told_to_simulate_another_circuit_than_the_data(tmp_path, capsys):
    from spice.circuits import circuit
    data = _data(tmp_path / "d", "5t_opamp", target={"circuit_file": "5t_opamp", "process": "B"})
    simulator_for(data, "5t_opamp", "two_stage_opamp", required=True)
    assert "--circuit two_stage_opamp, but the target data" in capsys.readouterr().out
    simulator_for(data, "5t_opamp", str(circuit("5t_opamp").path), required=True)   # the shipped one by its path
    simulator_for(data, "5t_opamp", "5t_opamp", required=True)
    simulator_for(data, "5t_opamp", "two_stage_opamp")                              # a verification: quiet
    assert "warning" not in capsys.readouterr().out
