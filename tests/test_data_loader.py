"""data_loader: split protocol, failed-row rule, preprocessing round trips, scaler reuse, bad inputs.

All data is written by ``tests.synthetic`` into tmp folders (300 source / 120 target rows).
"""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from core.errors import ToolkitError
from data_loader import DEFAULT_RULE, FailureRule, failure_reasons, get_data_and_scalers
from data_loader.preprocessing import Preprocessing
from data_loader.split import split_source_rows, split_target_rows
from tests.synthetic import X_COLS, Y_COLS, write_dataset

CIRCUIT = "5t_opamp"
N_TGT = 120


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), CIRCUIT, n_target=N_TGT)


@pytest.fixture(scope="module")
def d42(data_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_data_and_scalers(CIRCUIT, data_root, val_split=0.2, test_split=0.2, seed=42)


@pytest.fixture
def root(tmp_path):
    """A fresh, writable copy of the dataset for tests that damage it."""
    return write_dataset(tmp_path / "data", CIRCUIT, n_target=N_TGT)


def _load(root, **kw):
    kw = {"val_split": 0.2, "test_split": 0.2, "seed": 42, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_data_and_scalers(CIRCUIT, root, **kw)


def _files(root, domain):
    folder = root / CIRCUIT / domain
    return folder / "features.csv", folder / "targets.csv"


def _failed_target_rows(root) -> set:
    """Failed target rows computed here from the CSV, independently of data_loader.failures."""
    y = pd.read_csv(_files(root, "target")[1])
    bad = y.isna().any(axis=1) | (y.ugf >= 1e10) | (y.dc_gain < 1)
    for col in ("slewrate_pos", "dc_gain", "ugf", "cmrr"):
        bad |= y[col] <= 0
    return set(np.flatnonzero(bad.to_numpy()).tolist())


def _expected_split(n, seed, val=0.2, test=0.2):
    rest, test_idx = train_test_split(np.arange(n), test_size=test, random_state=seed)
    train_idx, val_idx = train_test_split(rest, test_size=val, random_state=seed)
    return {"train": train_idx, "val": val_idx, "test": test_idx}


# ---------------------------------------------------------------- split protocol
@pytest.mark.parametrize("seed", [42, 7])
def test_split_matches_sklearn_protocol_minus_failed_rows(data_root, seed):
    d = _load(data_root, seed=seed)
    failed = _failed_target_rows(data_root)
    assert len(failed) == 6  # control: the synthetic data really carries failed rows
    exp = _expected_split(N_TGT, seed)
    for name in ("train", "val", "test"):
        want = [i for i in exp[name] if i not in failed]
        assert d["split"][f"target_{name}_idx"] == want, name
        assert len(d[f"target_{name}"][0]) == len(want)
    # the raw frames are exactly those target rows, in that order
    y_tgt = pd.read_csv(_files(data_root, "target")[1])
    np.testing.assert_allclose(d["raw"]["target_test"][1].to_numpy(),
                               y_tgt.iloc[d["split"]["target_test_idx"]].to_numpy())


def test_same_seed_same_rows_other_seed_other_rows(data_root, d42):
    again = _load(data_root, seed=42)
    other = _load(data_root, seed=43)
    for name in ("train", "val", "test"):
        key = f"target_{name}_idx"
        assert again["split"][key] == d42["split"][key]
        np.testing.assert_array_equal(again[f"target_{name}"][0], d42[f"target_{name}"][0])
    assert set(other["split"]["target_test_idx"]) != set(d42["split"]["target_test_idx"])
    assert set(other["split"]["target_val_idx"]) != set(d42["split"]["target_val_idx"])


def test_splits_are_disjoint_and_never_hold_failed_rows(data_root, d42):
    failed = _failed_target_rows(data_root)
    parts = [set(d42["split"][f"target_{k}_idx"]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(N_TGT)) - failed
    for name in ("source", "target_train", "target_val", "target_test"):
        x, y = d42[name]
        assert np.isfinite(x).all() and np.isfinite(y).all()
        y_raw = d42["raw"][name][1]
        assert (y_raw.dc_gain >= 1).all() and (y_raw.ugf < 1e10).all()
    assert sum(d42["dropped"]["source"].values()) == 6
    assert sum(sum(d42["dropped"][f"target_{k}"].values()) for k in ("train", "val", "test")) == 6


def test_test_split_zero_has_no_test_key(data_root):
    d = _load(data_root, test_split=0.0)
    assert "target_test" not in d and "target_test" not in d["raw"]
    # all non-failed target rows are used for train + val, val taken from the whole file
    _, val_idx = train_test_split(np.arange(N_TGT), test_size=0.2, random_state=42)
    failed = _failed_target_rows(data_root)
    assert d["split"]["target_val_idx"] == [i for i in val_idx if i not in failed]
    assert len(d["target_train"][0]) + len(d["target_val"][0]) == N_TGT - len(failed)


def test_a_split_column_is_used_as_given_and_overrides_the_fractions(root):
    """A targets file's split column (train | val | test, any case and spaces) decides each row's split; the
    fractions and the seed then do not; failed rows are still dropped; a bad value is one line naming the row."""
    targets = _files(root, "target")[1]
    y = pd.read_csv(targets)
    labels = np.array(["train", "val", "test"])[np.arange(N_TGT) % 3]
    y.insert(2, "split", [f" {v.upper()} " if i % 7 == 0 else v for i, v in enumerate(labels)])
    y.to_csv(targets, index=False)
    failed = _failed_target_rows(root)
    with pytest.warns(UserWarning, match="split column .* VAL_SPLIT and TEST_SPLIT are not used"):
        d = get_data_and_scalers(CIRCUIT, root, val_split=0.5, test_split=0.1, seed=3)
    for name in ("train", "val", "test"):
        want = [i for i in np.flatnonzero(labels == name) if i not in failed]
        assert d["split"][f"target_{name}_idx"] == want and len(d[f"target_{name}"][0]) == len(want)
    assert d["split"]["protocol"] == "the split column of targets.csv"
    assert list(d["raw"]["target_train"][1].columns) == Y_COLS   # the column is not a metric
    assert _load(root, seed=9)["split"]["target_val_idx"] == d["split"]["target_val_idx"]
    y["split"] = np.where(np.arange(N_TGT) == 4, "holdout", labels)
    y.to_csv(targets, index=False)
    with pytest.raises(ToolkitError, match=r"'split' must be one of train, val, test .* 'holdout' in data row 5"):
        _load(root)


def test_a_split_column_without_test_rows_gives_no_target_test(root):
    targets = _files(root, "target")[1]
    y = pd.read_csv(targets)
    y["split"] = np.where(np.arange(N_TGT) % 5 == 0, "val", "train")
    y.to_csv(targets, index=False)
    d = _load(root, test_split=0.2)
    assert "target_test" not in d and len(d["target_val"][0]) + len(d["target_train"][0]) == N_TGT - len(
        _failed_target_rows(root))
    y["split"] = "train"
    y.to_csv(targets, index=False)
    with pytest.raises(ToolkitError, match="Mark more rows train/val in the split column"):
        _load(root)


def test_dropping_happens_after_splitting(data_root, d42):
    # A stricter rule (phase_margin must be >= its target median) drops many more rows ...
    pm = pd.read_csv(_files(data_root, "target")[1]).phase_margin
    bound = float(pm.median())
    strict = FailureRule(positive=DEFAULT_RULE.positive, minimum={**DEFAULT_RULE.minimum, "phase_margin": bound},
                         maximum=DEFAULT_RULE.maximum)
    d = _load(data_root, failure_rule=strict)
    newly_failed = set(np.flatnonzero((pm < bound).to_numpy()).tolist())
    for name in ("train", "val", "test"):
        loose = d42["split"][f"target_{name}_idx"]
        tight = d["split"][f"target_{name}_idx"]
        # ... but the rows that survive both rules land in the same split, in the same order.
        assert tight == [i for i in loose if i not in newly_failed]
    # control: the stricter rule really removed test rows
    assert len(d["split"]["target_test_idx"]) < len(d42["split"]["target_test_idx"])


# ---------------------------------------------------------------- failed-row rule
def test_failure_reasons_each_rule_and_first_reason_wins():
    x = pd.DataFrame({"a": [1.0, np.nan, 1, 1, 1, 1, 1, 1]})
    y = pd.DataFrame({"dc_gain": [10, 10, 10, 0.5, 10, 10, 10, np.nan],
                      "ugf": [1e6, 1e6, 1e10, 1e6, 1e6, 1e6, 1e6, 1e6],
                      "cmrr": [5.0, 5, 5, 5, -1, 5, 0, 5]})
    status = pd.Series(["ok", "ok", "ok", "ok", "ok", " FAILED", "ok", "timeout"])
    got = failure_reasons(x, y, DEFAULT_RULE, status)
    assert got.tolist() == ["", "nan/inf in a", "ugf >= 1e+10 (sentinel)", "dc_gain < 1",
                            "cmrr <= 0", "status=failed", "cmrr <= 0", "status=timeout"]
    # control: without the status column the last row fails for its NaN instead
    assert failure_reasons(x, y, DEFAULT_RULE)[-1] == "nan/inf in dc_gain"    # the column that failed
    assert failure_reasons(x, y, FailureRule())[2:5].tolist() == ["", "", ""]


def test_every_stage_says_which_rows_it_dropped_and_warns_once(root, capsys):
    """A stage's row line names the failed simulations it dropped, per domain and reason (only the data CLI
    did); a loader warning is printed once per process, not once per stage of a pipeline."""
    import config
    from core.settings import resolve
    from data_loader import load_run_data, new_run
    settings = resolve(config, {"DATA_DIR": str(root), "OPAMP_TYPE": CIRCUIT, "RESULTS_DIR": str(root / "res"),
                                "FAIL_MIN": {"dc_gain": 1.0, "noise": 1.0}})
    d = load_run_data(settings, "baseline")
    load_run_data(settings, "target_only")
    out = capsys.readouterr().out
    n_src = sum(d["dropped"]["source"].values())
    n_tgt = sum(n for k, r in d["dropped"].items() if k != "source" for n in r.values())
    assert n_src > 0 and n_tgt > 0
    line = next(ln for ln in out.splitlines() if ln.startswith("[baseline] rows:"))
    assert f"failed simulations dropped: source {n_src} (" in line and f"target {n_tgt} (" in line
    assert "dc_gain < 1: " in line
    assert out.count("FAIL_MIN names ['noise']") == 1
    assert out.count("[target_only] rows:") == 1
    new_run()                                                   # the next run (a notebook's second fit) says it again
    load_run_data(settings, "baseline")
    assert capsys.readouterr().out.count("FAIL_MIN names ['noise']") == 1


def test_a_missing_design_value_is_named_as_missing(d42):
    x = d42["raw"]["target_test"][0].iloc[:2].copy()
    x.iloc[1, 0] = np.nan
    flags = d42["preprocessing"].out_of_domain(x)
    assert flags[0] == "" and flags[1] == f"{x.columns[0]} missing (nan)"


def test_a_constant_metric_is_named(root):
    f_y = _files(root, "target")[1]
    y = pd.read_csv(f_y)
    y["phase_margin"] = 60.0
    y.to_csv(f_y, index=False)
    with pytest.warns(UserWarning, match="Metric 'phase_margin' has one value in every target train/val row"):
        get_data_and_scalers(CIRCUIT, root, val_split=0.2, test_split=0.2, seed=42)


def test_rule_description_names_only_the_data_metrics_when_asked():
    rule = FailureRule(positive=("gain", "ugf"), minimum={"gain": 1.0}, maximum={"ugf": 1e10})
    assert "ugf" in rule.describe() and "ugf" not in rule.describe(["gain", "pm"])
    assert "gain <= 0; gain < 1" in rule.describe(["gain", "pm"])


def test_failed_rows_dropped_and_counted_by_reason(root):
    f_x, f_y = _files(root, "source")
    x, y = pd.read_csv(f_x), pd.read_csv(f_y)
    # the synthetic failures: 2 NaN ugf, 2 ugf sentinels, 2 dc_gain < 1; add more of each kind
    before = failure_reasons(x, y, DEFAULT_RULE)
    good = np.flatnonzero(before == "")
    x.loc[good[0], "w1"] = np.nan
    y.loc[good[1], "slewrate_pos"] = 0.0
    y.loc[good[2], "cmrr"] = -3.0
    y.loc[good[3], "ugf"] = 2e10
    y.loc[good[4], "dc_gain"] = 0.9
    y["status"] = "ok"
    y.loc[good[5:8], "status"] = "failed"
    y.loc[good[8], "status"] = "timeout"
    x.to_csv(f_x, index=False)
    y.to_csv(f_y, index=False)

    d = _load(root)
    assert "status" not in d["y_cols"] and d["y_cols"] == Y_COLS
    assert d["dropped"]["source"] == {
        "status=failed": 3, "ugf >= 1e+10 (sentinel)": 3, "dc_gain < 1": 3, "nan/inf in ugf": 2,
        "nan/inf in w1": 1, "slewrate_pos <= 0": 1, "cmrr <= 0": 1, "status=timeout": 1}
    assert d["split"]["n_source"] == len(d["source"][0]) == 300 - 15
    kept_idx = d["raw"]["source"][1].index
    assert not set(good[:9]) & set(kept_idx)


# ---------------------------------------------------------------- preprocessing
def test_scaler_round_trip_in_physical_units(d42):
    pre = d42["preprocessing"]
    for name in ("source", "target_train", "target_test"):
        x_raw, y_raw = d42["raw"][name]
        x_s, y_s = d42[name]
        assert x_s.dtype == np.float32 and y_s.dtype == np.float32
        np.testing.assert_allclose(pre.inverse_y(y_s), y_raw.to_numpy(), rtol=1e-5)
        np.testing.assert_allclose(pre.inverse_x(x_s), x_raw.to_numpy(), rtol=1e-5)
    # control: the scaled values are not the physical ones
    assert not np.allclose(d42["source"][1], d42["raw"]["source"][1].to_numpy(), rtol=0.1)


def test_log_columns(d42):
    # LOG_Y_COLS 'auto' (config and the library default): the strictly positive metrics spanning >= 3x in the source
    # + target-val labels get log1p; w1..w3 span 0.5..50 (100x): auto-logged; l*, ibias span < 10x: not.
    seen = pd.concat([d42["raw"]["source"][1], d42["raw"]["target_val"][1]])
    expect_log = [c for c in d42["y_cols"] if seen[c].min() > 0 and seen[c].max() / seen[c].min() >= 3.0]
    assert d42["log_y_cols"] == expect_log and {"slewrate_pos", "dc_gain", "ugf", "cmrr"} <= set(expect_log)
    assert d42["log_x_cols"] == ["w1", "w2", "w3"]
    assert d42["log_x_cols"] == ["w1", "w2", "w3"]
    pre = d42["preprocessing"]
    y_raw = d42["raw"]["source"][1]
    j = d42["y_cols"].index("ugf")
    expect = (np.log1p(y_raw.ugf.to_numpy()) - pre.y_mean[j]) / pre.y_scale[j]
    np.testing.assert_allclose(d42["source"][1][:, j], expect, rtol=1e-5, atol=1e-5)
    k = d42["x_cols"].index("l1")
    expect = (d42["raw"]["source"][0].l1.to_numpy() - pre.x_mean[k]) / pre.x_scale[k]
    np.testing.assert_allclose(d42["source"][0][:, k], expect, rtol=1e-5, atol=1e-5)


def test_auto_log_skips_a_metric_that_goes_negative_in_the_test_rows(root, d42):
    """A metric positive and spanning 10x in source + target val but negative in some test rows (a delay, an
    offset) is not auto-logged: log1p could not transform those rows, and every run used to stop on them."""
    test_rows = d42["split"]["target_test_idx"]
    for domain in ("source", "target"):
        f_y = _files(root, domain)[1]
        y = pd.read_csv(f_y)
        y["delay"] = np.linspace(1.0, 10.0, len(y))
        if domain == "target":
            y.loc[test_rows[:3], "delay"] = -3.0
        y.to_csv(f_y, index=False)
    d = _load(root)
    assert "delay" not in d["log_y_cols"] and {"ugf", "cmrr"} <= set(d["log_y_cols"])
    np.testing.assert_allclose(d["raw"]["target_test"][1]["delay"].min(), -3.0)
    # control: positive everywhere, the same metric is logged
    y = pd.read_csv(_files(root, "target")[1])
    y.loc[test_rows[:3], "delay"] = 5.0
    y.to_csv(_files(root, "target")[1], index=False)
    assert "delay" in _load(root)["log_y_cols"]


def test_y_scaler_fitted_on_source_only(d42):
    y_src, y_tgt = d42["source"][1], d42["target_train"][1]
    np.testing.assert_allclose(y_src.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y_src.std(axis=0), 1, atol=1e-4)
    # control: the shifted target is not centred by the source scaler
    assert np.abs(y_tgt.mean(axis=0)).max() > 0.2


@pytest.mark.parametrize("fit", ["both", "source"])
def test_x_scaler_fit_pool(data_root, fit):
    d = _load(data_root, x_scaler_fit=fit)
    pre = d["preprocessing"]
    src = pre.x_to_model_space(d["raw"]["source"][0])
    tgt = pre.x_to_model_space(pd.concat([d["raw"]["target_train"][0], d["raw"]["target_val"][0]]))
    both = np.vstack([src, tgt])
    pool = both if fit == "both" else src
    other = src if fit == "both" else both
    np.testing.assert_allclose(pre.x_mean, pool.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(pre.x_scale, pool.std(axis=0), rtol=1e-9)
    assert not np.allclose(pre.x_mean, other.mean(axis=0), rtol=1e-3)  # control: the pool matters
    # test rows never enter the fit
    with_test = np.vstack([pool, pre.x_to_model_space(d["raw"]["target_test"][0])])
    assert not np.allclose(pre.x_mean, with_test.mean(axis=0), rtol=1e-6)


def test_preprocessing_dict_round_trip_is_json(d42):
    pre = d42["preprocessing"]
    blob = json.loads(json.dumps(pre.to_dict()))
    back = Preprocessing.from_dict(blob)
    assert back == pre
    x_raw, y_raw = d42["raw"]["target_val"]
    np.testing.assert_array_equal(back.transform_x(x_raw), pre.transform_x(x_raw))
    np.testing.assert_array_equal(back.transform_y(y_raw), pre.transform_y(y_raw))
    np.testing.assert_array_equal(back.inverse_y(d42["target_val"][1]), pre.inverse_y(d42["target_val"][1]))
    with pytest.raises(ValueError, match="y_clip_hi"):
        Preprocessing.from_dict({k: v for k, v in blob.items() if k != "y_clip_hi"})


def test_dataframe_columns_by_name(d42):
    pre = d42["preprocessing"]
    x_raw, y_raw = d42["raw"]["target_train"]
    np.testing.assert_array_equal(pre.transform_x(x_raw[x_raw.columns[::-1]]), pre.transform_x(x_raw))
    np.testing.assert_array_equal(pre.transform_y(y_raw[y_raw.columns[::-1]]), pre.transform_y(y_raw))
    np.testing.assert_array_equal(pre.transform_x(x_raw.to_numpy()), pre.transform_x(x_raw))
    # control: a reordered plain array is *not* reordered (it has no names), so it differs
    assert not np.allclose(pre.transform_x(x_raw[x_raw.columns[::-1]].to_numpy()), pre.transform_x(x_raw))
    with pytest.raises(ValueError, match="missing \\['ibias'\\]"):
        pre.transform_x(x_raw.drop(columns="ibias"))
    with pytest.raises(ValueError, match="unexpected \\['vdd'\\]"):
        pre.transform_x(x_raw.assign(vdd=1.8))
    with pytest.raises(ValueError, match="missing \\['cmrr'\\]"):
        pre.transform_y(y_raw.rename(columns={"cmrr": "CMRR"}))
    with pytest.raises(ValueError, match="shape"):
        pre.transform_x(x_raw.to_numpy()[:, :3])


def test_inverse_y_clips_wild_predictions(d42):
    pre = d42["preprocessing"]
    wild = np.full((2, len(d42["y_cols"])), 1e6)
    wild[1] = -1e6
    y = pre.inverse_y(wild)
    assert np.isfinite(y).all()
    seen = pd.concat([d42["raw"][k][1] for k in ("source", "target_train", "target_val")]).to_numpy()
    span = seen.max(axis=0) - seen.min(axis=0)
    assert (y[0] <= seen.max(axis=0) * 10).all() and (y[0] > seen.max(axis=0)).all()
    assert (y[1] >= seen.min(axis=0) - span).all()
    # control: without clipping the log1p metrics overflow
    with np.errstate(over="ignore"):
        assert not np.isfinite(pre.inverse_y(wild, clip=False)).all()
    # in-range predictions are untouched by the clip
    np.testing.assert_array_equal(pre.inverse_y(d42["target_val"][1]), pre.inverse_y(d42["target_val"][1], clip=False))


def test_inverse_accepts_single_row(d42):
    pre = d42["preprocessing"]
    x_s, y_s = d42["target_val"][0][0], d42["target_val"][1][0]  # (n_x,), (n_y,)
    np.testing.assert_allclose(pre.inverse_x(x_s), pre.inverse_x(x_s[None, :]))
    np.testing.assert_allclose(pre.inverse_y(y_s), pre.inverse_y(y_s[None, :]))
    # the (N, 1) broadcasting trap: one column for five metrics is an error, not a silent broadcast
    with pytest.raises(ValueError, match="shape"):
        pre.inverse_y(d42["target_val"][1][:, :1])
    with pytest.raises(ValueError, match="shape"):
        pre.inverse_x(d42["target_val"][0][:, :1])
    with pytest.raises(ValueError, match="shape"):
        pre.y_std_to_physical(d42["target_val"][1], d42["target_val"][1][:, :1])


# ---------------------------------------------------------------- constant feature
@pytest.mark.parametrize("fit", ["both", "source"])
def test_feature_constant_in_source_keeps_target_spread(root, fit):
    f_x = _files(root, "source")[0]
    x = pd.read_csv(f_x)
    x["l1"] = 1.0
    x.to_csv(f_x, index=False)
    with pytest.warns(UserWarning, match="'l1' is constant in the source"):
        d = get_data_and_scalers(CIRCUIT, root, seed=42, x_scaler_fit=fit)
    k = d["x_cols"].index("l1")
    assert np.all(d["source"][0][:, k] == d["source"][0][0, k])
    assert d["target_train"][0][:, k].std() > 0.1
    assert np.isfinite(d["target_train"][0]).all()
    np.testing.assert_allclose(d["preprocessing"].inverse_x(d["target_train"][0])[:, k],
                               d["raw"]["target_train"][0].l1, rtol=1e-5)


def test_no_constant_feature_warning_on_clean_data(data_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_data_and_scalers(CIRCUIT, data_root, seed=42)
    assert not [w for w in caught if "constant" in str(w.message)]


# ---------------------------------------------------------------- scaler reuse
def test_scaler_file_reused_then_refitted(root, tmp_path, capsys):
    results = tmp_path / "results"
    first = _load(root, results_dir=results, verbose=True)
    assert (results / f"{CIRCUIT}_scalers.joblib").is_file()
    assert "reusing" not in capsys.readouterr().out
    second = _load(root, results_dir=results, verbose=True)
    assert "reusing" in capsys.readouterr().out
    assert second["preprocessing"] == first["preprocessing"]
    # modify the source data: the stored scalers no longer match and are refitted, with a message
    f_y = _files(root, "source")[1]
    y = pd.read_csv(f_y)
    y["phase_margin"] *= 1.5
    y.to_csv(f_y, index=False)
    third = _load(root, results_dir=results, verbose=True)
    out = capsys.readouterr().out
    assert "refitting" in out and "reusing" not in out
    assert third["preprocessing"].y_mean != first["preprocessing"].y_mean
    # a changed setting also refits
    _load(root, results_dir=results, seed=1, verbose=True)
    assert "refitting" in capsys.readouterr().out


class _RunsCode:
    """A pickle that runs code when loaded: what a planted scalers file in a shared folder could do."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_the_scalers_file_is_never_unpickled(root, tmp_path):
    import joblib
    results = tmp_path / "results"
    _load(root, results_dir=results)
    assert (results / f"{CIRCUIT}_scalers.json").is_file()               # what is read back: plain JSON
    marker = tmp_path / "ran"
    joblib.dump(_RunsCode(marker), results / f"{CIRCUIT}_scalers.joblib")
    again = _load(root, results_dir=results)
    assert not marker.exists() and again["preprocessing"] is not None


# ---------------------------------------------------------------- bad inputs
def _missing_dir(root):
    shutil.rmtree(root)


def _missing_target(root):
    shutil.rmtree(root / CIRCUIT / "target")


def _no_features(root):
    f_x = _files(root, "target")[0]
    f_x.rename(f_x.with_name("design.csv"))


def _two_features(root):
    f_x = _files(root, "target")[0]
    shutil.copy(f_x, f_x.with_name("old_features.csv"))


def _row_count(root):
    f_y = _files(root, "target")[1]
    pd.read_csv(f_y).iloc[:-1].to_csv(f_y, index=False)


def _renamed_column(root):
    f_x = _files(root, "target")[0]
    pd.read_csv(f_x).rename(columns={"l2": "l_2"}).to_csv(f_x, index=False)


def _text_cell(root):
    f_y = _files(root, "source")[1]
    y = pd.read_csv(f_y).astype(object)
    y.loc[4, "cmrr"] = "12dB"
    y.to_csv(f_y, index=False)


def _empty_file(root):
    _files(root, "source")[1].write_text("")


def _header_only(root):
    f_y = _files(root, "source")[1]
    f_y.write_text(",".join(Y_COLS) + "\n")


def _log_y_below_minus_one(root):
    f_y = _files(root, "source")[1]
    y = pd.read_csv(f_y)
    y.loc[10, "phase_margin"] = -5.0
    y.to_csv(f_y, index=False)


def _noop(root):
    pass


def _every_target_row_fails(root):
    f_y = _files(root, "target")[1]
    pd.read_csv(f_y).assign(dc_gain=0.5).to_csv(f_y, index=False)


BAD_INPUTS = [
    # (damage, circuit, kwargs, phrases the message must contain)
    (_missing_dir, CIRCUIT, {}, ["does not exist", "--data-dir"]),
    (_noop, "3t_opamp", {}, ["Unknown circuit '3t_opamp'", "Circuits found", CIRCUIT]),
    (_missing_target, CIRCUIT, {}, ["Missing folder", "target"]),
    (_no_features, CIRCUIT, {}, ["exactly one *features*.csv", "found none"]),
    (_two_features, CIRCUIT, {}, ["exactly one *features*.csv", "features.csv, old_features.csv"]),
    (_row_count, CIRCUIT, {}, ["has 120 rows but targets.csv has 119"]),
    (_renamed_column, CIRCUIT, {}, ["different feature columns", "'l2'", "'l_2'"]),
    (_text_cell, CIRCUIT, {}, ["column 'cmrr'", "'12dB'", "line 6"]),
    (_empty_file, CIRCUIT, {}, ["is empty"]),
    (_header_only, CIRCUIT, {}, ["no data rows"]),
    (_noop, CIRCUIT, {"val_split": 0.0}, ["VAL_SPLIT must be in (0, 1)"]),
    (_noop, CIRCUIT, {"val_split": 1.5}, ["VAL_SPLIT must be in (0, 1)", "1.5"]),
    (_noop, CIRCUIT, {"test_split": 1.0}, ["TEST_SPLIT must be in [0, 1)"]),
    (_noop, CIRCUIT, {"test_split": -0.1}, ["TEST_SPLIT must be in [0, 1)"]),
    (_noop, CIRCUIT, {"val_split": 0.95}, ["The split leaves", "target training"]),
    (_noop, CIRCUIT, {"x_scaler_fit": "target"}, ["X_SCALER_FIT"]),
    (_noop, CIRCUIT, {"log_x_cols": "all"}, ["LOG_X_COLS"]),
    (_log_y_below_minus_one, CIRCUIT, {"log_y_cols": ("ugf", "cmrr", "phase_margin")},
     ["'phase_margin'", "LOG_Y_COLS", "> -1"]),
    (_every_target_row_fails, CIRCUIT, {}, ["120 of the 120 target rows failed", "dc_gain < 1", "FAIL_*"]),
]


@pytest.mark.parametrize("damage,circuit,kwargs,phrases", BAD_INPUTS, ids=[b[0].__name__.strip("_") + "-" +
                         "-".join(f"{k}={v}" for k, v in b[2].items()) for b in BAD_INPUTS])
def test_bad_input_is_a_clear_error(root, damage, circuit, kwargs, phrases):
    damage(root)
    kw = {"val_split": 0.2, "test_split": 0.2, "seed": 42, **kwargs}
    with pytest.raises(ToolkitError) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_data_and_scalers(circuit, root, **kw)
    assert isinstance(info.value, ValueError)
    for phrase in phrases:
        assert phrase in str(info.value), (phrase, str(info.value))


def _reorder_target_columns(root):
    """Same columns, other order in the target: legal (matched by name)."""
    f_x = _files(root, "target")[0]
    x = pd.read_csv(f_x)
    x[x.columns[::-1]].to_csv(f_x, index=False)


def test_bad_input_controls_load(root, d42):
    # controls for the table: phase_margin in LOG_Y_COLS loads when its values are > -1 ...
    d = _load(root, log_y_cols=("ugf", "cmrr", "phase_margin"))
    assert d["log_y_cols"] == ["ugf", "phase_margin", "cmrr"]
    # ... and target columns in another order are matched by name, not rejected
    _reorder_target_columns(root)
    d = _load(root)
    assert d["x_cols"] == X_COLS
    np.testing.assert_array_equal(d["target_test"][0], d42["target_test"][0])


@pytest.mark.parametrize("n,val,test,phrase", [
    (10, 0.9, 0.2, "leaves no training rows"),   # sklearn's own ValueError would escape the CLI
    (3, 0.2, 0.0, "< 1 row"),
    (2, 0.5, 0.4, "cannot split 2 target rows"),
])
def test_split_target_rows_too_small(n, val, test, phrase):
    with pytest.raises(ToolkitError, match=phrase):
        split_target_rows(n, val_split=val, test_split=test, seed=0)
    # control: with enough rows the same fractions split
    parts = split_target_rows(100, val_split=val, test_split=test, seed=0)
    assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == 100


def test_split_source_rows_holdout():
    """The baseline's source holdout: a seeded, disjoint ceil(fraction * n) rows; too few rows -> a clear error."""
    parts = split_source_rows(1000, val_split=0.1, seed=3)
    assert len(parts["val"]) == 100 and len(parts["train"]) == 900
    assert sorted(np.concatenate([parts["train"], parts["val"]]).tolist()) == list(range(1000))
    np.testing.assert_array_equal(split_source_rows(1000, val_split=0.1, seed=3)["val"], parts["val"])
    assert set(split_source_rows(1000, val_split=0.1, seed=4)["val"]) != set(parts["val"])
    with pytest.raises(ToolkitError, match="gives 1 holdout"):
        split_source_rows(10, val_split=0.1, seed=0)
    with pytest.raises(ToolkitError, match="SOURCE_VAL_SPLIT must be in"):
        split_source_rows(100, val_split=0.0, seed=0)


def test_n_target_train_subsets_train_only(data_root, d42):
    """A data-efficiency subset shrinks target_train (seeded) and leaves val/test untouched."""
    small = _load(data_root, n_target_train=20)
    assert len(small["target_train"][0]) == 20
    assert set(small["split"]["target_train_idx"]) <= set(d42["split"]["target_train_idx"])
    assert small["split"]["target_val_idx"] == d42["split"]["target_val_idx"]
    assert small["split"]["target_test_idx"] == d42["split"]["target_test_idx"]
    again = _load(data_root, n_target_train=20)
    assert again["split"]["target_train_idx"] == small["split"]["target_train_idx"]
    assert small["preprocessing"].to_dict() == d42["preprocessing"].to_dict()  # same scalers: models stay comparable
    n_all = len(d42["split"]["target_train_idx"])
    everything = _load(data_root, n_target_train=n_all)   # exactly the rows there are: all of them
    assert everything["split"]["target_train_idx"] == d42["split"]["target_train_idx"]
    with pytest.raises(ValueError, match=f"N_TARGET_TRAIN=1000000 but the split leaves {n_all} usable"):
        _load(data_root, n_target_train=10**6)             # more than there are: refused (issue 23), not all rows
    with pytest.raises(ValueError, match="N_TARGET_TRAIN must be >= 0"):
        _load(data_root, n_target_train=-1)


def test_library_defaults_equal_config_defaults():
    """A notebook calling get_data_and_scalers without arguments preprocesses like the command line."""
    import inspect

    import config
    from data_loader import get_data_and_scalers as gds
    params = inspect.signature(gds).parameters
    for arg, key in (("log_y_cols", "LOG_Y_COLS"), ("log_x_cols", "LOG_X_COLS"), ("val_split", "VAL_SPLIT"),
                     ("test_split", "TEST_SPLIT"), ("seed", "SEED"), ("log_x_min_span", "LOG_X_MIN_SPAN"),
                     ("x_scaler_fit", "X_SCALER_FIT"), ("n_target_train", "N_TARGET_TRAIN"),
                     ("log_y_min_span", "LOG_Y_MIN_SPAN")):
        default = params[arg].default
        assert (list(default) if isinstance(default, tuple) else default) == getattr(config, key), arg
    # no failure_rule argument = DEFAULT_RULE, which must be config's FAIL_* rules
    assert params["failure_rule"].default is None
    assert list(DEFAULT_RULE.positive) == config.FAIL_POSITIVE
    assert DEFAULT_RULE.minimum == config.FAIL_MIN and DEFAULT_RULE.maximum == config.FAIL_MAX


@pytest.mark.parametrize("opamp", ["5t_opamp", "two_stage_opamp"])
def test_auto_log_metrics_on_the_shipped_data_are_the_former_default_list(opamp):
    """LOG_Y_COLS='auto' picks, on the shipped data, exactly the list every harness number was made with (phase
    margin spans < 3x in 5t and has negative values in two-stage), so those numbers stand; a list still wins."""
    repo_data = Path(__file__).resolve().parents[1] / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = get_data_and_scalers(opamp, repo_data)
        listed = get_data_and_scalers(opamp, repo_data, log_y_cols=["ugf", "nope"])
    assert auto["log_y_cols"] == ["slewrate_pos", "dc_gain", "ugf", "cmrr"]
    assert listed["log_y_cols"] == ["ugf"]


def test_rules_and_log_lists_that_name_missing_metrics_say_so(data_root):
    rule = FailureRule(positive=("ugf", "power"), minimum={"gain_db": 0.0}, maximum={})
    with pytest.warns(UserWarning) as caught:
        get_data_and_scalers(CIRCUIT, data_root, failure_rule=rule, log_y_cols=["ugf", "noise"])
    text = " | ".join(str(w.message) for w in caught)
    assert "FAIL_POSITIVE names ['power']" in text and "FAIL_MIN names ['gain_db']" in text
    assert "LOG_Y_COLS names ['noise']" in text and "FAIL_MAX" not in text


SHIPPED_5T_SPACE = json.loads((Path(__file__).resolve().parents[1] / "data" / "5t_opamp" / "target" / "meta.json")
                              .read_text())["design_space"]


def _meta(root, space, domain="target"):
    (root / CIRCUIT / domain / "meta.json").write_text(json.dumps({"design_space": space}))


def test_data_the_design_space_does_not_describe_are_refused(root):
    """Features in another unit than their meta.json's design space (metres against um), a feature the space does not
    declare, or a malformed entry: one line naming the column, both ranges and the meta.json, before any work."""
    _meta(root, SHIPPED_5T_SPACE)
    assert _load(root)["design_space"] == SHIPPED_5T_SPACE                   # control: the synthetic data are in um
    f_x = _files(root, "source")[0]
    x = pd.read_csv(f_x)
    x["l2"] *= 1e-6
    x.to_csv(f_x, index=False)
    with pytest.raises(ToolkitError) as e:
        _load(root)
    msg = str(e.value)
    assert "'l2' spans [5e-07, 2e-06]" in msg and "[0.5, 2] um" in msg and "target/meta.json" in msg
    assert "source/features.csv" in msg and "\n" not in msg
    # a source folder with its own design space is checked against it (here: the same space in metres)
    _meta(root, {**SHIPPED_5T_SPACE, "l2": {**SHIPPED_5T_SPACE["l2"], "range": [5e-7, 2e-6],
                                            "grid": {"values": [5e-7, 1e-6, 1.5e-6, 2e-6]}}}, "source")
    _load(root)
    _meta(root, {k: v for k, v in SHIPPED_5T_SPACE.items() if k != "ibias"})
    with pytest.raises(ToolkitError, match=r"declares no variable for feature\(s\) \['ibias'\]"):
        _load(root)
    _meta(root, {**SHIPPED_5T_SPACE, "w1": {**SHIPPED_5T_SPACE["w1"], "range": [50, 0.5]}})
    with pytest.raises(ToolkitError, match=r"target/meta.json: design_space.w1: range \[50, 0.5\] needs finite lo <= hi"):
        _load(root)
    (root / CIRCUIT / "target" / "meta.json").write_text("{bad json")    # a broken file is not "no provenance"
    with pytest.raises(ToolkitError, match=r"target/meta.json is not readable JSON"):
        _load(root)
    (root / CIRCUIT / "target" / "meta.json").write_text("[1, 2]")
    with pytest.raises(ToolkitError, match=r"must hold a JSON object"):
        _load(root)


@pytest.mark.parametrize("opamp", ["5t_opamp", "two_stage_opamp", "folded_cascode_opamp"])
def test_shipped_data_lie_in_their_design_space(opamp):
    repo_data = Path(__file__).resolve().parents[1] / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = get_data_and_scalers(opamp, repo_data)
    assert set(d["x_cols"]) <= set(d["design_space"])
    assert all("scale" not in v for v in d["design_space"].values())     # shipped: LOG_X_COLS='auto' decides alone


def test_a_declared_scale_decides_auto_log_features(root):
    """LOG_X_COLS='auto' logs a feature spanning LOG_X_MIN_SPAN unless its design space declares a scale: a declared
    'lin' is not logged, a declared 'log' is, whatever the span; a list still wins."""
    _meta(root, SHIPPED_5T_SPACE)
    assert _load(root)["log_x_cols"] == ["w1", "w2", "w3"]                  # control: the span rule (w 100x, l 4x)
    _meta(root, {**SHIPPED_5T_SPACE, "w1": {**SHIPPED_5T_SPACE["w1"], "scale": "lin"},
                 "l1": {**SHIPPED_5T_SPACE["l1"], "scale": "log"}, "w2": {**SHIPPED_5T_SPACE["w2"], "scale": "log"}})
    d = _load(root)
    assert d["log_x_cols"] == ["w2", "w3", "l1"] and d["design_space"]["l1"]["scale"] == "log"
    assert _load(root, log_x_cols=["w1"])["log_x_cols"] == ["w1"]
    _meta(root, {**SHIPPED_5T_SPACE, "w1": {**SHIPPED_5T_SPACE["w1"], "scale": "ln"}})
    with pytest.raises(ToolkitError, match=r"design_space.w1: scale 'ln' is not one of \['lin', 'log'\]"):
        _load(root)


def _folder(tmp_path, features: str, targets: str = "m1,m2\n1,2\n3,4\n") -> Path:
    folder = tmp_path / "d"
    folder.mkdir(exist_ok=True)
    (folder / "features.csv").write_text(features)
    (folder / "targets.csv").write_text(targets)
    return folder


def test_csv_shapes_a_spreadsheet_writes_are_read_or_named(tmp_path):
    """A comma after every data row used to make pandas take column 1 as the index and shift every column by one
    (the loader then blamed 'nan/inf in <a feature>'); other separators and a trailing header comma were misnamed."""
    from data_loader.layout import read_folder
    got = read_folder(_folder(tmp_path, "w1,w2\n1,2,\n3,4,\n"))          # trailing commas: read as if absent
    assert got.features.columns.tolist() == ["w1", "w2"] and got.features.to_numpy().tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ToolkitError, match=r"line 2 has 3 fields but the header names 2 columns \(extra: \['9'\]\)"):
        read_folder(_folder(tmp_path, "w1,w2\n1,2,9\n3,4\n"))
    with pytest.raises(ToolkitError, match=r"looks ';'-separated .*comma-separated"):
        read_folder(_folder(tmp_path, "w1;w2\n1;2\n3;4\n"))
    with pytest.raises(ToolkitError, match=r"looks tab-separated"):
        read_folder(_folder(tmp_path, "w1\tw2\n1\t2\n3\t4\n"))
    with pytest.raises(ToolkitError, match=r"header column 3 has no name \(a comma at the end of the header line\?\)"):
        read_folder(_folder(tmp_path, "w1,w2,\n1,2,\n3,4,\n"))
    with pytest.raises(ToolkitError, match=r"header column 1 has no name \(a DataFrame index saved by to_csv\?\)"):
        read_folder(_folder(tmp_path, ",w1,w2\n0,1,2\n1,3,4\n"))


def test_the_clip_range_gives_back_the_lowest_fitted_value():
    """``y_seen_lo`` undoes fit_preprocessing's margin exactly, a constant metric (the 1e-6 span floor) included;
    a log1p metric never negative in the fitting rows is flagged, one with a negative row is not."""
    from data_loader.preprocessing import fit_preprocessing
    y = pd.DataFrame({"a": [1.0, 5.0, 30.0], "b": [2.0, 2.0, 2.0], "c": [-0.5, 3.0, 9.0]})
    pre = fit_preprocessing(x_fit=pd.DataFrame({"x": [1.0, 2.0, 3.0]}), y_fit=y, y_range=y, log_x_cols=[],
                            log_y_cols=["a", "c"])
    assert np.allclose(pre.y_seen_lo(), pre.transform_y(y.to_numpy()).min(axis=0), atol=1e-9)
    assert pre.log_y_never_negative().tolist() == [True, False, False]
