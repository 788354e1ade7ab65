"""PNG figures for the ensemble report (matplotlib, Agg backend: no display needed).

* ``parity_plot``: predicted vs true per metric (one subplot each), log axes when the metric is
  strictly positive and spans more than two decades (max/min > 100).
* ``calibration_plot``: expected vs observed central-interval coverage, before/after calibration.
* ``training_curves``: per stage (checkpoint) and phase, train loss and val criterion per epoch.
"""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.atomic import atomic_path  # noqa: E402

LOG_SPAN = 100.0   # max/min above which a positive metric gets log axes


def _save(fig, path):
    fig.tight_layout(rect=(0, 0, 1, 0.96))   # subplot titles clear of the x labels above; room for the suptitle
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n):
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def parity_plot(path, truth, pred, cols, *, std=None, title="", members=None, units=None):
    """``truth``/``pred``/``std`` (N, M) physical; ``members`` {name: pred (N, M)} drawn faintly; ``units``
    {metric: unit} for the axis labels where known."""
    units = units or {}
    rows, ncols = _grid(len(cols))
    fig, axes = plt.subplots(rows, ncols, figsize=(4.2 * ncols, 4.0 * rows), squeeze=False)
    for j, col in enumerate(cols):
        ax = axes[j // ncols][j % ncols]
        y, p = truth[:, j], pred[:, j]
        for name, mp in (members or {}).items():
            ax.scatter(y, mp[:, j], s=6, alpha=0.25, label=name)
        if std is not None:
            ax.errorbar(y, p, yerr=std[:, j], fmt="none", ecolor="0.6", alpha=0.3, lw=0.6,
                        label="±1 std of the ensemble\n(calibrated in model space,\nmapped to physical units)")
        ax.scatter(y, p, s=8, color="k", label="ensemble")
        finite = np.concatenate([y, p])
        lo, hi = np.nanmin(finite), np.nanmax(finite)
        if np.all(y > 0) and y.min() > 0 and y.max() / y.min() > LOG_SPAN:
            ax.set_xscale("log")
            ax.set_yscale("log")
            lo = max(lo, y.min() / 10)
        ax.plot([lo, hi], [lo, hi], "r--", lw=1)
        ax.set_title(col)
        unit = f" ({units[col]})" if units.get(col) else ""
        ax.set_xlabel(f"true{unit}")
        ax.set_ylabel(f"predicted{unit}")
    spare = [axes[j // ncols][j % ncols] for j in range(len(cols), rows * ncols)]
    for ax in spare:
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if spare:                  # the legend in an empty panel, clear of the points
        spare[0].legend(handles, labels, fontsize=8, loc="center")
    else:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def calibration_plot(path, levels, curves: dict, *, title=""):
    """``curves`` {label: observed coverage per level}."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for label, obs in curves.items():
        ls = "-" if "after" in label else ":"
        if label.startswith("ensemble"):   # the headline: its own colour, drawn over the members'
            ax.plot(levels, obs, marker="o", ms=4, lw=2.2, color="black", zorder=5, ls=ls,
                    label=label + (" (conformal multipliers)" if "after" in label else ""))
            continue
        ax.plot(levels, obs, marker="o", ms=3, lw=1, alpha=0.7, label=label, ls=ls)
    ax.set_xlabel("expected coverage (central interval)")
    ax.set_ylabel("observed coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return _save(fig, path)


def training_curves(path, histories: dict, *, title=""):
    """``histories`` {stage: {phase: [ {epoch, train_loss, val_*}, ... ]}}; one subplot per stage."""
    # a stage with one recorded point (the GP's single fit) has no curve to draw
    stages = [s for s, h in histories.items() if h and sum(len(rows_ or []) for rows_ in h.values()) > 1]
    if not stages:
        return None
    rows, ncols = _grid(len(stages))
    fig, axes = plt.subplots(rows, ncols, figsize=(4.5 * ncols, 3.6 * rows), squeeze=False)
    for i, stage in enumerate(stages):
        ax = axes[i // ncols][i % ncols]
        offset = 0
        for phase, rows_ in histories[stage].items():
            if not rows_:
                continue
            ep = np.array([r["epoch"] for r in rows_]) + offset
            tag = f"{phase}: " if len(histories[stage]) > 1 else ""
            if "train_loss" in rows_[0]:
                ax.plot(ep, [r["train_loss"] for r in rows_], label=f"{tag}train loss")
            for key in [k for k in rows_[0] if k.startswith("val_")][:1]:
                ax.plot(ep, [r[key] for r in rows_], "--", label=f"{tag}{key}")
            offset = ep[-1]
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss / val metric (model space)")
        ax.legend(fontsize=7)
    for i in range(len(stages), rows * ncols):
        axes[i // ncols][i % ncols].axis("off")
    fig.suptitle(title)
    return _save(fig, path)
