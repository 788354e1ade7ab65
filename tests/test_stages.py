"""Forward stages: the chain runs end to end on test-made data, and each mechanism acts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import config
from core.stages import differences
from fine_tune import fine_tune
from losses import batch_r2
from models import MLP, DualHeadMLP
from models.model_utils import read_checkpoint_meta
from training import train, train_align_coral, train_pooled, train_target_only
from training.loop import PairedBatches, TensorBatches, fit
from training.objectives import make_align_loss

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--quiet"]


@pytest.fixture(scope="module")
def dataset(tiny_data):
    return tiny_data(200, 100)


def _args(dataset, results, *extra):
    return ["--data-dir", str(dataset), "--results-dir", str(results), "--device", "cpu", *TINY, *extra]


def test_chain_dry_run_end_to_end(dataset, tmp_path):
    res = tmp_path / "res"
    for stage in (train, train_align_coral, train_target_only, fine_tune, train_pooled):
        summary = stage.main(_args(dataset, res, "--dry-run"))
        assert summary["test"]["split"] == "target_test"
    names = sorted(p.name for p in res.glob("*.pth"))
    assert names == ["5t_opamp_align_hetero_lambda0.050.pth", "5t_opamp_baseline_model.pth",
                     "5t_opamp_dualhead_finetuned.pth", "5t_opamp_pooled_flag.pth", "5t_opamp_target_only_hetero.pth"]
    meta = read_checkpoint_meta(res / "5t_opamp_dualhead_finetuned.pth")
    assert meta["parent"].endswith("5t_opamp_baseline_model.pth")
    assert {"bias", "head", "unfreeze"} <= set(meta["history"]) <= {"bias", "head", "unfreeze", "variance"}
    assert meta["model_kwargs"]["logvar_head"] is True                  # default FINETUNE_OBJECTIVE="hetero"
    metrics = json.loads((res / "5t_opamp_align_hetero_lambda0.050_metrics.json").read_text())
    for col in ("slewrate_pos", "dc_gain", "ugf", "phase_margin", "cmrr"):
        assert set(metrics["test"][col]) >= {"mse", "mae", "r2", "r2_log", "mape"}
    # never evaluated or selected on test rows: the val indices are disjoint from test
    split = meta["split"]
    assert not set(split["target_val_idx"]) & set(split["target_test_idx"])
    assert len((res / "runs.jsonl").read_text().splitlines()) == 5


def test_baseline_as_subprocess(dataset, tmp_path):
    out = subprocess.run([sys.executable, "-m", "training.train", *_args(dataset, tmp_path, "--dry-run")],
                         cwd=REPO, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""},
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "baseline on target_test" in out.stdout and "R2_log" in out.stdout


def test_training_learns(dataset, tmp_path):
    """Control: the trained baseline beats its own first epoch on val MSE."""
    s = train.main(_args(dataset, tmp_path, "--epochs", "30", "--set", "LEARNING_RATE=3e-3"))
    hist = read_checkpoint_meta(tmp_path / "5t_opamp_baseline_model.pth")["history"]["baseline"]
    assert s["val"]["mse"] < hist[0]["val_mse"] * 0.8


def test_baseline_can_stop_on_a_source_holdout(dataset, tmp_path):
    """BASELINE_VAL="source": the kept epoch is the best on held-out source rows, which it never trained on."""
    s = train.main(_args(dataset, tmp_path, "--epochs", "12", "--patience", "3", "--set", "LEARNING_RATE=3e-3",
                         "--baseline-val", "source"))
    meta = read_checkpoint_meta(tmp_path / "5t_opamp_baseline_model.pth")
    hist = meta["history"]["baseline"]
    assert s["val"]["source_mse"] == pytest.approx(min(r["val_source_mse"] for r in hist))
    assert all("val_mse" in r for r in hist)                            # target_val MSE still logged
    held = meta["split"]["source_val_idx"]
    assert len(held) == 20 and held == sorted(set(held))                # ceil(10 % of 194 source rows)
    assert s["extra"] == {"baseline_val": "source", "source_val_split": 0.1, "source_val_rows": 20}
    # same seed, same holdout; another seed, another one
    again = train.main(_args(dataset, tmp_path / "again", "--epochs", "1", "--baseline-val", "source"))
    other = train.main(_args(dataset, tmp_path / "other", "--epochs", "1", "--seed", "7", "--baseline-val", "source"))
    assert read_checkpoint_meta(Path(again["checkpoint"]))["split"]["source_val_idx"] == held
    assert read_checkpoint_meta(Path(other["checkpoint"]))["split"]["source_val_idx"] != held


def test_baseline_val_target_is_the_seed_and_the_default(dataset, tmp_path):
    s = train.main(_args(dataset, tmp_path, "--epochs", "3"))
    meta = read_checkpoint_meta(tmp_path / "5t_opamp_baseline_model.pth")
    assert set(s["val"]) == {"mse"} and "source_val_idx" not in meta["split"]
    assert s["val"]["mse"] == pytest.approx(min(r["val_mse"] for r in meta["history"]["baseline"]))


@pytest.mark.parametrize("flags, words", [(["--baseline-val", "both"], ["BASELINE_VAL", "'both'", "--baseline-val"]),
                                          (["--baseline-val", "source", "--source-val-split", "0.995"], ["SOURCE_VAL_SPLIT=0.995", "source rows gives", "0 training rows"])])
def test_baseline_val_bad_input(dataset, tmp_path, flags, words):
    out = subprocess.run([sys.executable, "-m", "training.train", *_args(dataset, tmp_path, "--dry-run", *flags)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert all(w in out.stderr for w in words), out.stderr


def test_missing_baseline_names_command(dataset, tmp_path):
    out = subprocess.run([sys.executable, "-m", "training.train_align_coral", *_args(dataset, tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "python -m training.train" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("flags, phrase", [
    (["--epochs", "0"], "EPOCHS must be >= 1"),
    (["--lambda-coral", "-1"], "LAMBDA_CORAL must be >= 0"),
    (["--reinit-layers", "2"], r"ALIGN_REINIT_LAYERS must be 'auto' or an integer in 0..1"),
    (["--reinit-layers", "deep"], "got 'deep'"),
])
def test_bad_settings(dataset, tmp_path, flags, phrase):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    with pytest.raises(ValueError, match=phrase):
        train_align_coral.main(_args(dataset, tmp_path, *flags))


def test_reinit_layers_keeps_the_first_layers_from_the_baseline():
    torch.manual_seed(0)
    baseline = MLP(7, 5, hidden_dim=16, num_layers=3, dropout=0.0)
    for k in (0, 2):
        model = train_align_coral.build_model(baseline, k, "cpu")
        same = [torch.equal(a.weight, b.weight) for a, b in zip(baseline.backbone.linears, model.backbone.linears)]
        assert same == [True] * (3 - k) + [False] * k
        assert torch.equal(model.mu_head.weight, baseline.head.weight) == (k == 0)


def test_auto_transfer_depth_keeps_the_lower_val_nll(dataset, tmp_path):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    s = train_align_coral.main(_args(dataset, tmp_path, "--dry-run"))   # default ALIGN_REINIT_LAYERS=auto
    tried = s["extra"]["reinit_val_nll"]
    assert set(tried) == {"0", "1"}                                     # NUM_LAYERS=2: both ends
    assert s["extra"]["reinit_layers"] == int(min(tried, key=tried.get))
    assert s["val"]["nll"] == pytest.approx(min(tried.values()))
    meta = read_checkpoint_meta(tmp_path / "5t_opamp_align_hetero_lambda0.050.pth")
    assert meta["extra"]["reinit_layers"] == s["extra"]["reinit_layers"]


def test_checkpoint_from_other_circuit_refused(dataset, tmp_path, tiny_data):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    other = tiny_data(200, 100, "two_stage_opamp")
    (tmp_path / "5t_opamp_baseline_model.pth").rename(tmp_path / "two_stage_opamp_baseline_model.pth")
    with pytest.raises(ValueError, match="circuit '5t_opamp'"):
        train_align_coral.main(["--opamp", "two_stage_opamp", *_args(other, tmp_path, "--dry-run")])


def test_nan_loss_keeps_last_good_checkpoint(dataset, tmp_path):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    ckpt = tmp_path / "5t_opamp_baseline_model.pth"
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="Nothing was saved"):
        train.main(_args(dataset, tmp_path, "--epochs", "3", "--set", "LEARNING_RATE=1e30"))
    assert ckpt.read_bytes() == before


def test_worse_checkpoint_keeps_previous_best(dataset, tmp_path, capsys):
    train.main(_args(dataset, tmp_path, "--epochs", "20", "--set", "LEARNING_RATE=3e-3"))
    train.main(_args(dataset, tmp_path, "--epochs", "1", "--set", "LEARNING_RATE=1e-7"))   # (a dry run is refused)
    assert (tmp_path / "5t_opamp_baseline_model.previous_best.pth").is_file()
    assert "previous one is kept" in capsys.readouterr().out


def _val(path):
    return read_checkpoint_meta(path)["metrics"]["val"]["mse"]


def test_previous_best_holds_the_best_seen(dataset, tmp_path, capsys):
    """Good, worse, worse again: the good one stays in previous_best (the second run's must not replace it)."""
    runs = [("20", "3e-3"), ("1", "1e-7"), ("1", "1e-8")]
    for epochs, lr in runs:
        train.main(_args(dataset, tmp_path, "--epochs", epochs, "--set", f"LEARNING_RATE={lr}"))
    best = tmp_path / "5t_opamp_baseline_model.previous_best.pth"
    values = [_val(best), _val(tmp_path / "5t_opamp_baseline_model.pth")]
    assert values[0] < values[1]
    assert read_checkpoint_meta(best)["config"]["LEARNING_RATE"] == 3e-3
    assert "it stays there" in capsys.readouterr().out


def test_checkpoint_with_other_preprocessing_is_kept_aside(dataset, tmp_path, capsys):
    """Val errors in two model spaces cannot be ranked: the replaced checkpoint is kept, with a warning."""
    train.main(_args(dataset, tmp_path, "--epochs", "3"))
    train.main(_args(dataset, tmp_path, "--epochs", "3", "--set", "LOG_Y_COLS=[]"))
    kept = read_checkpoint_meta(tmp_path / "5t_opamp_baseline_model.previous_best.pth")
    assert kept["config"]["LOG_Y_COLS"] != []
    assert "other preprocessing" in capsys.readouterr().out


def _dual(seed=0, **kwargs):
    torch.manual_seed(seed)
    return DualHeadMLP(7, 5, hidden_dim=16, num_layers=2, dropout=0.0, **kwargs)


def _data(n=64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 7, generator=g)
    return x, torch.randn(n, 5, generator=g) + x[:, :5]


def test_phase1_changes_only_head_b_bias():
    model = _dual()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    name, trainable, _, lr = fine_tune.phase_plan(model, {"LR_BIAS": 1e-2, "LR_HEAD": 1, "LR_UNFREEZE": 1})[0]
    frozen = fine_tune.set_trainable(model, trainable)
    x, y = _data()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    fit(model, loader=TensorBatches(x, y, batch_size=16), optimizer=opt,
        loss_fn=lambda m, b: (F.mse_loss(m(b[0], domain="B"), b[1]), {}),
        evaluate=lambda m: {"mse": F.mse_loss(m(x, domain="B"), y).item()}, monitor="mse",
        epochs=3, patience=3, progress=False, frozen_modules=frozen)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["head_B.bias"]


@pytest.mark.parametrize("l2sp, should_stay", [(1e6, True), (0.0, False)])
def test_huge_l2sp_keeps_pretrained_weights(l2sp, should_stay):
    model = _dual()
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _, trainable, reg, _ = fine_tune.phase_plan(model, {"LR_BIAS": 1, "LR_HEAD": 1, "LR_UNFREEZE": 1})[2]
    fine_tune.set_trainable(model, trainable)
    x, y = _data()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-7 if l2sp else 1e-2)
    fit(model, loader=TensorBatches(x, y, batch_size=16), optimizer=opt,
        loss_fn=lambda m, b: (F.mse_loss(m(b[0], domain="B"), b[1]), {}),
        evaluate=lambda m: {"mse": -1.0 * len(m.state_dict())}, monitor="mse", epochs=3, patience=3,
        progress=False, pretrained_state=pretrained, l2sp_lambda=l2sp, l2sp_params=reg)
    drift = max((model.state_dict()[k] - pretrained[k]).abs().max().item() for k in reg)
    assert (drift < 1e-4) if should_stay else (drift > 1e-3)


def _coral_history(lambda_coral):
    from models import AlignHeteroMLP
    torch.manual_seed(0)
    model = AlignHeteroMLP(7, 5, hidden_dim=16, num_layers=2, dropout=0.0)
    g = torch.Generator().manual_seed(2)
    x_src = torch.randn(256, 7, generator=g)
    x_tgt = torch.randn(128, 7, generator=g) * 4 + 1.0   # shifted and wider: different feature covariance
    y_tgt = torch.randn(128, 5, generator=g)
    loader = PairedBatches(TensorBatches(x_tgt, y_tgt, batch_size=64), (x_src, torch.zeros(256, 5)))
    res = fit(model, loader=loader, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
              loss_fn=make_align_loss(0.0, lambda_coral), evaluate=lambda m: {"x": 0.0}, monitor="x",
              epochs=30, patience=100, progress=False)
    return [row["train_coral"] for row in res.history]


def test_coral_term_falls_during_training():
    aligned = _coral_history(100.0)
    control = _coral_history(1e-12)   # ~no alignment: NLL training alone lets the domains drift apart
    assert aligned[-1] < 0.2 * aligned[0]
    assert aligned[-1] < 0.2 * control[-1]


@pytest.mark.parametrize("layers, expect", [(1, 1), ("1", 1), (2, 2), ("all", 2)])
def test_phase3_unfreezes_exactly_the_last_layers(layers, expect):
    model = _dual()
    _, trainable, reg, _ = fine_tune.phase_plan(
        model, {"LR_BIAS": 1, "LR_HEAD": 1, "LR_UNFREEZE": 1, "UNFREEZE_LAYERS": layers})[2]
    blocks = sorted({name.split(".")[2] for name in trainable if name.startswith("backbone")})
    assert blocks == [str(i) for i in range(2 - expect, 2)]
    assert set(reg) == set(trainable)
    for bad in (3, 0, "most"):
        with pytest.raises(ValueError, match="UNFREEZE_LAYERS must be 'all' or an integer in 1..2"):
            fine_tune.phase_plan(model, {"LR_BIAS": 1, "LR_HEAD": 1, "LR_UNFREEZE": 1, "UNFREEZE_LAYERS": bad})


def test_hetero_phase3_trains_logvar_b_outside_l2sp():
    model = _dual(logvar_head=True)
    plan = fine_tune.phase_plan(model, {"LR_BIAS": 1, "LR_HEAD": 1, "LR_UNFREEZE": 1})
    assert all("logvar_B.weight" not in trainable for _, trainable, _, _ in plan[:2])   # phases 1-2: MSE only
    _, trainable, reg, _ = plan[2]
    assert {"logvar_B.weight", "logvar_B.bias"} <= set(trainable)
    assert not any(name.startswith("logvar_B") for name in reg)          # no pretrained value to stay near
    x, y = _data()
    fine_tune.init_logvar_b(model, x, y)
    mse = ((model(x, domain="B") - y) ** 2).mean(0)
    assert torch.allclose(model.logvar_B.bias, mse.log(), atol=1e-6)
    _, logvar = model.predict_B(x)
    assert torch.allclose(logvar, mse.log().expand_as(logvar), atol=1e-6)  # starts at the homoscedastic fit


@pytest.mark.parametrize("objective, has_variance", [("hetero", True), ("mse", False), ("auto", True)])
def test_finetune_objective_sets_the_variance_head(dataset, tmp_path, objective, has_variance):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    s = fine_tune.main(_args(dataset, tmp_path, "--dry-run", "--objective", objective))
    assert set(s["val"]) == ({"nll"} if has_variance else {"mse"})
    meta = read_checkpoint_meta(tmp_path / "5t_opamp_dualhead_finetuned.pth")
    assert meta["model_kwargs"]["logvar_head"] is has_variance
    tried = s["extra"]["phase3_val_r2"]
    assert set(tried) == set(s["extra"]["phase3_val_mse"]) == ({"mse", "hetero"} if objective == "auto" else {objective})
    chosen = s["extra"]["phase3_objective"]
    assert tried[chosen] == max(tried.values())                          # auto keeps the higher val mean R^2
    # an MSE-chosen mean still gets a variance head when the objective asks for one
    assert ("variance" in meta["history"]) == (has_variance and chosen == "mse")
    with pytest.raises(ValueError, match=r"UNFREEZE_PATIENCE must be an integer >= 1, got 0"):
        fine_tune.main(_args(dataset, tmp_path, "--dry-run", "--unfreeze-patience", "0"))
    with pytest.raises(ValueError, match=r"FINETUNE_OBJECTIVE must be one of \['mse', 'hetero', 'auto'\], got 'nll'"):
        fine_tune.main(_args(dataset, tmp_path, "--dry-run", "--objective", "nll"))


def test_a_phase3_run_is_the_same_alone_and_inside_auto(dataset, tmp_path):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    auto = fine_tune.main(_args(dataset, tmp_path, "--dry-run", "--objective", "auto"))["extra"]
    train.main(_args(dataset, tmp_path / "h", "--dry-run"))
    alone = fine_tune.main(_args(dataset, tmp_path / "h", "--dry-run", "--objective", "hetero"))["extra"]
    assert alone["phase3_val_r2"]["hetero"] == pytest.approx(auto["phase3_val_r2"]["hetero"], rel=1e-6)
    assert alone["phase3_val_mse"]["hetero"] == pytest.approx(auto["phase3_val_mse"]["hetero"], rel=1e-6)


def test_auto_keeps_the_higher_val_mean_r2_not_the_lower_val_mse():
    # measured case (5t_opamp, all rows, seed 5): the MSE run had the lower val MSE, the hetero run
    # the higher val mean R^2, and the hetero run was the better one on test
    scores = {"mse": {"mse": 0.0988, "r2": 0.9553}, "hetero": {"mse": 0.1016, "r2": 0.9592}}
    assert fine_tune.choose_phase3(scores) == "hetero"
    assert fine_tune.choose_phase3({"mse": {"mse": 0.2, "r2": 0.9}, "hetero": {"mse": 0.1, "r2": 0.9}}) == "hetero"
    assert fine_tune.choose_phase3({"mse": {"mse": 0.1, "r2": 0.95}, "hetero": {"mse": 0.1, "r2": 0.94}}) == "mse"
    # why R^2: a metric with a large spread in the source-fitted scaling dominates the MSE
    y = torch.tensor([[0.0, 0.0], [10.0, 1.0], [20.0, 2.0], [30.0, 3.0]])
    off_big = y + torch.tensor([[1.0, 0.0]] * 4).mul(torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]))
    off_small = y + torch.tensor([[0.0, 0.9]] * 4).mul(torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]))
    assert F.mse_loss(off_small, y) < F.mse_loss(off_big, y)              # MSE prefers off_small ...
    assert batch_r2(y, off_big) > batch_r2(y, off_small)                  # ... which ruins metric 2


@pytest.mark.parametrize("objective, phase3_monitors", [("auto", ["mse", "mse"]), ("hetero", ["mse"]), ("mse", ["mse"])])
def test_phase3_runs_stop_on_val_mse_of_the_mean(dataset, tmp_path, monkeypatch, objective, phase3_monitors):
    # stopped on val NLL, the hetero run kept shrinking its variance while the mean overfitted; and
    # under "auto" both runs stop on the same number, so neither is favoured in the comparison
    seen = []

    def recording_fit(*args, **kwargs):
        seen.append((kwargs["desc"], kwargs["monitor"]))
        return fit(*args, **kwargs)

    monkeypatch.setattr(fine_tune, "fit", recording_fit)
    train.main(_args(dataset, tmp_path, "--dry-run"))
    fine_tune.main(_args(dataset, tmp_path, "--dry-run", "--objective", objective))
    assert [m for d, m in seen if d == "finetune:unfreeze"] == phase3_monitors
    assert [m for d, m in seen if d in ("finetune:bias", "finetune:head")] == ["mse", "mse"]


def test_min_batches_cycles_small_data_and_leaves_large_data_alone():
    x = torch.arange(50.0).unsqueeze(1)
    batches = list(TensorBatches(x, batch_size=64, seed=0, min_batches=10))
    assert len(batches) == 10 and all(len(b[0]) == 50 for b in batches)      # 10 reshuffled passes
    assert all(sorted(b[0].squeeze(1).tolist()) == list(range(50)) for b in batches)
    assert not all(torch.equal(batches[0][0], b[0]) for b in batches[1:])    # reshuffled each pass
    big = TensorBatches(torch.arange(640.0).unsqueeze(1), batch_size=64, min_batches=10)
    assert len(big) == len(list(big)) == 10                                  # already 10 batches: unchanged
    assert len(TensorBatches(x, batch_size=64, min_batches=10, max_batches=2)) == 2   # --dry-run cap wins
    with pytest.raises(ValueError, match="MIN_BATCHES_PER_EPOCH must be >= 1"):
        TensorBatches(x, batch_size=64, min_batches=0)


def test_pooled_offset_is_a_domain_flag_column():
    """forward_flagged(x, flag, s) == the same MLP on [x, flag] with first-layer weights [W1 | s], and the
    saved target model (s folded into b1) == the flagged net on target rows."""
    torch.manual_seed(0)
    model = MLP(7, 5, hidden_dim=16, num_layers=2, dropout=0.0).eval()
    offset = torch.randn(16)
    x, flag = torch.randn(10, 7), (torch.arange(10) % 2).float()
    wide = MLP(8, 5, hidden_dim=16, num_layers=2, dropout=0.0).eval()
    state = model.state_dict()
    state["backbone.blocks.0.linear.weight"] = torch.cat([state["backbone.blocks.0.linear.weight"],
                                                          offset.unsqueeze(1)], dim=1)
    wide.load_state_dict(state)
    net = train_pooled.FlaggedMLP(model).eval()
    with torch.no_grad():
        net.target_offset.copy_(offset)
        got = train_pooled.forward_flagged(model, x, flag, offset)
        assert torch.allclose(got, wide(torch.cat([x, flag.unsqueeze(1)], dim=1)), atol=1e-6)
        assert torch.allclose(got[flag == 0], model(x[flag == 0]), atol=1e-6)   # source rows: no offset
        assert not torch.allclose(got[flag == 1], model(x[flag == 1]), atol=1e-3)
        folded = net.target_model()
        assert torch.allclose(folded(x), net(x, torch.ones(10)), atol=1e-6)   # target rows: the saved model
        assert torch.equal(model.state_dict()["backbone.blocks.0.linear.bias"],
                           state["backbone.blocks.0.linear.bias"])           # folding copies, never edits


def test_pooled_learns_a_target_offset_with_its_own_network(dataset, tmp_path, monkeypatch):
    """The pooled stage's --hidden-dim/--num-layers/--lr set POOLED_*, which size and train its network (the other
    stages' HIDDEN_DIM/LEARNING_RATE stay as they were and do not make its checkpoint stale)."""
    rates, adamw = [], torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **kw: rates.append(lr) or adamw(params, lr=lr, **kw))
    s = train_pooled.main(_args(dataset, tmp_path, "--epochs", "5", "--hidden-dim", "8", "--num-layers", "3",
                                "--lr", "2e-3"))
    assert s["extra"]["target_offset_norm"] > 0 and s["extra"]["n_source"] > 0
    meta = read_checkpoint_meta(tmp_path / "5t_opamp_pooled_flag.pth")
    assert meta["parent"] is None and meta["stage"] == "pooled"
    assert (meta["model_kwargs"]["hidden_dim"], meta["model_kwargs"]["num_layers"], rates) == (8, 3, [2e-3])
    cfg = meta["config"]
    assert (cfg["POOLED_HIDDEN_DIM"], cfg["HIDDEN_DIM"], cfg["LEARNING_RATE"]) == (8, 16, config.LEARNING_RATE)
    assert differences(cfg, {**cfg, "HIDDEN_DIM": 64, "NUM_LAYERS": 5, "LEARNING_RATE": 1.0}, "pooled") == []
    assert differences(cfg, {**cfg, "POOLED_HIDDEN_DIM": 64, "POOLED_LEARNING_RATE": 1.0}, "pooled") == [
        "POOLED_HIDDEN_DIM", "POOLED_LEARNING_RATE"]


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_warm_start_begins_each_neural_member_at_the_given_folders_weights(dataset, tmp_path):
    """WARM_START_FROM: target-only, align and dual-head start from that folder's own checkpoint (with a learning
    rate too small to move them, the result is those weights), at its transfer depth, recorded as the parent;
    the same run without it does not land there."""
    first, warm, cold = tmp_path / "first", tmp_path / "warm", tmp_path / "cold"
    train.main(_args(dataset, first, "--dry-run"))
    for stage in (train_align_coral, train_target_only, fine_tune):
        stage.main(_args(dataset, first, "--dry-run"))
    for folder in (warm, cold):
        folder.mkdir()
        (folder / "5t_opamp_baseline_model.pth").write_bytes((first / "5t_opamp_baseline_model.pth").read_bytes())
    frozen = ["--epochs", "1", "--set", "LEARNING_RATE=1e-12", "--set", "LR_BIAS=1e-12", "--set", "LR_HEAD=1e-12",
              "--set", "LR_UNFREEZE=1e-12"]
    names = {train_target_only: "5t_opamp_target_only_hetero.pth", train_align_coral: "5t_opamp_align_hetero_lambda0.050.pth",
             fine_tune: "5t_opamp_dualhead_finetuned.pth"}

    def moved(name, folder):   # weights that differ from the first run's (the dual-head's variance head restarts)
        before, after = _state(first / name), _state(folder / name)
        return [k for k in before if not k.startswith("logvar_B") and not torch.allclose(before[k], after[k], atol=1e-6)]

    for stage, name in names.items():
        summary = stage.main(_args(dataset, warm, *frozen, "--set", f"WARM_START_FROM={first}"))
        assert moved(name, warm) == [], name
        meta = read_checkpoint_meta(warm / name)
        assert meta["parent"] == str(first / name) and summary["extra"]["warm_start"] == str(first / name)
        if stage is train_align_coral:               # one depth: the earlier run's, nothing re-initialised
            depth = read_checkpoint_meta(first / name)["extra"]["reinit_layers"]
            assert list(summary["extra"]["reinit_val_nll"]) == [str(depth)]
        assert stage.main(_args(dataset, cold, *frozen))["extra"]["warm_start"] is None
        assert moved(name, cold), name


def test_warm_start_from_a_folder_without_the_checkpoint_is_one_line_and_writes_nothing(dataset, tmp_path):
    train.main(_args(dataset, tmp_path, "--dry-run"))
    before = sorted(p.name for p in tmp_path.iterdir())
    for stage in (train_target_only, train_align_coral, fine_tune):
        with pytest.raises(ValueError, match=r"WARM_START_FROM=.*empty has no 5t_opamp_.*WARM_START_FROM=''"):
            stage.main(_args(dataset, tmp_path, "--dry-run", "--set", f"WARM_START_FROM={tmp_path / 'empty'}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _val_outputs(path, x_val):
    """Model-space (mean, var) of a saved neural member on the val inputs."""
    from models.model_utils import load_checkpoint
    from models.outputs import mean_and_variance
    model, _ = load_checkpoint(path)
    model.eval()
    with torch.no_grad():
        mean, var = mean_and_variance(model, torch.as_tensor(x_val))
    return mean.double().numpy(), var.double().numpy()


def test_refit_retrains_on_train_and_val_and_keeps_the_early_stopped_val_predictions(dataset, tmp_path):
    """REFIT=train+val: the saved model is retrained on train + val rows for the epochs early stopping chose;
    its checkpoint carries, as the ensemble's out-of-sample val predictions, exactly the model the seed's
    protocol saves (the same run with REFIT=off), and the val number of that model."""
    import numpy as np
    from data_loader import load_run_data
    from inference.members import load_member
    from inference.predict import oof_val
    from core.settings import resolve
    import config

    plain, refit = tmp_path / "plain", tmp_path / "refit"
    for folder in (plain, refit):
        train.main(_args(dataset, folder, "--epochs", "3"))
    names = {train_target_only: "5t_opamp_target_only_hetero.pth", train_align_coral: "5t_opamp_align_hetero_lambda0.050.pth",
             fine_tune: "5t_opamp_dualhead_finetuned.pth"}
    settings = resolve(config, {"DATA_DIR": str(dataset), "RESULTS_DIR": str(refit), "HIDDEN_DIM": 16, "NUM_LAYERS": 2})
    data = load_run_data(settings, "target_only")
    n_fit = len(data["target_train"][0]) + len(data["target_val"][0])
    for stage, name in names.items():
        before = stage.main(_args(dataset, plain, "--epochs", "6"))
        after = stage.main(_args(dataset, refit, "--epochs", "6", "--set", "REFIT=train+val"))
        meta = read_checkpoint_meta(refit / name)
        record = meta["extra"]["refit"]
        assert record["rows"] == n_fit, name
        chosen = before["best_epochs"]                                 # per phase: the epochs val chose
        assert record["epochs"] == chosen, name
        for phase, epochs in chosen.items():                           # each retrained exactly that long
            refit_phase = f"refit_{phase}" if stage is fine_tune else "refit"
            assert len(meta["history"][refit_phase]) == epochs, (name, phase)
        assert after["val"] == before["val"]                           # the early-stopped model's val number
        assert record["early_stopped_test"] == pytest.approx(before["test"]["mean"])
        early_mean, early_var = _val_outputs(plain / name, data["target_val"][0])
        refit_mean, _ = _val_outputs(refit / name, data["target_val"][0])
        member = load_member(name_of(stage), refit / name)
        got = oof_val(member, data)
        np.testing.assert_allclose(got[0], early_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], early_var, rtol=1e-5, atol=1e-6)
        assert not np.allclose(refit_mean, early_mean, atol=1e-4), name   # the saved model learned more


def name_of(stage):
    return {train_target_only: "target_only", train_align_coral: "align_hetero", fine_tune: "dualhead"}[stage]


def test_refit_value_is_checked_before_any_work(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"REFIT.*'yes'.*train\+val"):
        train_target_only.main(_args(dataset, tmp_path / "r", "--dry-run", "--set", "REFIT=yes"))
    assert not (tmp_path / "r").exists()


def test_target_only_nets_trains_a_deep_ensemble_whose_first_network_is_the_single_run(dataset, tmp_path):
    """TARGET_ONLY_NETS=2: a DeepEnsemble of two networks from seeds SEED and SEED+1; the first is exactly the
    network a one-network run saves, the second differs; warm start refuses a checkpoint of another size."""
    one, two = tmp_path / "one", tmp_path / "two"
    train_target_only.main(_args(dataset, one, "--epochs", "3"))
    summary = train_target_only.main(_args(dataset, two, "--epochs", "3", "--set", "TARGET_ONLY_NETS=2"))
    meta = read_checkpoint_meta(two / "5t_opamp_target_only_hetero.pth")
    assert meta["model_class"] == "DeepEnsemble" and meta["model_kwargs"]["size"] == 2
    assert set(summary["best_epochs"]) == {"target_only", "target_only_1"} and summary["extra"]["networks"] == 2
    single, pair = _state(one / "5t_opamp_target_only_hetero.pth"), _state(two / "5t_opamp_target_only_hetero.pth")
    assert all(torch.equal(v, pair[f"nets.0.{k}"]) for k, v in single.items())
    assert not all(torch.equal(pair[f"nets.0.{k}"], pair[f"nets.1.{k}"]) for k in single)
    with pytest.raises(ValueError, match=r"averages 2 networks.*TARGET_ONLY_NETS=3.*TARGET_ONLY_NETS=2"):
        train_target_only.main(_args(dataset, tmp_path / "three", "--epochs", "1", "--set", "TARGET_ONLY_NETS=3",
                                     "--set", f"WARM_START_FROM={two}"))
