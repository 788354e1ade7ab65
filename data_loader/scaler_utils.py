"""Save / load the fitted x and y scalers under the results dir.

``{results_dir}/{opamp}_scalers.joblib`` holds the sklearn ``StandardScaler`` pair (the seed's API, for users who
load it), the plain ``Preprocessing`` record and a fingerprint of the data files and preprocessing settings.
``{opamp}_scalers.json`` beside it holds the record and the fingerprint as JSON, and is all the toolkit reads back:
unpickling a file from a shared results folder could run any code in it (checkpoints load with
``weights_only=True`` for the same reason).  ``get_data_and_scalers`` reuses the record when the fingerprint
matches and refits (saying so) when it does not, or when the JSON is missing or unreadable.
"""
import hashlib
import json
from pathlib import Path

import joblib

from core.atomic import atomic_paths
from data_loader.preprocessing import Preprocessing


def scaler_path(results_dir, opamp_type: str) -> Path:
    return Path(results_dir) / f"{opamp_type}_scalers.joblib"


def fingerprint(files, settings: dict) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def record_path(path) -> Path:
    """The JSON the toolkit reads beside the seed's ``.joblib``."""
    return Path(path).with_suffix(".json")


def save_scalers(path, pre: Preprocessing, fp: str) -> None:
    with atomic_paths(path, record_path(path)) as (tmp, tmp_json):
        joblib.dump({"x_scaler": pre.x_scaler(), "y_scaler": pre.y_scaler(),
                     "preprocessing": pre.to_dict(), "fingerprint": fp}, tmp)
        Path(tmp_json).write_text(json.dumps({"preprocessing": pre.to_dict(), "fingerprint": fp}) + "\n",
                                  encoding="utf-8")


def load_scalers(path):
    """Return (Preprocessing, fingerprint) from the JSON record, or (None, None) when absent or unreadable."""
    path = record_path(path)
    if not path.exists():
        return None, None
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
        return Preprocessing.from_dict(blob["preprocessing"]), blob.get("fingerprint")
    except Exception:  # a corrupt or foreign file is simply refitted (and then replaced atomically)
        return None, None
