"""Whether a stage's checkpoint is up to date: the one check the pipeline and the benchmark harness use.

A checkpoint is up to date when it exists; it was made by today's code (the hashes of the stage's
source files and every toolkit module they import, ``core.code_record``); its config snapshot
equals this run's settings on every key the stage reads (``core.stages.Stage.reads``); its split
equals this run's split; no data file and no parent checkpoint is newer than it; and it is not a
dry-run checkpoint (unless this is a dry run).
"""
from pathlib import Path

from core.code_record import changed_files
from core.errors import ToolkitError
from core.stages import checkpoint_path, differences, stage as stage_of
from models.model_utils import read_checkpoint_meta


def code_staleness(meta: dict, name: str) -> str | None:
    """Why a ``name`` checkpoint's code record (``meta["code"]``) does not match today's source, or None."""
    code = meta.get("code")
    if code is None:
        return "no code record (made before checkpoints recorded their code)"
    changed = changed_files(code, stage_of(name).module)
    if changed:
        return f"code changed: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}"
    return None


def staleness(settings: dict, name: str, current_split: dict, data_files, *, dry_run: bool) -> str | None:
    """Why the checkpoint of stage ``name`` must be (re)made, or None when it is up to date."""
    path = checkpoint_path(settings, name)
    if not path.is_file():
        return "no checkpoint"
    try:
        meta = read_checkpoint_meta(path)
    except ToolkitError as exc:
        return f"unreadable checkpoint ({exc})"
    if (meta.get("metrics") or {}).get("dry_run") and not dry_run:
        return "dry-run checkpoint"
    code = code_staleness(meta, name)
    if code:
        return code
    diff = differences(meta.get("config") or {}, settings, name)
    if diff:
        return f"settings changed: {', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}"
    # the target split must match; keys a stage adds beside it (the baseline's source holdout) follow
    # from settings and seed, which were compared above
    recorded = {k: v for k, v in (meta.get("split") or {}).items() if k in current_split}
    if recorded != current_split:
        return "split changed"
    mtime = path.stat().st_mtime
    newer = [Path(f).name for f in data_files if Path(f).stat().st_mtime > mtime]
    if newer:
        return f"data newer than checkpoint ({', '.join(newer)})"
    parent = meta.get("parent")
    if parent:
        if not Path(parent).is_file():
            return f"parent {parent} is gone"
        if Path(parent).stat().st_mtime > mtime:
            return f"parent {Path(parent).name} is newer"
    return None
