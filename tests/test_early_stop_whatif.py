"""benchmarks.early_stop_whatif: replaying a shorter patience on a saved curve is exact."""
import json

import pytest
import torch
import torch.nn.functional as F

from benchmarks import early_stop_whatif as whatif
from core.errors import ToolkitError
from models import MLP
from training.loop import TensorBatches, fit
from training.objectives import mse_objective


def _train(patience: int, epochs: int = 60):
    """A tiny noisy regression whose val curve wanders, trained by the real loop."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x[:, :1] * 2 + 0.8 * torch.randn(64, 1, generator=g)
    x_val, y_val = x[:16], y[:16]
    torch.manual_seed(0)
    model = MLP(input_dim=3, output_dim=1, hidden_dim=8, num_layers=2, dropout=0.0)
    loader = TensorBatches(x[16:], y[16:], batch_size=8, seed=0)
    result = fit(model, loader=loader, optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
                 loss_fn=mse_objective(lambda m, xb: m(xb)),
                 evaluate=lambda m: {"mse": F.mse_loss(m(x_val), y_val).item()}, monitor="mse",
                 epochs=epochs, patience=patience, progress=False)
    return result


def _sidecar(tmp_path, name, result, epochs=60):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"history": {"train": result.history}, "config": {"EPOCHS": epochs}}))
    return path


def test_replay_matches_a_real_shorter_run(tmp_path):
    long_run = _train(patience=30)
    short_run = _train(patience=3)
    assert len(short_run.history) < len(long_run.history)           # the shorter patience really stops sooner
    out = whatif.whatif([_sidecar(tmp_path, "long", long_run)], [3])
    row = out[3]["rows"][0]
    assert row["stop_epoch"] == len(short_run.history)
    assert row["kept_epoch"] == short_run.best_epoch
    assert row["val_ratio"] == pytest.approx(short_run.best_value / long_run.best_value)
    assert out[3]["stopped_before_best"] == int(short_run.best_epoch < long_run.best_epoch)


def test_rule_on_a_hand_made_curve_and_longer_patience_not_replayable(tmp_path):
    values = [5, 4, 3, 3.5, 3.4, 2.9, 3, 3, 3, 3]                  # own patience 4 (best at 6, 10 epochs of 100)
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"history": {"p": [{"val_mse": v} for v in values]}, "config": {"EPOCHS": 100}}))
    out = whatif.whatif([path], [2, 3, 5])
    two = out[2]["rows"][0]
    assert (two["stop_epoch"], two["kept_epoch"], two["early"]) == (5, 3, True)
    assert two["val_ratio"] == pytest.approx(3 / 2.9) and two["saved"] == pytest.approx(0.5)
    three = out[3]["rows"][0]
    assert (three["stop_epoch"], three["kept_epoch"], three["early"]) == (9, 6, False)
    assert out[5]["runs"] == 0 and out[5]["not_replayable"] == 1


def test_missing_phase_is_a_clear_error(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"history": {"bias": [{"val_mse": 1.0}], "head": [{"val_mse": 1.0}]}}))
    with pytest.raises(ToolkitError, match="choose one with --phase"):
        whatif.whatif([path], [2])
    with pytest.raises(ToolkitError, match="no phase 'unfreeze'"):
        whatif.whatif([path], [2], phase="unfreeze")
