"""Find and read one domain of a dataset laid out as

    <data_dir>/<circuit>/<source|target>/ *features*.csv  *targets*.csv  [*metric_signs*.csv]

Rows of the CSVs are matched by position.  Column names come from the headers.  The optional
``*metric_signs*.csv`` gives, for a metric that is the magnitude of a ratio (cmrr = |Adm/Acm|), the sign of
that ratio per row (+1 / -1; empty where the simulation failed): ``spice.generate`` writes it, and a model
may learn the signed ratio, which stays smooth where the magnitude spikes (``models.signed_ratio``).
Every problem a user can cause is a ToolkitError naming the path, what was expected and
what to do.
"""
import csv
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ToolkitError
from spice.circuit_file import check_variable

DOMAINS = ("source", "target")
SIGNS_PATTERN = "*metric_signs*.csv"   # optional: the sign of each row's ratio metrics (spice.generate writes it)
STATUS_COL = "status"  # optional column in *targets*.csv written by `spice.generate --keep-failed`
SPLIT_COL = "split"    # optional column in *targets*.csv: each row's split (train | val | test), used as given
SPLIT_VALUES = ("train", "val", "test")
UNIT_SLIP = 10.0       # data this many times beyond a declared range: another unit (m vs um), not a wider sweep


@dataclass
class DomainData:
    features: pd.DataFrame      # numeric, one column per design variable
    targets: pd.DataFrame       # numeric, one column per metric
    status: pd.Series | None    # simulator status per row when the file carries one, else None
    features_file: Path
    targets_file: Path
    signs: pd.DataFrame | None = None   # +1 / -1 per row for the ratio metrics the signs file names, else None
    signs_file: Path | None = None
    split: pd.Series | None = None      # "train" / "val" / "test" per row when the targets file has a split column


def list_circuits(data_dir) -> list[str]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def circuit_dir(data_dir, circuit: str) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ToolkitError(f"Data dir {data_dir} does not exist. Expected a folder holding "
                           f"<circuit>/source/ and <circuit>/target/; pass --data-dir or set DATA_DIR in config.py.")
    path = data_dir / circuit
    if not path.is_dir():
        found = list_circuits(data_dir)
        raise ToolkitError(f"Unknown circuit {circuit!r}: no folder {path}. Circuits found in {data_dir}: "
                           f"{', '.join(found) if found else 'none'}. Pass --opamp with one of them, or --data-dir "
                           f"with the folder that holds {circuit}/.")
    return path


def _matching(folder: Path, pattern: str) -> list:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def _one_file(folder: Path, pattern: str, what: str) -> Path:
    files = _matching(folder, pattern)
    if len(files) != 1:
        got = "none" if not files else ", ".join(p.name for p in files)
        raise ToolkitError(f"{folder} must hold exactly one {pattern} ({what}); found {got}. "
                           f"Keep one file per domain (e.g. features.csv) and move the others away.")
    return files[0]


def _read_numeric(path: Path) -> pd.DataFrame:
    try:
        # index_col=False: rows longer than the header (a trailing comma) must not turn the first column into an
        # index and shift every column by one; pandas warns when it drops their extra fields, checked below
        with warnings.catch_warnings(record=True) as dropped:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.EmptyDataError:
        raise ToolkitError(f"{path} is empty. Expected a header row of column names and one row per design.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]}). "
                           f"Save it as comma-separated UTF-8 text with a header row.") from None
    if frame.shape[1] == 0 or len(frame) == 0:
        raise ToolkitError(f"{path} has no data rows. Expected a header row and one row per design.")
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in dropped):
        _refuse_long_rows(path, frame.shape[1])
    header = _raw_header(path)     # pandas renames a repeated name to "x.1" and a blank one to "Unnamed: 0"
    if len(header) == 1 and (sep := next((c for c in (";", "\t", "|") if c in header[0]), None)):
        raise ToolkitError(f"{path} looks {'tab' if sep == chr(9) else repr(sep)}-separated (its header is one column, "
                           f"{header[0][:60]!r}); the data files are comma-separated. Fix: save with commas, e.g. "
                           f"df.to_csv(path, index=False).")
    blank = [i + 1 for i, c in enumerate(header) if not c or _PANDAS_BLANK.match(c)]
    if blank:
        why = ("a DataFrame index saved by to_csv?" if blank[0] == 1 else
               "a comma at the end of the header line?" if blank[0] == len(header) else "an empty column?")
        raise ToolkitError(f"{path}: header column {blank[0]} has no name ({why}). "
                           f"Every column must be a named design variable or metric: save with "
                           f"df.to_csv(path, index=False), or delete that column.")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise ToolkitError(f"{path} repeats column(s) {dupes} in its header. Give every column a unique name "
                           f"(or delete the copies).")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


_PANDAS_BLANK = re.compile(r"^Unnamed: \d+$")


def _refuse_long_rows(path: Path, n_header: int) -> None:
    """Rows with more fields than the header: a trailing comma (empty extra fields) is read as if absent; a value
    beyond the header is one line naming the row (it would be lost, or shift every column)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if len(row) > n_header and any(cell.strip() for cell in row[n_header:]):
                raise ToolkitError(f"{path}: line {line_no} has {len(row)} fields but the header names {n_header} "
                                   f"columns (extra: {row[n_header:][:3]}). Fix: one value per header column in every "
                                   f"row, or name the extra column in the header.")


def _raw_header(path: Path) -> list[str]:
    """The header row as written (``pd.read_csv`` hides repeats and blanks behind new names)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [c.strip() for c in next(csv.reader(f), [])]


def line_of(path: Path, row: int) -> str:
    """Where data row ``row`` (0-based, as pandas reads it) starts in the file: "line L (data row row+1)", the line
    counted as an editor does (blank lines, which pandas skips, and quoted cells over several lines included)."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader, seen, start = csv.reader(f), -1, 1
            next(reader, None)                                   # the header
            start = reader.line_num + 1
            for record in reader:
                if record:                                       # pandas skips empty lines
                    seen += 1
                    if seen == row:
                        return f"line {start} (data row {row + 1})"
                start = reader.line_num + 1
    except (OSError, csv.Error):
        pass
    return f"data row {row + 1}"


def _to_numbers(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Strings -> float; empty/'nan'/'inf' are kept as NaN/inf (failed simulations), text is an error."""
    out = {}
    for col in frame.columns:
        text = frame[col].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        blank = text.str.lower().isin(["", "nan", "na", "none", "null"])
        bad = values.isna() & ~blank
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ToolkitError(f"{path}: column {col!r} has a non-numeric value {frame[col].iloc[row]!r} "
                               f"on {line_of(path, row)}. Every cell must be a number "
                               f"(leave it empty or write nan for a failed simulation).")
        out[col] = values.astype(float)
    return pd.DataFrame(out, index=frame.index)


def read_domain(data_dir, circuit: str, domain: str) -> DomainData:
    """Read and validate one domain folder (features and targets, rows matched by position)."""
    if domain not in DOMAINS:
        raise ToolkitError(f"Unknown domain {domain!r}; expected one of {DOMAINS}.")
    folder = circuit_dir(data_dir, circuit) / domain
    if not folder.is_dir():
        raise ToolkitError(f"Missing folder {folder}. Expected {domain}/ beside "
                           f"{'target' if domain == 'source' else 'source'}/ under {folder.parent}, "
                           f"holding one *features*.csv and one *targets*.csv.")
    return read_folder(folder)


def read_folder(folder) -> DomainData:
    """Read and validate one folder of one *features*.csv and one *targets*.csv (rows matched by position)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ToolkitError(f"Missing folder {folder}: expected a folder holding one *features*.csv and one "
                           f"*targets*.csv.")
    features_file = _one_file(folder, "*features*.csv", "design variables, one row per design")
    targets_file = _one_file(folder, "*targets*.csv", "simulated metrics, rows matched to the features file")
    x_text, y_text = _read_numeric(features_file), _read_numeric(targets_file)
    if len(x_text) != len(y_text):
        raise ToolkitError(f"{features_file.name} has {len(x_text)} rows but {targets_file.name} has "
                           f"{len(y_text)} in {folder}. Rows are matched by position: both files need one row per design.")
    status = None
    if STATUS_COL in y_text.columns:
        status = y_text.pop(STATUS_COL).str.strip()
    split = None
    if SPLIT_COL in y_text.columns:
        split = read_split(y_text.pop(SPLIT_COL), targets_file)
    overlap = sorted(set(x_text.columns) & set(y_text.columns))
    if overlap:
        raise ToolkitError(f"Columns {overlap} appear in both {features_file.name} and {targets_file.name}. "
                           f"A column is either a design variable or a metric.")
    targets = _to_numbers(y_text, targets_file)
    signs_file = _optional_file(folder, SIGNS_PATTERN, "signs of ratio metrics")
    signs = None if signs_file is None else read_signs(signs_file, targets, targets_file)
    return DomainData(_to_numbers(x_text, features_file), targets, status, features_file, targets_file,
                      signs, signs_file, split)


def _read_with(path: Path, cols, flag: str, what: str, expected: str) -> pd.DataFrame:
    """A CSV given by ``flag`` (a data file's checks) that must hold ``cols`` (any order, others allowed), as text."""
    if not path.is_file():
        raise ToolkitError(f"{flag} {path} {'is a folder' if path.is_dir() else 'not found'}: pass {expected}.")
    text = _read_numeric(path)
    missing = [c for c in cols if c not in text.columns]
    if missing:
        raise ToolkitError(f"{path} lacks {what} {missing}: expected {list(cols)} (any order; other columns are "
                           f"left as they are); got {list(text.columns)}.")
    return text


def read_designs(path, x_cols, *, flag: str = "--designs") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A CSV of designs to predict: ``(every column as written, as text; the design variables x_cols as numbers)``.

    The same checks as a data file (header, separators, row lengths); other columns (an id, notes) are kept as
    text, in their order.  A missing design variable, or a cell of one that is empty or not a finite number, is
    one line naming the column and the row: a design with an unknown size cannot be predicted."""
    path = Path(path)
    text = _read_with(path, x_cols, flag, "design variable(s)",
                      f"a CSV file with a header row naming the design variables {list(x_cols)}, one row per design")
    x = pd.DataFrame({c: pd.to_numeric(text[c].str.strip(), errors="coerce").astype(float) for c in x_cols},
                     index=text.index)
    bad = ~np.isfinite(x.to_numpy(float))   # empty, text, nan or inf
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ToolkitError(f"{path}: design variable {x_cols[col]!r} is {text[x_cols[col]].iloc[row]!r} on "
                           f"{line_of(path, row)}; rows with such a cell: {int(bad.any(axis=1).sum())}. Every design "
                           f"needs a finite number for every variable: fill it in or delete the row.")
    return text, x


def read_metrics(path, y_cols, n_rows: int, *, flag: str = "--truth") -> pd.DataFrame:
    """Simulated metrics of a set of designs (a targets file: rows matched by position, ``n_rows`` of them):
    ``y_cols`` as numbers (empty or nan where a simulation failed), NaN in every metric of a row whose optional
    ``status`` column is not ok.  Other columns are ignored."""
    path = Path(path)
    text = _read_with(path, y_cols, flag, "metric(s)",
                      f"a CSV of the simulated metrics {list(y_cols)}, one row per design in the designs file's order "
                      f"(e.g. the targets.csv that spice.generate --designs wrote)")
    if len(text) != n_rows:
        raise ToolkitError(f"{path} has {len(text)} rows but the designs file {n_rows}: rows are matched by position, "
                           f"so both need one row per design, in the same order.")
    y = _to_numbers(text[list(y_cols)], path)
    if STATUS_COL in text.columns:
        y.loc[text[STATUS_COL].str.strip().str.lower() != "ok", :] = np.nan
    return y


def read_split(column: pd.Series, targets_file: Path) -> pd.Series:
    """A targets file's ``split`` column, case and surrounding spaces ignored; one line naming the first bad row."""
    split = column.fillna("").astype(str).str.strip().str.lower()
    bad = np.flatnonzero(~split.isin(SPLIT_VALUES).to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ToolkitError(f"{targets_file}: column {SPLIT_COL!r} must be one of {', '.join(SPLIT_VALUES)} in every "
                           f"row, got {column.iloc[row]!r} in data row {row + 1} ({len(bad)} such rows). Fix: mark "
                           f"every row, or delete the column to split by --val-split/--test-split/--seed.")
    return split


def _optional_file(folder: Path, pattern: str, what: str) -> Path | None:
    files = _matching(folder, pattern)
    if len(files) > 1:
        raise ToolkitError(f"{folder} holds {len(files)} {pattern} files ({what}): "
                           f"{', '.join(p.name for p in files)}. Keep at most one and move the others away.")
    return files[0] if files else None


def read_signs(path: Path, targets: pd.DataFrame, targets_file: Path) -> pd.DataFrame:
    """The signs file checked against the targets: metric columns only, one row per target row, each cell
    +1 or -1 where that row's metric is a number (empty allowed where it is not: a failed simulation)."""
    frame = _to_numbers(_read_numeric(path), path)
    unknown = [c for c in frame.columns if c not in targets.columns]
    if unknown:
        raise ToolkitError(f"{path} names {unknown}, which are not metric columns of {targets_file.name} "
                           f"({list(targets.columns)}). Its columns are the metrics whose sign it gives.")
    if len(frame) != len(targets):
        raise ToolkitError(f"{path.name} has {len(frame)} rows but {targets_file.name} has {len(targets)} in "
                           f"{path.parent}. Rows are matched by position: one sign row per design.")
    for col in frame.columns:
        v, known = frame[col].to_numpy(float), np.isfinite(targets[col].to_numpy(float))
        bad = ~np.isin(v, (-1.0, 1.0)) & (known | np.isfinite(v))   # empty is allowed only where the metric is
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ToolkitError(f"{path}: column {col!r} has {v[row]:g} on {line_of(path, row)}; a "
                               f"sign is +1 or -1 (empty only where the metric is). Fix the file or delete it.")
    return frame


def check_same_columns(src: DomainData, tgt: DomainData) -> None:
    """Both domains must describe the same design variables and metrics (order may differ)."""
    for kind, a, b in (("feature", src.features.columns, tgt.features.columns),
                       ("metric", src.targets.columns, tgt.targets.columns)):
        only_src, only_tgt = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        if only_src or only_tgt:
            raise ToolkitError(f"Source and target have different {kind} columns: only in source {only_src}, "
                               f"only in target {only_tgt}. Both domains must have the same {kind} columns.")


def read_meta_file(path) -> dict:
    """The meta.json at ``path`` (``spice.generate``'s provenance: process, circuit, units, design space); {} when
    there is none.  One that exists but is not a JSON object is refused: ignoring it would skip the unit and
    design-space checks and simulate in the wrong process without a word."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ToolkitError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}). Fix: restore the meta.json "
                           f"spice.generate wrote, or remove the file (the data then carry no provenance).") from None
    if not isinstance(meta, dict):
        raise ToolkitError(f"{path} must hold a JSON object (spice.generate's provenance), got "
                           f"{type(meta).__name__}. Fix: restore the file, or remove it.")
    return meta


def meta_design_space(path) -> dict | None:
    """The ``design_space`` that ``spice.generate`` wrote into the meta.json at ``path`` (variable -> unit, range,
    grid, sample[, scale]), checked entry by entry (``check_design_space``); None when there is no such file or
    none in it (an unreadable file is refused: ``read_meta_file``)."""
    ds = read_meta_file(path).get("design_space")
    if ds is None or ds == {}:
        return None
    return check_design_space(ds, str(path))


def check_design_space(design_space, where: str) -> dict:
    """Each variable of a design space checked like a circuit file's (one ToolkitError naming
    ``<where>: design_space.<name>``: lo > hi, no range, a bad grid, an unknown unit ...), returned as a circuit
    file records it (a range derived from grid values filled in), so readers can index it without KeyErrors."""
    if not isinstance(design_space, dict) or not design_space:
        raise ToolkitError(f"{where}: design_space must be a table {{variable: {{unit, range, grid, sample}}}}, got "
                           f"{type(design_space).__name__}; rewrite it with spice.generate or remove the key")
    return {name: check_variable(f"{where}: design_space.{name}", name, spec).describe()
            for name, spec in design_space.items()}


def space_boxes(design_space: dict) -> dict:
    """{variable: (lo, hi, unit)} of a checked design space."""
    return {k: (float(v["range"][0]), float(v["range"][1]), v["unit"]) for k, v in design_space.items()}


def check_features_in_space(x_cols, x_min, x_max, boxes: dict, *, source: str, fix: str) -> None:
    """Refuse data that a declared design space does not describe, before any work is done on them.

    ``boxes``: {feature: (lo, hi, unit)} of the space declared in ``source``; ``x_min``/``x_max``: each feature's
    physical range in the data (NaN: not checked).  Refused: a feature the space declares nothing for, and a
    feature whose data lie more than ``UNIT_SLIP`` times outside its box (below lo / UNIT_SLIP or above
    hi * UNIT_SLIP for a positive range; beyond UNIT_SLIP * max(|lo|, |hi|) in magnitude for a signed one), the
    mark of another unit (metres against um) rather than a slightly wider sweep.  ``fix``: what the user does.
    """
    missing = [c for c in x_cols if c not in boxes]
    if missing:
        raise ToolkitError(f"the design space of {source} declares no variable for feature(s) {missing} (it declares "
                           f"{list(boxes)}); fix: {fix}")
    for c, d_lo, d_hi in zip(x_cols, np.asarray(x_min, float), np.asarray(x_max, float)):
        lo, hi, unit = boxes[c]
        if lo > 0:
            off = d_lo < lo / UNIT_SLIP or d_hi > hi * UNIT_SLIP
        else:
            size = max(abs(lo), abs(hi))
            off = size > 0 and max(abs(d_lo), abs(d_hi)) > UNIT_SLIP * size
        if off:
            raise ToolkitError(f"feature {c!r} spans [{d_lo:g}, {d_hi:g}] in the data, more than {UNIT_SLIP:g}x "
                               f"outside its declared range [{lo:g}, {hi:g}] {unit or '(no unit)'} in {source} "
                               f"(another unit?); fix: {fix}")


def read_design_space(data_dir, circuit: str, domain: str = "target") -> dict | None:
    """``meta_design_space`` of ``<data_dir>/<circuit>/<domain>/meta.json``."""
    return meta_design_space(circuit_dir(data_dir, circuit) / domain / "meta.json")
