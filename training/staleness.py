"""Whether a stage's checkpoint is up to date: the one check the pipeline and the benchmark harness use.

A checkpoint is up to date when it exists; it was made by today's code (the hashes of the stage's
source files and every toolkit module they import, ``core.code_record``); its config snapshot
equals this run's settings on every key the stage reads (``core.stages.Stage.reads``); its split
equals this run's split; no data file and no parent checkpoint changed since it; and it is not a
dry-run checkpoint (unless this is a dry run).  Data and parent compare by content where the checkpoint
recorded their sha256 (``core.freshness``).  A stage that learns from no target row under this run's
settings (``Stage.source_only_if``: the baseline early-stopped on source rows) is compared on its
preprocessing and the source files instead of the target split and files.
"""
from pathlib import Path

from core.code_record import changed_files
from core.errors import ToolkitError
from core.freshness import current_parent, data_changed, file_label, parent_changed
from core.stages import checkpoint_path, differences, stage as stage_of
from data_loader.preprocessing import same_preprocessing
from models.model_utils import is_dry_run, read_checkpoint_meta


def code_staleness(meta: dict, name: str) -> str | None:
    """Why a ``name`` checkpoint's code record (``meta["code"]``) does not match today's source, or None."""
    code = meta.get("code")
    if code is None:
        return "no code record (made before checkpoints recorded their code)"
    changed = changed_files(code, stage_of(name).module)
    if changed:
        return f"code changed: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}"
    return None


def learns_from_target(settings: dict, name: str) -> bool:
    """False when the stage's ``source_only_if`` setting holds (e.g. the baseline early-stopped on source rows)."""
    cond = stage_of(name).source_only_if
    return not (cond and settings.get(cond[0]) == cond[1])


def staleness(settings: dict, name: str, current_split: dict, data_files, *, dry_run: bool,
              preprocessing: dict | None = None) -> str | None:
    """Why the checkpoint of stage ``name`` must be (re)made, or None when it is up to date.

    ``data_files``: the data's files (``get_data_and_scalers(...)["files"]``, a dict by role, or any iterable).
    A stage that learns from no target row (``learns_from_target``) is judged on the source files and on
    ``preprocessing`` (this run's ``Preprocessing.to_dict()``) instead of the target files and split."""
    path = checkpoint_path(settings, name)
    if not path.is_file():
        return "no checkpoint"
    try:
        meta = read_checkpoint_meta(path)
    except ToolkitError as exc:
        return f"unreadable checkpoint ({exc})"
    if is_dry_run(meta) and not dry_run:
        return "dry-run checkpoint"
    code = code_staleness(meta, name)
    if code:
        return code
    diff = differences(meta.get("config") or {}, settings, name)
    if diff:
        return f"settings changed: {', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}"
    files = dict(data_files) if isinstance(data_files, dict) else list(data_files)
    if learns_from_target(settings, name) or preprocessing is None:
        # the target split must match; keys a stage adds beside it (the baseline's source holdout) follow
        # from settings and seed, which were compared above
        recorded = {k: v for k, v in (meta.get("split") or {}).items() if k in current_split}
        if recorded != current_split:
            return "split changed"
    else:
        if not same_preprocessing(meta.get("preprocessing") or {}, preprocessing):
            return "preprocessing changed"
        files = ({k: f for k, f in files.items() if k.startswith("source")} if isinstance(files, dict)
                 else [f for f in files if Path(f).parent.name == "source"])   # the layout: <circuit>/source/
    changed = data_changed(meta, path, files)
    if changed:
        return f"data changed since the checkpoint ({', '.join(file_label(f) for f in changed)})"
    parent = current_parent(meta, name, path)
    if parent:
        if not parent.is_file():
            return f"parent {parent} is gone"
        if parent_changed(meta, path, parent):
            return f"parent {parent.name} changed"
    return None
