"""A one-page Markdown report: metric table (members + ensemble), calibration, embedded PNGs."""
from pathlib import Path

from core.atomic import atomic_write_text


def _pct(x):
    return f"{100 * x:.1f} %"


def write_report(path, record: dict, images: dict) -> Path:
    """``record``: the ensemble metrics JSON dict; ``images``: {caption: png path} (may be empty)."""
    path = Path(path)
    cols = record["y_cols"]
    rows = {**{n: m for n, m in record["members"].items()}, "ensemble": record["ensemble"]}
    split = record["split"]
    sizes = {k: len(v) for k, v in (record.get("data_split") or {}).items() if k.endswith("_idx")}
    config = record.get("config") or {}
    lines = [f"# {record['opamp']}: ensemble evaluation", "",
             f"Split `{split}` (n = {record['n']}), physical units; R²_log on log10 values (on the physical values "
             f"for a metric that is not log-scaled). Calibration fitted on `target_val` only. Coverage: the members' "
             f"central Gaussian intervals in model space; the ensemble's use split-conformal multipliers fitted on "
             f"`target_val` (its `predict_interval`)."
             + (" **Dry run: numbers are meaningless.**" if record.get("dry_run") else "")
             + (" **No target_test rows: these are the rows every member early-stopped on and the fusion and "
                "calibration were fitted on, so the numbers are optimistic.**" if split == "target_val" else ""), "",
             "Rows: " + (", ".join(f"{k[:-4]} {v}" for k, v in sizes.items()) or "not recorded")
             + "".join(f"; {k} {config[k]}" for k in ("N_TARGET_TRAIN", "VAL_SPLIT", "TEST_SPLIT", "SEED")
                       if k in config) + ".", "",
             "| model | mean R² | mean R²_log | mean MAPE | NLL before → after | 68 % cover (before → after) "
             "| 95 % cover (before → after) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        m, cb, ca = r["metrics"]["mean"], r["calibration"]["before"]["mean"], r["calibration"]["after"]["mean"]
        lines.append(f"| {name} | {m['r2']:.4f} | {m['r2_log']:.4f} | {m['mape']:.2f} % | "
                     f"{cb['nll']:.3f} → {ca['nll']:.3f} | {_pct(cb['cov68'])} → {_pct(ca['cov68'])} | "
                     f"{_pct(cb['cov95'])} → {_pct(ca['cov95'])} |")
    lines += ["", "## Ensemble per metric", "",
              "| metric | MSE | MAE | R² | R²_log | MAPE | T (final) | 68 % | 95 % |", "|---|---|---|---|---|---|---|---|---|"]
    ens = record["ensemble"]
    for c in cols:
        r, cal = ens["metrics"][c], ens["calibration"]["after"][c]
        r2_log = f"{r['r2_log']:.4f}" + ("" if r.get("log_space", True) else " (physical: not > 0)")
        lines.append(f"| {c} | {r['mse']:.4g} | {r['mae']:.4g} | {r['r2']:.4f} | {r2_log} | "
                     f"{r['mape']:.2f} % | {ens['final_temperature'][c]:.3f} | {_pct(cal['cov68'])} | "
                     f"{_pct(cal['cov95'])} |")
    lines += ["", "Member temperatures (T² = mean((y−μ)²/σ²) on target_val):", ""]
    for name, r in record["members"].items():
        lines.append(f"- {name}: " + ", ".join(f"{c} {t:.3f}" for c, t in r["temperature"].items()))
    for caption, img in images.items():
        if img:
            lines += ["", f"## {caption}", "", f"![{caption}]({Path(img).name})"]
    lines.append("")
    atomic_write_text(path, "\n".join(lines))
    return path
