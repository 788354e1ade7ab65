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

from core.atomic import atomic_write_text
from core.cli import run_main

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--quiet", "--dry-run"]


@pytest.fixture(scope="module")
def dataset(tiny_data):
    return tiny_data(120, 80)


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
    from core.atomic import atomic_paths
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


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as for a user at a terminal: a runner that starts the suite in
    the background (e.g. ``cmd &`` in a script) hands Python an ignored SIGINT, and the tests would
    then measure nothing."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_interrupt_between_checkpoint_and_sidecar_keeps_the_pair_consistent(tmp_path, monkeypatch, ctrl_c_raises):
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


# ---------------------------------------------------------------- 1, 6: data the loader must refuse
def _copy_dataset(dataset, dest):
    import shutil
    shutil.copytree(dataset, dest)
    return dest


def _edit_header(path, old, new):
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace(old, new)
    path.write_text("".join(lines))


@pytest.mark.parametrize("damage, phrase", [
    (lambda d: _edit_header(d / "5t_opamp/source/features.csv", "w2", "w1"), "repeats column(s) ['w1']"),
    (lambda d: _edit_header(d / "5t_opamp/target/targets.csv", "ugf", "dc_gain"), "repeats column(s) ['dc_gain']"),
    (lambda d: _edit_header(d / "5t_opamp/target/targets.csv", "ugf", " dc_gain "), "repeats column(s) ['dc_gain']"),
    (lambda d: __import__("pandas").read_csv(d / "5t_opamp/source/features.csv").to_csv(
        d / "5t_opamp/source/features.csv"), "header column 1 has no name"),
    (lambda d: _edit_header(d / "5t_opamp/target/features.csv", "w1", "Unnamed: 0"), "header column 1 has no name"),
])
def test_repeated_or_unnamed_columns_refused(dataset, tmp_path, capsys, damage, phrase):
    from data_loader import cli as data_cli
    from training import train
    data = _copy_dataset(dataset, tmp_path / "data")
    damage(data)
    res = tmp_path / "res"
    refused(train.main, [*_common(data, res), *TINY], capsys, phrase)
    refused(data_cli.main, ["--data-dir", str(data)], capsys, phrase)
    assert not res.exists()                              # nothing written: not even the folder or its lock


def test_a_refused_run_keeps_a_results_folder_that_was_there(dataset, tmp_path, capsys):
    from training import train
    res = tmp_path / "mine"
    res.mkdir()
    (res / "notes.txt").write_text("the user's\n")
    refused(train.main, [*_common(dataset, res), *TINY, "--n-target", "100000"], capsys, "N_TARGET_TRAIN=100000")
    assert (res / "notes.txt").read_text() == "the user's\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(train.main, [*_common(dataset, empty), *TINY, "--n-target", "100000"], capsys, "N_TARGET_TRAIN=100000")
    assert empty.is_dir()                                 # the user made it: it stays


def _results(folder):
    """Files a run left in ``folder``, the results lock (a hidden empty file) aside."""
    return [n for n in _written(folder) if not n.startswith(".toolkit.lock")]


def test_n_target_beyond_the_rows_refused(dataset, tmp_path, capsys):
    from training import train
    res = tmp_path / "res"
    err = refused(train.main, [*_common(dataset, res), *TINY, "--n-target", "100000"], capsys,
                  "N_TARGET_TRAIN=100000 but the split leaves")
    assert "Use --n-target" in err
    assert not res.exists()
    summary = train.main([*_common(dataset, res), *TINY, "--n-target", "10"])     # control: a valid subset
    assert summary["test"]["n"] > 0


# ---------------------------------------------------------------- a trained tiny chain for 7, 8, 12-14
@pytest.fixture(scope="module")
def chain(dataset, tmp_path_factory):
    from fine_tune import fine_tune
    from inference import infer_ensemble
    from training import train, train_align_coral, train_target_only
    res = tmp_path_factory.mktemp("chain") / "res"
    for stage in (train, train_align_coral, train_target_only, fine_tune):
        stage.main([*_common(dataset, res), *TINY])
    infer_ensemble.main([*_common(dataset, res), "--no-plots", "--dry-run", "--quiet",
                         "--members", "align_hetero,target_only,dualhead"])
    import inverse_mdn
    inverse_mdn.main([*_common(dataset, res), "--hidden", "16", "--layers", "2", "--dry-run", "--quiet"])
    return res


def _snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.startswith(".toolkit.lock")}


@pytest.mark.parametrize("stage, flags, phrase", [
    ("align", ["--set", "HIDDEN_DIM=32"], "trained with HIDDEN_DIM=16 but this run asks for HIDDEN_DIM=32"),
    ("fine_tune", ["--set", "NUM_LAYERS=3"], "trained with NUM_LAYERS=2 but this run asks for NUM_LAYERS=3"),
    ("align", ["--set", "DROPOUT_RATE=0.3"], "DROPOUT_RATE=0.3"),
])
def test_child_stage_refuses_other_width_than_its_parent(dataset, chain, capsys, stage, flags, phrase):
    before = _snapshot(chain)
    err = refused(_stage_mains()[stage], [*_common(dataset, chain), *TINY, *flags], capsys, phrase)
    assert "python -m training.train" in err and "or give this stage the parent's shape:" in err
    assert _snapshot(chain) == before


def test_the_gp_member_takes_a_baseline_of_any_shape(dataset, chain, tmp_path):
    """The GP reads the baseline's predictions only; it used to refuse a baseline of another width."""
    import shutil
    from training import train_gp
    res = tmp_path / "res"
    shutil.copytree(chain, res, ignore=shutil.ignore_patterns(".toolkit.lock"))
    train_gp.main([*_common(dataset, res), *TINY, "--set", "HIDDEN_DIM=32"])       # the baseline has 16
    assert (res / "5t_opamp_gp_stack.pth").is_file()


def test_no_plots_names_the_plots_of_an_earlier_run(dataset, chain, tmp_path, capsys):
    """--no-plots leaves an earlier run's PNGs in place; it says they do not show this run."""
    import shutil
    from inference import infer_ensemble
    res = tmp_path / "res"
    shutil.copytree(chain, res, ignore=shutil.ignore_patterns(".toolkit.lock"))
    (res / "5t_opamp_parity.png").write_bytes(b"an earlier run's picture")
    capsys.readouterr()
    infer_ensemble.main([*_common(dataset, res), "--no-plots", "--dry-run",
                         "--members", "align_hetero,target_only,dualhead"])
    out = capsys.readouterr().out
    assert "5t_opamp_parity.png are from an earlier run and do not show this one" in out
    assert (res / "5t_opamp_parity.png").read_bytes() == b"an earlier run's picture"


# ---------------------------------------------------------------- 8: output paths checked before the work
def _bad_outputs(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    return {"is a file": afile, "under a file": afile / "sub"}


@pytest.mark.parametrize("case, phrase", [("is a file", "is a file, not a folder"),
                                          ("under a file", "which is a file")])
def test_results_dir_that_cannot_be_a_folder(dataset, chain, tmp_path, capsys, case, phrase):
    import inverse_mdn
    import inverse_opt
    import pipeline
    from training import train
    bad = _bad_outputs(tmp_path)[case]
    refused(train.main, [*_common(dataset, bad), *TINY], capsys, phrase)
    refused(pipeline.main, [*_common(dataset, bad), *TINY], capsys, phrase)
    refused(inverse_mdn.main, [*_common(dataset, bad), "--dry-run", "--quiet"], capsys, phrase)
    refused(inverse_mdn.main, ["--sample", "--model", str(chain / "mdn_5t_opamp.pth"), "--y-target", "1,2,3,4,5",
                               "--out", str(bad / "x.npy")], capsys, "which is a file")
    refused(inverse_opt.main, [*_common(dataset, chain), "--model-type", "ensemble", "--save-dir", str(bad),
                               "--y-target", "1e7,100,5e7,60,2000", "--goal", "min,min,range,range,min",
                               "--n-init", "4", "--steps", "2", "--finish-lbfgs", "0"], capsys, phrase)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_results_dir_not_writable(dataset, tmp_path, capsys):
    from training import train
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(train.main, [*_common(dataset, locked / "res"), *TINY], capsys, "is not writable")
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- 9: one run per results folder
def test_second_run_on_a_locked_results_folder_is_refused(dataset, tmp_path, capsys):
    import fcntl

    import pipeline
    from core.outputs import LOCK_NAME
    from training import train
    res = tmp_path / "res"
    res.mkdir()
    with open(res / LOCK_NAME, "a") as other:       # what another process's lock looks like to this one
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for main in (train.main, pipeline.main):
            refused(main, [*_common(dataset, res), *TINY], capsys, f"Another run is writing to {res}")
        assert _results(res) == []
        fcntl.flock(other, fcntl.LOCK_UN)
    summary = train.main([*_common(dataset, res), *TINY])    # control: free again, the run goes through
    assert os.path.isfile(summary["checkpoint"])


def test_two_pipelines_at_once_one_is_refused(dataset, tmp_path):
    """Two real processes started together: one finishes, the other exits 2 at once; nothing mixed."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "pipeline", *_common(dataset, res), *TINY, "--no-plots"]
    procs = [subprocess.Popen(cmd + ["--epochs", str(e)], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for e in (1, 2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in outs)
    assert codes == [0, 2], outs
    refusal = next(err for rc, err in outs if rc == 2)
    assert "Another run is writing to" in refusal and "Traceback" not in refusal
    from models.model_utils import read_checkpoint_meta
    epochs = {read_checkpoint_meta(p)["config"]["EPOCHS"] for p in res.glob("*.pth")}
    assert len(epochs) == 1                                   # every checkpoint from the same run


# ---------------------------------------------------------------- also seen: one output form per destination
def test_training_output_redirected_has_lines_not_bar_fragments(capsys):
    from training.cli import epoch_printer
    from training.loop import TensorBatches, fit
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x, y = torch.randn(32, 2), torch.randn(32, 1)
    fit(model, loader=TensorBatches(x, y, batch_size=8), optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        loss_fn=lambda m, b: (torch.nn.functional.mse_loss(m(b[0]), b[1]), {}),
        evaluate=lambda m: {"mse": torch.nn.functional.mse_loss(m(x), y).item()}, monitor="mse", epochs=5,
        patience=10, progress=True, on_epoch=epoch_printer("Train", "Val", val_key="val_mse"))
    out, err = capsys.readouterr()
    assert out.count("  epoch ") == 5 and "\r" not in out        # the plain per-epoch lines
    assert "\r" not in err and "it/s" not in err                 # no progress-bar refreshes in the log


# ---------------------------------------------------------------- 12, 13: the ensemble record
def _ensemble_json(res):
    return res / "5t_opamp_ensemble_metrics.json"


def _opt_argv(dataset, res, tmp_path, *extra):
    return [*_common(dataset, res), "--model-type", "ensemble", "--save-dir", str(tmp_path / "inv"),
            "--y-target", "1e7,100,5e7,60,2000", "--goal", "min,min,range,range,min",
            "--n-init", "4", "--steps", "2", "--finish-lbfgs", "0", "--top-k", "2", "--quiet", *extra]


@pytest.fixture
def own_chain(chain, tmp_path):
    """A private copy of the trained chain (tests here damage or retrain it)."""
    import shutil
    shutil.copytree(chain, tmp_path / "res")
    return tmp_path / "res"


@pytest.mark.parametrize("damage, phrase", [
    (lambda t: t[: len(t) // 2], "not a readable ensemble record (JSONDecodeError"),
    (lambda t: "", "not a readable ensemble record"),
    (lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "fusion"}), "incomplete ensemble record (no fusion)"),
    (lambda t: json.dumps({**json.loads(t), "fusion": [1, 2]}), "damaged fusion record"),
    (lambda t: json.dumps([1, 2]), "incomplete ensemble record"),
])
def test_truncated_or_incomplete_ensemble_record(dataset, own_chain, tmp_path, capsys, damage, phrase):
    import inverse_opt
    from core.errors import ToolkitError
    from inference.predict import Ensemble
    path = _ensemble_json(own_chain)
    path.write_text(damage(path.read_text()))
    with pytest.raises(ToolkitError, match="python -m inference.infer_ensemble"):
        Ensemble.load(own_chain, "5t_opamp")
    refused(inverse_opt.main, _opt_argv(dataset, own_chain, tmp_path), capsys, phrase)
    assert not (tmp_path / "inv").exists()


def test_bad_fusion_selection_refused_before_members_or_data(dataset, tmp_path, capsys):
    """--set bypasses the --fusion-selection flag's choices: the value is checked first (this folder has no
    members, which would be the next refusal), one line, nothing written."""
    from inference import infer_ensemble
    res = tmp_path / "res"
    refused(infer_ensemble.main, [*_common(dataset, res), "--set", "FUSION_SELECTION=oracle"], capsys,
            "FUSION_SELECTION must be one of ['val', 'cv'], got 'oracle'. Fix: --fusion-selection val")
    assert not res.exists()


def test_stale_ensemble_refused_after_a_member_is_retrained(dataset, own_chain, tmp_path, capsys):
    import inverse_opt
    from core.errors import ToolkitError
    from inference import infer_ensemble
    from inference.predict import Ensemble
    Ensemble.load(own_chain, "5t_opamp")                            # control: fresh, loads
    from training import train_target_only
    train_target_only.main([*_common(dataset, own_chain), *TINY, "--seed", "42", "--epochs", "1"])
    with pytest.raises(ToolkitError, match="target_only_hetero.pth changed after the ensemble was fitted"):
        Ensemble.load(own_chain, "5t_opamp")
    refused(inverse_opt.main, _opt_argv(dataset, own_chain, tmp_path), capsys,
            "Rerun python -m inference.infer_ensemble")
    assert not (tmp_path / "inv").exists()
    infer_ensemble.main([*_common(dataset, own_chain), "--no-plots", "--dry-run", "--quiet",
                         "--members", "align_hetero,target_only,dualhead"])
    ens = Ensemble.load(own_chain, "5t_opamp")                      # refitted: loads again
    assert set(ens.record["member_sha256"]) == {"align_hetero", "target_only", "dualhead"}


# ---------------------------------------------------------------- 14: designs outside the training domain
def test_predict_flags_designs_outside_the_training_domain(dataset, chain):
    import warnings

    import pandas as pd

    from core.errors import ToolkitError
    from inference.predict import Ensemble
    from tests.synthetic import make_domain
    ens = Ensemble.load(chain, "5t_opamp")
    x, _ = make_domain(4, seed=7, shift=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # control: inside, no warning
        mean, _ = ens.predict(x)
    assert list(mean.attrs["out_of_domain"]) == [""] * 4
    bad = x.copy()
    bad.loc[1, "l1"] = 5.0                                           # data 0.5..2
    bad.loc[2, "w1"] = 1e6                                           # data 0.5..50
    bad.loc[3, "ibias"] = 5.0                                        # amps, not microamps
    with pytest.warns(UserWarning, match=r"3 of 4 designs lie outside the training data \(first: row 1: l1=5"):
        mean, std = ens.predict(bad)
    flags = mean.attrs["out_of_domain"]
    assert flags[0] == "" and "l1=5" in flags[1] and "w1=1e+06" in flags[2] and "ibias=5" in flags[3]
    assert list(mean.columns) == ens.y_cols                          # the prediction frames keep their shape
    with pytest.raises(ToolkitError, match="3 of 4 designs lie outside"):
        ens.predict(bad, out_of_domain="refuse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ens.predict(bad, out_of_domain="off")
    assert isinstance(ens.domain_flags(pd.DataFrame(bad)), pd.Series)


def test_predictions_csv_and_candidates_carry_a_domain_column(dataset, chain, tmp_path, capsys):
    import inverse_opt
    import pandas as pd
    preds = pd.read_csv(chain / "5t_opamp_ensemble_predictions.csv", keep_default_na=False)
    assert "out_of_domain" in preds.columns and (preds["out_of_domain"] == "").all()
    out = inverse_opt.main(_opt_argv(dataset, chain, tmp_path))
    assert "out_of_domain" in pd.read_csv(tmp_path / "inv" / "candidates.csv").columns
    assert "out_of_domain" in out["table"].columns
    refused(inverse_opt.main, _opt_argv(dataset, chain, tmp_path, "--out-of-domain", "never"), capsys,
            "OUT_OF_DOMAIN must be one of 'warn', 'refuse', 'off'")


# ---------------------------------------------------------------- 10, 11, truncated chunk: spice.generate
GEN = ["--opamp", "5t_opamp", "--domain", "target", "--n", "12", "--seed", "3", "--chunk", "5", "--workers", "1"]


def _needs_ngspice(fn):
    from tests.spice_helpers import needs_ngspice
    return needs_ngspice(fn)


@_needs_ngspice
def test_ctrl_c_inside_an_ngspice_call_is_not_swallowed(tmp_path):
    """The interrupt lands in the libngspice print callback; it must still stop the run."""
    import subprocess
    import sys
    from pathlib import Path
    from tests.spice_helpers import HAVE_LIB
    if not HAVE_LIB:
        pytest.skip("libngspice not installed")
    script = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, whoever started us\n"
        "from spice import shared_lib\n"
        "armed = []\n"
        "orig = shared_lib.SharedNgspice._on_print\n"
        "def on_print(self, text, i, u):\n"
        "    if armed:\n"
        "        armed.clear()\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return orig(self, text, i, u)\n"
        "shared_lib.SharedNgspice._on_print = on_print\n"
        "eng = shared_lib.engine()\n"
        "armed.append(1)\n"
        "try:\n"
        "    eng.command('version')\n"
        "except KeyboardInterrupt:\n"
        "    print('INTERRUPTED'); sys.exit(0)\n"
        "print('SWALLOWED'); sys.exit(1)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "INTERRUPTED" in out.stdout, out.stdout + out.stderr
    assert "Exception ignored" not in out.stderr


@_needs_ngspice
def test_second_generator_on_one_out_is_refused(tmp_path, capsys):
    import fcntl

    from core.outputs import LOCK_NAME
    from spice import generate
    folder = tmp_path / "d" / "5t_opamp" / "target"
    folder.mkdir(parents=True)
    with open(folder / LOCK_NAME, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused(generate.main, [*GEN, "--out", str(tmp_path / "d")], capsys, f"Another run is writing to {folder}")
        fcntl.flock(other, fcntl.LOCK_UN)
    assert not (folder / ".partial").exists()
    capsys.readouterr()
    meta = generate.main([*GEN, "--out", str(tmp_path / "d")])      # control: free, it runs (progress redirected)
    assert meta["rows_written"] == 12
    out, err = capsys.readouterr()
    assert "\r" not in err and "OK designs" in out                      # plain lines, not bar fragments


@_needs_ngspice
@pytest.mark.parametrize("text, phrase", [
    ("index,status\n0,ok\n1,ok\n", "is damaged (2 of 5 rows"),
    ("index,w1,status\n0,1.0,ok\n1,2.", "is damaged (2 of 5 rows"),
    ("", "is damaged"),
])
def test_truncated_chunk_is_not_called_another_chunk_size(tmp_path, capsys, text, phrase):
    from spice import generate
    partial = tmp_path / "d" / "5t_opamp" / "target" / ".partial"
    partial.mkdir(parents=True)
    from spice.circuits import circuit
    (partial / "run.json").write_text(json.dumps(generate.run_key(circuit("5t_opamp"), "B", 3, 5, None)))
    (partial / "chunk_000000005.csv").write_text(text)
    err = refused(generate.main, [*GEN, "--out", str(tmp_path / "d")], capsys, phrase)
    assert "another --chunk" not in err and "Delete that file and rerun" in err
    assert sorted(p.name for p in partial.iterdir()) == ["chunk_000000005.csv", "run.json"]   # nothing lost


# ---------------------------------------------------------------- 15: benchmark commands
def test_inverse_benchmark_missing_results_dir_is_one_line(dataset, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    out = subprocess.run([sys.executable, "-m", "benchmarks.inverse_benchmark", "--data-dir", str(dataset),
                          "--results-dir", str(tmp_path / "nope"), "--n-specs", "1"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "python -m pipeline" in out.stderr
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("flags, phrase", [
    (["--n-specs", "0"], "--n-specs must be >= 1, got 0"),
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--methods", "opt,magic"], "--methods has unknown ['magic']"),
    (["--seed", "-1"], "SEED must be an integer in 0..4294967295"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--methods", "opt,bo"], "needs BoTorch, a benchmark-only dependency"),
    (["--objective", "min:area"], "'area' is neither a metric of the model nor a figure"),
])
def test_inverse_benchmark_bad_flags(dataset, chain, capsys, flags, phrase, monkeypatch):
    import sys
    from benchmarks import inverse_benchmark
    monkeypatch.setitem(sys.modules, "botorch", None)   # as on a machine without the [bench] extra
    before = _snapshot(chain)
    refused(inverse_benchmark.main, ["--data-dir", str(dataset), "--results-dir", str(chain), *flags], capsys,
            phrase)
    assert _snapshot(chain) == before


def test_early_stop_whatif_refuses_what_is_not_a_sidecar(chain, tmp_path, capsys):
    from benchmarks import early_stop_whatif
    good = (chain / "5t_opamp_target_only_hetero.json").read_text()
    (tmp_path / "cut.json").write_text(good[: len(good) // 3])
    (tmp_path / "list.json").write_text("[1, 2]")
    for path, phrase in ((tmp_path / "cut.json", "is not a readable JSON sidecar (JSONDecodeError)"),
                         (chain / "5t_opamp_target_only_hetero.pth", "not the .pth"),
                         (tmp_path / "list.json", "holds a list, not a checkpoint sidecar")):
        refused(early_stop_whatif.main, ["--runs", str(path), "--patience", "1"], capsys, phrase)
    result = early_stop_whatif.main(["--runs", str(chain / "5t_opamp_target_only_hetero.json"), "--patience", "1"])
    assert result[1]["runs"] + result[1]["not_replayable"] == 1        # control: a real sidecar replays


@pytest.mark.parametrize("flags, phrase", [
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--repeats", "0", "--chunk", "0"], "--repeats, --chunk must be >= 1"),
])
def test_spice_throughput_bad_counts(tmp_path, capsys, flags, phrase):
    from benchmarks import spice_throughput
    refused(spice_throughput.main, flags, capsys, phrase)


def test_an_output_file_that_is_a_link_or_special_file_is_refused(tmp_path):
    """An atomic write renames a temporary file onto the path: a link or a device there would be replaced (as root,
    --out /dev/null once turned the device into a regular file)."""
    import os
    from core.errors import ToolkitError
    from core.outputs import check_writable_file
    link, fifo, plain = tmp_path / "link.csv", tmp_path / "fifo", tmp_path / "plain.csv"
    link.symlink_to(tmp_path / "target.csv")
    os.mkfifo(fifo)
    with pytest.raises(ToolkitError, match="is a link, not a regular file"):
        check_writable_file(link, "--out")
    with pytest.raises(ToolkitError, match="is a special file, not a regular file"):
        check_writable_file(fifo, "--out")
    plain.write_text("x")
    assert check_writable_file(plain, "--out") == plain
