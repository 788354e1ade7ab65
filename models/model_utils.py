"""Backbone transfer and the one checkpoint format (seed: models/model_utils.py).

Checkpoint = one ``.pth`` dict, the same for every model (the MDN included) readable with ``torch.load(path, weights_only=True)``::

    format_version  int, CHECKPOINT_FORMAT_VERSION at writing time
    stage           str, e.g. "baseline", "align_hetero", "dualhead", "mdn"
    model_class     str, a key of models.MODEL_CLASSES
    model_kwargs    dict, ``model.constructor_kwargs()``; rebuilds the architecture alone
    state_dict      the weights (CPU tensors) -- the only non-plain entry
    x_cols, y_cols  lists of column names, in model input / output order
    preprocessing   dict from the data loader (``Preprocessing.to_dict()``; a record with a
                    ``to_dict`` method is accepted too): at least x_cols, y_cols, log_x_cols,
                    log_y_cols, x_mean, x_scale, y_mean, y_scale (lists / strings / floats)
    config          snapshot dict of the run settings
    seed            int
    split           dict of plain lists / ints, or None
    metrics         dict, or None
    parent          path string of the checkpoint this one started from, or None
    parent_sha256   sha256 of that parent file when it was used (staleness by content), or None
    history         per-epoch lists, or None
    extra           plain dict (e.g. calibration temperatures), or None
    design_space    {variable: {unit, range, grid, sample}} of the target data (its meta.json), or None:
                    the box and grid inverse design searches (optional; older checkpoints lack it)
    code            {repo-relative path: sha256 prefix} of the source that made it (optional;
                    ``core.code_record``), so a stale checkpoint is not reused after a code change
    data_sha256     {data file role: sha256} of the data it learned from (optional; ``core.freshness``)
    versions        torch, numpy, python, package
    created         ISO-8601 UTC timestamp

Beside it, ``<path minus .pth>.json`` holds the same metadata without ``state_dict`` (for
humans and for tools that only check columns or staleness).  Both files are written
atomically: an interrupted save leaves the previous files intact.  Never pickle sklearn
objects or numpy scalars into the checkpoint -- ``plain`` converts or refuses them.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_paths
from core.errors import ToolkitError
from core.freshness import file_sha256
from models.backbone import BackboneModel
from models.mlp import MLP
from models.registry import MODEL_CLASSES

CHECKPOINT_FORMAT_VERSION = 1
PACKAGE_NAME = "eda-for-transfer-learning"
PREPROCESSING_KEYS = ("x_cols", "y_cols", "log_x_cols", "log_y_cols",
                      "x_mean", "x_scale", "y_mean", "y_scale")
# Entries a reader fills with a default (and a warning) when an older writer left them out.
_OPTIONAL_DEFAULTS = {"stage": "unknown", "x_cols": None, "y_cols": None, "preprocessing": None,
                      "config": {}, "seed": None, "split": None, "metrics": None, "parent": None,
                      "history": None, "extra": None, "versions": {}, "created": None}
_REQUIRED = ("format_version", "model_class", "model_kwargs", "state_dict")


# ---------------------------------------------------------------- helpers
def _describe(model_class: str, kwargs: dict | None) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
    return f"{model_class}({args})"


def _describe_model(model: nn.Module) -> str:
    kwargs = model.constructor_kwargs() if hasattr(model, "constructor_kwargs") else None
    return _describe(type(model).__name__, kwargs)


def sidecar_path(path) -> Path:
    """``results/x.pth`` -> ``results/x.json``."""
    path = Path(path)
    if path.suffix == ".json":
        raise ToolkitError(f"Checkpoint path {path} ends in .json, which is the sidecar's name. "
                           f"Use a .pth path.")
    return path.with_suffix(".json")


def plain(value, where: str = "value"):
    """Convert ``value`` to plain Python (dict/list/str/int/float/bool/None) or raise.

    numpy scalars and arrays, 0-d/1-d torch tensors, tuples and Paths are converted; anything
    else (a scaler object, a set, a function) is refused, because ``torch.load(weights_only=True)``
    could not read it back.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)          # str subclasses (torch.__version__ is a TorchVersion) -> str
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic):
        return plain(value.item(), where)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
        return plain(value.tolist(), where)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ToolkitError(f"{where} has a non-string key {k!r} ({type(k).__name__}); "
                                   f"checkpoint metadata needs string keys (JSON). Fix: use str({k!r}).")
            out[k] = plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ToolkitError(f"{where} is a {type(value).__module__}.{type(value).__name__}, which cannot "
                       f"be stored in a checkpoint (torch.load(weights_only=True) reads only plain "
                       f"types). Fix: convert it to lists/floats/strings, e.g. scaler.mean_.tolist().")


def _check_cols(name: str, cols, expected_len: int, dim_name: str) -> list:
    if isinstance(cols, str) or not isinstance(cols, (list, tuple)) or not all(isinstance(c, str) for c in cols):
        raise ToolkitError(f"{name} must be a list of column-name strings, got {cols!r}.")
    if len(set(cols)) != len(cols):
        dups = sorted({c for c in cols if list(cols).count(c) > 1})
        raise ToolkitError(f"{name} has duplicate names {dups}.")
    if len(cols) != expected_len:
        raise ToolkitError(f"{name} has {len(cols)} names but the model's {dim_name} is "
                           f"{expected_len}. Fix: pass the columns the model was trained on, in order.")
    return list(cols)


def _check_preprocessing(prep, x_cols, y_cols) -> dict:
    if not isinstance(prep, dict) and callable(getattr(prep, "to_dict", None)):
        prep = prep.to_dict()      # data_loader's Preprocessing record -> its plain dict
    if not isinstance(prep, dict):
        raise ToolkitError(f"preprocessing must be the data loader's plain dict, got "
                           f"{type(prep).__name__}. Do not pass scaler objects.")
    missing = [k for k in PREPROCESSING_KEYS if k not in prep]
    if missing:
        raise ToolkitError(f"preprocessing lacks {missing}; expected keys {list(PREPROCESSING_KEYS)}.")
    prep = plain(prep, "preprocessing")
    for key, cols in (("x_cols", x_cols), ("y_cols", y_cols)):
        if list(prep[key]) != cols:
            raise ToolkitError(f"preprocessing[{key!r}] = {prep[key]} differs from {key} = {cols}; "
                               f"both must come from the same data load.")
    for key, cols in (("x_mean", x_cols), ("x_scale", x_cols), ("y_mean", y_cols), ("y_scale", y_cols)):
        if not isinstance(prep[key], list) or len(prep[key]) != len(cols):
            raise ToolkitError(f"preprocessing[{key!r}] must be a list of {len(cols)} floats "
                               f"(one per column), got {prep[key]!r}.")
    return prep


def _package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _registry_name(model: nn.Module) -> str:
    name = type(model).__name__
    if MODEL_CLASSES.get(name) is not type(model):
        raise ToolkitError(f"Cannot checkpoint a {type(model).__module__}.{name}: only "
                           f"{sorted(MODEL_CLASSES)} (models.MODEL_CLASSES) can be rebuilt from a "
                           f"checkpoint. Fix: add the class to models/registry.py.")
    return name


def _write(path, model: nn.Module, meta: dict) -> dict:
    """Write ``meta`` + state_dict to ``path`` and meta to the sidecar, both atomically."""
    path = Path(path)
    json_path = sidecar_path(path)
    meta = dict(meta)
    meta["versions"] = plain({"torch": torch.__version__, "numpy": np.__version__,
                               "python": platform.python_version(),
                               "package": _package_version()}, "versions")
    meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    state = OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    payload = dict(meta)
    payload["state_dict"] = state
    # one unit: an interrupt leaves both old files or both new ones, never a new .pth beside an old .json
    with atomic_paths(path, json_path) as (tmp, tmp_json):
        torch.save(payload, tmp)
        tmp_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


# ---------------------------------------------------------------- save / load
def save_checkpoint(path, model: nn.Module, *, stage: str, x_cols, y_cols, preprocessing: dict,
                    config: dict, seed: int | None, split: dict | None = None,
                    metrics: dict | None = None, parent=None, history=None,
                    extra: dict | None = None, code: dict | None = None, design_space: dict | None = None,
                    data_sha256: dict | None = None) -> dict:
    """Write the toolkit checkpoint ``path`` (.pth) and its JSON sidecar; return the metadata.

    See the module docstring for the keys.  Metadata must be plain Python (numpy scalars,
    arrays and tensors are converted; anything else is a ToolkitError naming the entry).
    """
    name = _registry_name(model)
    if not isinstance(stage, str) or not stage:
        raise ToolkitError(f"stage must be a non-empty string such as 'baseline', got {stage!r}.")
    if hasattr(model, "x_dim"):   # the MDN maps y -> x: its sizes are named by column set
        x_cols = _check_cols("x_cols", x_cols, model.x_dim, "x_dim")
        y_cols = _check_cols("y_cols", y_cols, model.y_dim, "y_dim")
    else:
        x_cols = _check_cols("x_cols", x_cols, model.input_dim, "input_dim")
        y_cols = _check_cols("y_cols", y_cols, model.output_dim, "output_dim")
    prep = _check_preprocessing(preprocessing, x_cols, y_cols)
    if not isinstance(config, dict):
        raise ToolkitError(f"config must be a settings snapshot dict, got {type(config).__name__}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ToolkitError(f"seed must be an int or None, got {seed!r}.")
    meta = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "stage": stage,
        "model_class": name,
        "model_kwargs": plain(model.constructor_kwargs(), "model_kwargs"),
        "x_cols": x_cols,
        "y_cols": y_cols,
        "preprocessing": prep,
        "config": plain(config, "config"),
        "seed": plain(seed, "seed"),
        "split": plain(split, "split"),
        "metrics": plain(metrics, "metrics"),
        "parent": None if parent is None else str(parent),
        "parent_sha256": file_sha256(parent) if parent is not None and Path(parent).is_file() else None,
        "history": plain(history, "history"),
        "extra": plain(extra, "extra"),
        "design_space": plain(design_space, "design_space"),
    }
    if code is not None:
        meta["code"] = plain(code, "code")
    if data_sha256 is not None:
        meta["data_sha256"] = plain(data_sha256, "data_sha256")
    return _write(path, model, meta)


def _load_raw(path, map_location="cpu", *, mmap: bool = False):
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"Checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # I/O boundary: corrupt file, pickled objects, wrong format
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")),
                   lines[0] if lines else "")
        raise ToolkitError(f"Could not read checkpoint {path} with torch.load(weights_only=True): "
                           f"{type(exc).__name__}: {why.rstrip('.')}. "
                           f"Is it a whole toolkit checkpoint (not truncated, not a pickled object)? Re-create it with "
                           f"the stage that writes it.") from None


def _is_bare_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _checked_meta(raw, path) -> dict:
    """Validate the container, fill defaults for entries older writers lacked; drop state_dict."""
    if _is_bare_state_dict(raw):
        raise ToolkitError(f"{path} is a bare state_dict (the seed's old save_model format): it has "
                           f"no architecture or column metadata. Load it with "
                           f"load_model(model, path) into a model built with the right sizes, or "
                           f"re-run the stage that writes it.")
    if not isinstance(raw, dict) or any(k not in raw for k in _REQUIRED):
        have = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ToolkitError(f"{path} is not a toolkit checkpoint: expected keys {list(_REQUIRED)}, "
                           f"found {have}.")
    version = raw["format_version"]
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise ToolkitError(f"{path} has checkpoint format_version {version!r}, newer than this "
                           f"code supports ({CHECKPOINT_FORMAT_VERSION}). Update the toolkit "
                           f"(git pull) or re-create the checkpoint with this version.")
    meta = {k: v for k, v in raw.items() if k != "state_dict"}
    for key, default in _OPTIONAL_DEFAULTS.items():
        if key not in meta:
            warnings.warn(f"{path}: checkpoint has no {key!r} (older writer); using {default!r}.",
                          stacklevel=3)
            meta[key] = default
    return meta


def _compare_cols(kind: str, expected, got, path) -> None:
    expected = list(expected)
    if got is None:
        raise ToolkitError(f"{path} records no {kind} (saved by save_model without metadata), "
                           f"expected {expected}. Re-create it with the stage that writes it.")
    got = list(got)
    if got == expected:
        return
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing from checkpoint: {missing}")
    if extra:
        parts.append(f"only in checkpoint: {extra}")
    if not missing and not extra:
        parts.append("same names in a different order")
    raise ToolkitError(f"{path} was trained on {kind} {got} but the data has {expected} "
                       f"({'; '.join(parts)}). Fix: retrain on the current data, or load data with "
                       f"the checkpoint's columns.")


def _expected_class_names(expect_class) -> list[str]:
    items = expect_class if isinstance(expect_class, (list, tuple, set)) else [expect_class]
    return [c.__name__ if isinstance(c, type) else str(c) for c in items]


def is_dry_run(meta: dict) -> bool:
    """Whether a checkpoint's metadata says ``--dry-run`` made it (``metrics.dry_run``): a smoke test, not a model."""
    return bool((meta.get("metrics") or {}).get("dry_run"))


def check_trained_for(meta: dict, path, opamp: str, what: str) -> None:
    """One line when the checkpoint at ``path`` (metadata ``meta``) was trained for another circuit than ``opamp``:
    its predictions or samples would be that circuit's.  ``what`` names the right file in the fix ("the checkpoint",
    "the MDN").  A snapshot without the circuit (older writers) passes."""
    made_for = (meta.get("config") or {}).get("OPAMP_TYPE")
    if made_for is not None and made_for != opamp:
        raise ToolkitError(f"{path} was trained for circuit {made_for!r}, not {opamp!r}. Pass --opamp {made_for} "
                           f"or {what} of {opamp}.")


def read_checkpoint_meta(path) -> dict:
    """The checkpoint's metadata (everything but ``state_dict``) without building the model."""
    raw = _load_raw(path, mmap=True)   # mmap: the weights are not read into memory
    return _checked_meta(raw, path)


def build_model(model_class: str, model_kwargs: dict) -> nn.Module:
    """Instantiate ``MODEL_CLASSES[model_class](**model_kwargs)`` with clear errors."""
    cls = MODEL_CLASSES.get(model_class)
    if cls is None:
        raise ToolkitError(f"Unknown model_class {model_class!r}; known: {sorted(MODEL_CLASSES)}.")
    try:
        return cls(**model_kwargs)
    except TypeError as exc:
        raise ToolkitError(f"Cannot rebuild {_describe(model_class, model_kwargs)}: {exc}.") from None


def load_checkpoint(path, *, expect_x_cols=None, expect_y_cols=None, expect_class=None,
                    map_location="cpu"):
    """Rebuild the model of checkpoint ``path``; return ``(model, meta)`` with the model in eval().

    The architecture comes from ``model_class`` + ``model_kwargs`` alone; weights load with
    ``strict=True``.  ``expect_x_cols`` / ``expect_y_cols`` (lists) and ``expect_class`` (name,
    class, or a list of them) are checked first; a mismatch is a ToolkitError naming both sides.
    """
    raw = _load_raw(path, map_location=map_location)
    meta = _checked_meta(raw, path)
    if expect_class is not None:
        names = _expected_class_names(expect_class)
        if meta["model_class"] not in names:
            raise ToolkitError(f"{path} holds a {meta['model_class']} (stage {meta['stage']!r}) but "
                               f"a {' or '.join(names)} was expected. Fix: pass the checkpoint of the "
                               f"matching stage.")
    if expect_x_cols is not None:
        _compare_cols("x_cols", expect_x_cols, meta["x_cols"], path)
    if expect_y_cols is not None:
        _compare_cols("y_cols", expect_y_cols, meta["y_cols"], path)
    model = build_model(meta["model_class"], meta["model_kwargs"])
    try:
        model.load_state_dict(raw["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ToolkitError(f"{path}: weights do not fit {_describe(meta['model_class'], meta['model_kwargs'])}"
                           f" ({str(exc).splitlines()[0]}). The file is inconsistent; re-create it.") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    return model, meta


def save_model(model: nn.Module, path) -> dict:
    """Seed API: save ``model`` with minimal metadata (no columns/preprocessing); returns meta.

    Stages should prefer ``save_checkpoint``, which records columns and preprocessing.
    """
    meta = {"format_version": CHECKPOINT_FORMAT_VERSION, "stage": "save_model",
            "model_class": _registry_name(model),
            "model_kwargs": plain(model.constructor_kwargs(), "model_kwargs"), "design_space": None,
            "parent_sha256": None}
    meta.update({k: v for k, v in _OPTIONAL_DEFAULTS.items() if k not in meta})
    return _write(path, model, meta)


def load_model(model: nn.Module, path) -> nn.Module:
    """Seed API: load the weights of ``path`` into ``model`` (strict=True), set eval(), return it.

    Accepts a toolkit checkpoint or a bare state_dict (the seed's old format).  A different
    architecture is a ToolkitError naming both (instead of torch's key-by-key traceback).
    """
    raw = _load_raw(path)
    target = _describe_model(model)
    if _is_bare_state_dict(raw):
        state, source = raw, f"a bare state_dict with keys {list(raw)[:4]}..."
    else:
        meta = _checked_meta(raw, path)
        state = raw["state_dict"]
        source = _describe(meta["model_class"], meta["model_kwargs"])
        mine = model.constructor_kwargs() if hasattr(model, "constructor_kwargs") else {}
        differs = [k for k in mine if k != "dropout" and k in meta["model_kwargs"]
                   and meta["model_kwargs"][k] != mine[k]]
        if meta["model_class"] != type(model).__name__ or differs:
            raise ToolkitError(f"Cannot load {path} into {target}: the checkpoint holds {source}. "
                               f"Fix: build the model with the checkpoint's class and kwargs, or use "
                               f"load_checkpoint(path), which rebuilds it.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ToolkitError(f"Cannot load {path} into {target}: the checkpoint holds {source} "
                           f"({str(exc).splitlines()[0]}). Fix: build the model with the "
                           f"checkpoint's sizes, or use load_checkpoint(path).") from None
    model.eval()
    return model


# ---------------------------------------------------------------- backbone transfer
def _head_names(model: nn.Module) -> list[str]:
    """Heads of ``model`` that start from the pretrained MLP's ``head``."""
    if hasattr(model, "mu_head"):
        return ["mu_head"]                 # AlignHeteroMLP: logvar_head keeps its fresh init
    if hasattr(model, "head_A"):
        return ["head_A", "head_B"]        # DualHeadMLP
    return ["head"]                        # MLP


def load_backbone_from_trained_mlp(pretrained_mlp: nn.Module, target_model: nn.Module) -> nn.Module:
    """Copy the trained MLP's backbone (and head) into ``target_model``; return ``target_model``.

    AlignHeteroMLP: backbone + ``mu_head`` <- MLP ``head`` (``logvar_head`` stays fresh).
    DualHeadMLP: backbone + ``head_A`` and ``head_B`` <- MLP ``head``.  MLP: backbone + head.
    Values are copied (no shared storage).  Every shape (and the activation) must match; the
    check runs before anything is copied, so a refused call leaves ``target_model`` unchanged.
    """
    if not isinstance(pretrained_mlp, MLP):
        raise ToolkitError(f"pretrained_mlp must be a trained models.MLP, got "
                           f"{type(pretrained_mlp).__name__}.")
    if not isinstance(target_model, BackboneModel):
        raise ToolkitError(f"target_model must be one of {sorted(MODEL_CLASSES)}, got "
                           f"{type(target_model).__name__}.")
    src, dst = _describe_model(pretrained_mlp), _describe_model(target_model)
    pairs = [(pretrained_mlp.backbone, target_model.backbone, "backbone")]
    pairs += [(pretrained_mlp.head, getattr(target_model, n), n) for n in _head_names(target_model)]
    problems = []
    if pretrained_mlp.activation != target_model.activation:
        problems.append(f"activation {pretrained_mlp.activation!r} vs {target_model.activation!r}")
    for a, b, where in pairs:
        sa, sb = a.state_dict(), b.state_dict()
        for key in sorted(set(sa) | set(sb)):
            shape_a = tuple(sa[key].shape) if key in sa else None
            shape_b = tuple(sb[key].shape) if key in sb else None
            if shape_a != shape_b:
                problems.append(f"{where}.{key}: {shape_a} vs {shape_b}")
    if problems:
        raise ToolkitError(f"Cannot transfer weights from {src} to {dst}: "
                           f"{'; '.join(problems[:4])}{' (and more)' if len(problems) > 4 else ''}. "
                           f"Fix: build the target with the same input_dim, hidden_dim, num_layers, "
                           f"output_dim and activation as the baseline MLP.")
    with torch.no_grad():
        for a, b, _ in pairs:
            b.load_state_dict(a.state_dict(), strict=True)
    return target_model
