"""Save / load the fitted x and y scalers (joblib) under the results dir.

The file ``{results_dir}/{opamp}_scalers.joblib`` holds the sklearn ``StandardScaler`` pair
(seed API), the plain ``Preprocessing`` record, and a fingerprint of the data files and
preprocessing settings.  ``get_data_and_scalers`` reuses the file when the fingerprint
matches and refits (saying so) when it does not.
"""
import hashlib
import json
from pathlib import Path

import joblib

from core.atomic import atomic_path
from data_loader.preprocessing import Preprocessing


def scaler_path(results_dir, opamp_type: str) -> Path:
    return Path(results_dir) / f"{opamp_type}_scalers.joblib"


def fingerprint(files, settings: dict) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save_scalers(path, pre: Preprocessing, fp: str) -> None:
    with atomic_path(path) as tmp:
        joblib.dump({"x_scaler": pre.x_scaler(), "y_scaler": pre.y_scaler(),
                     "preprocessing": pre.to_dict(), "fingerprint": fp}, tmp)


def load_scalers(path):
    """Return (Preprocessing, fingerprint) or (None, None) when absent or unreadable."""
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        blob = joblib.load(path)
        return Preprocessing.from_dict(blob["preprocessing"]), blob.get("fingerprint")
    except Exception:  # a corrupt or foreign file is simply refitted (and then replaced atomically)
        return None, None
