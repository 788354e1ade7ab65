"""python -m inference.predict_designs: a CSV of designs in, the ensemble's predictions and intervals out."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.errors import ToolkitError
from inference import infer_ensemble, predict_designs
from inference.evaluate import half_min_positive
from inference.metrics import regression_report
from inference.predict import Ensemble
from training import train_pooled, train_target_only

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set",
        "POOLED_NUM_LAYERS=2", "--quiet"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_data):
    """A dry-run two-member ensemble on the tiny data, and designs to predict: the target features in another
    column order behind an id column, the last one far outside the data."""
    data = tiny_data(200, 120)
    res = tmp_path_factory.mktemp("pred") / "res"
    args = ["--data-dir", str(data), "--results-dir", str(res), "--device", "cpu", *TINY, "--dry-run"]
    for stage in (train_target_only, train_pooled):
        stage.main(args)
    infer_ensemble.main(args + ["--members", "target_only,pooled", "--no-plots"])
    x = pd.read_csv(data / "5t_opamp" / "target" / "features.csv").head(12)
    x.loc[len(x) - 1, "w1"] = 5000.0                      # 100x the data's largest w1
    designs = x[list(reversed(x.columns))]
    designs.insert(0, "id", [f"d{i}" for i in range(len(designs))])
    return data, res, designs


def write(tmp_path, frame, name="designs.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def run(res, designs_path, *extra):
    return predict_designs.main(["--results-dir", str(res), "--designs", str(designs_path), *extra])


def test_writes_the_ensembles_predictions_and_intervals(fitted, tmp_path, capsys):
    _, res, designs = fitted
    out = tmp_path / "pred.csv"
    summary = run(res, write(tmp_path, designs), "--out", str(out))
    table = pd.read_csv(out, keep_default_na=False)
    ens = Ensemble.load(res, "5t_opamp")
    x = designs.drop(columns="id")
    mean, std = ens.predict(x, out_of_domain="off")
    assert list(table.columns[:len(designs.columns)]) == list(designs.columns)   # the designs as given, id first
    assert table["id"].tolist() == designs["id"].tolist()
    for c in ens.y_cols:
        np.testing.assert_allclose(table[f"{c}_mean"], mean[c], rtol=1e-6)
        np.testing.assert_allclose(table[f"{c}_std"], std[c], rtol=1e-6)
        for level in (0.68, 0.95):
            lo, hi = ens.predict_interval(x, level, out_of_domain="off")
            tag = f"{round(100 * level)}"
            np.testing.assert_allclose(table[f"{c}_lo{tag}"], lo[c], rtol=1e-6)
            np.testing.assert_allclose(table[f"{c}_hi{tag}"], hi[c], rtol=1e-6)
            assert (table[f"{c}_lo{tag}"] <= table[f"{c}_mean"]).all() and (table[f"{c}_mean"] <= table[f"{c}_hi{tag}"]).all()
    assert table["out_of_domain"].iloc[:-1].eq("").all() and "w1=5000" in table["out_of_domain"].iloc[-1]
    assert summary["outside"] == 1
    shown = capsys.readouterr().out
    assert "1 of 12 designs lie outside the training data" in shown and "dry-run" in shown
    assert "on target_test" in shown and str(out) in shown


def test_levels_name_their_columns(fitted, tmp_path):
    _, res, designs = fitted
    out = tmp_path / "pred.csv"
    run(res, write(tmp_path, designs), "--out", str(out), "--levels", "0.975,0.5,0.5,0.50000001")
    cols = pd.read_csv(out, nrows=1).columns
    assert {"cmrr_lo97.5", "cmrr_hi97.5", "cmrr_lo50", "cmrr_hi50"} <= set(cols)
    assert "cmrr_lo95" not in cols and list(cols).count("cmrr_lo50") == 1


def test_flags_without_a_warning_when_off(fitted, tmp_path, capsys):
    _, res, designs = fitted
    out = tmp_path / "pred.csv"
    run(res, write(tmp_path, designs), "--out", str(out), "--out-of-domain", "off")
    assert "outside the training data" not in capsys.readouterr().out
    assert "w1=5000" in pd.read_csv(out, keep_default_na=False)["out_of_domain"].iloc[-1]


def test_an_earlier_prediction_fed_back_is_replaced_whole(fitted, tmp_path, capsys):
    _, res, designs = fitted
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    run(res, write(tmp_path, designs), "--out", str(first))
    run(res, first, "--out", str(second), "--levels", "0.9")
    cols = list(pd.read_csv(second, nrows=1).columns)
    assert cols[:len(designs.columns)] == list(designs.columns)
    assert "cmrr_lo90" in cols and "cmrr_lo95" not in cols and cols.count("cmrr_mean") == 1
    assert "an earlier prediction's: replaced" in capsys.readouterr().out


def test_a_mean_beyond_the_data_is_clipped_marked_and_never_negative(fitted):
    _, res, _ = fitted
    ens = Ensemble.load(res, "5t_opamp")
    far = np.full((2, len(ens.y_cols)), -50.0)          # model space, far below every metric's data
    far[1] = 0.0
    assert ens.clipped(far, pd.RangeIndex(2)).tolist() == [",".join(ens.y_cols), ""]
    mean, _ = ens._physical(far, np.ones_like(far), pd.RangeIndex(2))
    never_negative = ens.preprocessing.log_y_never_negative()
    assert never_negative.any() and (mean.to_numpy()[:, never_negative] >= 0).all()


def test_out_may_be_a_folder(fitted, tmp_path):
    _, res, designs = fitted
    path = write(tmp_path, designs, "mine.csv")
    summary = run(res, path, "--out", f"{tmp_path / 'new'}/")
    assert summary["out"] == str(tmp_path / "new" / "5t_opamp_predicted_mine.csv")
    assert (tmp_path / "new" / "5t_opamp_predicted_mine.csv").is_file()


def test_predict_with_intervals_is_predict_and_predict_interval(fitted):
    _, res, designs = fitted
    ens = Ensemble.load(res, "5t_opamp")
    x = designs.drop(columns="id").iloc[:-1]
    mean, std, bounds = ens.predict_with_intervals(x, (0.9,))
    m2, s2 = ens.predict(x)
    lo, hi = ens.predict_interval(x, 0.9)
    pd.testing.assert_frame_equal(mean, m2)
    pd.testing.assert_frame_equal(std, s2)
    pd.testing.assert_frame_equal(bounds[0.9][0], lo)
    pd.testing.assert_frame_equal(bounds[0.9][1], hi)


def test_an_existing_output_is_kept_without_overwrite(fitted, tmp_path):
    _, res, designs = fitted
    out = tmp_path / "pred.csv"
    out.write_text("mine\n")
    path = write(tmp_path, designs)
    with pytest.raises(ToolkitError, match="exists.*--overwrite"):
        run(res, path, "--out", str(out))
    assert out.read_text() == "mine\n"
    run(res, path, "--out", str(out), "--overwrite")
    assert "cmrr_mean" in out.read_text()


def test_default_output_in_the_results_folder(fitted, tmp_path):
    _, res, designs = fitted
    summary = run(res, write(tmp_path, designs, "my designs.csv"))
    assert summary["out"] == str(res / "5t_opamp_predicted_my designs.csv")


def test_a_column_the_prediction_writes_is_replaced(fitted, tmp_path, capsys):
    _, res, designs = fitted
    out = tmp_path / "pred.csv"
    run(res, write(tmp_path, designs.assign(cmrr_mean="old")), "--out", str(out))
    table = pd.read_csv(out)
    assert list(table.columns).count("cmrr_mean") == 1 and table["cmrr_mean"].dtype == float
    assert "1 column(s) of the designs file (cmrr_mean) are an earlier prediction's" in capsys.readouterr().out


def _edit(designs, row, col, value):
    frame = designs.astype(str)
    frame.loc[row, col] = value
    return frame


@pytest.mark.parametrize("make, extra, expected", [
    (lambda d: d.drop(columns=["w2", "l3"]), [], r"lacks design variable\(s\) \['w2', 'l3'\]"),
    (lambda d: _edit(d, 3, "w2", ""), [], r"'w2' is '' on line 5 \(data row 4"),
    (lambda d: _edit(d, 2, "l1", "1.5um"), [], r"'l1' is '1.5um' on line 4"),
    (lambda d: _edit(d, 1, "ibias", "inf"), [], r"'ibias' is 'inf'"),
    (lambda d: _edit(d, 5, "w3", "0"), [], r"'w3' is 0 on line 7 \(data row 6\).*log space, so it must be > 0"),
    (lambda d: d, ["--levels", "0.9,95"], r"--levels: '95' is not a coverage in \(0, 1\)"),
    (lambda d: d, ["--levels", "0.9,"], r"--levels: '' is not a coverage"),
    (lambda d: d, ["--levels", "0.999"], r"--levels: 0.999 lies outside 0.1 .. 0.99, the levels .* calibrated for"),
    (lambda d: d, ["--out-of-domain", "refuse"], r"1 of 12 designs lie outside.*data row 12: w1=5000"),
])
def test_bad_input_is_one_line_and_writes_nothing(fitted, tmp_path, make, extra, expected):
    _, res, designs = fitted
    out = tmp_path / "pred.csv"
    with pytest.raises(ToolkitError, match=expected):
        run(res, write(tmp_path, make(designs)), "--out", str(out), *extra)
    assert not out.exists()


def test_missing_inputs_are_named(fitted, tmp_path):
    _, res, designs = fitted
    path = write(tmp_path, designs)
    with pytest.raises(ToolkitError, match="nope.csv not found"):
        run(res, tmp_path / "nope.csv", "--out", str(tmp_path / "p.csv"))
    with pytest.raises(ToolkitError, match="No ensemble for '5t_opamp'.*python -m pipeline"):
        run(tmp_path / "empty", path, "--out", str(tmp_path / "p.csv"))
    with pytest.raises(ToolkitError, match="is the --designs file itself"):
        run(res, path, "--out", str(path))
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(ToolkitError, match="is a link, not a regular file"):
        run(res, path, "--out", str(link), "--overwrite")
    assert not (tmp_path / "elsewhere.csv").exists()
    with pytest.raises(ToolkitError, match=r"No ensemble for 'two_stage_opamp' .* holds one for 5t_opamp. Fix: "
                                           r"--opamp 5t_opamp"):
        predict_designs.main(["--opamp", "two_stage_opamp", "--results-dir", str(res), "--designs", str(path),
                              "--out", str(tmp_path / "p.csv")])


def test_command_line_exit_status_and_one_line(tmp_path):
    designs = tmp_path / "d.csv"
    designs.write_text("w1\n1\n")
    done = subprocess.run([sys.executable, "-m", "inference.predict_designs", "--results-dir", str(tmp_path / "none"),
                           "--designs", str(designs)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: No ensemble")


def test_truth_is_scored_on_the_designs_that_simulated(fitted, tmp_path, capsys):
    data, res, designs = fitted
    truth = pd.read_csv(data / "5t_opamp" / "target" / "targets.csv").head(len(designs))
    truth["status"] = "ok"
    truth.loc[2, "status"] = "no_ugf"                      # a failed simulation: left out of the scores
    truth_path = tmp_path / "truth.csv"
    truth.to_csv(truth_path, index=False)
    out = tmp_path / "pred.csv"
    summary = run(res, write(tmp_path, designs), "--out", str(out), "--truth", str(truth_path))
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    cols = list(truth.columns[:-1])
    assert np.isnan(table.loc[2, "cmrr_true"]) and table.loc[3, "cmrr_true"] == pytest.approx(truth.loc[3, "cmrr"])
    ok = truth["status"] == "ok"
    y, p = truth.loc[ok, cols].to_numpy(float), table.loc[ok, [f"{c}_mean" for c in cols]].to_numpy(float)
    expected = regression_report(y, p, cols, floor=half_min_positive(y))
    scores = summary["scores"]
    assert scores["n"] == 11 and scores["left_out"] == 1
    for c in cols:
        assert scores["metrics"][c]["r2"] == pytest.approx(expected[c]["r2"])
        inside = ((y[:, cols.index(c)] >= table.loc[ok, f"{c}_lo95"]) & (y[:, cols.index(c)] <= table.loc[ok, f"{c}_hi95"]))
        assert scores["covered"][0.95][c] == pytest.approx(inside.mean())
    shown = capsys.readouterr().out
    assert "against --truth, on the 11 designs with every metric known (1 left out" in shown
    assert "R² weighs the errors against the spread of the true values over these 11 designs" in shown
    again = tmp_path / "again.csv"                         # the output fed back with its truth: replaced, not doubled
    summary = run(res, out, "--out", str(again), "--truth", str(truth_path))
    cols_again = list(pd.read_csv(again, nrows=1).columns)
    assert cols_again.count("cmrr_true") == 1 and summary["scores"]["n"] == 11
    with pytest.raises(ToolkitError, match="is the --truth file itself"):
        run(res, out, "--out", str(truth_path), "--truth", str(truth_path), "--overwrite")
    for flag in ("--truth", "--out"):
        with pytest.raises(ToolkitError, match=f"{flag} is empty"):
            run(res, out, flag, "")


@pytest.mark.parametrize("edit, msg", [
    (lambda t: t.head(5), r"has 5 rows but the designs file 12"),
    (lambda t: t.drop(columns="ugf"), r"lacks metric\(s\) \['ugf'\]"),
    (lambda t: t.astype(str).assign(ugf="fast"), r"column 'ugf' has a non-numeric value 'fast' on line 2"),
])
def test_bad_truth_is_one_line(fitted, tmp_path, edit, msg):
    data, res, designs = fitted
    truth = pd.read_csv(data / "5t_opamp" / "target" / "targets.csv").head(len(designs))
    path = tmp_path / "truth.csv"
    edit(truth).to_csv(path, index=False)
    out = tmp_path / "pred.csv"
    with pytest.raises(ToolkitError, match=msg):
        run(res, write(tmp_path, designs), "--out", str(out), "--truth", str(path))
    assert not out.exists()


def test_name_list_keeps_a_message_to_one_line():
    from core.errors import name_list
    assert name_list(["a", "b"]) == "a, b"
    assert name_list([f"c{i}" for i in range(8)], limit=3) == "c0, c1, c2, ... (+5 more)"
