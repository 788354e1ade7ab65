"""The learning-curve PNG of active learning: mean log-space R^2 vs number of target-process simulations."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.atomic import atomic_path  # noqa: E402


def learning_curve(path, series: dict, *, title: str, reference: tuple | None = None):
    """One line per ``series`` entry ``{label: [(simulations, r2), ...]}`` or ``{label: [(simulations, mean, sd)]}``
    (a shaded ± sd band); ``reference`` = (label, r2) draws a horizontal line (e.g. a random-sample bar)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in series.items():
        pts = np.asarray(sorted(points), float)
        line, = ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, label=label)
        if pts.shape[1] == 3:
            ax.fill_between(pts[:, 0], pts[:, 1] - pts[:, 2], pts[:, 1] + pts[:, 2], color=line.get_color(), alpha=0.15)
    if reference is not None:
        ax.axhline(reference[1], color="grey", ls="--", lw=1, label=reference[0])
    ax.set_xlabel("target-process (B) simulations")
    ax.set_ylabel("mean log-space R² (1 = perfect)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
