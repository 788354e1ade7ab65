"""A ratio metric learned through its sign: the simulator's sign, the signs file, the transform, the member."""
import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import ToolkitError
from data_loader.data_loader import get_data_and_scalers
from data_loader.layout import read_domain
from models.model_utils import load_checkpoint, read_checkpoint_meta
from models.signed_ratio import SignedRatio, fit_signed_transform, signed_targets
from spice.measure import ac_metrics
from tests.synthetic import write_dataset
from training import train_target_only

TINY = ["--set", "HIDDEN_DIM=16", "--set", "NUM_LAYERS=2", "--set", "POOLED_HIDDEN_DIM=16", "--set", "POOLED_NUM_LAYERS=2", "--quiet", "--device", "cpu"]


def _signed_dataset(root, n_source=200, n_target=100):
    """The synthetic dataset plus a metric_signs.csv per domain: cmrr's sign is that of w1 - w2."""
    write_dataset(root, n_source=n_source, n_target=n_target)
    for domain in ("source", "target"):
        folder = root / "5t_opamp" / domain
        x = pd.read_csv(folder / "features.csv")
        pd.DataFrame({"cmrr": np.where(x.w1 >= x.w2, 1, -1)}).to_csv(folder / "metric_signs.csv", index=False)
    return root


def test_ac_metrics_records_the_sign_of_adm_over_acm():
    freq = np.array([1e-3, 1e3, 1e9])
    adm = np.array([100 + 0j, 50 - 50j, 0.01 + 0j])
    out, status = ac_metrics(freq, adm, np.array([-0.01 + 0j, -0.01j, 0]))
    assert status == "ok" and out["cmrr_sign"] == -1.0 and out["cmrr"] == pytest.approx(1e4)
    out, _ = ac_metrics(freq, adm, np.array([0.02 + 1e-6j, 0, 0]))
    assert out["cmrr_sign"] == 1.0 and out["cmrr"] == pytest.approx(5e3, rel=1e-6)


def test_signs_file_is_read_row_by_row_and_each_mistake_is_one_line(tmp_path):
    root = _signed_dataset(tmp_path / "d")
    dom = read_domain(root, "5t_opamp", "target")
    assert dom.signs_file.name == "metric_signs.csv" and list(dom.signs.columns) == ["cmrr"]
    assert len(dom.signs) == len(dom.targets) and set(dom.signs.cmrr) == {-1.0, 1.0}
    data = get_data_and_scalers("5t_opamp", root, seed=0)
    for split in ("target_train", "target_val", "target_test"):
        rows = data["split"][f"{split}_idx"]
        assert data["signs"][split].cmrr.tolist() == dom.signs.cmrr.iloc[rows].tolist()
    assert data["files"]["target_signs"].endswith("metric_signs.csv")

    signs = root / "5t_opamp" / "target" / "metric_signs.csv"
    good = signs.read_text()
    for text, match in ((good.replace("\n-1\n", "\n0.5\n", 1), r"line \d+.*\+1 or -1"),
                        ("cmrr\n1\n-1\n", r"has 2 rows but targets.csv has 100"),
                        (good.replace("cmrr", "psrr", 1), r"names \['psrr'\].*not metric columns")):
        signs.write_text(text)
        with pytest.raises(ToolkitError, match=match):
            read_domain(root, "5t_opamp", "target")
    signs.write_text(good)
    (root / "5t_opamp" / "target" / "designs_features.csv").unlink(missing_ok=True)   # not a signs file by name
    assert read_domain(root, "5t_opamp", "target").signs is not None


def test_transform_and_moments_give_back_the_metric():
    """u = asinh(k * sign / y) inverts to y = k / |sinh(u)|; with a tiny variance the member's model-space mean is
    that of y itself (log1p, standardised) and its variance tiny; a wide u interval across 0 gives a wide one."""
    rng = np.random.default_rng(0)
    y, sign = np.exp(rng.normal(8, 1, 300)), rng.choice([-1.0, 1.0], 300)
    t = fit_signed_transform(y, sign)
    assert t["k"] == pytest.approx(np.exp(np.median(np.log(y))))
    u = signed_targets(y, sign, t).astype(float)
    assert np.allclose(t["k"] / np.abs(np.sinh(u * t["u_scale"] + t["u_mean"])), y, rtol=1e-4)
    model_space = {**t, "log": True, "y_mean": 8.0, "y_scale": 1.0}
    net = SignedRatio("AlignHeteroMLP", {"input_dim": 2, "output_dim": 2, "hidden_dim": 8, "num_layers": 1},
                      [1], [model_space])
    mu = torch.tensor(u[:5], dtype=torch.float32)
    mean, logvar = net._metric_moments(mu, torch.full((5,), -20.0), model_space)
    assert np.allclose(mean.numpy(), np.log1p(y[:5]) - 8.0, atol=1e-3) and (logvar < -8).all()
    _, wide = net._metric_moments(torch.zeros(1) - t["u_mean"] / t["u_scale"], torch.zeros(1), model_space)
    assert wide.item() > 0


def test_target_only_learns_through_the_sign_saves_a_loadable_member_and_warm_starts(tmp_path):
    root = _signed_dataset(tmp_path / "d")
    res = tmp_path / "res"
    summary = train_target_only.main(["--data-dir", str(root), "--results-dir", str(res), "--epochs", "3",
                                      "--set", "SIGNED_RATIO=true", *TINY])
    ckpt = res / "5t_opamp_target_only_hetero.pth"
    meta = read_checkpoint_meta(ckpt)
    assert meta["model_class"] == "SignedRatio" and summary["extra"]["signed_metrics"] == ["cmrr"]
    assert meta["model_kwargs"]["columns"] == [4] and meta["model_kwargs"]["inner_class"] == "AlignHeteroMLP"
    model, _ = load_checkpoint(ckpt)                         # weights_only, rebuilt from the registry
    x = torch.as_tensor(get_data_and_scalers("5t_opamp", root, seed=42)["target_test"][0])
    mean, logvar = model.mean_logvar(x)
    assert torch.isfinite(mean).all() and torch.isfinite(logvar).all()
    assert np.isfinite(summary["test"]["cmrr"]["r2_log"])

    warm = train_target_only.main(["--data-dir", str(root), "--results-dir", str(tmp_path / "warm"), "--epochs", "1",
                                   "--set", f"WARM_START_FROM={res}", "--set", "SIGNED_RATIO=true", *TINY])
    assert warm["extra"]["warm_start"].endswith(ckpt.name)
    warm_meta = read_checkpoint_meta(tmp_path / "warm" / ckpt.name)
    assert warm_meta["model_kwargs"]["transforms"] == meta["model_kwargs"]["transforms"]   # the outputs keep their meaning

    off = train_target_only.main(["--data-dir", str(root), "--results-dir", str(tmp_path / "off"), "--epochs", "1",
                                  "--set", "SIGNED_RATIO=false", *TINY])
    assert off["extra"]["signed_metrics"] == []
    assert read_checkpoint_meta(tmp_path / "off" / ckpt.name)["model_class"] == "AlignHeteroMLP"
    with pytest.raises(ToolkitError, match=r"expected|class"):
        train_target_only.main(["--data-dir", str(root), "--results-dir", str(tmp_path / "mix"), "--epochs", "1",
                                "--set", f"WARM_START_FROM={tmp_path / 'off'}", "--set", "SIGNED_RATIO=true", *TINY])


def test_deep_ensemble_and_refit_work_through_the_sign(tmp_path):
    root = _signed_dataset(tmp_path / "d")
    res = tmp_path / "res"
    summary = train_target_only.main(["--data-dir", str(root), "--results-dir", str(res), "--epochs", "2",
                                      "--set", "TARGET_ONLY_NETS=2", "--set", "REFIT=train+val",
                                      "--set", "SIGNED_RATIO=true", *TINY])
    meta = read_checkpoint_meta(res / "5t_opamp_target_only_hetero.pth")
    assert meta["model_class"] == "SignedRatio" and meta["model_kwargs"]["inner_class"] == "DeepEnsemble"
    assert "oof_val" in summary["extra"] and np.isfinite(np.asarray(summary["extra"]["oof_val"]["var"])).all()


def test_data_check_reports_the_share_of_each_sign(tmp_path, capsys):
    from data_loader import cli
    root = _signed_dataset(tmp_path / "d")
    d = cli.main(["--opamp", "5t_opamp", "--data-dir", str(root)])
    out = capsys.readouterr().out
    assert "signs of ratio metrics" in out and "target_signs" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("cmrr") and "source" in ln and "%" in ln)
    x = d["raw"]["source"][0]                                   # kept rows: the failed ones are not counted
    assert f"source {100 * (x.w1 < x.w2).mean():.1f} %" in line


def test_auto_trains_both_targets_and_keeps_the_lower_val_nll(tmp_path):
    """SIGNED_RATIO='auto': the two candidates are exactly the runs SIGNED_RATIO=true and =false would make (same
    seed), the kept one has the lower val NLL.  With a warm start the parent's kind refines it and the other kind
    starts fresh (the runs forcing each would make), so a choice made on a few rows is not kept for good."""
    root = _signed_dataset(tmp_path / "d")
    run = lambda name, *extra: train_target_only.main(   # noqa: E731
        ["--data-dir", str(root), "--results-dir", str(tmp_path / name), "--epochs", "3", *extra, *TINY])
    auto = run("auto", "--set", "SIGNED_RATIO=auto")
    on, off = run("on", "--set", "SIGNED_RATIO=true"), run("off", "--set", "SIGNED_RATIO=false")
    both = auto["extra"]["signed_ratio_val_nll"]
    assert both["signed"] == pytest.approx(on["val"]["nll"], rel=1e-6)
    assert both["log1p"] == pytest.approx(off["val"]["nll"], rel=1e-6)
    kept = "signed" if both["signed"] < both["log1p"] else "log1p"
    assert auto["val"]["nll"] == pytest.approx(min(both.values()), rel=1e-6)
    assert auto["extra"]["signed_metrics"] == (["cmrr"] if kept == "signed" else [])
    assert auto["test"] == (on if kept == "signed" else off)["test"]
    ckpt = "5t_opamp_target_only_hetero.pth"
    fresh = {kind: run(f"fresh_{kind}", "--epochs", "1", "--set", f"SIGNED_RATIO={flag}")
             for kind, flag in (("signed", "true"), ("log1p", "false"))}
    for parent, kind, other in (("on", "signed", "log1p"), ("off", "log1p", "signed")):
        warm_from = ["--set", f"WARM_START_FROM={tmp_path / parent}"]
        warm = run(f"warm_{parent}", "--epochs", "1", "--set", "SIGNED_RATIO=auto", *warm_from)
        refined = run(f"refined_{parent}", "--epochs", "1", "--set", f"SIGNED_RATIO={parent == 'on'}", *warm_from)
        both = warm["extra"]["signed_ratio_val_nll"]
        assert warm["extra"]["signed_ratio_refined"] == kind
        assert both[kind] == pytest.approx(refined["val"]["nll"], rel=1e-6)     # the parent's kind, refined
        assert both[other] == pytest.approx(fresh[other]["val"]["nll"], rel=1e-6)   # the other, from scratch
        kept = min(both, key=both.get)
        assert warm["val"]["nll"] == pytest.approx(both[kept], rel=1e-6)
        assert (warm["extra"]["warm_start"] is not None) == (kept == kind)   # a fresh winner has no parent
        cls = "SignedRatio" if kept == "signed" else "AlignHeteroMLP"
        assert read_checkpoint_meta(tmp_path / f"warm_{parent}" / ckpt)["model_class"] == cls


def test_gp_member_learns_through_the_sign_and_auto_chooses_per_metric(tmp_path):
    """The GP member with SIGNED_RATIO: a SignedRatio around the StackedGP (weights_only round trip); only the
    signed metric's GP differs from the log1p run; 'auto' keeps, per metric, the GP of lower out-of-sample val
    NLL, and its member predicts exactly as the run that forced that choice."""
    from training import train, train_gp
    root = _signed_dataset(tmp_path / "d", n_target=120)
    res = tmp_path / "res"
    common = ["--data-dir", str(root), "--results-dir", str(res), *TINY]
    train.main([*common, "--epochs", "2"])
    ckpt = res / "5t_opamp_gp_stack.pth"
    runs = {}
    for value in ("true", "false", "auto"):
        summary = train_gp.main([*common, "--set", f"SIGNED_RATIO={value}", "--set", "GP_RESTARTS=0"])
        model, meta = load_checkpoint(ckpt)                       # weights_only, rebuilt from the registry
        runs[value] = (summary, model, meta)
    on, off, auto = runs["true"], runs["false"], runs["auto"]
    assert on[2]["model_class"] == "SignedRatio" and on[2]["model_kwargs"]["inner_class"] == "StackedGP"
    assert off[2]["model_class"] == "StackedGP" and on[0]["extra"]["signed_metrics"] == ["cmrr"]
    x = torch.as_tensor(get_data_and_scalers("5t_opamp", root, seed=42)["target_test"][0])
    with torch.no_grad():
        (m_on, lv_on), (m_off, lv_off) = on[1].mean_logvar(x), off[1].mean_logvar(x)
    assert torch.isfinite(m_on).all() and torch.isfinite(lv_on).all()
    assert torch.allclose(m_on[:, :4], m_off[:, :4]) and not torch.allclose(m_on[:, 4], m_off[:, 4])
    oof_on, oof_off = (np.asarray(r[0]["extra"]["oof_val"]["mean"]) for r in (on, off))
    assert np.allclose(oof_on[:, :4], oof_off[:, :4]) and np.isfinite(oof_on).all()   # model space, every column
    both = auto[0]["extra"]["signed_ratio_val_nll"]["cmrr"]
    kept = on if both["signed"] < both["log1p"] else off
    assert auto[0]["extra"]["signed_metrics"] == kept[0]["extra"]["signed_metrics"]
    with torch.no_grad():
        assert torch.allclose(auto[1].mean_logvar(x)[0], kept[1].mean_logvar(x)[0])
    assert np.allclose(auto[0]["extra"]["oof_val"]["mean"], kept[0]["extra"]["oof_val"]["mean"])
