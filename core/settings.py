"""Resolve the settings of one run: config.py defaults -> per-circuit overrides -> CLI flags.

Library code never calls this; entry points do, and put the resulting dict (a plain,
JSON-able snapshot) into every checkpoint so a run can be reproduced without today's
config.py.
"""
import copy
import difflib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

from core.errors import ToolkitError


CONFIG_FILE = Path(__file__).resolve().parents[1] / "config.py"   # the toolkit's own, beside its packages
_SHADOWED_NAME = "_eda_for_transfer_learning_config"


def toolkit_config() -> types.ModuleType:
    """The toolkit's ``config.py`` as a module.  ``import config`` would take the first ``config.py`` on the path:
    a notebook folder's own ``config.py`` (for the user's project) shadowed the toolkit's and every entry point
    failed ("config.py has no OPAMP_TYPE").  The usual module when it is the toolkit's file (tests and users
    edit that one), else the file loaded by its path under a name of its own."""
    def ours(path) -> bool:
        return bool(path) and Path(path).resolve() == CONFIG_FILE
    module = sys.modules.get("config")
    if module is not None and ours(getattr(module, "__file__", None)):
        return module
    if module is None:
        found = importlib.util.find_spec("config")
        if found is not None and ours(found.origin):
            import config
            return config
    module = sys.modules.get(_SHADOWED_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_SHADOWED_NAME, CONFIG_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_SHADOWED_NAME] = module
    return module


def snapshot(module: types.ModuleType) -> dict:
    """All UPPER_SNAKE constants of a config module, deep-copied (JSON-able)."""
    return {k: copy.deepcopy(v) for k, v in vars(module).items()
            if k.isupper() and not k.startswith("_") and not callable(v)
            and not isinstance(v, types.ModuleType)}


def _did_you_mean(key, known):
    close = difflib.get_close_matches(key.upper(), list(known), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(close)}?" if close else ""


NAME_LIST_OR_AUTO = ("LOG_X_COLS", "LOG_Y_COLS")   # 'auto' or a list of column names
BOOL_OR_AUTO = ("SIGNED_RATIO",)                   # true, false or 'auto', whichever the default is


def _kind(default) -> str:
    """'an int', 'a float', ...: the type a setting takes, as a message says it."""
    name = type(default).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def coerce(key: str, raw, default):
    """Convert ``raw`` (usually a CLI string) to the type of ``default``; clear error if it cannot."""
    if key in BOOL_OR_AUTO and isinstance(raw, bool):
        return raw
    if not isinstance(raw, str):
        bool_mismatch = isinstance(raw, bool) and not isinstance(default, bool)  # True is an int to Python
        if default is None or (isinstance(raw, type(default)) and not bool_mismatch) or (
                isinstance(default, float) and isinstance(raw, int) and not isinstance(raw, bool)):
            return float(raw) if isinstance(default, float) else raw
        raise ToolkitError(f"{key} expects {_kind(default)} (default {default!r}), "
                           f"got {raw!r} of type {type(raw).__name__}.")
    text = raw.strip()
    try:
        if key in BOOL_OR_AUTO and text.lower() == "auto":
            return "auto"
        if isinstance(default, bool) or key in BOOL_OR_AUTO:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, dict):
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        if isinstance(default, list):
            if text.startswith("["):
                value = json.loads(text)
                if not isinstance(value, list):
                    raise ValueError
                return value
            return [t.strip() for t in text.split(",") if t.strip()]
        if isinstance(default, str) or default is None:
            if isinstance(default, str) and text.startswith("["):
                return json.loads(text)      # e.g. LOG_X_COLS='["cc","cr"]' replacing 'auto'
            if key in NAME_LIST_OR_AUTO and text != "auto":
                return [t.strip() for t in text.split(",") if t.strip()]   # LOG_Y_COLS=ugf,cmrr replacing 'auto'
            return text
    except (ValueError, json.JSONDecodeError):
        pass
    example = {bool: "true", int: "10", float: "1e-4", dict: '{"a": 1}', list: "a,b"}.get(type(default), "text")
    kind = "true, false or auto" if key in BOOL_OR_AUTO else f"{_kind(default)} like {example}"
    raise ToolkitError(f"{key} expects {kind} (default {default!r}), got {raw!r}. Fix the value given for {key}.")


def resolve(module: types.ModuleType, overrides: dict | None = None) -> dict:
    """Settings for one run, checked (``check_settings``) before any work starts.

    ``overrides`` maps UPPER keys to values (strings are coerced to the default's type).
    OPAMP_TYPE is resolved first so that ``CIRCUIT_OVERRIDES[opamp]`` sits between the
    module defaults and the explicit overrides (an explicit flag always wins).  A
    ``CIRCUIT_OVERRIDES`` given as an override (``--set 'CIRCUIT_OVERRIDES={"5t_opamp": {...}}'``)
    replaces config.py's and is applied the same way.
    """
    base = snapshot(module)
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in base:
            raise ToolkitError(f"Unknown setting {key!r}.{_did_you_mean(key, base)} "
                               f"Known settings are the UPPER_CASE names in config.py.")
    settings = dict(base)
    opamp = coerce("OPAMP_TYPE", overrides["OPAMP_TYPE"], base.get("OPAMP_TYPE")) if "OPAMP_TYPE" in overrides \
        else base.get("OPAMP_TYPE")
    table = base.get("CIRCUIT_OVERRIDES", {})
    if "CIRCUIT_OVERRIDES" in overrides:
        table = coerce("CIRCUIT_OVERRIDES", overrides["CIRCUIT_OVERRIDES"], base["CIRCUIT_OVERRIDES"])
    _check_circuit_overrides(table, base)
    for key, value in table.get(opamp, {}).items():
        settings[key] = coerce(key, value, base[key])
    for key, value in overrides.items():
        settings[key] = coerce(key, value, base[key])
    check_settings(settings)
    return settings


def _check_circuit_overrides(table, base: dict) -> None:
    fix = 'Example: --set \'CIRCUIT_OVERRIDES={"5t_opamp": {"EPOCHS": 100}}\''
    if not isinstance(table, dict):
        raise ToolkitError(f"CIRCUIT_OVERRIDES must be a dict {{circuit: {{SETTING: value}}}}, got {table!r}. {fix}")
    for circuit, per in table.items():
        if not isinstance(per, dict):
            raise ToolkitError(f"CIRCUIT_OVERRIDES[{circuit!r}] must be a dict {{SETTING: value}}, got {per!r}. {fix}")
        for key in per:
            if key not in base or key in ("CIRCUIT_OVERRIDES", "OPAMP_TYPE"):
                raise ToolkitError(f"CIRCUIT_OVERRIDES[{circuit!r}] sets unknown setting {key!r}."
                                   f"{_did_you_mean(key, base)} It holds config.py settings other than "
                                   f"OPAMP_TYPE / CIRCUIT_OVERRIDES.")


# ---- value rules, checked for every run before any work (data load, training) starts
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(v) -> bool:
    return isinstance(v, list) and all(isinstance(c, str) and c for c in v)


def _bounds(v) -> bool:  # FAIL_MIN / FAIL_MAX: metric name -> number (inf allowed: "no bound")
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(b, (int, float))
                                       and not isinstance(b, bool) and not math.isnan(b) for k, b in v.items())


SEED_MAX = 2 ** 32 - 1   # numpy's legacy seeding accepts 0..2**32-1
_POSITIVE = ("a finite number > 0", lambda v: _number(v) and v > 0)
_NONNEG = (">= 0 and finite", lambda v: _number(v) and v >= 0)
_AT_LEAST_1 = (">= 1 (an integer)", lambda v: _int(v) and v >= 1)
SETTING_RULES = {   # key: (what it must be, check, example of a fix)
    "SEED": (f"an integer in 0..{SEED_MAX}", lambda v: _int(v) and 0 <= v <= SEED_MAX, "--seed 42"),
    "LEARNING_RATE": (*_POSITIVE, "--lr 3e-4"),
    "LR_BIAS": (*_POSITIVE, "--lr-bias 3e-3"),
    "LR_HEAD": (*_POSITIVE, "--lr-head 1e-3"),
    "LR_UNFREEZE": (*_POSITIVE, "--lr-unfreeze 3e-4"),
    "MDN_LR": (*_POSITIVE, "--lr 1e-3"),
    "WEIGHT_DECAY": (*_NONNEG, "--set WEIGHT_DECAY=1e-4 (0 = none)"),
    "LAMBDA_CORAL": (*_NONNEG, "--lambda-coral 0.05 (a negative weight would reward the term)"),
    "ALPHA_R2": (*_NONNEG, "--alpha-r2 1.0 (a negative weight would reward the term)"),
    "L2SP_LAMBDA": (*_NONNEG, "--l2sp-lambda 1e-4 (a negative weight would reward the term)"),
    "DROPOUT_RATE": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1, "--set DROPOUT_RATE=0.1"),
    "EPOCHS": (*_AT_LEAST_1, "--epochs 50"),
    "PATIENCE": (*_AT_LEAST_1, "--patience 30"),
    "UNFREEZE_PATIENCE": ("an integer >= 1", _AT_LEAST_1[1], "--unfreeze-patience 60"),
    "BATCH_SIZE": (*_AT_LEAST_1, "--batch-size 64"),
    "BASELINE_BATCH_SIZE": (*_AT_LEAST_1, "--baseline-batch-size 256"),
    "HIDDEN_DIM": (*_AT_LEAST_1, "--hidden-dim 512"),
    "NUM_LAYERS": (*_AT_LEAST_1, "--num-layers 6"),
    "POOLED_HIDDEN_DIM": (*_AT_LEAST_1, "--set POOLED_HIDDEN_DIM=256"),
    "POOLED_NUM_LAYERS": (*_AT_LEAST_1, "--set POOLED_NUM_LAYERS=4"),
    "POOLED_LEARNING_RATE": (*_POSITIVE, "--set POOLED_LEARNING_RATE=1e-3"),
    "PIPELINE_JOBS": (*_AT_LEAST_1, "--jobs 2 (1 = the stages one after another, in this process)"),
    "MIN_BATCHES_PER_EPOCH": (*_AT_LEAST_1, "--set MIN_BATCHES_PER_EPOCH=10"),
    "N_TARGET_TRAIN": (">= 0 (0 = all rows)", lambda v: _int(v) and v >= 0, "--n-target 50"),
    "FAIL_POSITIVE": ("a list of metric names", _names, "--set FAIL_POSITIVE=dc_gain,ugf"),
    "LOG_Y_COLS": ("a list of metric names or 'auto'", lambda v: v == "auto" or _names(v),
                   "--set LOG_Y_COLS=ugf,cmrr (or auto)"),
    "LOG_Y_MIN_SPAN": ("a number >= 1", lambda v: _number(v) and v >= 1, "--set LOG_Y_MIN_SPAN=3"),
    "LOG_X_MIN_SPAN": ("a number >= 1 (a ratio max/min)", lambda v: _number(v) and v >= 1,
                       "--set LOG_X_MIN_SPAN=10"),
    "X_SCALER_FIT": ("'both' or 'source'", lambda v: v in ("both", "source"), "--set X_SCALER_FIT=both"),
    "NUM_THREADS": (*_AT_LEAST_1, "--set NUM_THREADS=1 (the fastest for these small nets)"),
    "VAL_SPLIT": ("in (0, 1)", lambda v: _number(v) and 0 < v < 1, "--val-split 0.2"),
    "TEST_SPLIT": ("in [0, 1)", lambda v: _number(v) and 0 <= v < 1, "--test-split 0.2"),
    "SOURCE_VAL_SPLIT": ("in (0, 1)", lambda v: _number(v) and 0 < v < 1, "--set SOURCE_VAL_SPLIT=0.1"),
    "FAIL_MIN": ("a dict {metric name: number}", _bounds, '--set \'FAIL_MIN={"dc_gain": 1.0}\''),
    "FAIL_MAX": ("a dict {metric name: number}", _bounds, '--set \'FAIL_MAX={"ugf": 1e10}\''),
    "OUT_OF_DOMAIN": ("one of 'warn', 'refuse', 'off'", lambda v: v in ("warn", "refuse", "off"),
                      "--out-of-domain warn"),
    "ACTIVE_BUDGET": (*_AT_LEAST_1, "--budget 250"),
    "ACTIVE_INIT": ("an integer >= 10 (the first split needs training and validation rows)",
                    lambda v: _int(v) and v >= 10, "--init 25"),
    "ACTIVE_BATCH": (*_AT_LEAST_1, "--batch 25"),
    "ACTIVE_POOL": (*_AT_LEAST_1, "--pool 5000"),
    "ACTIVE_MEMBERS": ("a list of ensemble member names", lambda v: _names(v) and len(v) > 0,
                       "--members align_hetero,dualhead"),
    "ACTIVE_WARM_START": ("true or false", lambda v: isinstance(v, bool), "--set ACTIVE_WARM_START=true"),
    "ACTIVE_VAL_DESIGNS": ("'auto', 'uniform' or 'picks'", lambda v: v in ("auto", "uniform", "picks"),
                           "--val-designs auto"),
    "SIGNED_RATIO": ("true, false or 'auto'", lambda v: isinstance(v, bool) or v == "auto",
                     "--set SIGNED_RATIO=auto (train both targets, keep the lower val NLL)"),
    "TARGET_ONLY_NETS": ("an integer from 1 to 16", lambda v: _int(v) and 1 <= v <= 16, "--set TARGET_ONLY_NETS=3"),
    "REFIT": ("'off' or 'train+val'", lambda v: v in ("off", "train+val"),
              "--set REFIT=train+val (retrain on train + val rows with val's choices) or off"),
    "WARM_START_FROM": ("a results folder path or '' (off)", lambda v: isinstance(v, str),
                        "--set WARM_START_FROM=results/round3 (or '' to start fresh)"),
    "GP_MAX_ROWS": ("an integer >= 2", lambda v: _int(v) and v >= 2, "--set GP_MAX_ROWS=1000"),
    "GP_RESTARTS": ("an integer >= 0", lambda v: _int(v) and v >= 0, "--set GP_RESTARTS=1"),
    "GP_HYPER_ROWS": ("0 (off) or an integer >= 10 (a subset to search 18 length scales on)",
                      lambda v: _int(v) and (v == 0 or v >= 10), "--set GP_HYPER_ROWS=300 (or 0: restarts on all rows)"),
    **{k: (*_AT_LEAST_1, f"--set {k}=...") for k in ("MDN_COMPONENTS", "MDN_HIDDEN", "MDN_LAYERS",
                                                      "MDN_BATCH_SIZE", "MDN_EPOCHS")},
}


def check_settings(settings: dict) -> None:
    """Refuse a value no stage can use (a negative learning rate, a seed numpy rejects, a
    non-number in a dict setting) with one line naming the setting, what it must be and a fix,
    before any data is read or any model trained."""
    for key, (what, ok, example) in SETTING_RULES.items():
        if key in settings and not ok(settings[key]):
            raise ToolkitError(f"{key} must be {what}, got {settings[key]!r}. Fix: {example}")


def parse_set_pairs(pairs) -> dict:
    """``["EPOCHS=5", "LOG_Y_COLS=ugf,cmrr"]`` -> ``{"EPOCHS": "5", ...}`` (coerced later)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ToolkitError(f"--set expects KEY=VALUE, got {pair!r}. Example: --set EPOCHS=20")
        key, value = pair.split("=", 1)
        out[key.strip().upper()] = value
    return out


def setting_choice(settings: dict, key: str, choices, *, default: str, fix: str) -> str:
    """A setting that must be one of ``choices`` (``default`` when absent); ``fix`` says how to set it."""
    value = settings.get(key, default)
    if value not in choices:
        raise ToolkitError(f"{key} must be one of {list(choices)}, got {value!r}. Fix: {fix}")
    return value


def layer_count(value, *, key: str, keyword: str, lo: int, hi: int, why: str, example: str):
    """A layer-count setting that is ``keyword`` or an integer in ``lo..hi``: None for the keyword, else the int."""
    text = str(value).strip().lower()
    if text == keyword:
        return None
    try:
        count = int(text)
    except ValueError:
        count = lo - 1
    if not lo <= count <= hi:
        raise ToolkitError(f"{key} must be '{keyword}' or an integer in {lo}..{hi} ({why}), got {value!r}. "
                           f"Example: {example}")
    return count


def check_weights(settings: dict, *keys) -> None:
    """Loss weights and learning rates must be >= 0 (a negative weight would reward the term)."""
    for key in keys:
        if settings[key] < 0:
            raise ToolkitError(f"{key} must be >= 0, got {settings[key]}. A negative weight would reward the term.")
