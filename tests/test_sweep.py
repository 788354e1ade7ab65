"""python -m sweep: grid x seeds x sizes, parents trained once, best chosen on val, resumable, bad input."""
import json
from pathlib import Path

import pytest

import sweep
from core import executor
from core.errors import ToolkitError

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--set", "EPOCHS=3", "--set", "PATIENCE=2"]


@pytest.fixture(scope="module")
def data(tiny_data):
    return tiny_data(200, 120)


def _argv(data, root, *extra):
    return ["--data-dir", str(data), "--results-root", str(root), "--jobs", "1", *TINY, *extra]


def test_grid_runs_every_combination_and_chooses_on_val(data, tmp_path):
    root = tmp_path / "sw"
    out = sweep.main(_argv(data, root, "--stage", "target_only", "--grid", "ALPHA_R2=0.5,1.0",
                           "--seeds", "0", "1", "--n-target", "20", "all"))
    rows = [json.loads(x) for x in (root / "sweep.jsonl").read_text().splitlines()]
    assert sorted((r["combo"]["ALPHA_R2"], r["seed"], r["n"]) for r in rows) == sorted(
        (a, s, n) for a in (0.5, 1.0) for s in (0, 1) for n in ("20", "all"))
    for n in ("20", "all"):            # the choice is the highest mean val score, whatever test says
        mean_val = {a: sum(r["val_r2_log"] for r in rows if r["n"] == n and r["combo"]["ALPHA_R2"] == a) / 2
                    for a in (0.5, 1.0)}
        assert out["best"][n] == {"ALPHA_R2": max(mean_val, key=mean_val.get)}
    assert len({r["val_r2_log"] for r in rows}) > 1                     # the runs really differ
    text = (root / "sweep.md").read_text()
    assert "never used to choose" in text and text.count("| **") == 2     # one bold (chosen) cell per size
    # a rerun finds every run in the JSONL: nothing is trained again
    before = (root / "sweep.jsonl").read_text()
    doc = tmp_path / "RESULTS.md"
    sweep.main(_argv(data, root, "--stage", "target_only", "--grid", "ALPHA_R2=0.5,1.0",
                     "--seeds", "0", "1", "--n-target", "20", "all", "--docs-path", str(doc)))
    assert (root / "sweep.jsonl").read_text() == before
    # a second table of the same stage under its own block name leaves the first in place
    sweep.main(_argv(data, root, "--stage", "target_only", "--grid", "ALPHA_R2=0.5", "--seeds", "0",
                     "--n-target", "20", "--docs-path", str(doc), "--block", "alpha_half"))
    text = doc.read_text()
    assert "benchmarks.run:sweep:5t_opamp_target_only start" in text and "sweep:alpha_half start" in text
    assert text.count("### sweep: target_only on 5t_opamp") == 2


def test_parents_are_trained_once_and_shared(data, tmp_path):
    root = tmp_path / "sw"
    sweep.main(_argv(data, root, "--stage", "align_hetero", "--grid", "LAMBDA_CORAL=0.01,0.05",
                     "--set", "ALIGN_REINIT_LAYERS=0"))
    assert len(list((root / "_parents").iterdir())) == 1                 # one baseline for both lambdas
    ckpts = sorted(p.name for p in root.glob("LAMBDA_CORAL=*/seed0_nall_*/*align_hetero*.pth"))
    assert ckpts == ["5t_opamp_align_hetero_lambda0.010.pth", "5t_opamp_align_hetero_lambda0.050.pth"]
    # interrupted after the parents (no run recorded): the rerun reuses the up-to-date baseline
    baseline = next((root / "_parents").glob("*/5t_opamp_baseline_model.pth"))
    made = baseline.stat().st_mtime_ns
    (root / "sweep.jsonl").unlink()
    sweep.main(_argv(data, root, "--stage", "align_hetero", "--grid", "LAMBDA_CORAL=0.01,0.05",
                     "--set", "ALIGN_REINIT_LAYERS=0"))
    assert baseline.stat().st_mtime_ns == made


def test_a_sweep_with_other_fixed_settings_in_the_same_root_keeps_the_first_ones_runs(data, tmp_path):
    root = tmp_path / "sw"
    sweep.main(_argv(data, root, "--stage", "target_only", "--grid", "ALPHA_R2=1"))
    first = [json.loads(x) for x in (root / "sweep.jsonl").read_text().splitlines()]
    model = next(Path(first[0]["dir"]).glob("*.pth"))
    made = model.stat().st_mtime_ns
    out = sweep.main(_argv(data, root, "--stage", "target_only", "--grid", "ALPHA_R2=1", "--set", "PATIENCE=3"))
    assert model.stat().st_mtime_ns == made                              # not overwritten: its own folder
    assert [r["dir"] for r in out["rows"]] != [first[0]["dir"]] and len(out["rows"]) == 1   # the table: this sweep's


def test_a_gp_sweep_chooses_on_out_of_sample_val_predictions(data, tmp_path):
    """The GP fits the val rows too (GP_ROWS = train+val): scored on its in-sample fit, every setting had val R^2
    ~1 and the choice was arbitrary; the sweep scores the out-of-sample val predictions its checkpoint keeps."""
    import numpy as np
    from data_loader import data_kwargs_from_settings, get_data_and_scalers
    from inference.metrics import regression_report
    from inference.evaluate import positive_floor
    from models.model_utils import read_checkpoint_meta
    root = tmp_path / "sw"
    out = sweep.main(_argv(data, root, "--stage", "gp_stack", "--grid", "GP_NU=1.5,2.5"))
    for row in out["rows"]:
        ckpt = next(Path(row["dir"]).glob("*gp_stack.pth"))
        meta = read_checkpoint_meta(ckpt)
        settings = {**meta["config"], "RESULTS_DIR": str(ckpt.parent)}
        d = get_data_and_scalers(**data_kwargs_from_settings(settings))
        oof = np.asarray(meta["extra"]["oof_val"]["mean"], float)
        want = regression_report(d["raw"]["target_val"][1].to_numpy(float), d["preprocessing"].inverse_y(oof),
                                 d["y_cols"], floor=positive_floor(d))["mean"]["r2_log"]
        assert row["val_r2_log"] == pytest.approx(want) and row["val_r2_log"] < 0.999


def test_random_draws_k_combinations(data, tmp_path):
    grid = sweep.parse_grid(["LR_HEAD=1e-4,3e-4,1e-3", "UNFREEZE_LAYERS=1,all"], "dualhead")
    assert grid == {"LR_HEAD": [1e-4, 3e-4, 1e-3], "UNFREEZE_LAYERS": ["1", "all"]}
    picked = sweep.combinations(grid, 4, seed=0)
    assert len(picked) == 4 and len({json.dumps(c) for c in picked}) == 4
    assert picked == sweep.combinations(grid, 4, seed=0) != sweep.combinations(grid, 4, seed=1)
    assert len(sweep.combinations(grid, None, seed=0)) == 6


@pytest.mark.parametrize("extra, needle", [
    (["--stage", "target_only"], "Empty grid"),
    (["--stage", "target_only", "--grid", "ALPHA_R3=0.5,1"], "Did you mean ALPHA_R2"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=abc"], "ALPHA_R2"),
    (["--stage", "target_only", "--grid", "ALPHA_R2="], "has no values"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=,"], "has no values"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=0.5,"], "empty item"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=0.5", "--n-target", "5000"], "target training rows"),
    (["--stage", "target_only", "--grid", "LAMBDA_CORAL=0.01,0.05"], "not read by target_only"),
    (["--stage", "target_onyl", "--grid", "ALPHA_R2=1"], "did you mean target_only"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=0.5", "--set", "ALPHA_R2=1"], "both swept"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=-1"], "ALPHA_R2"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=1", "--backend", "dask"], "needs --scheduler"),
    (["--stage", "target_only", "--grid", "ALPHA_R2=1", "--block", "two words"], "--block must be"),
    (["--stage", "target_only", "--grid", "OPAMP_TYPE=5t_opamp,two_stage_opamp"], "from --opamp"),   # was ignored
    (["--stage", "target_only", "--grid", "ALPHA_R2=1", "--set", "SEED=3"], "from --seeds"),
    # a value only the stage itself checked: it stopped the sweep after the runs before it
    (["--stage", "align_hetero", "--grid", "ALIGN_REINIT_LAYERS=auto,x"], "ALIGN_REINIT_LAYERS must be"),
    (["--stage", "align_hetero", "--grid", "LAMBDA_CORAL=0.1", "--set", "BASELINE_VAL=bogus"], "BASELINE_VAL"),
])
def test_bad_input_is_one_line_and_writes_nothing(data, tmp_path, extra, needle):
    with pytest.raises(ToolkitError, match=needle):
        sweep.main(_argv(data, tmp_path / "sw", *extra))
    assert not (tmp_path / "sw").exists()


def test_unreachable_scheduler_is_a_clear_error(data, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(executor, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ToolkitError, match="Cannot reach the Dask scheduler"):
        sweep.main(_argv(data, tmp_path / "sw", "--stage", "target_only", "--grid", "ALPHA_R2=1",
                         "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"))
    assert not (tmp_path / "sw").exists()


def test_a_service_that_is_not_a_dask_scheduler_is_one_line_within_the_deadline():
    """A port that accepts and never answers (a dashboard's HTTP port, a typo) hung Client's handshake forever."""
    pytest.importorskip("distributed")
    import socket
    import threading
    import time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ToolkitError, match="Cannot reach the Dask scheduler"):
            executor.connect(f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout_s=1)
    finally:
        server.close()
    assert time.perf_counter() - t0 < 1 + executor.HANDSHAKE_GRACE_S + 5


def test_dask_local_cluster_gives_the_same_rows(data, tmp_path):
    distributed = pytest.importorskip("distributed")
    args = ["--stage", "target_only", "--grid", "ALPHA_R2=0.5,1.0", "--n-target", "20"]
    local = sweep.main(_argv(data, tmp_path / "local", *args))["rows"]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        remote = sweep.main(_argv(data, tmp_path / "dask", *args, "--backend", "dask",
                                  "--scheduler", cluster.scheduler_address))["rows"]
    key = lambda r: json.dumps(r["combo"])   # noqa: E731
    assert [(r["combo"], r["val_r2_log"], r["test_r2_log"]) for r in sorted(local, key=key)] == \
        [(r["combo"], r["val_r2_log"], r["test_r2_log"]) for r in sorted(remote, key=key)]


def test_worker_pools_start_multiprocessings_tracker_without_its_exit_warning(monkeypatch):
    """A sweep stopped by Ctrl-C printed, after its one "interrupted" line, the resource tracker's two-line warning
    about the stopped workers' semaphores; every pool (joblib's, the pipeline's) now starts it told to ignore that."""
    import sys

    from core import executor
    monkeypatch.setattr(sys, "warnoptions", [])
    with executor.parallel("local", workers=1) as run:
        assert list(run(x for x in ())) == []
    executor.quiet_leak_warnings()
    assert sys.warnoptions == [executor.LEAK_WARNING]     # once, however many pools


def test_a_run_that_cannot_train_is_recorded_and_the_sweep_goes_on(data, tmp_path):
    """A learning rate that makes the loss diverge stopped the whole sweep, and every rerun stopped there again."""
    root = tmp_path / "sw"
    argv = _argv(data, root, "--stage", "target_only", "--grid", "LEARNING_RATE=1e-3,1e30,3e-4", "--n-target", "20")
    out = sweep.main(argv)
    rows = {r["combo"]["LEARNING_RATE"]: r for r in out["rows"]}
    assert set(rows) == {1e-3, 1e30, 3e-4} and "loss" in rows[1e30]["failed"]
    assert out["best"]["20"]["LEARNING_RATE"] in (1e-3, 3e-4)             # never the failed one
    assert "failed in 1 of 1 runs" in (root / "sweep.md").read_text()
    before = (root / "sweep.jsonl").read_text()
    sweep.main(argv)                                                       # the rerun completes: nothing to do
    assert (root / "sweep.jsonl").read_text() == before


def test_repeated_seeds_and_sizes_and_respelled_settings_are_one_run(data, tmp_path):
    root = tmp_path / "sw"
    sweep.main(_argv(data, root, "--stage", "target_only", "--grid", "ALPHA_R2=1", "--seeds", "0", "0",
                     "--n-target", "all", "0"))
    assert len((root / "sweep.jsonl").read_text().splitlines()) == 1
    argv = [a.replace("EPOCHS=3", "epochs=03") for a in _argv(data, root, "--stage", "target_only",
                                                              "--grid", "ALPHA_R2=1")]
    assert "epochs=03" in argv
    sweep.main(argv)                                                       # the same settings: nothing trained again
    assert len((root / "sweep.jsonl").read_text().splitlines()) == 1


def test_a_parent_setting_that_cannot_train_fails_its_runs_not_the_sweep(data, tmp_path):
    """A grid over a key the baseline reads: the diverging value's runs are recorded as failed, the others run."""
    root = tmp_path / "sw"
    out = sweep.main(_argv(data, root, "--stage", "align_hetero", "--grid", "LEARNING_RATE=1e-3,1e30",
                           "--set", "ALIGN_REINIT_LAYERS=0", "--n-target", "20"))
    rows = {r["combo"]["LEARNING_RATE"]: r for r in out["rows"]}
    assert rows[1e30]["failed"].startswith("parent baseline") and rows[1e-3].get("failed") is None
    assert out["best"]["20"] == {"LEARNING_RATE": 1e-3}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_results_root_where_no_folder_can_be_made_is_one_line(data):
    """Permission bits can pass where nothing can be created (/proc, as root): a traceback from mkdir before."""
    with pytest.raises(ToolkitError, match=r"--results-root /proc/x: (no file can be written in /proc|/proc is not "
                                           r"writable by this user)"):
        sweep.main(_argv(data, "/proc/x", "--stage", "target_only", "--grid", "ALPHA_R2=1"))
