"""Every design an active-learning loop simulated, on disk: the loop's memory and resume point.

``<run>/acquired.csv``: one row per simulated design, in the order simulated, with its provenance
(``design``: index in the run's design stream, ``round``, ``rule``, ``seed``), its features, its
metrics (NaN when the simulation failed), the sign of each ratio metric the simulator signs (``cmrr_sign``,
``spice.measure``; NaN for a design it did not simulate) and ``status`` ("ok" or the simulator's failure reason).
A design is in the ledger at most once; failed ones stay (they count against the budget and are
never simulated again).  Written atomically after every simulated chunk, so an interrupted loop
loses at most the chunks in flight.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_path, atomic_write_text
from data_loader.layout import SPLIT_COL
from spice.measure import SIGN_SUFFIX, sign_column

PROVENANCE = ["design", "round", "rule", "seed"]
STATUS = "status"


def read_ledger(path, x_cols, y_cols, signed=()) -> pd.DataFrame:
    """The ledger, or an empty one with its columns; ``signed``: the metrics whose sign it records (a ledger
    written before signs were recorded gets them as NaN)."""
    cols = PROVENANCE + list(x_cols) + list(y_cols) + [sign_column(m) for m in signed] + [STATUS]
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    return pd.read_csv(path).reindex(columns=cols)


def append_rows(path, ledger: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``ledger`` + ``rows`` written atomically to ``path``; returns the new ledger.  A design index
    already there is a programming error (the loop never simulates a design twice)."""
    again = set(rows["design"]) & set(ledger["design"])
    if again:
        raise ValueError(f"designs {sorted(again)[:5]} are already in the ledger")
    missing = [c for c in ledger.columns if c not in rows.columns]
    if any(not c.endswith(SIGN_SUFFIX) for c in missing):
        raise ValueError(f"rows lack the ledger columns {missing}")
    rows = rows.reindex(columns=ledger.columns)   # designs given, not simulated, have no sign
    out = pd.concat([ledger, rows], ignore_index=True) if len(ledger) else rows
    out = out.reset_index(drop=True)
    with atomic_path(Path(path)) as tmp:
        out.to_csv(tmp, index=False)
    return out


def training_order(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger in the row order of the training data files (by round, then design): chunks finish in any order
    (parallel workers), and a fixed order keeps the files, and so the stages trained on them, the same."""
    return ledger.sort_values(["round", "design"], kind="stable")


UNIFORM = "random"   # the ledger's rule of a design drawn uniformly from the pool (round 0, or a val draw)


def assign_split(ledger: pd.DataFrame, val_split: float, seed: int) -> pd.Series:
    """"train" or "val" per ledger row (same index): in each round, ceil(val_split x its OK designs) of them, drawn
    by a generator seeded with (seed, round), are validation rows; the rest (failed ones too) are training rows.
    In a round that mixes uniformly drawn designs (rule ``random``) with a rule's picks, the validation rows are
    drawn among the uniform ones only (at most all of them): a rule's picks lean to the hard edges of the space,
    and early stopping, the fusion and the interval calibration fitted there are fitted for those edges, not for
    the designs the surrogate is used on (``ACTIVE_VAL_DESIGNS = "uniform"`` draws them; ``active``).

    A design keeps its split for the whole run: a round's designs are final before it trains, and later rounds
    only add designs.  Re-splitting every round instead would make last round's training rows, which the
    warm-started networks have fitted, this round's early-stopping and calibration rows.  Each round is split
    on its own so validation follows the rule's designs as they move."""
    split = pd.Series("train", index=ledger.index, dtype=object)
    for round_no, rows in ledger.groupby("round", sort=True):
        ok = rows[rows[STATUS] == "ok"].sort_values("design")
        n_val = math.ceil(len(ok) * val_split)
        uniform = ok[ok["rule"] == UNIFORM]
        eligible = uniform if 0 < len(uniform) < len(ok) else ok
        rng = np.random.default_rng([int(seed), int(round_no)])
        split.loc[eligible.index[rng.permutation(len(eligible))[:n_val]]] = "val"
    return split


def write_training_data(ledger: pd.DataFrame, folder, x_cols, y_cols, *, val_split: float, seed: int) -> None:
    """The ledger's designs, by round and design index, in the data layout (``features.csv``, ``targets.csv`` with
    ``status`` and ``split`` (:func:`assign_split`)), so every stage reads them like any target data (failed rows
    are dropped by their status; the split column fixes which rows validate), and
    ``metric_signs.csv`` for the metrics whose sign every OK design has.  A file whose
    content would not change is left alone: its time stays, so stages trained on it stay up to date."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ledger = training_order(ledger)
    frames = {"features.csv": ledger[list(x_cols)].reset_index(drop=True),
              "targets.csv": ledger[list(y_cols) + [STATUS]].assign(**{SPLIT_COL: assign_split(ledger, val_split, seed)})
              .reset_index(drop=True)}
    ok = (ledger[STATUS] == "ok").to_numpy()
    signed = [m for m in y_cols if sign_column(m) in ledger.columns
              and pd.to_numeric(ledger[sign_column(m)], errors="coerce")[ok].notna().all()]
    if signed:
        frames["metric_signs.csv"] = (ledger[[sign_column(m) for m in signed]].set_axis(signed, axis=1)
                                      .where(ok[:, None]).reset_index(drop=True))
    for name, frame in frames.items():
        path, text = folder / name, frame.to_csv(index=False)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        atomic_write_text(path, text)
