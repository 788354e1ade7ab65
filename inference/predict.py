"""Prediction API for notebooks and inverse design: the calibrated ensemble, loaded from a results dir.

    from inference.predict import Ensemble
    ens = Ensemble.load("results", "5t_opamp")             # needs `python -m inference.infer_ensemble` first
    mean_df, std_df = ens.predict(designs_df)               # physical units, columns checked by name
    mean, std = ens.predict_scaled(x_scaled)                # model space, torch, differentiable w.r.t. x

Everything comes from the member checkpoints and ``{OPAMP}_ensemble_metrics.json`` (temperatures,
fusion exponents, val MSEs): neither config.py nor the data dir is needed.
"""
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.errors import ToolkitError
from data_loader.preprocessing import Preprocessing
from inference.fusion import FusionParams, fuse
from models import MLP, AlignHeteroMLP, DualHeadMLP
from models.model_utils import load_checkpoint, read_checkpoint_meta
from models.outputs import has_variance, mean_and_variance

MEMBER_KINDS = {"align_hetero": "align_hetero", "target_only": "target_only",
                "target_only_hetero": "target_only", "dualhead": "dualhead", "pooled": "pooled"}
MEMBER_CLASSES = {"align_hetero": AlignHeteroMLP, "target_only": AlignHeteroMLP, "dualhead": DualHeadMLP,
                  "pooled": MLP}
DEFAULT_MEMBERS = ("align_hetero", "target_only", "dualhead")
# dualhead joined when fine-tuning got its own variance head (FINETUNE_OBJECTIVE): it is the best
# member below ~200 target rows.  pooled stays optional: it lifts the ensemble on 5t_opamp at every
# n, but on one two_stage split its cmrr has the best val MSE and fails on test (R2_log -0.83 at
# n=50), and the fusion trusts it; see docs/BENCHMARKS.md "Ensemble members"
# What makes each member (same text as training.common.COMMANDS; kept here so this module
# needs nothing from the training code).
MAKES = {"align_hetero": "python -m training.train_align_coral",
         "target_only": "python -m training.train_target_only",
         "dualhead": "python -m fine_tune.fine_tune",
         "pooled": "python -m training.train_pooled"}


OUT_OF_DOMAIN_MODES = ("warn", "refuse", "off")   # what predict does with designs outside the training data


def checkpoint_sha256(path) -> str:
    """sha256 of a member checkpoint file: the ensemble record keeps it to detect a retrained member."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensemble_json_path(results_dir, opamp) -> Path:
    return Path(results_dir) / f"{opamp}_ensemble_metrics.json"


def parse_members(members) -> list:
    """``"align_hetero,target_only"`` or a sequence -> canonical kinds, validated, no duplicates."""
    names = [m.strip() for m in members.split(",")] if isinstance(members, str) else list(members)
    out = []
    for name in names:
        if name not in MEMBER_KINDS:
            raise ToolkitError(f"Unknown ensemble member {name!r}; choose from {sorted(set(MEMBER_KINDS.values()))}.")
        kind = MEMBER_KINDS[name]
        if kind in out:
            raise ToolkitError(f"Member {name!r} is listed twice.")
        out.append(kind)
    if not out:
        raise ToolkitError("The ensemble needs at least one member, e.g. --members align_hetero,target_only")
    return out


@dataclass
class Member:
    name: str
    path: Path
    model: torch.nn.Module
    meta: dict

    @property
    def point(self) -> bool:
        """A point model (no variance head): its variance is its val MSE (homoscedastic)."""
        return not has_variance(self.model)

    def forward(self, x: torch.Tensor):
        """Model-space ``(mean, var)``, (N, M) each; var is None for a point model.  Differentiable."""
        return mean_and_variance(self.model, x)


def _same_prep(a: dict, b: dict) -> bool:
    for key in set(a) | set(b):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, list) and va and isinstance(va[0], (int, float)) and not isinstance(va[0], bool):
            if not isinstance(vb, list) or len(va) != len(vb) or not np.allclose(va, vb, rtol=1e-6, atol=1e-9):
                return False
        elif va != vb:
            return False
    return True


def check_agreement(members) -> None:
    """Members must share circuit, columns and preprocessing; refuse naming both files."""
    first = members[0]
    for other in members[1:]:
        a, b = first.meta, other.meta
        checks = [("circuit (config OPAMP_TYPE)", a.get("config", {}).get("OPAMP_TYPE"),
                   b.get("config", {}).get("OPAMP_TYPE")),
                  ("x_cols", a["x_cols"], b["x_cols"]), ("y_cols", a["y_cols"], b["y_cols"])]
        for what, va, vb in checks:
            if va != vb:
                raise ToolkitError(f"Ensemble members disagree on {what}: {first.path} has {va!r}, {other.path} has "
                                   f"{vb!r}. Retrain both on the same circuit and data (python -m pipeline).")
        if not _same_prep(a["preprocessing"], b["preprocessing"]):
            raise ToolkitError(f"Ensemble members disagree on preprocessing (scalers / log columns): {first.path} vs "
                               f"{other.path}. Retrain them with the same settings (python -m pipeline --force).")
        if (a.get("split") or {}).get("target_test_idx") != (b.get("split") or {}).get("target_test_idx"):
            raise ToolkitError(f"Ensemble members were trained on different splits (seed / test split): {first.path} "
                               f"vs {other.path}. Retrain them with the same --seed and --test-split.")


def load_member(name: str, path, *, opamp: str | None = None, device="cpu") -> Member:
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"Missing ensemble member {name!r}: {path}. Make it with: {MAKES[name]}"
                           + (f" --opamp {opamp} --results-dir {path.parent}" if opamp else ""))
    meta = read_checkpoint_meta(path)
    made_for = (meta.get("config") or {}).get("OPAMP_TYPE")
    if opamp is not None and made_for != opamp:
        raise ToolkitError(f"{path} was trained for circuit {made_for!r}, not {opamp!r}. Rerun {MAKES[name]} "
                           f"--opamp {opamp}.")
    model, meta = load_checkpoint(path, expect_class=MEMBER_CLASSES[name], map_location=device)
    return Member(name, path, model, meta)


class Ensemble:
    """The fused, calibrated members.  Build with :meth:`load`."""

    def __init__(self, members, params: FusionParams, preprocessing: Preprocessing, *, record: dict | None = None):
        self.members = list(members)
        self.params = params
        self.preprocessing = preprocessing
        self.record = record or {}
        self.x_cols, self.y_cols = list(preprocessing.x_cols), list(preprocessing.y_cols)
        for m in self.members:
            m.model.eval()

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
            raise ToolkitError(f"No ensemble for {opamp!r} in {results_dir}: {path} is missing. Make it with: "
                               f"python -m inference.infer_ensemble --opamp {opamp} --results-dir {results_dir}")
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
            if ck.is_file() and checkpoint_sha256(ck) != fitted_on.get(name):
                raise ToolkitError(f"{ck} changed after the ensemble was fitted (the {name} member was retrained): "
                                   f"its calibration and fusion weights belong to the old member. {rerun}.")
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
                    f"{outside.index[0]!r}: {outside.iloc[0]})")
            if out_of_domain == "refuse":
                raise ToolkitError(f"{what}. Predictions there are extrapolations. Fix: give designs inside the data "
                                   f"ranges (units as in the data), or pass out_of_domain='warn' to predict anyway.")
            warnings.warn(f"{what}; their predictions are extrapolations (marked in mean_df.attrs['out_of_domain']). "
                          f"out_of_domain='refuse' refuses them, 'off' silences this.", stacklevel=3)
        return flags

    def predict(self, designs: pd.DataFrame, *, out_of_domain: str = "warn"):
        """Physical ``(mean_df, std_df)`` for a DataFrame of designs (columns by name, any order).

        Designs outside the training domain (``domain_flags``) are warned about, refused or let
        through silently per ``out_of_domain`` ("warn" | "refuse" | "off"); either way the flags
        are in ``mean_df.attrs["out_of_domain"]`` (a Series, "" = inside).
        """
        if not isinstance(designs, pd.DataFrame):
            raise ToolkitError(f"predict expects a pandas DataFrame with columns {self.x_cols}, got "
                               f"{type(designs).__name__}. Use predict_scaled for model-space arrays.")
        x = self.preprocessing.transform_x(designs)                       # checks names, reorders
        flags = self.check_domain(designs, out_of_domain)
        device = next(self.members[0].model.parameters()).device
        with torch.no_grad():
            mean, std = self.predict_scaled(torch.as_tensor(x, device=device))
        mean, std = mean.double().cpu().numpy(), std.double().cpu().numpy()
        phys_mean = self.preprocessing.inverse_y(mean)
        phys_std = self.preprocessing.y_std_to_physical(mean, std)
        mean_df = pd.DataFrame(phys_mean, columns=self.y_cols, index=designs.index)
        mean_df.attrs["out_of_domain"] = flags
        return mean_df, pd.DataFrame(phys_std, columns=self.y_cols, index=designs.index)

    def predict_interval(self, designs: pd.DataFrame, level: float = 0.95):
        """Physical ``(lo_df, hi_df)`` of the calibrated central interval holding ``level``.

        Uses the split-conformal multipliers fitted on target_val for 0.68 and 0.95 (see
        inference.calibration.fit_interval_z); other levels use the Gaussian z of the fused std.
        """
        from inference.calibration import z_of
        x = self.preprocessing.transform_x(designs)
        device = next(self.members[0].model.parameters()).device
        with torch.no_grad():
            mean, std = self.predict_scaled(torch.as_tensor(x, device=device))
        mean, std = mean.double().cpu().numpy(), std.double().cpu().numpy()
        z = (self.params.interval_z or {}).get(str(level))
        half = std * (np.asarray(z, float) if z is not None else z_of(level))
        lo, hi = self.preprocessing.inverse_y(mean - half), self.preprocessing.inverse_y(mean + half)
        return (pd.DataFrame(lo, columns=self.y_cols, index=designs.index),
                pd.DataFrame(hi, columns=self.y_cols, index=designs.index))
