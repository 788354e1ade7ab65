"""A scikit-learn style facade over the pipeline, for notebooks: DataFrames in, DataFrames out.

    from surrogate import TransferSurrogate
    model = TransferSurrogate(results_dir="results/notebook", EPOCHS=100, HIDDEN_DIM=128, seed=0)
    model.fit(X_source, y_source, X_target, y_target)          # DataFrames; y columns are the metrics
    mean_df = model.predict(X_new)                              # physical units, columns = y columns
    mean_df, std_df = model.predict(X_new, return_std=True)     # std of the calibrated ensemble (a 1σ spread)
    lo_df, hi_df = model.predict_interval(X_new, 0.95)          # the calibrated interval: use this for intervals

``fit`` writes the four DataFrames into the standard data layout under
``<results_dir>/data/<name>/{source,target}/{features,targets}.csv`` and runs ``python -m pipeline``
in-process (``PIPELINE_JOBS=1`` unless given: two workers need a script's ``if __name__ == "__main__":``
guard) on it: the same stages, checkpoints (seed file names), ensemble, metrics and report as
the command line, in ``results_dir``; a rerun with the same data and settings skips the stages that
are up to date.  The target rows are split into train / val / test by VAL_SPLIT, TEST_SPLIT and SEED
as usual (val for early stopping and calibration, test for the report).  Keyword settings are
config.py keys (``EPOCHS=50``, ``LOG_Y_COLS=["ugf"]``), passed as ``--set``; a misspelled key is
refused with a suggestion.  Fitted attributes end in ``_``: ``ensemble_`` (``inference.predict.Ensemble``),
``x_cols_``, ``y_cols_``, ``summary_`` (the pipeline's return), ``data_dir_``.
"""
import contextlib
import io
import json
import re
from pathlib import Path

import pandas as pd

import pipeline
from core.atomic import atomic_path
from core.errors import ToolkitError
from core.outputs import results_lock
from inference.predict import Ensemble


def _frame(value, what: str) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise ToolkitError(f"{what} must be a pandas DataFrame with named columns, got {type(value).__name__}. "
                           f"Fix: pd.DataFrame(array, columns=[...]).")
    if not all(isinstance(c, str) for c in value.columns) or value.columns.duplicated().any():
        raise ToolkitError(f"{what} needs unique string column names, got {list(value.columns)}.")
    if value.empty:
        raise ToolkitError(f"{what} has no rows.")
    flags = [c for c in value.columns if pd.api.types.is_bool_dtype(value[c])]
    if flags:   # a True/False design choice is the number 0/1 to the models (and to the CSV the stages read)
        value = value.astype({c: int for c in flags})
    text = [c for c in value.columns if not pd.api.types.is_numeric_dtype(value[c])]
    if text:
        raise ToolkitError(f"{what} column(s) {text} are not numeric (e.g. {value[text[0]].iloc[0]!r}). "
                           f"Fix: numbers in the data's units, NaN for a missing value.")
    return value


def _set_value(value) -> str:
    """A Python value as the ``--set KEY=VALUE`` text ``core.settings.coerce`` reads back."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


class TransferSurrogate:
    """Source-to-target transfer surrogate: the toolkit's stages and calibrated ensemble behind fit/predict."""

    def __init__(self, *, results_dir, name: str = "surrogate", members=None, seed: int | None = None,
                 device: str = "cpu", dry_run: bool = False, force: bool = False, plots: bool = False,
                 quiet: bool = True, out_of_domain: str = "warn", **settings):
        self.results_dir, self.name, self.members, self.seed = results_dir, name, members, seed
        self.device, self.dry_run, self.force, self.plots, self.quiet = device, dry_run, force, plots, quiet
        # in-process by default: worker processes would re-import a plain script that has no __main__ guard
        self.out_of_domain, self.settings = out_of_domain, {"PIPELINE_JOBS": 1, **settings}

    def _argv(self) -> list:
        argv = ["--opamp", self.name, "--data-dir", str(self.data_dir_), "--results-dir", str(self.results_dir),
                "--device", self.device]
        argv += ["--seed", str(self.seed)] if self.seed is not None else []
        argv += ["--members", ",".join(self.members) if isinstance(self.members, (list, tuple)) else self.members] \
            if self.members else []
        for key, value in self.settings.items():
            argv += ["--set", f"{key}={_set_value(value)}"]
        return argv + ["--dry-run"] * self.dry_run + ["--force"] * self.force + ["--quiet"] * self.quiet \
            + ["--no-plots"] * (not self.plots)

    def _check_arguments(self) -> None:
        """The pipeline's own argument parsing of ``_argv``, its error as a ToolkitError: argparse would print the
        command-line usage and raise SystemExit, which ends a notebook's kernel call instead of raising."""
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                pipeline.parse_args(self._argv())
        except SystemExit:
            said = [line for line in err.getvalue().splitlines() if line.strip()]
            why = said[-1].split("error: ", 1)[-1] if said else "invalid settings"
            raise ToolkitError(f"TransferSurrogate: {why} (from the keyword arguments seed=, device=, members= "
                               f"or a setting).") from None

    def _write(self, domain: str, x: pd.DataFrame, y: pd.DataFrame, signs: pd.DataFrame | None = None) -> None:
        folder = self.data_dir_ / self.name / domain
        folder.mkdir(parents=True, exist_ok=True)
        frames = [(x, "features.csv"), (y, "targets.csv")]
        if signs is not None:
            frames.append((signs, "metric_signs.csv"))
        elif (folder / "metric_signs.csv").is_file():      # signs from an earlier fit would mismatch these rows
            (folder / "metric_signs.csv").unlink()
        for frame, file in frames:
            path = folder / file
            if path.is_file() and pd.read_csv(path).equals(frame.reset_index(drop=True)):
                continue      # same data: keep the file (and its time), so up-to-date stages are skipped
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)

    def fit(self, X_source, y_source, X_target, y_target, *, signs_source=None, signs_target=None
            ) -> "TransferSurrogate":
        """Train every stage and the ensemble on these rows (physical units); returns self.  ``signs_*``: optional
        DataFrames of +1 / -1, one row per design, a column per ratio metric (cmrr = |Adm/Acm|: the sign of
        Adm/Acm), as ``metric_signs.csv`` in the data layout: with them SIGNED_RATIO can learn the metric through its
        sign (docs/USAGE.md)."""
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.name):
            raise ToolkitError(f"name must be letters, digits, '_', '.' and '-' (a folder under results_dir/data), "
                               f"got {self.name!r}.")
        xs, ys = _frame(X_source, "X_source"), _frame(y_source, "y_source")
        xt, yt = _frame(X_target, "X_target"), _frame(y_target, "y_target")
        if set(xs.columns) != set(xt.columns) or set(ys.columns) != set(yt.columns):
            raise ToolkitError(f"Source and target must have the same columns: X {list(xs.columns)} vs "
                               f"{list(xt.columns)}, y {list(ys.columns)} vs {list(yt.columns)}.")
        if set(xs.columns) & set(ys.columns):
            raise ToolkitError(f"Columns {sorted(set(xs.columns) & set(ys.columns))} are both features and metrics.")
        for x, y, what in ((xs, ys, "source"), (xt, yt, "target")):
            if len(x) != len(y):
                raise ToolkitError(f"X_{what} has {len(x)} rows but y_{what} has {len(y)}; they must be row-aligned.")
            if not x.index.equals(y.index):   # rows are paired by position: a shuffled or filtered y would pair wrongly
                raise ToolkitError(f"X_{what} and y_{what} have different row indexes (first {list(x.index[:3])} vs "
                                   f"{list(y.index[:3])}); rows are paired by position. Fix: y_{what} = "
                                   f"y_{what}.loc[X_{what}.index], or reset_index(drop=True) on both.")
        signs = {}
        for what, value, y in (("source", signs_source, ys), ("target", signs_target, yt)):
            if value is not None:
                value = _frame(value, f"signs_{what}")
                if len(value) != len(y) or set(value.columns) - set(y.columns):
                    raise ToolkitError(f"signs_{what} must have one row per design ({len(y)}) and metric columns of "
                                       f"y_{what}; got {len(value)} rows and columns {list(value.columns)}.")
                if not value.index.equals(y.index):
                    raise ToolkitError(f"signs_{what} and y_{what} have different row indexes; rows are paired by "
                                       f"position. Fix: signs_{what}.loc[y_{what}.index].")
                bad = value.notna() & ~value.isin([-1, 1])
                if bad.any().any():
                    col = bad.columns[bad.any()][0]
                    row = bad.index[bad[col]][0]
                    got = float(value.at[row, col])
                    raise ToolkitError(f"signs_{what} column {col!r} has {got:g} at index {row}: a sign is +1 or -1 "
                                       f"(NaN where the metric is missing).")
            signs[what] = value
        self.data_dir_ = Path(self.results_dir) / "data"
        self._check_arguments()                        # before a file is written
        with results_lock(self.results_dir):         # before the data are written: a fit running there keeps its own
            self._write("source", xs, ys, signs["source"])
            self._write("target", xt[list(xs.columns)], yt[list(ys.columns)], signs["target"])
            self.summary_ = pipeline.main(self._argv())
        self.ensemble_ = Ensemble.load(self.results_dir, self.name)
        self.x_cols_, self.y_cols_ = list(self.ensemble_.x_cols), list(self.ensemble_.y_cols)
        return self

    @classmethod
    def load(cls, results_dir, name: str = "surrogate", **kwargs) -> "TransferSurrogate":
        """A surrogate fitted earlier (in another session) into ``results_dir``, ready to ``predict``."""
        model = cls(results_dir=results_dir, name=name, **kwargs)
        model.data_dir_ = Path(results_dir) / "data"
        model.ensemble_ = Ensemble.load(results_dir, name)
        model.x_cols_, model.y_cols_ = list(model.ensemble_.x_cols), list(model.ensemble_.y_cols)
        return model

    def predict(self, X, return_std: bool = False):
        """Physical mean per metric (DataFrame, X's index), and the calibrated std with ``return_std=True``.
        Columns of X are matched by name (any order); designs outside the training data are handled by
        ``out_of_domain`` ("warn" | "refuse" | "off")."""
        if not hasattr(self, "ensemble_"):
            raise ToolkitError("This TransferSurrogate is not fitted yet: call fit(X_source, y_source, X_target, "
                               "y_target) first.")
        mean, std = self.ensemble_.predict(_frame(X, "X"), out_of_domain=self.out_of_domain)
        return (mean, std) if return_std else mean

    def predict_interval(self, X, level: float = 0.95):
        """Physical ``(lo, hi)`` DataFrames of the calibrated central interval holding ``level`` of new designs
        (``Ensemble.predict_interval``: multipliers fitted on target_val).  Use these for intervals, not
        mean ± z·std: the std is a model-space 1σ mapped to physical units, and the residuals' tails are heavier
        than a Gaussian's."""
        if not hasattr(self, "ensemble_"):
            raise ToolkitError("This TransferSurrogate is not fitted yet: call fit(X_source, y_source, X_target, "
                               "y_target) first.")
        return self.ensemble_.predict_interval(_frame(X, "X"), level, out_of_domain=self.out_of_domain)
