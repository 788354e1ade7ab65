"""Ensemble members: loading a member stage's checkpoint and checking that members belong together.

Which stages can be members, their checkpoint files, model classes and the command that makes each
come from the stage registry (``core.stages``).
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import ToolkitError
from core.freshness import current_parent, data_changed, file_label, parent_changed
from core.stages import canonical, command, members as member_stages, rerun_command, stage as stage_of
from data_loader.preprocessing import same_preprocessing
from models.model_utils import load_checkpoint, read_checkpoint_meta
from models.outputs import mean_and_variance

DEFAULT_MEMBERS = ("align_hetero", "target_only", "dualhead", "pooled", "gp_stack")
# = config.ENSEMBLE_MEMBERS (tests/test_registry.py checks).  dualhead joined when fine-tuning got its own
# variance head; pooled and gp_stack joined once the shipped data was re-measured (bench v2) and the
# GP learned from the val rows with out-of-sample val predictions; docs/RESULTS.md#ensemble-members-and-fusion


def parse_members(members) -> list:
    """``"align_hetero,target_only"`` or a sequence -> registry names (old names accepted), no duplicates."""
    names = [m.strip() for m in members.split(",")] if isinstance(members, str) else list(members)
    out = []
    for name in names:
        kind = canonical(name, what="ensemble member", among=member_stages())
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
        return not self.model.has_variance

    def forward(self, x: torch.Tensor):
        """Model-space ``(mean, var)``, (N, M) each; var is None for a point model.  Differentiable."""
        return mean_and_variance(self.model, x)


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
        if not same_preprocessing(a["preprocessing"], b["preprocessing"]):
            raise ToolkitError(f"Ensemble members disagree on preprocessing (scalers / log columns): {first.path} vs "
                               f"{other.path}. Retrain them with the same settings (python -m pipeline --force).")
        if (a.get("split") or {}).get("target_test_idx") != (b.get("split") or {}).get("target_test_idx"):
            raise ToolkitError(f"Ensemble members were trained on different splits (seed / test split): {first.path} "
                               f"vs {other.path}. Retrain them with the same --seed and --test-split.")


def check_against_data(member: Member, data: dict, settings: dict | None = None) -> None:
    """A member must match this run's data: columns, preprocessing and the val/test split it is scored on.
    ``settings``: this run's, so the fix names its circuit, data and results folders and seed."""
    meta = member.meta
    make = rerun_command(member.name, settings) if settings else command(member.name)
    for key in ("x_cols", "y_cols"):
        if list(meta[key]) != list(data[key]):
            raise ToolkitError(f"{member.path} was trained on {key} {meta[key]} but the data has {data[key]}. "
                               f"Retrain it on this data: {make}.")
    if not same_preprocessing(meta["preprocessing"], data["preprocessing"].to_dict()):
        raise ToolkitError(f"{member.path} was trained with other preprocessing (scalers / log columns) than this "
                           f"run's data settings. Rerun {make} with the same settings (or "
                           f"python -m pipeline --force).")
    split = meta.get("split") or {}
    for key in ("target_val_idx", "target_test_idx"):
        if key in data["split"] and split.get(key) != data["split"][key]:
            raise ToolkitError(f"{member.path} was trained on another split ({key} differs: other --seed, "
                               f"--val-split or --test-split); calibrating on it would leak. Rerun "
                               f"{make} with this run's split.")


def out_of_date(member: Member, settings: dict, data_files=()) -> list:
    """Plain signs that ``member`` no longer matches this run (data and parent by the pipeline's own rule,
    ``core.freshness``; the rest of its check lives with training): its parent checkpoint was rewritten after it,
    it learned from another subset of training rows, or a data file (``data_files``: paths, or a dict of them by
    role) changed after it was trained.  Settings are not compared: a member trained with its own ``--set``
    values is a choice, not a mistake."""
    why, meta = [], member.meta
    changed = sorted({file_label(f) for f in data_changed(meta, member.path, data_files)})
    if changed:
        why.append(f"the data changed after it was trained ({', '.join(changed)})")
    parent = current_parent(meta, member.name, member.path)
    if parent is not None and parent.is_file() and parent_changed(meta, member.path, parent):
        why.append(f"its parent {parent} changed since it was trained")
    trained_n = (meta.get("config") or {}).get("N_TARGET_TRAIN")
    if trained_n is not None and trained_n != settings.get("N_TARGET_TRAIN"):
        why.append(f"it learned from N_TARGET_TRAIN={trained_n}, this run uses {settings.get('N_TARGET_TRAIN')}")
    return why


def load_member(name: str, path, *, opamp: str | None = None, device="cpu") -> Member:
    """The member stage ``name``'s checkpoint at ``path``; a missing file names the command that makes it."""
    name = canonical(name, what="ensemble member", among=member_stages())
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"Missing ensemble member {name!r}: {path}. Make it with: {command(name)}"
                           + (f" --opamp {opamp} --results-dir {path.parent}" if opamp else ""))
    meta = read_checkpoint_meta(path)
    made_for = (meta.get("config") or {}).get("OPAMP_TYPE")
    if opamp is not None and made_for != opamp:
        raise ToolkitError(f"{path} was trained for circuit {made_for!r}, not {opamp!r}. Rerun {command(name)} "
                           f"--opamp {opamp}.")
    model, meta = load_checkpoint(path, expect_class=stage_of(name).model_class, map_location=device)
    return Member(name, path, model, meta)
