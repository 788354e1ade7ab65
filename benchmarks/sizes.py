"""Target-training sizes as the harness, the sweep and the replays name them: ``"50"`` or ``"all"``.

    n_label("0") == "all";  n_value("all") == 0 (N_TARGET_TRAIN: 0 = every row);  sorted(ns, key=n_order)
"""
from core.errors import ToolkitError


def n_label(raw) -> str:
    """``--n-target`` text -> its label: a positive integer as text, or ``"all"`` (also for 0)."""
    text = str(raw).strip().lower()
    if text in ("all", "0"):
        return "all"
    if not text.isdigit() or int(text) < 1:
        raise ToolkitError(f"--n-target takes positive integers or 'all', got {raw!r}. Example: --n-target 50 100 all")
    return str(int(text))


def n_value(label: str) -> int:
    """The N_TARGET_TRAIN setting of a label."""
    return 0 if label == "all" else int(label)


def n_order(label: str):
    """Sort key: sizes ascending, ``"all"`` last."""
    return (1, 0) if label == "all" else (0, int(label))
