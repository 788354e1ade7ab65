"""benchmarks.run: --quick on test-made data writes every method x n, the Markdown block and the plot."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import config
from benchmarks import peers, run
from data_loader import get_data_and_scalers

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--set", "EPOCHS=3", "--set", "PATIENCE=2"]


@pytest.fixture(scope="module")
def dataset(tiny_data):
    return tiny_data(200, 120)


@pytest.fixture(scope="module")
def quick_run(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--data-dir", str(dataset), "--results-root", str(tmp / "res"),
            "--docs-path", str(tmp / "docs" / "BENCHMARKS.md"), "--n-target", "20", "all", "--gp-max-rows", "40", "--jobs", "1", *TINY]
    doc = tmp / "docs" / "BENCHMARKS.md"
    doc.parent.mkdir()
    doc.write_text("# Benchmarks\n\nkept text\n\n<!-- benchmarks.run:5t_opamp start -->\nold\n"
                   "<!-- benchmarks.run:5t_opamp end -->\n\ntail text\n")
    rows = run.main(argv)
    return tmp, argv, rows


def test_quick_writes_every_method_and_size(quick_run):
    tmp, _, _ = quick_run
    lines = [json.loads(x) for x in (tmp / "res" / "benchmarks.jsonl").read_text().splitlines()]
    got = {(r["method"], r["n_target"]) for r in lines}
    assert got == {(m, n) for m in run.all_methods() for n in ("20", "all")}
    for r in lines:
        assert np.isfinite([r["r2"], r["r2_log"], r["mape"], r["fit_s"]]).all()
        assert set(r["per_metric_r2_log"]) == {"slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"}
    assert {r["n_train"] for r in lines if r["n_target"] == "20"} == {20}
    assert min(r["n_train"] for r in lines if r["n_target"] == "all") > 20
    # our stages ran through the real entry points into per-(seed, n) dirs
    assert (tmp / "res" / "5t_opamp" / "seed0_n20" / "5t_opamp_ensemble_metrics.json").is_file()


def test_markdown_block_replaced_and_plot_written(quick_run):
    tmp, _, _ = quick_run
    text = (tmp / "docs" / "BENCHMARKS.md").read_text()
    assert "kept text" in text and "tail text" in text and "\nold\n" not in text
    assert text.count("<!-- benchmarks.run:5t_opamp start -->") == 1
    assert "target-only GP (ARD)" in text and "ensemble (calibrated) *" in text and "n=all" in text
    # the forward-stage block comes from the same task dirs, refreshed by the same run
    assert text.count("<!-- benchmarks.run:5t_opamp:forward start -->") == 1
    forward = text.split("<!-- benchmarks.run:5t_opamp:forward start -->")[1]
    assert "forward stages and ensemble" in forward and "dual-head fine-tune" in forward
    png = tmp / "docs" / "learning_curve_5t_opamp.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_done_tasks_and_render_only(quick_run):
    tmp, argv, _ = quick_run
    log = tmp / "res" / "benchmarks.jsonl"
    before = log.read_text()
    run.main(argv)                                  # same settings: nothing retrained
    assert log.read_text() == before
    (tmp / "docs" / "learning_curve_5t_opamp.png").unlink()
    run.main(argv + ["--render-only"])
    assert (tmp / "docs" / "learning_curve_5t_opamp.png").is_file()


def test_fingerprint_follows_config_edits_not_only_set(monkeypatch):
    """A default edited in config.py (the usual tweak-and-rerun) redoes the rows like the same --set would."""
    args = run.parse_args(["--opamp", "5t_opamp"])
    before = run.fingerprint(args)
    monkeypatch.setattr(config, "NUM_THREADS", 2)                  # read by no stage: the same numbers
    assert run.fingerprint(args) == before
    monkeypatch.setattr(config, "POOLED_HIDDEN_DIM", 32)
    edited = run.fingerprint(args)
    assert edited != before
    monkeypatch.setattr(config, "POOLED_HIDDEN_DIM", 256)
    assert run.fingerprint(run.parse_args(["--opamp", "5t_opamp", "--set", "POOLED_HIDDEN_DIM=32"])) == edited


def test_fresh_reuses_up_to_date_stage_checkpoints(quick_run):
    """--fresh redoes rows, but a stage whose checkpoint is up to date is not retrained."""
    tmp, argv, _ = quick_run
    ours = ["align_hetero", "target_only", "dualhead", "ensemble"]
    ckpts = sorted((tmp / "res" / "5t_opamp" / "seed0_nall").glob("*.pth"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    log = tmp / "res" / "benchmarks.jsonl"
    before = {r["method"]: r["r2_log"] for r in run.read_rows(log) if r["n_target"] == "all" and r["method"] in ours}
    n_lines = len(log.read_text().splitlines())
    run.main(argv + ["--fresh", "--n-target", "all", "--methods", *ours])
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    assert "checkpoint up to date" in (tmp / "res" / "5t_opamp" / "seed0_nall" / "benchmark_log.txt").read_text()
    new_rows = [json.loads(line) for line in log.read_text().splitlines()[n_lines:]]
    assert len(new_rows) == len(ours)
    assert {r["method"]: r["r2_log"] for r in new_rows} == before


def test_peers_learn_against_a_control(dataset):
    """Each sklearn peer beats predicting the training mean (the control) on the test split."""
    d = get_data_and_scalers("5t_opamp", dataset, seed=0)
    hp = peers.peer_params({"HIDDEN_DIM": 16, "NUM_LAYERS": 2, "DROPOUT_RATE": 0.0, "LEARNING_RATE": 1e-3,
                            "WEIGHT_DECAY": 0.0, "BATCH_SIZE": 16, "BASELINE_BATCH_SIZE": 64, "EPOCHS": 3,
                            "PATIENCE": 2}, gp_max_rows=60, gbm_max_iter=50)
    y_test = d["target_test"][1]
    control = np.mean((y_test - d["target_train"][1].mean(axis=0)) ** 2)
    fake_source = {s: d[s][1] * 0.0 for s in ("target_train", "target_val", "target_test")}
    for name in ("target_gbm", "target_gp", "stack_gbm", "stack_gp"):
        fn, _, _ = peers.PEERS[name]
        pred = fn(d, seed=0, hp=hp, source_pred=fake_source)
        assert pred.shape == y_test.shape
        assert np.mean((pred - y_test) ** 2) < 0.7 * control, name
    with pytest.raises(ValueError, match="source_pred"):
        peers.stack_gbm(d, seed=0, hp=hp)


def test_jobs_2_runs_tasks_in_worker_processes(dataset, tmp_path):
    """Parts of one cell (the baseline's and the pooled stage's, both training stages on one task folder) run
    side by side: the harness coordinates them, so the stages' folder lock does not refuse the second."""
    rows = run.main(["--quick", "--data-dir", str(dataset), "--results-root", str(tmp_path / "res"),
                     "--docs-path", str(tmp_path / "B.md"), "--n-target", "20", "30", "--jobs", "2",
                     "--methods", "source_only", "target_gbm", "pooled", *TINY])
    assert sorted((r["n_target"], r["method"]) for r in rows) == [
        ("20", "pooled"), ("20", "source_only"), ("20", "target_gbm"),
        ("30", "pooled"), ("30", "source_only"), ("30", "target_gbm")]


def test_bad_n_target_is_a_clear_error():
    with pytest.raises(ValueError, match="positive integers or 'all'"):
        run.parse_args(["--n-target", "-5"])


def test_a_results_root_that_is_a_file_is_one_line(tmp_path):
    from core.errors import ToolkitError
    taken = tmp_path / "bench.log"
    taken.write_text("a log")
    with pytest.raises(ToolkitError, match="--results-root .*bench.log is a file, not a folder"):
        run.main(["--opamp", "5t_opamp", "--quick", "--results-root", str(taken), "--docs-path",
                  str(tmp_path / "R.md")])
    assert taken.read_text() == "a log"
    with pytest.raises(ToolkitError, match="no rows in .*benchmarks.jsonl, nothing to render"):
        run.main(["--opamp", "5t_opamp", "--render-only", "--results-root", str(tmp_path / "empty"), "--docs-path",
                  str(tmp_path / "R.md")])
    assert not (tmp_path / "R.md").exists()


def test_forward_report_renders_stage_and_coverage_tables(tmp_path):
    """forward_report reads the harness's full-data dirs and replaces only its own block."""
    import json as _json
    from benchmarks import forward_report
    cols = ["a", "b"]
    rep = lambda v: {"mean": {"r2": v, "r2_log": v + 0.01, "mape": 5.0}, "a": {"r2_log": v}, "b": {"r2_log": v}}  # noqa: E731
    for seed, best in ((0, 0.9), (1, 0.8)):
        d = tmp_path / "res" / "5t_opamp" / f"seed{seed}_nall"
        d.mkdir(parents=True)
        for stem in ("baseline_model", "target_only_hetero", "align_hetero_lambda0.050", "dualhead_finetuned"):
            extra = {"extra": {"reinit_layers": 5, "reinit_val_nll": {"0": -1.0, "5": -1.5}}} if "align" in stem else {}
            (d / f"5t_opamp_{stem}_metrics.json").write_text(_json.dumps({"test": rep(best), "wall_s": 10.0, **extra}))
        ens = {"n": 50, "y_cols": cols,
               "members": {"align_hetero": {"metrics": rep(best)}, "target_only": {"metrics": rep(best - 0.1)}},
               "ensemble": {"metrics": {**rep(best + 0.02), "a": {"r2_log": 0.9}, "b": {"r2_log": 0.8}},
                            "calibration": {"after": {"mean": {"cov68": 0.7, "cov95": 0.94}}}}}
        (d / "5t_opamp_ensemble_metrics.json").write_text(_json.dumps(ens))
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\nkeep me\n")
    forward_report.main(["--opamp", "5t_opamp", "--results-root", str(tmp_path / "res"), "--docs-path", str(doc)])
    text = doc.read_text()
    assert "keep me" in text and "seeds 0, 1" in text and "70.0 %" in text and "0.9100 (align_hetero)" in text
    assert "| align_hetero + CORAL | 0.850 ± 0.071 | 0.850 ± 0.071 |" in text      # per-metric table
    assert "seed 0: 5 (val NLL k=0 -1.000 / k=5 -1.500)" in text
    forward_report.main(["--opamp", "5t_opamp", "--results-root", str(tmp_path / "res"), "--docs-path", str(doc)])
    assert doc.read_text().count("forward start") == 1
    with pytest.raises(ValueError, match="No finished full-data runs"):
        forward_report.main(["--opamp", "two_stage_opamp", "--results-root", str(tmp_path / "res"),
                             "--docs-path", str(doc)])


def test_pooled_peer_alone_is_the_pooled_stage(dataset, tmp_path):
    """--methods pooled_mlp (the stage's old name) trains training.train_pooled only, and its row (named by the
    registry: pooled) is that stage's test report."""
    rows = run.main(["--quick", "--data-dir", str(dataset), "--results-root", str(tmp_path / "res"),
                     "--docs-path", str(tmp_path / "B.md"), "--n-target", "30", "--jobs", "1",
                     "--methods", "pooled_mlp", *TINY])
    assert [r["method"] for r in rows] == ["pooled"]
    task = tmp_path / "res" / "5t_opamp" / "seed0_n30"
    report = json.loads((task / "5t_opamp_pooled_flag_metrics.json").read_text())["test"]
    assert rows[0]["r2_log"] == pytest.approx(report["mean"]["r2_log"])
    assert not list(task.glob("*align_hetero*")) and not list(task.glob("*dualhead*"))
    assert not list(task.glob("*baseline*"))  # the pooled part needs no source baseline


def test_later_sizes_reuse_the_seeds_baseline(quick_run):
    # the source baseline does not depend on n: trained in the first size's task, copied to the others
    tmp, _, _ = quick_run
    task = tmp / "res" / "5t_opamp"
    first, later = task / "seed0_n20", task / "seed0_nall"
    assert (first / "5t_opamp_baseline_model.pth").read_bytes() == (later / "5t_opamp_baseline_model.pth").read_bytes()
    assert "[benchmarks] reusing" in (later / "benchmark_log.txt").read_text()


def test_fusion_whatif_replays_member_sets_and_selections(quick_run):
    """The harness's task dirs hold every member checkpoint: fusion variants are scored without retraining."""
    from benchmarks import fusion_whatif
    tmp, _, _ = quick_run
    ckpts = sorted((tmp / "res" / "5t_opamp" / "seed0_nall").glob("*.pth"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    doc = tmp / "docs" / "WHATIF.md"
    rows = fusion_whatif.main(["--opamp", "5t_opamp", "--results-root", str(tmp / "res"), "--docs-path", str(doc),
                               "--members", "align_hetero,target_only,dualhead", "align_hetero,target_only,dualhead,pooled"])
    got = {(r["members"], r["selection"], r["n"]) for r in rows}
    assert got == {(m, s, n) for m in ("align_hetero,target_only,dualhead", "align_hetero,target_only,dualhead,pooled")
                   for s in ("val", "cv") for n in ("20", "all")}
    for r in rows:
        assert np.isfinite([r["r2_log"], r["best_r2_log"], r["cov95"]]).all() and 0 <= r["cov68"] < r["cov95"] <= 1
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps          # nothing retrained
    text = doc.read_text()
    assert "fusion_whatif:5t_opamp start" in text and "worst gap to best member" in text
    assert "| 68 % coverage per seed | 95 % coverage per seed |" in text


def test_fusion_whatif_compares_results_roots(quick_run, tmp_path):
    """Several --results-root (the same cells run with other settings): one row group per folder, labelled."""
    import shutil
    from benchmarks import fusion_whatif
    tmp, _, _ = quick_run
    other = tmp_path / "other"
    shutil.copytree(tmp / "res" / "5t_opamp" / "seed0_nall", other / "5t_opamp" / "seed0_nall")
    doc = tmp_path / "WHATIF.md"
    rows = fusion_whatif.main(["--opamp", "5t_opamp", "--results-root", str(tmp / "res"), str(other), "--selection",
                               "cv", "--members", "align_hetero,target_only,dualhead", "--docs-path", str(doc)])
    by_root = {(r["root"], r["n"]): r["r2_log"] for r in rows}
    assert set(by_root) == {(str(tmp / "res"), "20"), (str(tmp / "res"), "all"), (str(other), "all")}
    assert by_root[(str(other), "all")] == pytest.approx(by_root[(str(tmp / "res"), "all")])   # the same checkpoints
    text = doc.read_text()
    assert "| results root |" in text and f"--results-root {tmp / 'res'} {other}" in text
    # --metric: that metric's log-space R^2 beside the mean, the ensemble's and the best member's on it
    rows = fusion_whatif.main(["--opamp", "5t_opamp", "--results-root", str(other), "--selection", "cv", "--members",
                               "align_hetero,target_only,dualhead", "--metric", "cmrr", "--docs-path", str(doc)])
    assert np.isfinite([rows[0]["metric_r2_log"], rows[0]["metric_best_r2_log"]]).all()
    assert "| cmrr R²_log | cmrr: best member's |" in doc.read_text() and "--metric cmrr" in doc.read_text()
    with pytest.raises(ValueError, match="--metric 'cmr' is not a metric"):
        fusion_whatif.main(["--opamp", "5t_opamp", "--results-root", str(other), "--members",
                            "align_hetero,target_only,dualhead", "--metric", "cmr"])


def test_fusion_whatif_without_task_dirs_names_the_command(tmp_path):
    from benchmarks import fusion_whatif
    from core.errors import ToolkitError
    with pytest.raises(ToolkitError, match="python -m benchmarks.run --opamp 5t_opamp"):
        fusion_whatif.main(["--opamp", "5t_opamp", "--results-root", str(tmp_path)])
    (tmp_path / "5t_opamp" / "seed0_n50").mkdir(parents=True)        # a mistyped circuit: the one held is named
    with pytest.raises(ToolkitError, match=r"under \S+5t_opam \(did you mean --opamp 5t_opamp\?\)"):
        fusion_whatif.main(["--opamp", "5t_opam", "--results-root", str(tmp_path)])
    with pytest.raises(ToolkitError, match=r"two_stage_opamp; \S+ holds 5t_opamp\. Make them"):   # not a typo
        fusion_whatif.main(["--opamp", "two_stage_opamp", "--results-root", str(tmp_path)])
    (tmp_path / "5t_opamp" / "seed0_n50").rmdir()                    # its own folder, empty: no hint at itself
    with pytest.raises(ToolkitError, match=r"under \S+5t_opamp\. Make them") as e:
        fusion_whatif.main(["--opamp", "5t_opamp", "--results-root", str(tmp_path)])
    assert "did you mean" not in str(e.value)


def test_spice_throughput_refuses_a_batch_comparison_larger_than_the_run():
    from benchmarks import spice_throughput
    from core.errors import ToolkitError
    with pytest.raises(ToolkitError, match=r"--n-batch \(100\) must be <= --n \(40\)"):
        spice_throughput.parse_args(["--n", "40", "--n-batch", "100"])
    assert spice_throughput.parse_args(["--n", "40"]).n_batch == 40          # the docstring's quick look
    assert spice_throughput.parse_args([]).n_batch == 100


def test_val_optimism_compares_members_val_and_test_errors(quick_run):
    """Per member and n: test/val MSE and its ratio to the out-of-sample reference's, from the saved checkpoints."""
    from benchmarks import val_optimism
    tmp, _, _ = quick_run
    ckpts = sorted((tmp / "res" / "5t_opamp" / "seed0_nall").glob("*.pth"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    doc = tmp / "docs" / "OPTIMISM.md"
    cells = val_optimism.main(["--opamp", "5t_opamp", "--results-root", str(tmp / "res"), "--docs-path", str(doc)])
    assert sorted(n for n, _ in cells) == ["20", "all"]
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps          # nothing retrained
    n, cell = cells[0]
    assert set(cell) == {"align_hetero", "target_only", "dualhead", "pooled", "gp_stack"}
    assert cell["gp_stack"][2] and not cell["target_only"][2]        # the GP's val predictions are out of sample
    for val, test, _ in cell.values():
        assert val.shape == test.shape == (5,) and np.all(val > 0) and np.all(test > 0)
    text = doc.read_text()
    assert "val_optimism:5t_opamp start" in text and "| gp_stack | out of sample | all | 1 | " in text
    assert "| target_only | early-stopped on them | every n | 2 |" in text


def test_val_optimism_ratios_and_bad_reference():
    from benchmarks import val_optimism
    from core.errors import ToolkitError
    val = np.array([1.0, 2.0])
    cells = [("50", {"gp_stack": (val, np.array([2.0, 2.0]), True), "target_only": (val, np.array([4.0, 4.0]), False)}),
             ("all", {"gp_stack": (val, np.array([1.0, 0.0]), True), "target_only": (val, val, False)})]
    rows = val_optimism.log_ratios(cells, "gp_stack")
    got = {(r["n"], r["member"]): r for r in rows}
    np.testing.assert_allclose(np.exp(got["50", "target_only"]["log_ratio"]), [4.0, 2.0])
    np.testing.assert_allclose(np.exp(got["50", "target_only"]["log_rel"]), [2.0, 2.0])   # twice the reference's
    assert np.isnan(got["all", "gp_stack"]["log_ratio"][1])       # a zero MSE is left out, not a -inf
    table = val_optimism.summarise(rows, ["target_only", "gp_stack"])
    first = table.iloc[0]
    assert (first["member"], first["n"], first["÷ reference's (median)"]) == ("target_only", "50", "2.00")
    assert list(table["n"]) == ["50", "all", "every n"] * 2
    with pytest.raises(ToolkitError, match="--reference must be one of --members"):
        val_optimism.parse_args(["--opamp", "5t_opamp", "--members", "align_hetero,target_only"])


def test_without_docs_path_the_harness_renders_into_its_results_root(quick_run, tmp_path):
    """A quick run, or one on a user's data, used to write docs/RESULTS.md (the shipped, measured tables) by default;
    without --docs-path it now writes <results-root>/RESULTS.md and leaves docs/ alone."""
    tmp, _, _ = quick_run
    root = tmp_path / "res"
    shutil.copytree(tmp / "res", root)
    shipped = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"
    before = shipped.read_bytes()
    run.main(["--opamp", "5t_opamp", "--render-only", "--results-root", str(root)])
    assert "<!-- benchmarks.run:5t_opamp start -->" in (root / "RESULTS.md").read_text()
    assert (root / "learning_curve_5t_opamp.png").is_file()
    assert shipped.read_bytes() == before
