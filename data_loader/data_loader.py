"""Load -> validate -> split -> drop failed simulations -> log/scale: the one data API.

    from data_loader import get_data_and_scalers
    d = get_data_and_scalers(opamp_type="5t_opamp", data_dir="data", val_split=0.2, test_split=0.2, seed=42)
    X_src, y_src = d["source"]; X_tr, y_tr = d["target_train"]; X_val, y_val = d["target_val"]

Arrays are float32 in model space (log + standardised).  ``d["preprocessing"]`` converts
back to physical units and travels inside checkpoints; ``d["raw"]`` keeps each split's
physical x and y as DataFrames.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ToolkitError
from data_loader.failures import FailureRule, count_reasons, failure_reasons
from data_loader.layout import (check_features_in_space, check_same_columns, circuit_dir, read_design_space,
                                read_domain, space_boxes)
from data_loader.preprocessing import Preprocessing, auto_log_columns, fit_preprocessing
from data_loader.scaler_utils import fingerprint, load_scalers, save_scalers, scaler_path
from data_loader.split import (MIN_TRAIN_ROWS, MIN_VAL_ROWS, SEEDED_PROTOCOL, split_from_labels,
                               split_target_rows)

DEFAULT_RULE = FailureRule(positive=("slewrate_pos", "dc_gain", "ugf", "cmrr"),
                           minimum={"dc_gain": 1.0}, maximum={"ugf": 1e10})
FEW_TARGET_ROWS = 50  # warn below this many target training rows


def data_kwargs_from_settings(settings: dict) -> dict:
    """Map resolved config settings (UPPER keys) to ``get_data_and_scalers`` keyword arguments."""
    return dict(opamp_type=settings["OPAMP_TYPE"], data_dir=settings["DATA_DIR"],
                val_split=settings["VAL_SPLIT"], test_split=settings["TEST_SPLIT"], seed=settings["SEED"],
                log_y_cols=settings["LOG_Y_COLS"], log_y_min_span=settings["LOG_Y_MIN_SPAN"],
                log_x_cols=settings["LOG_X_COLS"],
                log_x_min_span=settings["LOG_X_MIN_SPAN"], x_scaler_fit=settings["X_SCALER_FIT"],
                n_target_train=settings["N_TARGET_TRAIN"], preprocessing_from=settings.get("PREPROCESSING_FROM") or None,
                failure_rule=FailureRule(positive=tuple(settings["FAIL_POSITIVE"]),
                                         minimum=dict(settings["FAIL_MIN"]), maximum=dict(settings["FAIL_MAX"])))


def _resolve_log(key: str, what: str, cols, seen: pd.DataFrame, min_span: float, declared=None,
                 positive_in: pd.DataFrame | None = None) -> list:
    """LOG_X_COLS / LOG_Y_COLS as column names in ``seen``'s order: ``'auto'`` = every strictly positive column
    spanning at least ``min_span`` (max/min) in ``seen``, except that a column with a declared scale
    (``declared``: {column: 'lin' | 'log'}, from the data's design space) takes that scale; a list keeps the names
    it gives and says which the data lack.  ``seen``: pooled non-test inputs for x, source + target-val labels
    for y (what every stage may see).  ``positive_in``: rows the transform will also meet (for y every usable row,
    test included); 'auto' skips a column with a value <= 0 there, where the log is not defined."""
    declared = declared or {}
    if isinstance(cols, str):
        if cols != "auto":
            raise ToolkitError(f"{key} must be a list of {what} names or 'auto', got {cols!r}.")
        auto = auto_log_columns(seen, min_span)
        if positive_in is not None:
            auto = [c for c in auto if not (positive_in[c].to_numpy(float) <= 0).any()]
        # a declared 'log' column has lo > 0 (check_variable) and data within UNIT_SLIP of it (checked on load),
        # so it is positive here
        return [c for c in seen.columns if declared.get(c, "log" if c in auto else "lin") == "log"]
    unknown = [c for c in cols if c not in seen.columns]
    if unknown:
        warnings.warn(f"{key} names {unknown}, which are not {what}s of this data ({list(seen.columns)}); ignored.")
    return [c for c in seen.columns if c in cols]


def _warn_unknown_rule_metrics(rule: FailureRule, y_cols) -> None:
    for key, names in (("FAIL_POSITIVE", rule.positive), ("FAIL_MIN", rule.minimum), ("FAIL_MAX", rule.maximum)):
        unknown = [c for c in names if c not in y_cols]
        if unknown:
            warnings.warn(f"{key} names {unknown}, which are not metrics of this data ({list(y_cols)}); that part of "
                          f"the failed-simulation rule does nothing. Fix: --set {key}=... with your metric names.")


def _warn_constant_features(x_src: pd.DataFrame, x_tgt: pd.DataFrame, x_scaler_fit: str) -> None:
    for col in x_src.columns:
        s_const = np.ptp(x_src[col].to_numpy()) == 0
        t_const = np.ptp(x_tgt[col].to_numpy()) == 0
        if s_const and not t_const:
            how = ("the x scaler is fitted on both domains' inputs, so it keeps its spread"
                   if x_scaler_fit == "both" else "it is centred on the source value and left unscaled")
            warnings.warn(f"Feature {col!r} is constant in the source domain but varies in the target; {how}. "
                          f"Source-trained weights learn nothing about it: rely on target-trained stages.")
        elif s_const and t_const:
            warnings.warn(f"Feature {col!r} is constant in both domains; it carries no information.")


def _warn_constant_metrics(y_tgt: pd.DataFrame) -> None:
    for col in y_tgt.columns:
        if np.ptp(y_tgt[col].to_numpy(float)) == 0:
            warnings.warn(f"Metric {col!r} has one value in every target train/val row: nothing to learn, and its R^2 "
                          f"is undefined (the mean R^2 leaves it out). Drop the column if it is not a result.")


def _check_against_design_spaces(data_dir, circuit: str, src, tgt, x_cols) -> dict | None:
    """The target's design space (None without one), after refusing data it does not describe: each domain's
    features against its own meta.json's space, a source folder without one against the target's (inverse design
    snaps to the target's space, and a unit slip there would put it decades away from what the models saw)."""
    target_space, source_space = (read_design_space(data_dir, circuit, d) for d in ("target", "source"))
    src_owner = "source" if source_space is not None else "target"
    for data, owner, space in ((src, src_owner, source_space if source_space is not None else target_space),
                               (tgt, "target", target_space)):
        if space is None:
            continue
        meta = circuit_dir(data_dir, circuit) / owner / "meta.json"
        x = data.features[x_cols]
        check_features_in_space(x_cols, x.min().to_numpy(), x.max().to_numpy(), space_boxes(space),
                                source=f"{meta} (checking {data.features_file})",
                                fix=f"give the CSV columns in the units of that design space, or correct (or delete) "
                                    f"design_space in {meta}")
    return target_space


def get_data_and_scalers(opamp_type: str = "5t_opamp", data_dir="data", *, val_split: float = 0.2,
                         test_split: float = 0.2, seed: int = 42,
                         log_y_cols="auto", log_y_min_span: float = 3.0,
                         log_x_cols="auto", log_x_min_span: float = 10.0, x_scaler_fit: str = "both",
                         failure_rule: FailureRule | None = None, n_target_train: int = 0,
                         results_dir=None, verbose: bool = False, preprocessing_from=None) -> dict:
    """Everything a stage needs from one circuit's dataset.

    Returns a dict with the seed's keys ``source``, ``target_train``, ``target_val``,
    ``x_scaler``, ``y_scaler`` (each split a float32 ``(X, y)`` pair in model space), plus
    ``target_test`` (when test_split > 0), ``x_cols``, ``y_cols``, ``log_x_cols``,
    ``log_y_cols``, ``preprocessing`` (a :class:`Preprocessing`), ``split`` (row indices into
    the target files and the protocol), ``dropped`` (failed rows per split and reason),
    ``raw`` (physical DataFrames per split), ``signs`` (per split, the rows of the domain's
    ``*metric_signs*.csv`` as a DataFrame, or None without one), ``files``, ``failure_rule``,
    ``design_space`` (of the target meta.json, or None).
    With ``results_dir`` the scalers are saved there and reused while the data matches.
    ``n_target_train > 0`` keeps only that many (usable) target training rows, a seeded subset
    taken after splitting, for data-efficiency studies: val and test stay exactly as without it.
    ``preprocessing_from``: a saved preprocessing record (JSON of ``Preprocessing.to_dict``) used as it is
    instead of fitting one (its log columns win over ``log_y_cols``/``log_x_cols``): runs on growing target
    data (``python -m active``) keep one preprocessing, so a source baseline trained once stays usable.
    """
    rule = failure_rule or DEFAULT_RULE
    if x_scaler_fit not in ("both", "source"):
        raise ToolkitError(f"X_SCALER_FIT must be 'both' or 'source', got {x_scaler_fit!r}.")
    src = read_domain(data_dir, opamp_type, "source")
    tgt = read_domain(data_dir, opamp_type, "target")
    check_same_columns(src, tgt)
    x_cols, y_cols = list(src.features.columns), list(src.targets.columns)
    tgt.features, tgt.targets = tgt.features[x_cols], tgt.targets[y_cols]  # same order as source
    design_space = _check_against_design_spaces(data_dir, opamp_type, src, tgt, x_cols)
    _warn_unknown_rule_metrics(rule, y_cols)

    if src.split is not None:
        warnings.warn(f"{src.targets_file} has a split column; only a target file's is used (the source rows are "
                      f"all training rows).")
    if tgt.split is None:
        parts = split_target_rows(len(tgt.targets), val_split=val_split, test_split=test_split, seed=seed)
        protocol = SEEDED_PROTOCOL
    else:   # the file's own split wins: rows keep their split however the file grows
        parts = split_from_labels(tgt.split)
        protocol = f"the split column of {tgt.targets_file.name}"
        warnings.warn(f"target rows split as the split column of {tgt.targets_file} says ("
                      f"{', '.join(f'{len(v)} {k}' for k, v in parts.items())}); VAL_SPLIT and TEST_SPLIT are "
                      f"not used.")
    why_src = failure_reasons(src.features, src.targets, rule, src.status)
    why_tgt = failure_reasons(tgt.features, tgt.targets, rule, tgt.status)
    keep_src = np.flatnonzero(why_src == "")
    kept = {name: idx[why_tgt[idx] == ""] for name, idx in parts.items()}
    if n_target_train < 0:
        raise ToolkitError(f"N_TARGET_TRAIN must be >= 0 (0 = all rows), got {n_target_train}.")
    if n_target_train > len(kept["train"]):
        raise ToolkitError(f"N_TARGET_TRAIN={n_target_train} but the split leaves {len(kept['train'])} usable target "
                           f"training rows. Use --n-target {len(kept['train'])} or less (0 = all rows).")
    all_train = kept["train"]  # before any subset: their *inputs* may shape the x scaler (no labels used)
    if 0 < n_target_train < len(kept["train"]):
        pick = np.random.default_rng(seed).choice(len(kept["train"]), n_target_train, replace=False)
        kept["train"] = np.sort(kept["train"][pick])
    dropped = {"source": count_reasons(why_src)}
    dropped.update({f"target_{k}": count_reasons(why_tgt[idx]) for k, idx in parts.items()})
    if len(keep_src) < 2:
        raise ToolkitError(f"Only {len(keep_src)} usable source rows in {src.targets_file} after dropping "
                           f"failed simulations ({dropped['source']}). Check the data or the FAIL_* rules in config.py.")
    if len(kept["train"]) < MIN_TRAIN_ROWS or len(kept["val"]) < MIN_VAL_ROWS:
        n_failed = int((why_tgt != "").sum())
        failed = (f" ({n_failed} of the {len(why_tgt)} target rows failed: {count_reasons(why_tgt)}; check the data or "
                  f"the FAIL_* rules in config.py)" if n_failed else "")
        raise ToolkitError(f"The split leaves {len(kept['train'])} target training and {len(kept['val'])} validation "
                           f"rows after dropping failed ones{failed} (need >= {MIN_TRAIN_ROWS} and >= {MIN_VAL_ROWS}). "
                           + ("Lower --test-split/--val-split (settings TEST_SPLIT / VAL_SPLIT) or provide more target "
                              "rows." if tgt.split is None
                              else f"Mark more rows train/val in the split column of {tgt.targets_file}."))
    if len(kept["train"]) < FEW_TARGET_ROWS:
        warnings.warn(f"Only {len(kept['train'])} target training rows; expect noisy target-domain models.")

    raw = {"source": (src.features.iloc[keep_src], src.targets.iloc[keep_src])}
    for name, idx in kept.items():
        raw[f"target_{name}"] = (tgt.features.iloc[idx], tgt.targets.iloc[idx])
    # inputs only, never test rows; the full training pool so an N_TARGET_TRAIN subset keeps the same scalers
    fit_tgt_x = pd.concat([tgt.features.iloc[all_train], raw["target_val"][0]])
    pooled_x = pd.concat([raw["source"][0], fit_tgt_x])
    x_pool = pooled_x if x_scaler_fit == "both" else raw["source"][0]
    scales = {k: v["scale"] for k, v in (design_space or {}).items() if v.get("scale")}
    resolved_log_x = _resolve_log("LOG_X_COLS", "feature", log_x_cols, pooled_x, log_x_min_span, scales)
    # clip range and 'auto' log metrics from labels every stage may see whatever N_TARGET_TRAIN is: source + target val
    y_range = pd.concat([raw["source"][1], raw["target_val"][1]])
    # ... but a metric <= 0 in any usable row (a delay or an offset that goes negative) is not a positive quantity:
    # not logged (log1p refuses values <= -1 in whichever split holds them). Only those labels' signs are read
    y_every = pd.concat([raw["source"][1], tgt.targets.iloc[np.concatenate([all_train, kept["val"], kept["test"]])]])
    resolved_log_y = _resolve_log("LOG_Y_COLS", "metric", log_y_cols, y_range, log_y_min_span, positive_in=y_every)
    _warn_constant_features(raw["source"][0], fit_tgt_x, x_scaler_fit)
    _warn_constant_metrics(pd.concat([raw["target_train"][1], raw["target_val"][1]]))

    fp_settings = dict(val_split=val_split, test_split=test_split, seed=seed, n_target_train=n_target_train,
                       log_y=resolved_log_y,
                       log_x=resolved_log_x, x_fit=x_scaler_fit, rule=rule.describe(), version=2)  # 2: + x_min/x_max
    files = [src.features_file, src.targets_file, tgt.features_file, tgt.targets_file]
    pre = pinned_preprocessing(preprocessing_from, x_cols, y_cols) if preprocessing_from else None
    if pre is not None:
        fp_settings["pinned"] = str(preprocessing_from)
    if results_dir is not None and pre is None:
        path = scaler_path(results_dir, opamp_type)
        fp = fingerprint(files, fp_settings)
        pre, old_fp = load_scalers(path)
        if pre is not None and old_fp != fp:
            print(f"[data] {path} was fitted on other data or settings; refitting the scalers.")
            pre = None
        elif pre is not None and verbose:
            print(f"[data] reusing scalers from {path}")
    if pre is None:
        pre = fit_preprocessing(x_fit=x_pool, y_fit=raw["source"][1], y_range=y_range,
                                log_x_cols=resolved_log_x, log_y_cols=resolved_log_y, x_domain=pooled_x)
        if results_dir is not None:
            save_scalers(path, pre, fp)
    elif preprocessing_from and results_dir is not None:
        save_scalers(scaler_path(results_dir, opamp_type), pre, fingerprint(files, fp_settings))

    out = {name: (pre.transform_x(x), pre.transform_y(y)) for name, (x, y) in raw.items()}
    signs = {"source": None if src.signs is None else src.signs.iloc[keep_src]}
    signs.update({f"target_{name}": None if tgt.signs is None else tgt.signs.iloc[idx] for name, idx in kept.items()})
    if len(parts["test"]) == 0:
        out.pop("target_test")
        raw.pop("target_test")
        signs.pop("target_test")
    files = dict(zip(["source_features", "source_targets", "target_features", "target_targets"], files))
    files.update({f"{d}_signs": dom.signs_file for d, dom in (("source", src), ("target", tgt)) if dom.signs_file})
    out.update(
        x_scaler=pre.x_scaler(), y_scaler=pre.y_scaler(), preprocessing=pre,
        x_cols=x_cols, y_cols=y_cols, log_x_cols=pre.log_x_cols, log_y_cols=pre.log_y_cols,
        split={"protocol": protocol,
               "seed": seed, "val_split": val_split, "test_split": test_split, "n_target_train": n_target_train,
               "n_source": int(len(keep_src)),
               **{f"target_{k}_idx": v.tolist() for k, v in kept.items()}},
        dropped=dropped, raw=raw, signs=signs, files={k: str(f) for k, f in files.items()},
        failure_rule=rule, design_space=design_space,
    )
    return out


def pinned_preprocessing(path, x_cols, y_cols) -> Preprocessing:
    """The preprocessing record at ``path`` (JSON), checked against the data's columns."""
    path = Path(path)
    try:
        pre = Preprocessing.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ToolkitError(f"PREPROCESSING_FROM={path} is not a readable preprocessing record ({type(exc).__name__}). "
                           f"Fix: point it at a JSON written from Preprocessing.to_dict(), or set it to ''.") from None
    if list(pre.x_cols) != list(x_cols) or list(pre.y_cols) != list(y_cols):
        raise ToolkitError(f"PREPROCESSING_FROM={path} is for features {pre.x_cols} and metrics {pre.y_cols}, but the "
                           f"data has {list(x_cols)} and {list(y_cols)}. Fix: use the record made for this data, or ''.")
    return pre


def load_run_data(settings: dict, stage: str) -> dict:
    """``get_data_and_scalers`` for a stage run: scalers saved under RESULTS_DIR, the loader's warnings
    printed as lines (not tracebacks), then the row counts per split."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = get_data_and_scalers(**data_kwargs_from_settings(settings), results_dir=settings["RESULTS_DIR"],
                                    verbose=True)
    for w in caught:
        key = (str(settings["RESULTS_DIR"]), str(w.message))
        if key not in _SHOWN:   # once per run and folder: a pipeline runs several stages in one process
            _SHOWN.add(key)
            print(f"warning: {w.message}")
    sizes = ", ".join(f"{k}={len(data[k][0])}" for k in ("source", "target_train", "target_val", "target_test")
                      if k in data)
    print(f"[{stage}] rows: {sizes}{dropped_summary(data.get('dropped') or {})}")
    return data


_SHOWN = set()   # (results folder, loader warning) pairs printed in this process since the run began


def new_run() -> None:
    """A new run (python -m pipeline, a TransferSurrogate fit) prints the loader's warnings again, once."""
    _SHOWN.clear()


def dropped_summary(dropped: dict) -> str:
    """'; failed simulations dropped: source 800 (dc_gain < 1: 500, ...), target 56 (...)' from the loader's
    ``dropped`` ({split: {reason: rows}}), target splits summed; '' when none was dropped."""
    per_domain = {}
    for split, reasons in dropped.items():
        domain = per_domain.setdefault("source" if split == "source" else "target", {})
        for why, n in reasons.items():
            domain[why] = domain.get(why, 0) + n
    parts = [f"{domain} {sum(r.values())} ("
             + ", ".join(f"{why}: {n}" for why, n in sorted(r.items(), key=lambda t: -t[1])) + ")"
             for domain, r in per_domain.items() if r]
    return "; failed simulations dropped: " + ", ".join(parts) if parts else ""
