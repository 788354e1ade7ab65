"""Which files changed after a checkpoint was written: the one mtime rule that the pipeline's staleness check
(``training.staleness``) and the ensemble's warnings (``inference.members.out_of_date``) share, so the two
cannot drift (inference may not import training)."""
from pathlib import Path


def modified_after(reference, files) -> list:
    """The ``files`` (paths, or a dict of them by role) that exist and were modified after ``reference``."""
    made = Path(reference).stat().st_mtime
    paths = files.values() if isinstance(files, dict) else files
    return [Path(f) for f in paths if Path(f).is_file() and Path(f).stat().st_mtime > made]


def file_label(path) -> str:
    """``target/targets.csv``: a data file's name with its folder, which says the domain."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"
