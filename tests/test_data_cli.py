"""python -m data_loader.cli: a real subprocess run, an in-process main([...]), and user errors (exit 2)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_loader.cli import main
from tests.synthetic import Y_COLS, write_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), "5t_opamp")


def _run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "data_loader.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _check_report(out: str):
    for name in ("source", "target_train", "target_val", "target_test"):
        assert any(line.strip().startswith(name) and "kept" in line for line in out.splitlines()), name
    assert "dropped" in out
    # the synthetic data's three failure kinds, each named
    for reason in ("nan/inf in ugf", "ugf >= 1e+10 (sentinel)", "dc_gain < 1"):
        assert reason in out
    assert "dropped rows in all: 12 of " in out and "(source " in out   # of all rows, per domain
    assert "domain shift" in out
    shift = out.split("domain shift", 1)[1]
    for col in Y_COLS:
        assert col in shift


def test_cli_subprocess_reports_splits_drops_and_shift(data_root):
    proc = _run("--opamp", "5t_opamp", "--val-split", "0.2", "--seed", "42", "--data-dir", str(data_root))
    assert proc.returncode == 0, proc.stderr
    _check_report(proc.stdout)
    assert "Traceback" not in proc.stderr


def test_cli_in_process(data_root, capsys):
    d = main(["--opamp", "5t_opamp", "--val-split", "0.25", "--seed", "3", "--data-dir", str(data_root)])
    out = capsys.readouterr().out
    _check_report(out)
    assert "split (seed 3, test 0.2, val 0.25 of the rest)" in out
    # the printed counts are the returned data's
    val_line = next(line for line in out.splitlines() if line.strip().startswith("target_val"))
    assert f"kept {len(d['target_val'][0]):>6}" in val_line
    assert d["split"]["seed"] == 3 and d["split"]["val_split"] == 0.25


def test_cli_names_a_split_column_when_the_data_have_one(tmp_path, capsys):
    import pandas as pd
    root = write_dataset(tmp_path / "data", "5t_opamp")
    targets = root / "5t_opamp" / "target" / "targets.csv"
    y = pd.read_csv(targets)
    y["split"] = ["val" if i % 4 == 0 else "train" for i in range(len(y))]
    y.to_csv(targets, index=False)
    d = main(["--val-split", "0.5", "--data-dir", str(root)])
    out = capsys.readouterr().out
    assert "split (the split column of targets.csv):" in out and "val 0.5" not in out
    assert "VAL_SPLIT and TEST_SPLIT are not used" in out and "target_test" not in d


def test_cli_in_process_without_test_split(data_root, capsys):
    d = main(["--test-split", "0", "--data-dir", str(data_root)])
    out = capsys.readouterr().out
    assert "target_test" not in d and "target_test" not in out
    assert "target_val" in out


def test_cli_unknown_circuit_is_one_line_exit_2(data_root):
    proc = _run("--opamp", "nope_opamp", "--data-dir", str(data_root))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "nope_opamp" in lines[0] and "5t_opamp" in lines[0]  # lists the circuits found
    assert proc.stdout == ""


def test_cli_bad_split_value_is_one_line_exit_2(data_root):
    proc = _run("--val-split", "1.5", "--data-dir", str(data_root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: VAL_SPLIT must be in (0, 1)")


def test_cli_misspelled_flag_suggests(data_root):
    proc = _run("--val-splt", "0.2", "--data-dir", str(data_root))
    assert proc.returncode == 2
    assert "did you mean --val-split" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_in_process_bad_flag_value_exits_2(data_root, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--seed", "forty", "--data-dir", str(data_root)])
    assert info.value.code == 2
    assert "SEED expects an int" in capsys.readouterr().err
