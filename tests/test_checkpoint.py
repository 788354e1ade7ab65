"""The one checkpoint format: round trip, weights_only, sidecar, column checks, atomic writes."""
import json

import numpy as np
import pytest
import torch

import models.model_utils as mu
from core.errors import ToolkitError
from models import MODEL_CLASSES, AlignHeteroMLP, DualHeadMLP, MLP

NETS = {k: v for k, v in MODEL_CLASSES.items() if k not in ("MDN", "DeepEnsemble", "SignedRatio")}   # x -> y networks
# (the MDN maps y -> x; a DeepEnsemble and a SignedRatio are built from networks: BUILD below)
from models.model_utils import (CHECKPOINT_FORMAT_VERSION, load_checkpoint, load_model,
                                read_checkpoint_meta, save_checkpoint, save_model, sidecar_path)

X_COLS = ["w1", "l1", "ibias", "cl"]
Y_COLS = ["slewrate_pos", "dc_gain", "ugf"]
TINY = dict(hidden_dim=8, num_layers=2)
KEYS = {"format_version", "stage", "model_class", "model_kwargs", "state_dict", "x_cols", "y_cols",
        "preprocessing", "config", "seed", "split", "metrics", "parent", "parent_sha256", "history", "extra",
        "design_space", "versions", "created"}


def _prep():
    return {"x_cols": list(X_COLS), "y_cols": list(Y_COLS), "log_x_cols": ["ibias"],
            "log_y_cols": ["ugf"], "x_mean": np.zeros(4), "x_scale": np.ones(4).tolist(),
            "y_mean": [0.0, 1.0, 2.0], "y_scale": [np.float64(1.5)] * 3}


def _x(seed=0):
    return torch.randn(6, len(X_COLS), generator=torch.Generator().manual_seed(seed))


def _outputs(model, x):
    out = model(x)
    return out if isinstance(out, tuple) else (out,)


def _save(path, model, **over):
    kwargs = dict(stage="test", x_cols=X_COLS, y_cols=Y_COLS, preprocessing=_prep(),
                  config={"HIDDEN_DIM": 8, "LR": 1e-4}, seed=np.int64(3),
                  split={"val_idx": np.arange(3), "n_test": np.int32(2)},
                  metrics={"val_mse": np.float32(0.25)}, parent=None,
                  history={"train_loss": [1.0, 0.5]}, extra={"temperature": [1.0, 1.1, 0.9]})
    kwargs.update(over)
    return save_checkpoint(path, model, **kwargs)


def _deep_ensemble(input_dim, output_dim, **kwargs):
    from models.deep_ensemble import DeepEnsemble
    return DeepEnsemble("AlignHeteroMLP", dict(input_dim=input_dim, output_dim=output_dim, **kwargs), 2)


def _signed_ratio(input_dim, output_dim, **kwargs):
    from models.signed_ratio import SignedRatio
    transform = {"k": 1e3, "u_mean": 0.1, "u_scale": 0.9, "log": True, "y_mean": 7.0, "y_scale": 1.5}
    return SignedRatio("AlignHeteroMLP", dict(input_dim=input_dim, output_dim=output_dim, **kwargs),
                       [output_dim - 1], [transform])


BUILD = {**NETS, "DeepEnsemble": _deep_ensemble, "SignedRatio": _signed_ratio}   # every x -> y model class, by a (input_dim, output_dim) builder


@pytest.mark.parametrize("name", list(BUILD))
def test_round_trip_identical_outputs(tmp_path, name):
    build, cls = BUILD[name], MODEL_CLASSES[name]
    torch.manual_seed(0)
    model = build(len(X_COLS), len(Y_COLS), **TINY).eval()
    path = tmp_path / "m.pth"
    _save(path, model)
    loaded, meta = load_checkpoint(path, expect_x_cols=X_COLS, expect_y_cols=Y_COLS, expect_class=cls)
    assert type(loaded) is cls and not loaded.training
    for a, b in zip(_outputs(model, _x()), _outputs(loaded, _x())):
        if a is not None:
            assert torch.equal(a, b)
    torch.manual_seed(1)                                     # control: a fresh init differs
    fresh = build(len(X_COLS), len(Y_COLS), **TINY).eval()
    assert not torch.allclose(_outputs(fresh, _x())[0], _outputs(loaded, _x())[0])
    assert meta["model_class"] == name
    assert meta["model_kwargs"] == model.constructor_kwargs()


def test_dict_keys_plain_types_and_weights_only(tmp_path):
    path = tmp_path / "m.pth"
    _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY), parent=tmp_path / "parent.pth")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == KEYS
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert raw["seed"] == 3 and type(raw["seed"]) is int
    assert raw["split"] == {"val_idx": [0, 1, 2], "n_test": 2}
    assert type(raw["metrics"]["val_mse"]) is float
    assert raw["preprocessing"]["x_mean"] == [0.0] * 4
    assert raw["parent"] == str(tmp_path / "parent.pth")
    assert set(raw["versions"]) == {"torch", "numpy", "python", "package"}

    def walk(v):
        if isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        else:
            assert v is None or type(v) in (str, int, float, bool), type(v)
    walk({k: v for k, v in raw.items() if k != "state_dict"})


def test_sidecar_matches_meta(tmp_path):
    path = tmp_path / "m.pth"
    written = _save(path, DualHeadMLP(len(X_COLS), len(Y_COLS), **TINY))
    side = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path) == tmp_path / "m.json"
    _, meta = load_checkpoint(path)
    assert side == meta == written == read_checkpoint_meta(path)
    assert "state_dict" not in side


@pytest.mark.parametrize("expect,needle", [
    (dict(expect_x_cols=["w1", "l1", "ibias", "vdd"]), r"missing from checkpoint: \['vdd'\]; only in checkpoint: \['cl'\]"),
    (dict(expect_x_cols=["l1", "w1", "ibias", "cl"]), "same names in a different order"),
    (dict(expect_y_cols=["slewrate_pos", "dc_gain"]), r"only in checkpoint: \['ugf'\]"),
])
def test_column_mismatch_names_both_lists(tmp_path, expect, needle):
    path = tmp_path / "m.pth"
    _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY))
    with pytest.raises(ToolkitError, match=needle) as info:
        load_checkpoint(path, **expect)
    expected_list = next(iter(expect.values()))
    saved_list = X_COLS if "expect_x_cols" in expect else Y_COLS
    assert str(expected_list) in str(info.value) and str(saved_list) in str(info.value)


def test_expect_class_mismatch(tmp_path):
    path = tmp_path / "m.pth"
    _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY))
    with pytest.raises(ToolkitError, match="holds a MLP .* but a AlignHeteroMLP or DualHeadMLP"):
        load_checkpoint(path, expect_class=["AlignHeteroMLP", DualHeadMLP])


def test_missing_file_and_newer_format(tmp_path):
    with pytest.raises(ToolkitError, match="Checkpoint not found: .*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "m.pth"
    _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY))
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    torch.save(raw, path)
    with pytest.raises(ToolkitError, match="newer than this code supports"):
        load_checkpoint(path)


def test_older_checkpoint_missing_optional_key_gets_default_with_warning(tmp_path):
    path = tmp_path / "m.pth"
    _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY))
    raw = torch.load(path, weights_only=True)
    del raw["history"]
    torch.save(raw, path)
    with pytest.warns(UserWarning, match="no 'history'"):
        _, meta = load_checkpoint(path)
    assert meta["history"] is None


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"scaler": object.__new__(json.JSONDecoder)}, path)
    with pytest.raises(ToolkitError, match="weights_only=True"):
        load_checkpoint(path)


@pytest.mark.parametrize("over,needle", [
    (dict(x_cols=X_COLS[:3]), "x_cols has 3 names but the model's input_dim is 4"),
    (dict(y_cols="ugf"), "list of column-name strings"),
    (dict(extra={"scaler": object()}), r"extra\['scaler'\] is a builtins.object"),
    (dict(preprocessing={"x_cols": X_COLS}), "preprocessing lacks"),
    (dict(preprocessing={**_prep(), "x_cols": X_COLS[::-1]}), "differs from x_cols"),
    (dict(metrics={1: 0.5}), "non-string key"),
    (dict(stage=""), "stage"),
])
def test_save_refuses_bad_metadata_and_writes_nothing(tmp_path, over, needle):
    path = tmp_path / "m.pth"
    with pytest.raises(ToolkitError, match=needle):
        _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY), **over)
    assert list(tmp_path.iterdir()) == []


def test_unregistered_class_is_refused(tmp_path):
    class Custom(MLP):
        pass
    with pytest.raises(ToolkitError, match="only .* can be rebuilt"):
        _save(tmp_path / "m.pth", Custom(len(X_COLS), len(Y_COLS), **TINY))


def test_atomic_write_no_tmp_and_interrupted_save_keeps_old(tmp_path, monkeypatch):
    path = tmp_path / "m.pth"
    model = MLP(len(X_COLS), len(Y_COLS), **TINY).eval()
    _save(path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pth"]   # no tmp left
    good = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(mu.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY))
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pth"]
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded(_x()), model(_x()))


def test_save_model_load_model_round_trip(tmp_path):
    path = tmp_path / "s.pth"
    torch.manual_seed(0)
    model = AlignHeteroMLP(len(X_COLS), len(Y_COLS), **TINY).eval()
    save_model(model, path)
    assert set(torch.load(path, weights_only=True)) == KEYS
    torch.manual_seed(1)
    other = AlignHeteroMLP(len(X_COLS), len(Y_COLS), **TINY)
    assert not torch.equal(other(_x())[0], model(_x())[0])          # control
    assert load_model(other, path) is other and not other.training
    for a, b in zip(model(_x()), other(_x())):
        assert torch.equal(a, b)
    rebuilt, meta = load_checkpoint(path)                              # also rebuildable
    assert meta["stage"] == "save_model" and meta["x_cols"] is None
    with pytest.raises(ToolkitError, match="records no x_cols"):
        load_checkpoint(path, expect_x_cols=X_COLS)


@pytest.mark.parametrize("target", [
    lambda: AlignHeteroMLP(4, 3, hidden_dim=16, num_layers=2),        # same class, other sizes
    lambda: DualHeadMLP(4, 3, **TINY),                                 # other class
    lambda: AlignHeteroMLP(4, 3, **TINY, activation="relu"),           # same shapes, other act
])
def test_load_model_architecture_mismatch_names_both(tmp_path, target):
    path = tmp_path / "s.pth"
    save_model(AlignHeteroMLP(4, 3, **TINY), path)
    model = target()
    with pytest.raises(ToolkitError) as info:
        load_model(model, path)
    msg = str(info.value)
    assert "AlignHeteroMLP(input_dim=4, output_dim=3, hidden_dim=8" in msg
    assert f"{type(model).__name__}(input_dim=4" in msg and "load_checkpoint" in msg


def test_load_model_accepts_bare_state_dict_and_reports_mismatch(tmp_path):
    path = tmp_path / "legacy.pth"
    src = MLP(4, 3, **TINY).eval()
    torch.save(src.state_dict(), path)                                 # the seed's old format
    dst = load_model(MLP(4, 3, **TINY), path)
    assert torch.equal(dst(_x()), src(_x()))
    with pytest.raises(ToolkitError, match="bare state_dict"):
        load_model(MLP(4, 3, hidden_dim=16, num_layers=2), path)
    with pytest.raises(ToolkitError, match="bare state_dict"):
        load_checkpoint(path)


def test_preprocessing_record_with_to_dict_is_accepted(tmp_path):
    class Record:                      # stands in for data_loader's Preprocessing dataclass
        def to_dict(self):
            return {**_prep(), "y_clip_lo": [-3.0] * 3, "y_clip_hi": [3.0] * 3}
    path = tmp_path / "m.pth"
    meta = _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY), preprocessing=Record())
    assert meta["preprocessing"]["y_clip_hi"] == [3.0] * 3
    assert read_checkpoint_meta(path)["preprocessing"]["log_y_cols"] == ["ugf"]


def test_the_mdn_uses_the_one_checkpoint_format(tmp_path, seeded):
    """save_mdn writes the format every model uses (one version field); load_checkpoint reads it back."""
    from inverse.mdn import MDN, load_mdn, save_mdn
    model = MDN(y_dim=len(Y_COLS), x_dim=len(X_COLS), n_components=2, hidden=8, layers=1).eval()
    meta = save_mdn(tmp_path / "m.pth", model, x_cols=X_COLS, y_cols=Y_COLS, preprocessing=_prep(), config={},
                    seed=0, x_lo=[-1.0] * len(X_COLS), x_hi=[1.0] * len(X_COLS))
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION and meta["stage"] == "mdn"
    again, meta = load_checkpoint(tmp_path / "m.pth", expect_class="MDN")
    y = torch.randn(3, len(Y_COLS))
    assert all(torch.equal(a, b) for a, b in zip(model(y), again(y)))
    assert load_mdn(tmp_path / "m.pth")[1]["extra"]["x_hi"] == [1.0] * len(X_COLS)
    _save(tmp_path / "mlp.pth", MLP(len(X_COLS), len(Y_COLS), **TINY))
    with pytest.raises(ToolkitError, match="MDN"):          # control: another model is refused by class
        load_mdn(tmp_path / "mlp.pth")


def test_an_mdn_file_from_before_the_one_format_still_loads(tmp_path, seeded):
    """The MDN's old writer (own save code, box at the top level, no parent/extra) is read by the one loader."""
    from inverse.mdn import MDN, load_mdn
    model = MDN(y_dim=len(Y_COLS), x_dim=len(X_COLS), n_components=2, hidden=8, layers=1)
    old = {"format_version": 1, "stage": "mdn", "model_class": "MDN", "model_kwargs": model.constructor_kwargs(),
           "x_cols": X_COLS, "y_cols": Y_COLS, "preprocessing": mu.plain(_prep()), "config": {}, "seed": 0, "split": None,
           "x_lo": [-2.0] * len(X_COLS), "x_hi": [2.0] * len(X_COLS), "metrics": None, "history": None,
           "versions": {}, "created": None, "state_dict": model.state_dict()}
    torch.save(old, tmp_path / "old.pth")
    with pytest.warns(UserWarning, match="older writer"):
        again, meta = load_mdn(tmp_path / "old.pth")
    assert meta["extra"] == {"x_lo": [-2.0] * len(X_COLS), "x_hi": [2.0] * len(X_COLS)}
    y = torch.randn(3, len(Y_COLS))
    assert all(torch.equal(a, b) for a, b in zip(model.eval()(y), again(y)))


def test_previous_best_keeps_the_best_of_each_kind_through_other_preprocessing(tmp_path):
    """A (P1, val 1.0), B (P1, 2.0), C (P2, 5.0), D (P1, 1.5): A, the best P1 model, must survive C's save (it was
    overwritten by B), and C, a trained P2 model, must not vanish without a word when D replaces it."""
    from training.stage import guard_better_checkpoint, previous_best_path
    path = tmp_path / "m.pth"
    keep = previous_best_path(path)
    split = {"target_val_idx": [1, 2, 3]}
    p1, p2 = _prep(), {**_prep(), "log_y_cols": []}

    def save(prep, val, capsys_out=None):
        guard_better_checkpoint(path, "mse", val, split, mu.plain(prep, "p"))
        _save(path, MLP(len(X_COLS), len(Y_COLS), **TINY), preprocessing=prep, split=split,
              metrics={"val": {"mse": val}})

    def kept_val():
        return mu.read_checkpoint_meta(keep)["metrics"]["val"]["mse"]
    save(p1, 1.0)
    save(p1, 2.0)
    assert kept_val() == 1.0
    save(p2, 5.0)
    assert kept_val() == 1.0                     # A stays: B is worse than A on their own terms
    save(p1, 1.5)
    assert kept_val() == 1.0                     # A is better than D; C (P2) is replaced, with a warning
