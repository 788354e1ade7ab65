"""Issue 23: bad inputs and faults found by trying the toolkit as a new user would.

Each case gets a table of bad inputs per command: one line naming what is wrong and the fix,
exit status 2, nothing written or lost.  Cases are numbered as in the issue.
"""
import json
import os
import signal
import stat

import pytest
import torch

from core.atomic import atomic_paths, atomic_write_text
from core.cli import run_main
from tests.synthetic import write_dataset

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--quiet", "--dry-run"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), n_source=120, n_target=80)


def _common(dataset, results):
    return ["--data-dir", str(dataset), "--results-dir", str(results), "--device", "cpu"]


def refused(main, argv, capsys, phrase):
    """``main`` refuses ``argv``: exit 2, one line on stderr holding ``phrase``, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_main(main, argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert phrase in err, err
    return err


def _written(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------- 2, 3, 4: settings checked before any work
def _stage_mains():
    import inverse_mdn
    import pipeline
    from fine_tune import fine_tune
    from training import train, train_align_coral, train_pooled, train_target_only
    return {"train": train.main, "align": train_align_coral.main, "target_only": train_target_only.main,
            "pooled": train_pooled.main, "fine_tune": fine_tune.main, "pipeline": pipeline.main,
            "mdn": inverse_mdn.main}


BAD_SETTINGS = [
    (["--set", "LEARNING_RATE=-0.01"], "LEARNING_RATE must be a finite number > 0"),
    (["--set", "LEARNING_RATE=nan"], "LEARNING_RATE must be a finite number > 0"),
    (["--set", "WEIGHT_DECAY=-1"], "WEIGHT_DECAY must be >= 0"),
    (["--seed", "-1"], "SEED must be an integer in 0..4294967295"),
    (["--seed", "99999999999"], "SEED must be an integer in 0..4294967295"),
    (["--set", 'FAIL_MIN={"dc_gain": "abc"}'], "FAIL_MIN must be a dict {metric name: number}"),
    (["--set", 'FAIL_MAX={"ugf": null}'], "FAIL_MAX must be a dict {metric name: number}"),
]


@pytest.mark.parametrize("stage", ["train", "align", "target_only", "pooled", "fine_tune", "pipeline", "mdn"])
@pytest.mark.parametrize("flags, phrase", BAD_SETTINGS)
def test_bad_settings_refused_before_work(dataset, tmp_path, capsys, stage, flags, phrase):
    res = tmp_path / "res"
    refused(_stage_mains()[stage], [*_common(dataset, res), *TINY, *flags], capsys, phrase)
    assert _written(res) == []


@pytest.mark.parametrize("flags", [["--lr", "-0.01"], ["--lr", "nan"]])
def test_lr_flag_refused(dataset, tmp_path, capsys, flags):
    from training import train
    refused(train.main, [*_common(dataset, tmp_path / "res"), *TINY, *flags], capsys, "LEARNING_RATE must be")
    import inverse_mdn
    refused(inverse_mdn.main, [*_common(dataset, tmp_path / "res"), "--dry-run", "--lr", "-1"], capsys,
            "MDN_LR must be a finite number > 0")
    assert _written(tmp_path / "res") == []


def test_valid_settings_still_resolve():
    import config
    from core.settings import resolve
    s = resolve(config, {"SEED": "0", "LEARNING_RATE": "1e-3", "WEIGHT_DECAY": "0",
                         "FAIL_MAX": '{"ugf": 1e10, "cmrr": Infinity}'})
    assert s["SEED"] == 0 and s["WEIGHT_DECAY"] == 0.0 and s["FAIL_MAX"]["cmrr"] == float("inf")


# ---------------------------------------------------------------- 5: CIRCUIT_OVERRIDES applied
def test_circuit_overrides_from_the_command_line_are_applied():
    import config
    from core.settings import resolve
    from training.train import parse_args
    table = '{"5t_opamp": {"EPOCHS": 1, "HIDDEN_DIM": 8}, "two_stage_opamp": {"EPOCHS": 7}}'
    _, s = parse_args(["--set", f"CIRCUIT_OVERRIDES={table}"])
    assert s["EPOCHS"] == 1 and s["HIDDEN_DIM"] == 8                    # applied for the run's circuit
    _, s = parse_args(["--opamp", "two_stage_opamp", "--set", f"CIRCUIT_OVERRIDES={table}"])
    assert s["EPOCHS"] == 7 and s["HIDDEN_DIM"] == config.HIDDEN_DIM   # per circuit
    _, s = parse_args(["--epochs", "3", "--set", f"CIRCUIT_OVERRIDES={table}"])
    assert s["EPOCHS"] == 3                                             # an explicit flag wins
    assert resolve(config)["EPOCHS"] == config.EPOCHS                   # control: no overrides, defaults


@pytest.mark.parametrize("table, phrase", [
    ('{"5t_opamp": {"EPOHCS": 1}}', "Did you mean EPOCHS"),
    ('{"5t_opamp": 3}', "CIRCUIT_OVERRIDES['5t_opamp'] must be a dict"),
    ('{"5t_opamp": {"LEARNING_RATE": -1}}', "LEARNING_RATE must be a finite number > 0"),
])
def test_bad_circuit_overrides_refused(dataset, tmp_path, capsys, table, phrase):
    from training import train
    refused(train.main, [*_common(dataset, tmp_path / "res"), *TINY, "--set", f"CIRCUIT_OVERRIDES={table}"],
            capsys, phrase)


# ---------------------------------------------------------------- also seen: negative values after a flag
def test_negative_y_target_accepted_without_equals_sign():
    import inverse_mdn
    import inverse_opt
    args, _ = inverse_opt.parse_args(["--y-target", "-1e7,100,2e7,70,5000", "--goal", "min,min,range,range,min"])
    assert args.y_target == "-1e7,100,2e7,70,5000"
    args, _ = inverse_mdn.parse_args(["--sample", "--y-target", "-.5,1,2,3,4"])
    assert args.y_target == "-.5,1,2,3,4"
    args, _ = inverse_mdn.parse_args(["--sample", "--y-target=1,2,3,4,5", "--quiet"])   # control: other forms
    assert args.y_target == "1,2,3,4,5" and args.quiet


# ---------------------------------------------------------------- also seen: atomic writes
def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "x")
        with atomic_paths(tmp_path / "b.pth", tmp_path / "b.json") as (p, j):
            p.write_text("1")
            j.write_text("2")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "x")
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in tmp_path.iterdir()}
    assert modes == {"a.json": 0o644, "b.pth": 0o644, "b.json": 0o644, "private.json": 0o600}


def _save(path, seed):
    from models import MLP
    from models.model_utils import save_checkpoint
    torch.manual_seed(seed)
    model = MLP(2, 1, hidden_dim=4, num_layers=1, dropout=0.0)
    pre = {"x_cols": ["a", "b"], "y_cols": ["y"], "log_x_cols": [], "log_y_cols": [], "x_mean": [0.0, 0.0],
           "x_scale": [1.0, 1.0], "y_mean": [0.0], "y_scale": [1.0]}
    save_checkpoint(path, model, stage="t", x_cols=["a", "b"], y_cols=["y"], preprocessing=pre, config={},
                    seed=seed)


def test_interrupt_between_checkpoint_and_sidecar_keeps_the_pair_consistent(tmp_path, monkeypatch):
    from models.model_utils import read_checkpoint_meta, sidecar_path
    path = tmp_path / "m.pth"
    _save(path, 1)
    real, calls = os.replace, []

    def replace(src, dst):          # Ctrl-C arrives while the second file of the pair is renamed
        calls.append(dst)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _save(path, 2)
    monkeypatch.setattr(os, "replace", real)
    assert len(calls) == 2                                              # control: the interrupt did land
    assert read_checkpoint_meta(path)["seed"] == json.loads(sidecar_path(path).read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pth"]   # no temporaries left
