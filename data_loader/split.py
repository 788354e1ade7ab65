"""The target split protocol, fixed so numbers are comparable with published ones.

Test rows are taken first from the raw target rows in file order with
``sklearn.model_selection.train_test_split(test_size=test_split, random_state=seed)``;
validation rows are then taken from the remainder the same way (``val_split`` is a fraction
of the remainder).  Failed rows are dropped afterwards, so the same seed always selects the
same rows whatever the failure rule.  ``target_test`` is never used for fitting or selection.

A targets file with a ``split`` column (train | val | test per row) is split as it says instead
(:func:`split_from_labels`): a fixed split of your own, or rows whose split must not change as the file
grows (``python -m active`` marks each design's split once, when it is simulated).
"""
import numpy as np
from sklearn.model_selection import train_test_split

from core.errors import ToolkitError
from data_loader.layout import SPLIT_VALUES

MIN_TRAIN_ROWS = 8   # below this no stage can fit anything meaningful
MIN_VAL_ROWS = 2     # early stopping needs at least a couple of rows to compare epochs
SEEDED_PROTOCOL = "sklearn train_test_split: test first from target file order, then val from the rest"


def check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ToolkitError(f"{name} must be in {interval}, got {value}. Example: --{name.lower().replace('_', '-')} 0.2")


def split_target_rows(n_rows: int, *, val_split: float, test_split: float, seed: int) -> dict:
    """Row indices (into the target files) of train / val / test; test is empty when test_split == 0."""
    check_fraction("VAL_SPLIT", val_split, allow_zero=False)
    check_fraction("TEST_SPLIT", test_split, allow_zero=True)
    idx = np.arange(n_rows)
    if test_split > 0:
        if round(n_rows * test_split) < 1 or n_rows - int(np.ceil(n_rows * test_split)) < 2:
            raise ToolkitError(f"TEST_SPLIT={test_split} cannot split {n_rows} target rows into test and rest. "
                               f"Use more target rows or a different --test-split (setting TEST_SPLIT).")
        rest, test = train_test_split(idx, test_size=test_split, random_state=seed)
    else:
        rest, test = idx, idx[:0]
    if len(rest) * val_split < 1:
        raise ToolkitError(f"VAL_SPLIT={val_split} of the {len(rest)} non-test target rows is < 1 row. "
                           f"Raise --val-split or provide more target rows.")
    if len(rest) - int(np.ceil(len(rest) * val_split)) < 1:  # sklearn's own error would escape as a traceback
        raise ToolkitError(f"VAL_SPLIT={val_split} of the {len(rest)} non-test target rows leaves no training rows. "
                           f"Lower --val-split or provide more target rows.")
    train, val = train_test_split(rest, test_size=val_split, random_state=seed)
    return {"train": np.asarray(train), "val": np.asarray(val), "test": np.asarray(test)}


def split_from_labels(labels) -> dict:
    """Row indices of train / val / test as a ``split`` column gives them (values already checked)."""
    labels = np.asarray(labels)
    return {name: np.flatnonzero(labels == name) for name in SPLIT_VALUES}


def split_source_rows(n_rows: int, *, val_split: float, seed: int) -> dict:
    """Row indices (into the source arrays) of the baseline's train / holdout rows.

    With ``BASELINE_VAL="source"`` the source baseline early-stops on these held-out *source* rows
    and so is trained to convergence on A; the seed's default stops it on target_val, where the
    source model's error measures the process shift (docs/RESULTS.md compares the two).
    """
    check_fraction("SOURCE_VAL_SPLIT", val_split, allow_zero=False)
    n_val = int(np.ceil(n_rows * val_split))
    if n_val < MIN_VAL_ROWS or n_rows - n_val < MIN_TRAIN_ROWS:
        raise ToolkitError(f"SOURCE_VAL_SPLIT={val_split} of {n_rows} source rows gives {n_val} holdout and "
                           f"{n_rows - n_val} training rows; the baseline needs >= {MIN_VAL_ROWS} holdout and "
                           f">= {MIN_TRAIN_ROWS} training rows. Provide more source rows, change --source-val-split, "
                           f"or validate on the target: --baseline-val target.")
    train, val = train_test_split(np.arange(n_rows), test_size=n_val, random_state=seed)
    return {"train": np.asarray(train), "val": np.asarray(val)}


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Row -> fold (0..folds-1) for K-fold cross-fitting: balanced (sizes differ by at most one), from a
    seeded permutation, so the same (n, folds, seed) always gives the same folds."""
    ids = np.empty(n, dtype=int)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return ids
