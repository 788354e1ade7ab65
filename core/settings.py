"""Resolve the settings of one run: config.py defaults -> per-circuit overrides -> CLI flags.

Library code never calls this; entry points do, and put the resulting dict (a plain,
JSON-able snapshot) into every checkpoint so a run can be reproduced without today's
config.py.
"""
import copy
import difflib
import json
import types

from core.errors import ToolkitError


def snapshot(module: types.ModuleType) -> dict:
    """All UPPER_SNAKE constants of a config module, deep-copied (JSON-able)."""
    return {k: copy.deepcopy(v) for k, v in vars(module).items()
            if k.isupper() and not k.startswith("_") and not callable(v)
            and not isinstance(v, types.ModuleType)}


def _did_you_mean(key, known):
    close = difflib.get_close_matches(key.upper(), list(known), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def coerce(key: str, raw, default):
    """Convert ``raw`` (usually a CLI string) to the type of ``default``; clear error if it cannot."""
    if not isinstance(raw, str):
        bool_mismatch = isinstance(raw, bool) and not isinstance(default, bool)  # True is an int to Python
        if default is None or (isinstance(raw, type(default)) and not bool_mismatch) or (
                isinstance(default, float) and isinstance(raw, int) and not isinstance(raw, bool)):
            return float(raw) if isinstance(default, float) else raw
        raise ToolkitError(f"{key} expects a {type(default).__name__} (default {default!r}), "
                           f"got {raw!r} of type {type(raw).__name__}.")
    text = raw.strip()
    try:
        if isinstance(default, bool):
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
            if isinstance(default, str) and isinstance(default, str) and text.startswith("["):
                return json.loads(text)      # e.g. LOG_X_COLS='["cc","cr"]' replacing 'auto'
            return text
    except (ValueError, json.JSONDecodeError):
        pass
    example = {bool: "true", int: "10", float: "1e-4", dict: '{"a": 1}', list: "a,b"}.get(type(default), "text")
    raise ToolkitError(f"{key} expects a {type(default).__name__} like {example} (default {default!r}), "
                       f"got {raw!r}. Fix the value given for {key}.")


def resolve(module: types.ModuleType, overrides: dict | None = None) -> dict:
    """Settings for one run.

    ``overrides`` maps UPPER keys to values (strings are coerced to the default's type).
    OPAMP_TYPE is resolved first so that ``CIRCUIT_OVERRIDES[opamp]`` sits between the
    module defaults and the explicit overrides (an explicit flag always wins).
    """
    base = snapshot(module)
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in base:
            raise ToolkitError(f"Unknown setting {key!r}.{_did_you_mean(key, base)} "
                               f"Known settings are the UPPER_CASE names in config.py.")
    settings = dict(base)
    opamp = overrides.get("OPAMP_TYPE", base.get("OPAMP_TYPE"))
    per_circuit = base.get("CIRCUIT_OVERRIDES", {}).get(opamp, {})
    for key, value in per_circuit.items():
        if key not in base:
            raise ToolkitError(f"config.CIRCUIT_OVERRIDES[{opamp!r}] sets unknown setting {key!r}."
                               f"{_did_you_mean(key, base)}")
        settings[key] = coerce(key, value, base[key])
    for key, value in overrides.items():
        settings[key] = coerce(key, value, base[key])
    return settings


def parse_set_pairs(pairs) -> dict:
    """``["EPOCHS=5", "LOG_Y_COLS=ugf,cmrr"]`` -> ``{"EPOCHS": "5", ...}`` (coerced later)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ToolkitError(f"--set expects KEY=VALUE, got {pair!r}. Example: --set EPOCHS=20")
        key, value = pair.split("=", 1)
        out[key.strip().upper()] = value
    return out
