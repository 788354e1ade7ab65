"""Which inputs changed after a checkpoint was written: the one rule that the pipeline's staleness check
(``training.staleness``) and the ensemble's warnings (``inference.members.out_of_date``) share, so the two
cannot drift (inference may not import training).

A checkpoint records the sha256 of the data files it learned from (``data_sha256``, by role) and of the
parent checkpoint it started from (``parent_sha256``): a file whose content differs changed, whatever its
modification time says (``cp -p``, ``rsync -a`` and ``tar`` restore old times; a copied results folder keeps
the parent's old path).  Checkpoints written before those records are judged by modification time."""
import hashlib
from pathlib import Path

from core.stages import stage as stage_of


def file_sha256(path) -> str:
    """sha256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_role(files) -> dict:
    return dict(files) if isinstance(files, dict) else {str(i): f for i, f in enumerate(files)}


def data_digests(files) -> dict:
    """``{role: sha256}`` of the data files (a dict of paths by role, or any iterable) that exist."""
    return {role: file_sha256(f) for role, f in _by_role(files).items() if Path(f).is_file()}


def modified_after(reference, files) -> list:
    """The ``files`` (paths, or a dict of them by role) that exist and were modified after ``reference``."""
    made = Path(reference).stat().st_mtime
    paths = files.values() if isinstance(files, dict) else files
    return [Path(f) for f in paths if Path(f).is_file() and Path(f).stat().st_mtime > made]


def data_changed(meta: dict, checkpoint, files) -> list:
    """The data ``files`` (a dict by role, or paths) that changed since ``checkpoint`` (its metadata ``meta``)
    learned from them: by content where it recorded ``data_sha256`` (a file it did not record counts as
    changed), else by time."""
    recorded = meta.get("data_sha256")
    if not isinstance(recorded, dict):
        return modified_after(checkpoint, files)
    if not isinstance(files, dict):   # paths without their roles: a file whose bytes it never learned from
        known = set(recorded.values())
        return [Path(f) for f in files if Path(f).is_file() and file_sha256(f) not in known]
    return [Path(f) for role, f in files.items() if Path(f).is_file() and recorded.get(role) != file_sha256(f)]


def parent_changed(meta: dict, checkpoint, parent) -> bool:
    """Whether the parent checkpoint at ``parent`` (today's, e.g. the one in this results folder) differs from the
    one ``checkpoint`` started from: by content where it recorded ``parent_sha256``, else by time."""
    recorded = meta.get("parent_sha256")
    if recorded:
        return file_sha256(parent) != recorded
    return bool(modified_after(checkpoint, [parent]))


def current_parent(meta: dict, name: str, checkpoint) -> Path | None:
    """The parent checkpoint to compare with, or None: the file of the recorded parent's name beside
    ``checkpoint`` when stage ``name`` starts from a registry parent (a copied results folder records the old
    folder's path), else the recorded path (a warm start from another folder, or the sibling is missing)."""
    recorded = meta.get("parent")
    if not recorded:
        return None
    recorded = Path(recorded)
    sibling = Path(checkpoint).parent / recorded.name
    if stage_of(name).parent and recorded.name != Path(checkpoint).name and sibling.is_file():
        return sibling
    return recorded


def file_label(path) -> str:
    """``target/targets.csv``: a data file's name with its folder, which says the domain."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"
