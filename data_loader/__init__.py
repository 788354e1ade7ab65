"""The one shared data API: load / validate / split / preprocess / scale.

    from data_loader import get_data_and_scalers
"""
from data_loader.data_loader import (DEFAULT_RULE, data_kwargs_from_settings, get_data_and_scalers,
                                     load_run_data, new_run)
from data_loader.failures import FailureRule, failure_reasons
from data_loader.layout import list_circuits, read_domain
from data_loader.preprocessing import Preprocessing, fit_preprocessing
from data_loader.scaler_utils import load_scalers, save_scalers, scaler_path
from data_loader.split import split_source_rows, split_target_rows

# Seed-style short names for the individual steps.
load = read_domain
split = split_target_rows
preprocess = fit_preprocessing

__all__ = ["get_data_and_scalers", "load_run_data", "new_run", "data_kwargs_from_settings", "DEFAULT_RULE",
           "FailureRule", "failure_reasons", "list_circuits", "read_domain", "Preprocessing", "fit_preprocessing",
           "load_scalers", "save_scalers", "scaler_path", "split_source_rows", "split_target_rows", "load", "split",
           "preprocess"]
