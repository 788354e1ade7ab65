"""The calibrated ensemble: fit it on members, evaluate it, save it, load it, predict with it.

    from inference.predict import Ensemble
    ens = Ensemble.fit(members, data)                       # members: inference.members.load_member(...)
    result = ens.evaluate("target_test")                    # record (metrics, calibration), predictions table
    ens.save("results/5t_opamp_ensemble_metrics.json", result)
    ens = Ensemble.load("results", "5t_opamp")             # needs the saved record (python -m pipeline)
    mean_df, std_df = ens.predict(designs_df)               # physical units, columns checked by name
    mean, std = ens.predict_scaled(x_scaled)                # model space, torch, differentiable w.r.t. x

``fit`` calibrates each member's variance on target_val (closed-form temperature; a point member's
variance is its val MSE; a member that learned from the val rows too brings its own out-of-sample
val predictions, ``oof_val``) and fits the fusion (``inference.fusion``); every fused number, whether
for the report or for inverse design, goes through ``inference.fusion.fuse``.  A loaded ensemble
needs only the member checkpoints and ``{OPAMP}_ensemble_metrics.json``: neither config.py nor the
data dir.  ``python -m inference.infer_ensemble`` is a short script over this object.
"""
import json
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.atomic import atomic_write_text
from core.errors import ToolkitError
from core.freshness import file_sha256
from data_loader.preprocessing import Preprocessing
from inference.calibration import (CURVE_LEVELS, LEVELS, calibration_summary, coverage_curve, interval_multiplier,
                                   z_of)
from inference.evaluate import eval_split, positive_floor
from inference.fusion import FusionParams, apply_fusion, fit_fusion, fuse
from inference.members import (DEFAULT_MEMBERS, Member, check_agreement,  # noqa: F401
                               load_member, parse_members)
from inference.metrics import regression_report

OUT_OF_DOMAIN_MODES = ("warn", "refuse", "off")   # what predict does with designs outside the training data


def ensemble_json_path(results_dir, opamp) -> Path:
    return Path(results_dir) / f"{opamp}_ensemble_metrics.json"


@torch.no_grad()
def member_outputs(member: Member, x: torch.Tensor):
    """Uncalibrated model-space ``(mean, var)`` as float64 numpy, (N, M) each; var None for a point model."""
    member.model.eval()
    mean, var = member.forward(x)
    return mean.double().cpu().numpy(), (None if var is None else var.double().cpu().numpy())


def interval_bounds(pre, mean, var, z):
    """Physical (lo, hi) of mean +- z*sqrt(var) in model space (monotone transforms keep the order)."""
    half = np.sqrt(var) * np.asarray(z, float)
    return never_negative(pre, pre.inverse_y(mean - half)), pre.inverse_y(mean + half)


def oof_val(member: Member, data: dict):
    """A member's own out-of-sample target_val predictions ``(mean, var)`` when its checkpoint carries them
    (a member that also learned from the val rows, e.g. the GP's leave-one-out predictions), else None.

    The fusion and the calibration are fitted on these instead of the member's in-sample fit of val."""
    return checkpoint_oof_val(member.meta, data)


def checkpoint_oof_val(meta: dict, data: dict):
    """``oof_val`` from a checkpoint's metadata (any stage's; None where it keeps no val predictions)."""
    oof = (meta.get("extra") or {}).get("oof_val")
    if not oof or list(oof.get("target_val_idx") or []) != list(data["split"].get("target_val_idx") or []):
        return None
    return np.asarray(oof["mean"], float), np.asarray(oof["var"], float)


@dataclass
class Evaluation:
    """``Ensemble.evaluate``: ``record`` (JSON-able: members, ensemble, calibration, coverage curves) and
    the arrays behind it, physical units unless named ``*_scaled``."""
    split: str
    record: dict
    truth: np.ndarray                 # (N, M)
    mean: np.ndarray                  # (N, M) fused mean
    std: np.ndarray                   # (N, M) fused std
    members: dict                     # {member: (N, M) mean}
    curves: dict                      # {"<member> before|after": coverage per CURVE_LEVELS}
    table: pd.DataFrame               # predictions CSV: row, out_of_domain, <metric>_true/_mean/_std/_loNN/_hiNN
    out_of_domain: list = field(default_factory=list)   # per row, "" inside the training inputs' ranges


class Ensemble:
    """The fused, calibrated members.  Build with :meth:`fit` (on data) or :meth:`load` (a saved record)."""

    def __init__(self, members, params: FusionParams, preprocessing: Preprocessing, *, record: dict | None = None):
        self.members = list(members)
        self.params = params
        self.preprocessing = preprocessing
        self.record = record or {}
        self.x_cols, self.y_cols = list(preprocessing.x_cols), list(preprocessing.y_cols)
        for m in self.members:
            m.model.eval()

    @classmethod
    def fit(cls, members, data: dict, *, final: str = "coverage", selection: str = "val",
            info: dict | None = None) -> "Ensemble":
        """Calibrate ``members`` and fit the fusion on ``data["target_val"]`` (a ``get_data_and_scalers`` dict).

        ``info``: run facts kept in the record (opamp, seed, dry_run).  The data is kept as ``data_`` for
        :meth:`evaluate`."""
        members = list(members)
        check_agreement(members)
        device = next(members[0].model.parameters()).device
        x_val = torch.as_tensor(data["target_val"][0], device=device)
        y_val = data["target_val"][1].astype(float)
        means, variances = [], []
        for m in members:
            mv, vv = oof_val(m, data) or member_outputs(m, x_val)
            if vv is None:  # point model: homoscedastic variance = its val MSE per metric
                vv = np.broadcast_to(np.mean((mv - y_val) ** 2, axis=0), mv.shape).copy()
            means.append(mv)
            variances.append(vv)
        names = [m.name for m in members]
        params = fit_fusion(names, np.stack(means), np.stack(variances), y_val, final=final, selection=selection)
        record = {**(info or {}), "checkpoints": [str(m.path) for m in members],
                  # what the fusion was fitted on: Ensemble.load refuses a member retrained since
                  "member_sha256": {m.name: file_sha256(m.path) for m in members},
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "fusion": params.to_dict()}
        ens = cls(members, params, data["preprocessing"], record=record)
        ens.data_ = data
        return ens

    def outputs(self, x_scaled: torch.Tensor):
        """Uncalibrated member ``(means, variances)``, (K, N, M) float64 numpy; a point member's variance is
        its val MSE."""
        means, variances = [], []
        for k, m in enumerate(self.members):
            mean, var = member_outputs(m, x_scaled)
            means.append(mean)
            variances.append(np.broadcast_to(np.asarray(self.params.val_mse[k], float), mean.shape).copy()
                             if var is None else var)
        return np.stack(means), np.stack(variances)

    def evaluate(self, split: str | None = None, data: dict | None = None) -> Evaluation:
        """Members and ensemble on ``split`` of ``data`` (default: the fitted data's target_test, or target_val
        when there is none): physical metrics, calibration before/after, coverage curves, predictions."""
        data = data if data is not None else getattr(self, "data_", None)
        if data is None:
            raise ToolkitError("evaluate needs data: pass data=get_data_and_scalers(...) (a loaded ensemble keeps "
                               "none).")
        split = split or eval_split(data)
        cols, pre, names = list(data["y_cols"]), data["preprocessing"], list(self.params.members)
        device = next(self.members[0].model.parameters()).device
        y = data[split][1].astype(float)
        means, variances = self.outputs(torch.as_tensor(data[split][0], device=device))
        if split == "target_val":
            # a member that learned from the val rows (the GP) is scored on its out-of-sample predictions of
            # them, as the fusion was fitted on: its in-sample fit would report a near-perfect R^2
            for k, m in enumerate(self.members):
                oof = oof_val(m, data)
                if oof is not None:
                    means[k], variances[k] = oof
        ens_mean, ens_var_before, _ = apply_fusion(self.params, means, variances, final=False)
        _, ens_var, weights = apply_fusion(self.params, means, variances, final=True)
        truth = data["raw"][split][1].to_numpy(float)
        floor = positive_floor(data)
        temps = np.asarray(self.params.temperatures)
        record = {"split": split, "n": int(len(truth)), "y_cols": cols, "members": {},
                  "coverage_levels": list(CURVE_LEVELS), "mean_weights": {}}
        curves, phys_member = {}, {}
        for k, name in enumerate(names):
            mt, vt = means[k], variances[k]
            phys_member[name] = pre.inverse_y(mt)
            cal_vt = vt * temps[k] ** 2
            record["members"][name] = {
                "checkpoint": str(self.members[k].path),
                "metrics": regression_report(truth, phys_member[name], cols, floor=floor),
                "temperature": dict(zip(cols, map(float, temps[k]))),
                "val_mse": dict(zip(cols, map(float, self.params.val_mse[k]))),
                "calibration": {"before": calibration_summary(y, mt, vt, cols),
                                "after": calibration_summary(y, mt, cal_vt, cols)}}
            curves[f"{name} before"] = coverage_curve(y, mt, vt)
            curves[f"{name} after"] = coverage_curve(y, mt, cal_vt)
            record["mean_weights"][name] = dict(zip(cols, map(float, weights[k].mean(axis=0))))
        pred = never_negative(pre, pre.inverse_y(ens_mean))   # as predict() reports it
        std = pre.y_std_to_physical(ens_mean, np.sqrt(ens_var))
        p = self.params
        record["ensemble"] = {
            "metrics": regression_report(truth, pred, cols, floor=floor),
            "final_temperature": dict(zip(cols, map(float, p.final_temperature))),
            "final_method": p.final_method, "interval_z": p.interval_z,
            "calibration": {"before": calibration_summary(y, ens_mean, ens_var_before, cols),
                            "after": calibration_summary(y, ens_mean, ens_var, cols, p.interval_z),
                            "after_gaussian_z": calibration_summary(y, ens_mean, ens_var, cols)}}
        curves["ensemble before"] = coverage_curve(y, ens_mean, ens_var_before)
        curves["ensemble after"] = coverage_curve(y, ens_mean, ens_var, interval_z=p.interval_z)   # as reported
        record["coverage_curves"] = curves
        idx = data["split"].get(f"{split}_idx", list(range(len(truth))))
        flags = pre.out_of_domain(data["raw"][split][0])
        flags = flags if flags is not None else [""] * len(idx)
        table = {"row": idx, "out_of_domain": flags}   # "" = inside
        bounds = {lv: interval_bounds(pre, ens_mean, ens_var, p.interval_z[str(lv)]) for lv in LEVELS}
        for j, c in enumerate(cols):
            table.update({f"{c}_true": truth[:, j], f"{c}_mean": pred[:, j], f"{c}_std": std[:, j]})
            for lv, (lo, hi) in bounds.items():
                table.update({f"{c}_lo{round(100 * lv)}": lo[:, j], f"{c}_hi{round(100 * lv)}": hi[:, j]})
        return Evaluation(split, record, truth, pred, std, phys_member, curves, pd.DataFrame(table), list(flags))

    def save(self, path, evaluation: Evaluation | None = None) -> dict:
        """Write the record (fusion, checkpoints and their hashes, run facts, plus ``evaluation``'s) to ``path``
        atomically; :meth:`load` reads it back.  Returns what was written."""
        record = {**self.record, **(evaluation.record if evaluation is not None else {})}
        atomic_write_text(Path(path), json.dumps(record, indent=2) + "\n")
        return record

    @property
    def temperatures(self) -> dict:
        """``{member: {metric: T}}`` and ``{"ensemble": {metric: T_final}}`` (plain floats)."""
        out = {m: dict(zip(self.y_cols, map(float, t))) for m, t in zip(self.params.members, self.params.temperatures)}
        out["ensemble"] = dict(zip(self.y_cols, map(float, self.params.final_temperature)))
        return out

    @classmethod
    def load(cls, results_dir, opamp: str, members=None, device="cpu") -> "Ensemble":
        """Load from ``results_dir``; ``members`` (default: those the ensemble was fitted with) must match it."""
        path = ensemble_json_path(results_dir, opamp)
        if not path.is_file():
            raise missing_ensemble(results_dir, opamp)
        rerun = f"Rerun python -m inference.infer_ensemble --opamp {opamp} --results-dir {results_dir}"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:     # JSONDecodeError is a ValueError
            raise ToolkitError(f"{path} is not a readable ensemble record ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}; truncated or damaged). {rerun}.") from None
        lacks = [k for k in ("fusion", "checkpoints") if not isinstance(record, dict) or k not in record]
        if lacks:
            raise ToolkitError(f"{path} is an incomplete ensemble record (no {', '.join(lacks)}). {rerun}.")
        if not isinstance(record["fusion"], dict):
            raise ToolkitError(f"{path} holds a damaged fusion record ({type(record['fusion']).__name__}, not a "
                               f"dict). {rerun}.")
        try:
            params = FusionParams.from_dict(record["fusion"])
        except TypeError as exc:
            raise ToolkitError(f"{path} holds a damaged fusion record ({exc}). {rerun}.") from None
        if not isinstance(record["checkpoints"], list) or len(record["checkpoints"]) != len(params.members):
            raise ToolkitError(f"{path} lists checkpoints {record['checkpoints']!r} for members {params.members}: "
                               f"a damaged record. {rerun}.")
        if members is not None and parse_members(members) != list(params.members):
            raise ToolkitError(f"{path} was fitted for members {params.members}, not {parse_members(members)}. "
                               f"Rerun python -m inference.infer_ensemble --members {','.join(parse_members(members))}.")
        paths = [Path(results_dir) / Path(ck).name for ck in record["checkpoints"]]
        fitted_on = record.get("member_sha256")
        for name, ck in zip(params.members, paths):
            if fitted_on is None:
                break
            if ck.is_file() and file_sha256(ck) != fitted_on.get(name):
                _readable_member(ck, name, opamp, results_dir)
                raise ToolkitError(f"{ck} changed after the ensemble was fitted (the {name} member was retrained): "
                                   f"its calibration and fusion weights belong to the old member. "
                                   f"{refit_command(results_dir, opamp, params.members, ck)}.")
        if fitted_on is None:
            warnings.warn(f"{path} predates member hashes, so a member retrained since cannot be detected. {rerun} "
                          f"to record them.")
        loaded = [load_member(name, ck, opamp=opamp, device=device) for name, ck in zip(params.members, paths)]
        check_agreement(loaded)
        pre = Preprocessing.from_dict(loaded[0].meta["preprocessing"])
        return cls(loaded, params, pre, record=record)

    def _stack(self, x: torch.Tensor):
        means, variances = [], []
        for k, m in enumerate(self.members):
            mean, var = m.forward(x)                                     # (N, M) each
            if var is None:
                var = torch.as_tensor(self.params.val_mse[k], dtype=mean.dtype, device=mean.device).expand_as(mean)
            means.append(mean)
            variances.append(var)
        temps = torch.as_tensor(self.params.temperatures, dtype=means[0].dtype, device=means[0].device)
        return torch.stack(means), torch.stack(variances) * temps[:, None, :] ** 2   # (K, N, M) calibrated

    def predict_scaled(self, x_scaled: torch.Tensor):
        """Model-space fused ``(mean, std)``, (N, M) tensors, differentiable w.r.t. ``x_scaled`` (N, D)."""
        means, variances = self._stack(x_scaled)
        mean, var, _ = fuse(means, variances, val_mse=self.params.val_mse, beta=self.params.beta,
                            gamma=self.params.gamma, final_temperature=self.params.final_temperature)
        return mean, var.sqrt()

    def domain_flags(self, designs: pd.DataFrame) -> pd.Series:
        """Per design, ``""`` inside the training domain, else the features outside it (see
        ``Preprocessing.out_of_domain``); all ``""`` for members saved before ranges were recorded."""
        flags = self.preprocessing.out_of_domain(designs)
        return pd.Series(flags if flags is not None else [""] * len(designs), index=designs.index,
                         name="out_of_domain", dtype=object)

    def check_domain(self, designs: pd.DataFrame, out_of_domain: str = "warn") -> pd.Series:
        """``domain_flags`` acted on: ``"warn"`` (a warning naming the first), ``"refuse"`` (ToolkitError) or ``"off"``."""
        if out_of_domain not in OUT_OF_DOMAIN_MODES:
            raise ToolkitError(f"out_of_domain must be one of {list(OUT_OF_DOMAIN_MODES)}, got {out_of_domain!r}.")
        flags = self.domain_flags(designs)
        outside = flags[flags != ""]
        if len(outside) and out_of_domain != "off":
            what = (f"{len(outside)} of {len(flags)} designs lie outside the training data (first: row "
                    f"{outside.index[0]}: {outside.iloc[0]})")
            if out_of_domain == "refuse":
                raise ToolkitError(f"{what}. Predictions there are extrapolations. Fix: give designs inside the data "
                                   f"ranges (units as in the data), or pass out_of_domain='warn' to predict anyway.")
            warnings.warn(f"{what}; their predictions are extrapolations (marked in mean_df.attrs['out_of_domain']). "
                          f"out_of_domain='refuse' refuses them, 'off' silences this.", stacklevel=_user_level())
        return flags

    def predict(self, designs: pd.DataFrame, *, out_of_domain: str = "warn"):
        """Physical ``(mean_df, std_df)`` for a DataFrame of designs (columns by name, any order).

        Designs outside the training domain (``domain_flags``) are warned about, refused or let
        through silently per ``out_of_domain`` ("warn" | "refuse" | "off"); either way the flags
        are in ``mean_df.attrs["out_of_domain"]`` (a Series, "" = inside).
        """
        mean, std, flags = self._model_space(designs, out_of_domain, "predict")
        mean_df, std_df = self._physical(mean, std, designs.index)
        mean_df.attrs["out_of_domain"] = flags
        return mean_df, std_df

    def predict_interval(self, designs: pd.DataFrame, level: float = 0.95, *, out_of_domain: str = "warn"):
        """Physical ``(lo_df, hi_df)`` of the calibrated central interval holding ``level``.

        Uses the split-conformal multipliers fitted on target_val for each level of the calibration curve (0.1 ..
        0.99; inference.calibration.fit_interval_z), linear in the level between two of them; outside them (or for
        an ensemble fitted before they were) the Gaussian z of the fused std.  The same input
        checks and ``out_of_domain`` handling as :meth:`predict` (flags in ``lo_df.attrs["out_of_domain"]``); a
        log-scaled metric that was never negative in the fitting data gets no negative lower bound (expm1 of the
        model-space bound reaches below 0 near the clip range's edge).
        """
        _check_level(level)
        mean, std, flags = self._model_space(designs, out_of_domain, "predict_interval")
        lo_df, hi_df = self._interval(mean, std, level, designs.index)
        lo_df.attrs["out_of_domain"] = flags
        return lo_df, hi_df

    def predict_with_intervals(self, designs: pd.DataFrame, levels=(0.68, 0.95), *, out_of_domain: str = "warn"):
        """``(mean_df, std_df, {level: (lo_df, hi_df)})``: :meth:`predict` and :meth:`predict_interval` at each of
        ``levels`` from one pass through the members (the same numbers; flags in ``mean_df.attrs``)."""
        for level in levels:
            _check_level(level)
        mean, std, flags = self._model_space(designs, out_of_domain, "predict_with_intervals")
        mean_df, std_df = self._physical(mean, std, designs.index)
        mean_df.attrs["out_of_domain"] = flags
        mean_df.attrs["clipped"] = self.clipped(mean, designs.index)
        return mean_df, std_df, {level: self._interval(mean, std, level, designs.index) for level in levels}

    def clipped(self, mean_scaled, index) -> pd.Series:
        """Per design, the metrics whose fused model-space mean lay outside the clip range (the fitting data's range
        widened by its margin), comma-separated: their prediction is that range's edge, the models extrapolated."""
        pre = self.preprocessing
        out = (np.asarray(mean_scaled) < np.asarray(pre.y_clip_lo)) | (np.asarray(mean_scaled) > np.asarray(pre.y_clip_hi))
        return pd.Series([",".join(c for c, o in zip(self.y_cols, row) if o) for row in out], index=index,
                         name="clipped", dtype=object)

    def _physical(self, mean, std, index):
        """Physical ``(mean_df, std_df)`` of model-space ``mean``/``std``; a log-scaled metric never negative in the
        fitting data gets no negative mean (expm1 of a clipped mean can reach below 0, as a lower bound can)."""
        phys = never_negative(self.preprocessing, self.preprocessing.inverse_y(mean))
        return (pd.DataFrame(phys, columns=self.y_cols, index=index),
                pd.DataFrame(self.preprocessing.y_std_to_physical(mean, std), columns=self.y_cols, index=index))

    def _interval(self, mean, std, level: float, index):
        """Physical ``(lo_df, hi_df)`` of the calibrated central interval holding ``level`` (see predict_interval)."""
        z = interval_multiplier(self.params.interval_z, level)
        lo, hi = interval_bounds(self.preprocessing, mean, std ** 2, z if z is not None else z_of(level))
        return pd.DataFrame(lo, columns=self.y_cols, index=index), pd.DataFrame(hi, columns=self.y_cols, index=index)

    def _model_space(self, designs, out_of_domain: str, what: str):
        """``(mean, std, flags)``: model-space fused prediction (float64 arrays) of a DataFrame of physical designs,
        checked (a DataFrame, the model's columns by name) and its out-of-domain rows handled per ``out_of_domain``."""
        if not isinstance(designs, pd.DataFrame):
            raise ToolkitError(f"{what} expects a pandas DataFrame with columns {self.x_cols}, got "
                               f"{type(designs).__name__}. Use predict_scaled for model-space arrays.")
        x = self.preprocessing.transform_x(designs)                       # checks names, reorders
        flags = self.check_domain(designs, out_of_domain)
        device = next(self.members[0].model.parameters()).device
        with torch.no_grad():
            mean, std = self.predict_scaled(torch.as_tensor(x, device=device))
        return mean.double().cpu().numpy(), std.double().cpu().numpy(), flags


def missing_ensemble(results_dir, opamp: str) -> ToolkitError:
    """The error for a results folder without ``opamp``'s ensemble: the circuits it holds one for, else how to fit
    it."""
    results = Path(results_dir)
    found = sorted(p.name[: -len("_ensemble_metrics.json")] for p in results.glob("*_ensemble_metrics.json")) \
        if results.is_dir() else []
    if found:
        return ToolkitError(f"No ensemble for {opamp!r} in {results}; it holds one for {', '.join(found)}. Fix: "
                            f"--opamp {found[0]}, or fit {opamp}'s with python -m pipeline --opamp {opamp} "
                            f"--results-dir {results}")
    return ToolkitError(f"No ensemble for {opamp!r} in {results} ({ensemble_json_path(results, opamp)} is missing). "
                        f"Make it with: python -m pipeline --opamp {opamp} --results-dir {results} (python -m "
                        f"inference.infer_ensemble when its members are trained), or pass the folder that holds it")


def never_negative(pre: Preprocessing, phys: np.ndarray) -> np.ndarray:
    """Physical values (N, M) with a log-scaled metric never negative in the fitting data held at >= 0: expm1 of a
    model-space value near the clip range's lower edge reaches below 0, which none of its values does."""
    return np.where(pre.log_y_never_negative(), np.maximum(phys, 0.0), phys)


def _check_level(level) -> None:
    if isinstance(level, bool) or not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ToolkitError(f"level must be a coverage in (0, 1), e.g. 0.95, got {level!r}.")


def refit_command(results_dir, opamp: str, members, checkpoint) -> str:
    """"Rerun python -m inference.infer_ensemble ..." that refits this ensemble as it was: its members, and the run
    flags (data folder, seed, target rows) ``checkpoint``, one of its members, was trained with (its config
    snapshot), so the command runs as printed."""
    from core.stages import run_flags
    from models.model_utils import read_checkpoint_meta
    try:
        config = read_checkpoint_meta(checkpoint).get("config") or {}
        n = config.get("N_TARGET_TRAIN") or 0      # infer_ensemble takes it as a setting, not --n-target
        flags = run_flags({**config, "OPAMP_TYPE": opamp, "RESULTS_DIR": str(results_dir), "N_TARGET_TRAIN": 0}) \
            + (f" --set N_TARGET_TRAIN={n}" if n else "")
    except (ToolkitError, KeyError):     # an unreadable member or an old snapshot: the flags this call knows
        flags = shlex.join(["--opamp", opamp, "--results-dir", str(results_dir)])
    return f"Rerun python -m inference.infer_ensemble {flags} --members {','.join(members)}"


def _readable_member(ck, name: str, opamp: str, results_dir) -> None:
    """A member whose bytes changed since the fit: retrained, or damaged (a truncated copy).  Damaged is one line
    saying so and how to recreate it (refitting the ensemble on it would fail the same way)."""
    from models.model_utils import read_checkpoint_meta
    try:
        read_checkpoint_meta(ck)
    except ToolkitError as exc:
        raise ToolkitError(f"{ck} (the {name} member) cannot be read: damaged or truncated since the ensemble was "
                           f"fitted ({str(exc).splitlines()[0][:160]}). Fix: python -m pipeline --opamp {opamp} "
                           f"--results-dir {results_dir}, with the run's --data-dir, --seed and --n-target: it "
                           f"retrains the member and refits the ensemble.") from None


# the toolkit's own frames between a user's call and a warning: skipped, so the warning names the user's line
_OWN_FILES = {Path(__file__).resolve(), Path(__file__).resolve().parents[1] / "surrogate.py"}


def _user_level() -> int:
    """``warnings.warn``'s stacklevel, called from a method here, of the first frame outside this module and
    ``surrogate.py``: a notebook's own line, not ``surrogate.py:156``."""
    frame, level = sys._getframe(1), 1          # the frame calling warnings.warn is level 1
    while frame is not None and Path(frame.f_code.co_filename).resolve() in _OWN_FILES:
        frame, level = frame.f_back, level + 1
    return level
