"""core: settings resolution and coercion, the stage CLI, device choice, atomic writes."""
import os
import re
import types

import pytest
import torch

import config
from core import atomic
from core.atomic import atomic_write_bytes, atomic_write_text
from core.cli import StageCLI, run_main
from core.errors import ToolkitError
from core.runtime import resolve_device
from core.settings import coerce, parse_set_pairs, resolve, snapshot


def _fake_config(**extra):
    mod = types.ModuleType("fake_config")
    mod.OPAMP_TYPE = "5t_opamp"
    mod.EPOCHS = 50
    mod.LEARNING_RATE = 1e-4
    mod.LOG_Y_COLS = ["ugf", "cmrr"]
    mod.USE_AMP = False
    mod.FAIL_MIN = {"dc_gain": 1.0}
    mod.LOG_X_COLS = "auto"
    mod.CIRCUIT_OVERRIDES = {"5t_opamp": {}, "two_stage_opamp": {"EPOCHS": 80, "LEARNING_RATE": "3e-4"}}
    mod.helper = lambda: None  # not a setting: lower case
    mod.os = os                # not a setting: a module
    for k, v in extra.items():
        setattr(mod, k, v)
    return mod


# ---------------------------------------------------------------- resolve / coerce
def test_snapshot_only_upper_constants():
    snap = snapshot(_fake_config())
    assert "EPOCHS" in snap and "helper" not in snap and "os" not in snap
    snap["LOG_Y_COLS"].append("x")  # a deep copy: the module is untouched
    assert _fake_config().LOG_Y_COLS == ["ugf", "cmrr"]
    assert snapshot(config)["SEED"] == config.SEED


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ToolkitError, match="Did you mean EPOCHS"):
        resolve(_fake_config(), {"EPOCH": "3"})
    with pytest.raises(ToolkitError, match="Did you mean LEARNING_RATE"):
        resolve(config, {"LEARNING_RTE": "1e-3"})
    with pytest.raises(ToolkitError, match="Unknown setting 'ZZZ_QQQ'") as info:
        resolve(config, {"ZZZ_QQQ": "1"})
    assert "Did you mean" not in str(info.value)  # control: no suggestion when nothing is close


@pytest.mark.parametrize("key,raw,want", [
    ("EPOCHS", "3", 3),
    ("LEARNING_RATE", "1e-4", 1e-4),
    ("LEARNING_RATE", "2", 2.0),
    ("LOG_Y_COLS", "a,b", ["a", "b"]),
    ("LOG_Y_COLS", " a , b ,", ["a", "b"]),
    ("LOG_Y_COLS", '["a"]', ["a"]),
    ("USE_AMP", "true", True),
    ("USE_AMP", "0", False),
    ("FAIL_MIN", '{"dc_gain": 2}', {"dc_gain": 2}),
    ("LOG_X_COLS", '["w1","w2"]', ["w1", "w2"]),
    ("LOG_X_COLS", "auto", "auto"),
])
def test_string_values_are_coerced_to_the_default_type(key, raw, want):
    got = resolve(_fake_config(), {key: raw})[key]
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("key,raw", [
    ("EPOCHS", "abc"), ("EPOCHS", "2.5"), ("LEARNING_RATE", "fast"), ("USE_AMP", "maybe"),
    ("FAIL_MIN", "[1]"), ("LOG_Y_COLS", '["a"'), ("EPOCHS", 2.5), ("USE_AMP", "1.0"),
])
def test_bad_value_names_the_key(key, raw):
    with pytest.raises(ValueError, match=key) as info:
        resolve(_fake_config(), {key: raw})
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("default", [True, "auto"])
def test_a_bool_or_auto_key_takes_either_whatever_its_default(default):
    assert [coerce("SIGNED_RATIO", raw, default) for raw in ("auto", "AUTO", "true", "off", True, False)] == \
        ["auto", "auto", True, False, True, False]
    with pytest.raises(ToolkitError, match="SIGNED_RATIO"):
        coerce("SIGNED_RATIO", "maybe", default)


def test_non_string_values_type_checked():
    assert coerce("LEARNING_RATE", 1, 1e-4) == 1.0 and isinstance(coerce("LEARNING_RATE", 1, 1e-4), float)
    assert coerce("EPOCHS", 7, 50) == 7
    with pytest.raises(ToolkitError, match="EPOCHS expects an int"):
        coerce("EPOCHS", "7 epochs", 50)
    with pytest.raises(ToolkitError, match="LOG_Y_COLS"):
        coerce("LOG_Y_COLS", 3, ["ugf"])
    with pytest.raises(ToolkitError, match="EPOCHS expects an int"):  # bool is an int subclass in Python
        coerce("EPOCHS", True, 50)
    assert coerce("USE_AMP", True, False) is True


def test_circuit_overrides_sit_between_defaults_and_flags(monkeypatch):
    fake = _fake_config()
    assert resolve(fake)["EPOCHS"] == 50                                   # defaults
    s = resolve(fake, {"OPAMP_TYPE": "two_stage_opamp"})
    assert s["EPOCHS"] == 80 and s["LEARNING_RATE"] == 3e-4               # circuit override, coerced
    s = resolve(fake, {"OPAMP_TYPE": "two_stage_opamp", "EPOCHS": "5"})
    assert s["EPOCHS"] == 5 and s["LEARNING_RATE"] == 3e-4                # explicit wins
    monkeypatch.setattr(fake, "OPAMP_TYPE", "two_stage_opamp")
    assert resolve(fake)["EPOCHS"] == 80                                  # the default circuit's overrides
    assert resolve(fake, {"OPAMP_TYPE": "5t_opamp"})["EPOCHS"] == 50      # control: other circuit, none
    fake.CIRCUIT_OVERRIDES = {"two_stage_opamp": {"EPOHCS": 3}}
    with pytest.raises(ToolkitError, match="CIRCUIT_OVERRIDES\\['two_stage_opamp'\\].*Did you mean EPOCHS"):
        resolve(fake)


def test_resolve_does_not_mutate_the_module():
    fake = _fake_config()
    s = resolve(fake, {"LOG_Y_COLS": "a"})
    s["FAIL_MIN"]["x"] = 1
    assert fake.LOG_Y_COLS == ["ugf", "cmrr"] and fake.FAIL_MIN == {"dc_gain": 1.0}


def test_parse_set_pairs():
    assert parse_set_pairs(["epochs=5", "LOG_Y_COLS=ugf,cmrr", "A=b=c"]) == {
        "EPOCHS": "5", "LOG_Y_COLS": "ugf,cmrr", "A": "b=c"}
    with pytest.raises(ToolkitError, match="KEY=VALUE"):
        parse_set_pairs(["EPOCHS"])


# ---------------------------------------------------------------- StageCLI
def _cli():
    cli = StageCLI("tests.fake", "doc")
    cli.flag("--epochs", "EPOCHS", "max epochs")
    cli.flag("--val-split", "VAL_SPLIT")
    return cli


def test_stage_cli_flags_map_to_config_keys():
    args, s = _cli().parse(["--epochs", "3", "--val-split", "0.3", "--opamp", "two_stage_opamp", "--seed", "7"])
    assert s["EPOCHS"] == 3 and s["VAL_SPLIT"] == 0.3 and s["OPAMP_TYPE"] == "two_stage_opamp" and s["SEED"] == 7
    assert args.epochs == 3
    # control: no flags -> config.py's values
    _, s = _cli().parse([])
    assert s["EPOCHS"] == config.EPOCHS and s["VAL_SPLIT"] == config.VAL_SPLIT


def test_stage_cli_set_and_flag_precedence():
    _, s = _cli().parse(["--set", "LEARNING_RATE=3e-4", "--set", "log_y_cols=ugf", "--set", "EPOCHS=9"])
    assert s["LEARNING_RATE"] == 3e-4 and s["LOG_Y_COLS"] == ["ugf"] and s["EPOCHS"] == 9
    _, s = _cli().parse(["--set", "EPOCHS=9", "--epochs", "4"])
    assert s["EPOCHS"] == 4  # the named flag wins over --set
    with pytest.raises(ToolkitError, match="Did you mean LEARNING_RATE"):
        _cli().parse(["--set", "LERNING_RATE=1"])


def test_stage_cli_errors_exit_2_with_hint(capsys):
    with pytest.raises(SystemExit) as info:
        _cli().parse(["--epoch", "3"])
    assert info.value.code == 2
    assert "did you mean --epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _cli().parse(["--epochs", "three"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "EPOCHS expects an int" in err and "'three'" in err
    with pytest.raises(KeyError):
        StageCLI("tests.fake").flag("--nope", "NOT_A_KEY")


def test_run_main_turns_user_errors_into_exit_2(capsys):
    def bad(argv):
        raise ToolkitError("the data dir is missing")

    with pytest.raises(SystemExit) as info:
        run_main(bad, [])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: the data dir is missing\n"
    assert run_main(lambda argv: 5, []) == 5  # control: a good main returns normally

    def bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # programming errors keep their traceback
        run_main(bug, [])


# ---------------------------------------------------------------- device
def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ToolkitError, match="--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ToolkitError, match="no CUDA"):
        resolve_device("cuda:1")


def test_auto_and_cpu_devices(capsys):
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert f"auto -> {want}" in capsys.readouterr().out
    assert resolve_device(" CPU ", verbose=False) == torch.device("cpu")
    with pytest.raises(ToolkitError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_no_tmp_files(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    atomic_write_bytes(tmp_path / "sub" / "w.bin", b"\x00\x01")
    assert target.read_text() == "second"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["metrics.json", "w.bin"]


def test_exception_mid_write_keeps_old_content(tmp_path):
    target = tmp_path / "ckpt.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            assert len(list(tmp_path.iterdir())) == 2  # control: the tmp file existed mid-write
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.json"]


def test_failed_text_encoding_keeps_old_content(tmp_path):
    target = tmp_path / "log.txt"
    atomic_write_text(target, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "bad \udc80 surrogate")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["log.txt"]


@pytest.mark.parametrize("key, value, said", [
    ("NUM_THREADS", 0, "NUM_THREADS must be >= 1"), ("NUM_THREADS", -3, "NUM_THREADS must be >= 1"),
    ("LOG_X_MIN_SPAN", -1.0, "LOG_X_MIN_SPAN must be a number >= 1"),
    ("SOURCE_VAL_SPLIT", 1.5, "SOURCE_VAL_SPLIT must be in (0, 1), got 1.5"),
    ("VAL_SPLIT", 0.0, "VAL_SPLIT must be in (0, 1)"), ("TEST_SPLIT", 1.0, "TEST_SPLIT must be in [0, 1)"),
    ("X_SCALER_FIT", "target", "X_SCALER_FIT must be 'both' or 'source'")])
def test_limits_the_config_comments_state_are_checked_before_any_work(key, value, said):
    from core.settings import check_settings
    with pytest.raises(ToolkitError, match=re.escape(said)):
        check_settings({key: value})
    check_settings({key: {"NUM_THREADS": 1, "LOG_X_MIN_SPAN": 10.0, "X_SCALER_FIT": "both"}.get(key, 0.1)})  # allowed


def test_a_bad_source_holdout_writes_nothing(tmp_path):
    """It was refused only after the data were read, with the run's scalers already written."""
    from tests.synthetic import write_dataset
    from training import train
    data = write_dataset(tmp_path / "data", n_source=60, n_target=40)
    with pytest.raises(ToolkitError, match=r"SOURCE_VAL_SPLIT must be in \(0, 1\)"):
        train.main(["--data-dir", str(data), "--results-dir", str(tmp_path / "res"), "--device", "cpu",
                    "--set", "BASELINE_VAL=source", "--set", "SOURCE_VAL_SPLIT=1.5", "--dry-run"])
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())
