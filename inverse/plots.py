"""The Pareto-front PNG of ``inverse_opt --objective ... --pareto ...`` (matplotlib, Agg backend)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.atomic import atomic_path  # noqa: E402


def _label(objective) -> str:
    return f"{objective.name} ({objective.unit})" if objective.unit else objective.name


def pareto_plot(path, front, objectives, *, title: str, verified=None):
    """Predicted front (``front``: columns objective_<name> of both objectives) as a step line; ``verified``
    (optional (a, b, passed) arrays, physical): the same designs as simulated, by whether they met the spec."""
    a, b = (front[f"objective_{o.name}"].to_numpy(float) for o in objectives)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.step(a, b, where="post", color="C0", lw=1, alpha=0.6)
    ax.plot(a, b, "o", ms=4, color="C0", label=f"predicted front ({len(front)} designs meeting the other goals)")
    if verified is not None and len(verified[0]):
        va, vb, ok = (np.asarray(v) for v in verified)
        if ok.any():
            ax.plot(va[ok], vb[ok], "s", ms=6, mfc="none", color="C2", label="simulated: meets the spec")
        if (~ok).any():
            ax.plot(va[~ok], vb[~ok], "x", ms=6, color="C3", label="simulated: misses a goal")
    for axis, o, values in ((ax.xaxis, objectives[0], a), (ax.yaxis, objectives[1], b)):
        if len(values) and np.all(values > 0) and values.max() / values.min() > 20:
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
    ax.set_xlabel(f"{_label(objectives[0])}: {'lower' if objectives[0].sense > 0 else 'higher'} is better")
    ax.set_ylabel(f"{_label(objectives[1])}: {'lower' if objectives[1].sense > 0 else 'higher'} is better")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
