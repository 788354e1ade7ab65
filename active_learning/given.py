"""The B designs a user simulated before the loop (``python -m active --init-from FOLDER``): read as ledger rows,
and checked to be what the loop itself would simulate (process, circuit, design space) before anything is written.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from active_learning.ledger import STATUS
from core.errors import ToolkitError
from data_loader.layout import check_features_in_space, read_meta_file, space_boxes
from inverse.optimise import design_keys
from inverse.verify import same_circuit, same_process
from spice.circuits import BUILTINS as BUILTIN_CIRCUITS, circuit as load_circuit
from spice.conditions import Conditions

GIVEN = "given"      # the ledger's rule of --init-from designs (simulated before the loop, by the user)


def given_designs(folder, x_cols: list, y_cols: list, seed: int, exclude: set) -> pd.DataFrame:
    """The --init-from designs as ledger rows (round 0, rule ``given``, design ids -1, -2, ...), minus designs of
    the fixed test set (``exclude``: they stay unseen) and repeats; one line naming the file when its columns
    differ from the source data's."""
    from data_loader.layout import read_folder
    got = read_folder(folder)
    for kind, have, want, f in (("design variable", got.features.columns, x_cols, got.features_file),
                                ("metric", got.targets.columns, y_cols, got.targets_file)):
        missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
        if missing or extra:   # extra design variables: most likely another circuit's designs
            what = (f"lacks the {kind} columns {missing}" if missing else "") + (" and " if missing and extra else "") \
                + (f"has {kind} columns {extra} that are not" if extra else "")
            raise ToolkitError(f"--init-from {f} {what} in the source data (it has {list(have)}, the source "
                               f"{list(want)}). Fix: the same columns as the "
                               f"{'features' if kind != 'metric' else 'targets'} of the source folder.")
    rows = pd.concat([got.features[x_cols], got.targets[y_cols]], axis=1).astype(float)
    ok = np.isfinite(rows[y_cols].to_numpy()).all(axis=1)
    # as the data loader reads a status column (data_loader.failures): "OK" and " ok" are ok
    status = (got.status.fillna("").astype(str).str.strip().str.lower().to_numpy() if got.status is not None
              else np.full(len(rows), "ok"))
    rows[STATUS] = np.where(ok & (status == "ok"), "ok", np.where(status == "ok", "failed (non-finite metric)", status))
    rows.insert(0, "design", -(np.arange(len(rows)) + 1))
    rows.insert(1, "round", 0)
    rows.insert(2, "rule", GIVEN)
    rows.insert(3, "seed", seed)
    keys = design_keys(rows, x_cols)
    keep = ~keys.isin(exclude).to_numpy() & ~keys.duplicated().to_numpy()
    if not keep.all():
        print(f"[active] --init-from: {int((~keep).sum())} of {len(rows)} designs left out (in the fixed test set, "
              f"or repeated)", flush=True)
    return rows[keep].reset_index(drop=True)


def check_given_provenance(folder, given: pd.DataFrame, x_cols: list, circuit: str, process: str,
                           conditions: dict | None = None) -> None:
    """The --init-from designs become the loop's process-B rows, so they must be what the loop simulates: the
    process and circuit the folder's meta.json records (when ``spice.generate`` wrote one) and, with or without
    it, values in the circuit's design space and units (a source folder, another circuit's data or widths in
    metres were taken in silently: round 0 then scored R2_log -6), and, when the folder records them, the run
    conditions the loop simulates at (``conditions``: temp / vdd / corner of the target data)."""
    from core.freshness import file_sha256
    meta_path = Path(folder) / "meta.json"
    meta = read_meta_file(meta_path)
    theirs = meta.get("process_file") or meta.get("process")
    if theirs and not same_process(theirs, process):
        raise ToolkitError(f"--init-from {folder}: its meta.json says these designs were simulated in process "
                           f"{theirs}, but the loop simulates in {process}. Fix: a folder of designs simulated in "
                           f"{process}, or --process {theirs} if that is the target process.")
    theirs_at, ours_at = (Conditions(**c).to_dict() for c in (meta.get("conditions") or {}, conditions or {}))
    if meta and theirs_at != ours_at:   # a folder without meta.json records no conditions: nothing to compare
        raise ToolkitError(f"--init-from {folder}: its meta.json says these designs were simulated at "
                           f"{Conditions(**theirs_at).describe()}, but the loop simulates at "
                           f"{Conditions(**ours_at).describe()} (the target data's conditions). Fix: designs "
                           f"simulated at {Conditions(**ours_at).describe()}, or a --data-dir whose target data were "
                           f"made at {Conditions(**theirs_at).describe()}.")
    loop_circuit = load_circuit(circuit)
    recorded_sha = (meta.get("recipe") or {}).get("circuit_sha256")
    recorded = meta.get("circuit_file")
    if recorded_sha:                       # spice.generate's record of the circuit file's bytes
        other = recorded_sha != file_sha256(loop_circuit.path)
    elif recorded and (recorded in BUILTIN_CIRCUITS or Path(recorded).is_file()):
        other = not same_circuit(recorded, circuit)
    else:                                  # no record (a user's own data): the design-space check below
        other = False
    if other:
        raise ToolkitError(f"--init-from {folder}: its meta.json says these designs come from circuit {recorded}"
                           f"{' (another version of the file)' if recorded_sha else ''}, but the loop simulates "
                           f"{circuit}. Fix: a folder of {circuit}'s designs, or --circuit {recorded}.")
    x = given[x_cols].to_numpy(float)
    check_features_in_space(x_cols, np.nanmin(x, axis=0), np.nanmax(x, axis=0),
                            space_boxes(loop_circuit.design_space()), source=f"the circuit {circuit}",
                            fix=f"--init-from designs in the units of {circuit}'s variables")
