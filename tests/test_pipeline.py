"""`python -m pipeline`: the whole forward chain on test-made data, then skipping what is up to date."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from tests.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--quiet"]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    data = write_dataset(root / "data", n_source=200, n_target=100)
    args = ["--data-dir", str(data), "--results-dir", str(root / "res"), "--device", "cpu", *TINY, "--dry-run"]
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    return data, root / "res", args, out


def test_pipeline_dry_run_end_to_end_as_subprocess(ran):
    _, res, _, out = ran
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("baseline_model.pth", "align_hetero_lambda0.050.pth", "target_only_hetero.pth",
                 "dualhead_finetuned.pth", "pooled_flag.pth", "gp_stack.pth", "ensemble_metrics.json",
                 "ensemble_predictions.csv", "parity.png",
                 "calibration.png", "training_curves.png", "report.md"):
        assert (res / f"5t_opamp_{name}").is_file(), name
    assert "pipeline summary" in out.stdout and "coverage after calibration" in out.stdout
    # two workers (the default): a child stage starts only after its parent is done; the ensemble after all
    text = out.stdout
    for child in ("2/7 align_hetero", "4/7 dualhead", "6/7 gp_stack"):
        assert text.index("<== baseline done") < text.index(f"==> {child} starts")
    assert max(text.index(f"<== {name} done") for name in ("baseline", "align_hetero", "target_only", "dualhead",
                                                           "pooled", "gp_stack")) < text.index("==> 7/7 ensemble")
    assert "[align_hetero] wrote" in (res / "logs" / "5t_opamp_align_hetero.log").read_text()
    # the ensemble record describes itself like a checkpoint: settings, split, code; a dry run as its members are
    record = json.loads((res / "5t_opamp_ensemble_metrics.json").read_text())
    baseline = json.loads((res / "5t_opamp_baseline_model.json").read_text())
    assert record["dry_run"] is True and record["config"]["HIDDEN_DIM"] == 16
    assert record["data_split"]["target_test_idx"] == baseline["split"]["target_test_idx"]
    assert "inference/infer_ensemble.py" in record["code"]


def _test_reports(folder: Path) -> dict:
    return {p.name: json.loads(p.read_text())["test"] for p in folder.glob("*_metrics.json")
            if "ensemble" not in p.name}


def test_one_worker_in_process_trains_the_same_checkpoints(ran, tmp_path, capsys):
    data, res, args, _ = ran
    one = ["--results-dir" if a == "--results-dir" else a for a in args]
    one[one.index("--results-dir") + 1] = str(tmp_path / "one")
    summary = pipeline.main(one + ["--jobs", "1"])
    out = capsys.readouterr().out
    assert out.index("==> 1/7 baseline") < out.index("==> 2/7 align_hetero") < out.index("==> 6/7 gp_stack") \
        < out.index("==> 7/7 ensemble") and not (tmp_path / "one" / "logs").exists()
    assert all(reason for _, reason in summary["plan"])   # everything trained, in this process
    assert _test_reports(tmp_path / "one") == _test_reports(res) and len(_test_reports(res)) == 6


def test_bad_stage_settings_are_found_first_and_a_failed_worker_keeps_the_others(ran, tmp_path):
    data, _, args, _ = ran
    res = tmp_path / "res"
    # the GP is the last stage: its bad choice is found before any stage starts, nothing is trained
    argv = [a if a != str(ran[1]) else str(res) for a in args] + ["--set", "GP_NU=1.0"]
    out = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "GP_NU" in out.stderr, out.stderr
    assert not res.exists()   # found before the results folder is touched
    # a stage that fails inside a worker: the error is one line, the stage's log tail is printed, and the
    # stage that ran beside it finished and kept its checkpoint
    (res / "5t_opamp_baseline_model.pth").mkdir(parents=True)   # a folder where the baseline must write
    out = subprocess.run([sys.executable, "-m", "pipeline", *argv[:-2], "--members", "target_only,dualhead"],
                         cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode != 0 and "baseline failed" in out.stdout, (out.stdout[-2000:], out.stderr[-2000:])
    assert (res / "5t_opamp_target_only_hetero.pth").is_file()


def test_second_run_skips_up_to_date_stages(ran, capsys):
    _, res, args, _ = ran
    before = {p.name: p.stat().st_mtime for p in res.glob("*.pth")}
    summary = pipeline.main(args)
    assert [reason for _, reason in summary["plan"]] == [None] * 6
    assert {p.name: p.stat().st_mtime for p in res.glob("*.pth")} == before
    assert "skipped (up to date)" in capsys.readouterr().out


def test_staleness_reasons(ran):
    data, _, args, _ = ran
    _, settings = pipeline.parse_args(args)
    assert all(r is None for *_, r in pipeline.plan(settings, force=False, dry_run=True))
    # a full run does not accept dry-run checkpoints; the stages built on the baseline follow it
    reasons = [r for *_, r in pipeline.plan(settings, force=False, dry_run=False)]
    assert reasons == ["dry-run checkpoint", "after baseline", "dry-run checkpoint", "after baseline",
                       "dry-run checkpoint", "after baseline"]
    assert [n for n, *_ in pipeline.plan(settings, force=False, dry_run=True, members="align_hetero,pooled")] == \
        ["baseline", "align_hetero", "target_only", "dualhead", "pooled"]
    # a fine-tune-only setting reruns only the fine-tune stage
    _, ft = pipeline.parse_args(args + ["--set", "L2SP_LAMBDA=0.5"])
    reasons = [r for *_, r in pipeline.plan(ft, force=False, dry_run=True)]
    assert reasons[:3] == [None, None, None] and "L2SP_LAMBDA" in reasons[3] and reasons[4:] == [None, None]
    # the baseline's own early-stopping rule: the baseline and its children retrain, target-only does not
    _, bv = pipeline.parse_args(args + ["--set", "BASELINE_VAL=source"])
    reasons = [r for *_, r in pipeline.plan(bv, force=False, dry_run=True)]
    assert "BASELINE_VAL" in reasons[0] and reasons[1:] == ["after baseline", None, "after baseline", None,
                                                            "after baseline"]   # pooled: no baseline; the GP: on it
    _, changed = pipeline.parse_args(args + ["--set", "WEIGHT_DECAY=0.01"])
    assert "WEIGHT_DECAY" in pipeline.plan(changed, force=False, dry_run=True)[0][3]
    _, other_split = pipeline.parse_args(args + ["--seed", "7"])
    assert pipeline.plan(other_split, force=False, dry_run=True)[0][3].startswith("settings changed")
    assert all(r == "--force" for *_, r in pipeline.plan(settings, force=True, dry_run=True))
    feats = data / "5t_opamp" / "target" / "features.csv"
    st, text = feats.stat(), feats.read_text()
    try:   # a touched file with the same bytes is the same data; edited bytes with the old time are not
        os.utime(feats, (st.st_atime, st.st_mtime + 3600))
        assert all(r is None for *_, r in pipeline.plan(settings, force=False, dry_run=True))
        lines = text.splitlines(keepends=True)
        feats.write_text(lines[0] + lines[2] + lines[1] + "".join(lines[3:]))   # two rows swapped (cp -p, rsync -a)
        os.utime(feats, (st.st_atime, st.st_mtime))
        assert "data changed since the checkpoint (target/features.csv)" in \
            pipeline.plan(settings, force=False, dry_run=True)[0][3]
    finally:
        feats.write_text(text)
        os.utime(feats, (st.st_atime, st.st_mtime))


def test_a_copied_results_folder_compares_its_own_parent(ran, tmp_path):
    """The members record their parent's path in the folder they were trained in; in a copy of that folder a
    retrained baseline must make them stale (the recorded path points at the untouched original)."""
    import torch
    _, res, args, _ = ran
    copy = tmp_path / "copy"
    shutil.copytree(res, copy)
    argv = list(args)
    argv[argv.index("--results-dir") + 1] = str(copy)
    _, settings = pipeline.parse_args(argv)
    assert all(r is None for *_, r in pipeline.plan(settings, force=False, dry_run=True))
    baseline = copy / "5t_opamp_baseline_model.pth"
    raw = torch.load(baseline, weights_only=True)
    raw["created"] = "retrained in the copy"
    torch.save(raw, baseline)
    reasons = dict((n, r) for n, *_, r in pipeline.plan(settings, force=False, dry_run=True))
    assert reasons["baseline"] is None and reasons["target_only"] is None
    for child in ("align_hetero", "dualhead", "gp_stack"):
        assert reasons[child] == "parent 5t_opamp_baseline_model.pth changed", (child, reasons[child])


def test_the_same_data_folder_spelled_another_way_leaves_checkpoints_up_to_date(ran, monkeypatch, tmp_path):
    """`--data-dir data`, `./data` and the absolute path are one folder; a copy elsewhere is another."""
    data, _, args, _ = ran
    monkeypatch.chdir(data.parent)
    for spelling in (f"./{data.name}", f"{data.name}/", f"{data.name}/5t_opamp/..", str(data)):
        argv = list(args)
        argv[argv.index("--data-dir") + 1] = spelling
        _, settings = pipeline.parse_args(argv)
        assert [r for *_, r in pipeline.plan(settings, force=False, dry_run=True)] == [None] * 6, spelling
    shutil.copytree(data, tmp_path / "copy")
    argv = list(args)
    argv[argv.index("--data-dir") + 1] = str(tmp_path / "copy")
    _, settings = pipeline.parse_args(argv)
    assert "DATA_DIR" in pipeline.plan(settings, force=False, dry_run=True)[0][3]


def test_stage_argv_passes_flags_through():
    args, _ = pipeline.parse_args(["--opamp", "two_stage_opamp", "--seed", "3", "--test-split", "0.1",
                                   "--epochs", "5", "--set", "HIDDEN_DIM=16", "--dry-run", "--members",
                                   "align_hetero,target_only,dualhead"])
    train_argv = pipeline.stage_argv(args, training=True)
    assert train_argv[:2] == ["--opamp", "two_stage_opamp"] and "--epochs" in train_argv and "--dry-run" in train_argv
    ens_argv = pipeline.stage_argv(args, training=False)
    assert "--epochs" not in ens_argv and "EPOCHS=5" in ens_argv and "--members" in ens_argv
    # --n-target (as every stage takes it): the same subset of training rows for every stage and the ensemble
    args, settings = pipeline.parse_args(["--n-target", "50"])
    assert settings["N_TARGET_TRAIN"] == 50
    for training in (True, False):
        assert "N_TARGET_TRAIN=50" in pipeline.stage_argv(args, training=training)


def test_a_source_only_baseline_with_pinned_preprocessing_survives_new_target_rows(tmp_path):
    """BASELINE_VAL=source + PREPROCESSING_FROM: more target rows leave the baseline up to date (its children
    retrain); without the pin the x scaler (fit on source + target inputs) moves and the baseline retrains;
    with BASELINE_VAL=target (it early-stops on target rows) it retrains as before.  A copy of the checkpoint in
    another results folder is up to date there too (RESULTS_DIR is not something a stage learns)."""

    import pandas as pd

    from data_loader import get_data_and_scalers
    data = write_dataset(tmp_path / "data", n_source=200, n_target=100)
    pre = get_data_and_scalers("5t_opamp", data, seed=42, test_split=0.0)["preprocessing"]
    pin = tmp_path / "pre.json"
    pin.write_text(json.dumps(pre.to_dict()))
    base = ["--data-dir", str(data), "--device", "cpu", *TINY, "--dry-run", "--test-split", "0",
            "--set", "BASELINE_VAL=source"]
    pinned = base + ["--set", f"PREPROCESSING_FROM={pin}"]
    pipeline.main(pinned + ["--results-dir", str(tmp_path / "r0")])
    tgt = data / "5t_opamp" / "target"
    for name in ("features.csv", "targets.csv"):       # 20 more target rows (copies with a new width)
        frame = pd.read_csv(tgt / name)
        extra = frame.head(20).copy()
        if name == "features.csv":
            extra["w1"] = extra["w1"] * 1.01
        pd.concat([frame, extra]).to_csv(tgt / name, index=False)
    shutil.copytree(tmp_path / "r0", tmp_path / "r1")
    (tmp_path / "r1" / ".toolkit.lock").unlink(missing_ok=True)

    def reasons(argv, folder):
        _, settings = pipeline.parse_args(argv + ["--results-dir", str(tmp_path / folder)])
        return {n: r for n, *_, r in pipeline.plan(settings, force=False, dry_run=True)}
    got = reasons(pinned, "r1")
    assert got["baseline"] is None and got["align_hetero"] and got["target_only"]
    from core.errors import ToolkitError
    with pytest.raises(ToolkitError, match="not a readable preprocessing record"):
        reasons(base + ["--set", f"PREPROCESSING_FROM={pin}x"], "r1")
    _, settings = pipeline.parse_args(base + ["--results-dir", str(tmp_path / "r1")])
    from training.staleness import staleness
    d = get_data_and_scalers("5t_opamp", data, seed=42, test_split=0.0)
    why = staleness({**settings, "PREPROCESSING_FROM": str(pin)}, "baseline", d["split"], d["files"], dry_run=True,
                    preprocessing=d["preprocessing"].to_dict())
    assert why == "preprocessing changed"
    target_val = reasons(pinned[:-2] + ["--set", f"PREPROCESSING_FROM={pin}", "--set", "BASELINE_VAL=target"], "r1")
    assert target_val["baseline"]                      # a different setting, and it would learn from target rows


def test_a_dry_run_never_replaces_trained_checkpoints(ran, tmp_path, monkeypatch):
    """A smoke test over a folder of trained checkpoints (settings changed, so every stage would rerun): refused
    before any stage runs, pipeline and a single stage alike, every checkpoint left as it was."""
    import training.stage
    from core.errors import ToolkitError
    from training import train
    data, res, args, _ = ran
    mine = tmp_path / "trained"
    shutil.copytree(res, mine)
    (mine / ".toolkit.lock").unlink(missing_ok=True)
    # the folder's checkpoints are dry-run ones; read as trained ones (as a user's would be)
    monkeypatch.setattr(training.stage, "read_checkpoint_meta", lambda p: {"metrics": {"dry_run": False}})
    before = {p.name: p.read_bytes() for p in mine.glob("*.pth")}
    argv = [str(mine) if a == str(res) else a for a in args] + ["--set", "WEIGHT_DECAY=0.001", "--jobs", "1"]
    with pytest.raises(ToolkitError, match=r"--dry-run would replace .*5t_opamp_baseline_model.pth, a trained"):
        pipeline.main(argv)
    with pytest.raises(ToolkitError, match=r"--dry-run would replace .*, a trained checkpoint"):
        train.main(["--data-dir", str(data), "--results-dir", str(mine), "--device", "cpu", "--dry-run"])
    assert {p.name: p.read_bytes() for p in mine.glob("*.pth")} == before


def test_inverse_design_on_dry_run_checkpoints_says_they_mean_nothing(ran, capsys):
    from inverse.forward import load_forward
    _, res, _, _ = ran
    load_forward("ensemble", None, opamp="5t_opamp", results_dir=res)
    assert "fitted on dry-run members" in capsys.readouterr().out
    load_forward("target_only", res / "5t_opamp_target_only_hetero.pth", opamp="5t_opamp", results_dir=res)
    assert "is a dry-run checkpoint" in capsys.readouterr().out


def test_the_seeds_quick_start_ensemble_fuses_the_members_it_trained(ran, tmp_path, capsys):
    """The seed's steps train baseline, align_hetero and dualhead, then run infer_ensemble with no flags: the
    configured members that are missing are left out with a warning; an explicit --members is never cut."""
    from core.errors import ToolkitError
    from inference import infer_ensemble
    data, res, args, _ = ran
    seed = tmp_path / "seed"
    shutil.copytree(res, seed)
    (seed / ".toolkit.lock").unlink(missing_ok=True)
    for name in ("target_only_hetero", "pooled_flag", "gp_stack"):
        (seed / f"5t_opamp_{name}.pth").unlink()
    common = ["--data-dir", str(data), "--results-dir", str(seed), "--device", "cpu", "--dry-run", "--no-plots"]
    record = infer_ensemble.main(common)
    assert list(record["members"]) == ["align_hetero", "dualhead"]
    out = capsys.readouterr().out
    assert "ENSEMBLE_MEMBERS names target_only, pooled, gp_stack, which are not trained" in out
    with pytest.raises(ToolkitError, match="Missing ensemble member 'target_only'"):
        infer_ensemble.main(common + ["--members", "align_hetero,target_only"])


def test_a_truncated_member_is_called_damaged_not_retrained(ran, tmp_path):
    from core.errors import ToolkitError
    from inference.predict import Ensemble
    _, res, _, _ = ran
    broken = tmp_path / "broken"
    shutil.copytree(res, broken)
    ck = broken / "5t_opamp_gp_stack.pth"
    ck.write_bytes(ck.read_bytes()[:5000])
    with pytest.raises(ToolkitError, match=r"gp_stack member\) cannot be read: damaged or truncated .*python -m "
                                           r"pipeline --opamp 5t_opamp"):
        Ensemble.load(broken, "5t_opamp")


def test_predict_interval_checks_its_input_flags_out_of_domain_and_names_the_callers_line(ran):
    import warnings

    import pandas as pd

    from core.errors import ToolkitError
    from inference.predict import Ensemble
    data, res, _, _ = ran
    ens = Ensemble.load(res, "5t_opamp")
    x = pd.read_csv(data / "5t_opamp" / "target" / "features.csv").head(4)
    with pytest.raises(ToolkitError, match="predict_interval expects a pandas DataFrame"):
        ens.predict_interval(x.to_numpy(), 0.95)
    far = x.copy()
    far.loc[far.index[0], "ibias"] = 1.0                       # amperes: far outside the data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lo, hi = ens.predict_interval(far, 0.95)
    assert lo.attrs["out_of_domain"].iloc[0] != "" and (lo.attrs["out_of_domain"].iloc[1:] == "").all()
    assert [w.filename for w in caught if "outside the training data" in str(w.message)] == [__file__]
    logged = [c for c in ens.y_cols if c in (ens.preprocessing.log_y_cols or [])]
    assert logged and (lo[logged].to_numpy() >= 0).all() and (hi.to_numpy() >= lo.to_numpy()).all()
    with pytest.raises(ToolkitError, match="refuse|outside the training data"):
        ens.predict_interval(far, 0.95, out_of_domain="refuse")


def test_ctrl_c_in_a_two_worker_pipeline_is_one_line(tmp_path):
    """Ctrl-C reaches the whole process group: the workers used to print their own KeyboardInterrupt tracebacks (and a
    second signal one in the pipeline's own shutdown). Now: the one "interrupted" line, exit 130, no lock left."""
    import signal
    import time
    data = write_dataset(tmp_path / "data", n_source=200, n_target=100)
    argv = [sys.executable, "-m", "pipeline", "--data-dir", str(data), "--results-dir", str(tmp_path / "res"),
            "--device", "cpu", *TINY, "--set", "EPOCHS=100000", "--set", "PATIENCE=100000", "--jobs", "2"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    seen = ""
    while "starts at" not in seen:                     # a worker is training (for a long time: huge EPOCHS)
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
        seen += line
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)                  # as a terminal's Ctrl-C: every process of the group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == "interrupted: files already written are complete (writes are atomic).", err[-2000:]
    assert "Traceback" not in out + err
    from filelock import FileLock
    FileLock(str(tmp_path / "res" / ".toolkit.lock"), timeout=0).acquire()   # released: the next run may start


def test_run_main_gives_an_in_process_caller_its_ctrl_c_back():
    import signal

    from core.cli import run_main
    before = signal.getsignal(signal.SIGINT)
    assert run_main(lambda argv: 7) == 7 and signal.getsignal(signal.SIGINT) is before
