"""Metrics, calibration, fusion and the ensemble prediction API.

    from inference import Ensemble            # Ensemble.load(results_dir, opamp).predict(df)

Exports are lazy so that ``import inference.metrics`` (used by the training stages) stays light.
"""
_LAZY = {"Ensemble": "inference.predict", "fit_temperature": "inference.calibration",
         "fit_coverage_temperature": "inference.calibration", "coverage": "inference.calibration",
         "gaussian_nll": "inference.calibration", "fuse": "inference.fusion", "fit_fusion": "inference.fusion",
         "regression_report": "inference.metrics", "format_report": "inference.metrics"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
