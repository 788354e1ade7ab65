"""TransferSurrogate: fit/predict with DataFrames over the same stages (issue 19)."""
import numpy as np
import pandas as pd
import pytest

from core.errors import ToolkitError
from surrogate import TransferSurrogate
from tests.synthetic import make_domain

TINY = dict(HIDDEN_DIM=8, NUM_LAYERS=2, EPOCHS=3, dry_run=True)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    xs, ys = make_domain(200, seed=0)
    xt, yt = make_domain(100, seed=1, shift=0.3)
    model = TransferSurrogate(results_dir=tmp_path_factory.mktemp("sur"), seed=0, **TINY)
    return model.fit(xs, ys, xt[list(reversed(xt.columns))], yt), (xs, ys, xt, yt)


def test_fit_runs_the_stages_into_the_results_folder_and_predicts_by_column_name(fitted):
    model, (_, _, xt, yt) = fitted
    res = model.results_dir
    for name in ("surrogate_baseline_model.pth", "surrogate_align_hetero_lambda0.050.pth",
                 "surrogate_dualhead_finetuned.pth", "surrogate_ensemble_metrics.json"):
        assert (res / name).is_file()
    assert (res / "data" / "surrogate" / "target" / "features.csv").is_file()
    assert model.x_cols_ == list(xt.columns) and model.y_cols_ == list(yt.columns)
    designs = xt.head(5)[list(reversed(xt.columns))]                    # any column order
    mean, std = model.predict(designs, return_std=True)
    assert list(mean.columns) == list(yt.columns) and list(mean.index) == list(designs.index)
    assert (std.to_numpy() > 0).all() and np.isfinite(mean.to_numpy()).all()
    assert model.predict(designs).equals(mean)                          # same numbers without the std
    # the same object the Python API gives
    ens_mean, _ = model.ensemble_.predict(xt.head(5))
    pd.testing.assert_frame_equal(ens_mean, mean)
    lo, hi = model.predict_interval(designs, 0.9)                         # the calibrated interval, as the ensemble's
    want_lo, want_hi = model.ensemble_.predict_interval(designs, 0.9)
    pd.testing.assert_frame_equal(lo, want_lo)
    pd.testing.assert_frame_equal(hi, want_hi)
    assert (lo.to_numpy() <= mean.to_numpy() + 1e-9).all() and (mean.to_numpy() <= hi.to_numpy() + 1e-9).all()


def test_refit_on_the_same_data_skips_up_to_date_stages(fitted):
    model, (xs, ys, xt, yt) = fitted
    model.fit(xs, ys, xt, yt)
    assert all(reason is None for _, reason in model.summary_["plan"])


def test_bad_input_is_refused_before_any_work(tmp_path):
    xs, ys = make_domain(20, seed=0)
    model = TransferSurrogate(results_dir=tmp_path, **TINY)
    with pytest.raises(ToolkitError, match="not fitted"):
        model.predict(xs)
    with pytest.raises(ToolkitError, match="DataFrame"):
        model.fit(xs.to_numpy(), ys, xs, ys)
    with pytest.raises(ToolkitError, match="same columns"):
        model.fit(xs, ys, xs.drop(columns=["w1"]), ys)
    with pytest.raises(ToolkitError, match="row-aligned"):
        model.fit(xs, ys, xs, ys.head(5))
    with pytest.raises(ToolkitError, match="Did you mean EPOCHS"):
        TransferSurrogate(results_dir=tmp_path, EPOCH=3, dry_run=True).fit(xs, ys, xs, ys)
    with pytest.raises(ToolkitError, match="not numeric"):
        model.fit(xs.assign(w1="5u"), ys, xs, ys)
    with pytest.raises(ToolkitError, match="name must be letters"):          # a folder name, not a path out
        TransferSurrogate(results_dir=tmp_path / "r", name="../../esc", **TINY).fit(xs, ys, xs, ys)
    with pytest.raises(ToolkitError, match=r"--seed: SEED expects an int like 10 \(default 42\), got 'abc'"):
        TransferSurrogate(results_dir=tmp_path / "s", seed="abc", **TINY).fit(xs, ys, xs, ys)
    assert not (tmp_path / "s").exists()                                        # refused before the data is written
    assert not (tmp_path / "surrogate_baseline_model.pth").exists() and not (tmp_path / "esc").exists()
    # rows are paired by position: a shuffled y (pandas keeps its index) is refused, not trained on wrong pairs
    with pytest.raises(ToolkitError, match=r"X_target and y_target have different row indexes.*\.loc\[X_target"):
        TransferSurrogate(results_dir=tmp_path / "i", **TINY).fit(xs, ys, xs, ys.sample(frac=1, random_state=0))
    signs = pd.DataFrame({"cmrr": np.ones(len(ys))})
    signs.loc[4, "cmrr"] = 0
    with pytest.raises(ToolkitError, match=r"signs_target column 'cmrr' has 0 at index 4: a sign is \+1 or -1"):
        TransferSurrogate(results_dir=tmp_path / "g", **TINY).fit(xs, ys, xs, ys, signs_target=signs)
    assert not (tmp_path / "i").exists() and not (tmp_path / "g").exists()


def test_a_true_false_feature_is_the_number_0_or_1():
    from surrogate import _frame
    xs, _ = make_domain(5, seed=0)
    got = _frame(xs.assign(flag=[True, False, True, True, False]), "X_source")
    assert got["flag"].tolist() == [1, 0, 1, 1, 0] and pd.api.types.is_integer_dtype(got["flag"])


def test_the_pipeline_runs_in_this_process_unless_told():
    assert TransferSurrogate(results_dir="r").settings["PIPELINE_JOBS"] == 1
    assert TransferSurrogate(results_dir="r", PIPELINE_JOBS=2).settings["PIPELINE_JOBS"] == 2


def test_a_fitted_surrogate_loads_in_a_new_session(fitted):
    model, (_, _, xt, _) = fitted
    again = TransferSurrogate.load(model.results_dir)
    pd.testing.assert_frame_equal(again.predict(xt.head(4)), model.predict(xt.head(4)))
    with pytest.raises(ToolkitError, match="No ensemble for 'other'"):
        TransferSurrogate.load(model.results_dir, name="other")


def test_signs_of_a_ratio_metric_go_into_the_data_layout(tmp_path):
    xs, ys = make_domain(200, seed=0)
    xt, yt = make_domain(100, seed=1, shift=0.3)
    sign = lambda n, seed: pd.DataFrame({"cmrr": np.random.default_rng(seed).choice([-1.0, 1.0], n)})  # noqa: E731
    model = TransferSurrogate(results_dir=tmp_path, seed=0, **TINY)
    with pytest.raises(ToolkitError, match="one row per design"):
        model.fit(xs, ys, xt, yt, signs_target=sign(5, 0))
    model.fit(xs, ys, xt, yt, signs_source=sign(200, 0), signs_target=sign(100, 1))
    written = pd.read_csv(tmp_path / "data" / "surrogate" / "target" / "metric_signs.csv")
    pd.testing.assert_frame_equal(written, sign(100, 1))
    from models.model_utils import read_checkpoint_meta
    tried = read_checkpoint_meta(tmp_path / "surrogate_target_only_hetero.pth")["extra"]["signed_ratio_val_nll"]
    assert set(tried) == {"signed", "log1p"}                      # SIGNED_RATIO='auto' saw the signs and tried both
    model.fit(xs, ys, xt, yt)                                      # refitted without: the old signs are gone
    assert not (tmp_path / "data" / "surrogate" / "target" / "metric_signs.csv").exists()


def test_a_fit_into_a_busy_folder_writes_no_data(tmp_path):
    """Another run holds the folder's lock: the refused fit must not have replaced that run's data first."""
    from filelock import FileLock

    from core.outputs import LOCK_NAME
    xs, ys = make_domain(20, seed=0)
    lock = FileLock(str(tmp_path / LOCK_NAME))
    lock.acquire()                                   # as another process's run would hold it
    try:
        with pytest.raises(ToolkitError, match="Another run is writing"):
            TransferSurrogate(results_dir=tmp_path, **TINY).fit(xs, ys, xs, ys)
    finally:
        lock.release()
    assert not (tmp_path / "data").exists()
