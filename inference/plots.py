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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n):
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def parity_plot(path, truth, pred, cols, *, std=None, title="", members=None):
    """``truth``/``pred``/``std`` (N, M) physical; ``members`` {name: pred (N, M)} drawn faintly."""
    rows, ncols = _grid(len(cols))
    fig, axes = plt.subplots(rows, ncols, figsize=(4.2 * ncols, 4.0 * rows), squeeze=False)
    for j, col in enumerate(cols):
        ax = axes[j // ncols][j % ncols]
        y, p = truth[:, j], pred[:, j]
        for name, mp in (members or {}).items():
            ax.scatter(y, mp[:, j], s=6, alpha=0.25, label=name)
        if std is not None:
            ax.errorbar(y, p, yerr=std[:, j], fmt="none", ecolor="0.6", alpha=0.3, lw=0.6)
        ax.scatter(y, p, s=8, color="k", label="ensemble")
        finite = np.concatenate([y, p])
        lo, hi = np.nanmin(finite), np.nanmax(finite)
        if np.all(y > 0) and y.min() > 0 and y.max() / y.min() > LOG_SPAN:
            ax.set_xscale("log")
            ax.set_yscale("log")
            lo = max(lo, y.min() / 10)
        ax.plot([lo, hi], [lo, hi], "r--", lw=1)
        ax.set_title(col)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        if j == 0:
            ax.legend(fontsize=7)
    for j in range(len(cols), rows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def calibration_plot(path, levels, curves: dict, *, title=""):
    """``curves`` {label: observed coverage per level}."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for label, obs in curves.items():
        ax.plot(levels, obs, marker="o", ms=3, label=label, ls="-" if "after" in label else ":")
    ax.set_xlabel("expected coverage (central interval)")
    ax.set_ylabel("observed coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return _save(fig, path)


def training_curves(path, histories: dict, *, title=""):
    """``histories`` {stage: {phase: [ {epoch, train_loss, val_*}, ... ]}}; one subplot per stage."""
    stages = [s for s, h in histories.items() if h]
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
        ax.legend(fontsize=7)
    for i in range(len(stages), rows * ncols):
        axes[i // ncols][i % ncols].axis("off")
    fig.suptitle(title)
    return _save(fig, path)
