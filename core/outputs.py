"""Output folders: checked before the work that fills them, and one writer per results folder.

``check_writable_dir`` refuses, in one line, an output path that is a file, sits under a file or
cannot be written -- before training or optimisation starts, so no work is lost at save time.

``results_lock`` holds an exclusive lock on a results folder for a whole run (``filelock``, an OS
lock released when the process ends, even on a crash).  A second run on the same folder is
refused at once: two pipelines on one folder would otherwise leave a mix (a baseline from one run,
a dual-head fine-tuned from the other's baseline, an ensemble fused from both).  Nested use in one
process (the pipeline runs the stages in-process) is re-entrant.
"""
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from core.atomic import atomic_write_text
from core.errors import ToolkitError

LOCK_NAME = ".toolkit.lock"          # beside the checkpoints; hidden, never read by the data loader
OWNER_NAME = ".toolkit.lock.owner"   # who holds it (pid, command, since): named in the refusal
_HELD: dict[str, list] = {}          # resolved folder -> [FileLock, depth] held by this process


def check_writable_dir(path, flag: str) -> Path:
    """``path`` as a Path if it is, or can be created as, a folder this user can write; else one clear error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ToolkitError(f"{flag} {path} is a file, not a folder. Pass a folder path (it is created if missing).")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe != path and not probe.is_dir():
        raise ToolkitError(f"{flag} {path} lies under {probe}, which is a file, so the folder cannot be created. "
                           f"Pass a path under a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ToolkitError(f"{flag} {path}: {probe} is not writable by this user. Pass a folder you can write to "
                           f"(or fix its permissions).")
    try:                       # permissions can pass where a file still cannot be made (/proc, as root)
        tempfile.NamedTemporaryFile(dir=probe, prefix=".probe.").close()
    except OSError as exc:
        raise ToolkitError(f"{flag} {path}: no file can be written in {probe} ({exc.strerror}). Pass a folder you "
                           f"can write to.") from None
    return path


def check_writable_file(path, flag: str) -> Path:
    """An output file: its folder must be writable and the path itself must not be a folder, nor a link or a special
    file (a device, a fifo): the atomic write would replace it rather than write through it."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file() and not path.is_dir()):
        raise ToolkitError(f"{flag} {path} is a {'link' if path.is_symlink() else 'special file'}, not a regular file: "
                           f"it would be replaced, not written through. Pass a file path.")
    if path.is_dir():
        raise ToolkitError(f"{flag} {path} is a folder; pass a file path.")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ToolkitError(f"{flag} {path} lies under {probe}, which is a file, so it cannot be written. "
                           f"Pass a path under a folder.")
    check_writable_dir(path.parent, flag)     # its folder, or the nearest one that exists, takes a file
    return path


def _owner(folder: Path) -> str:
    try:
        info = json.loads((folder / OWNER_NAME).read_text(encoding="utf-8"))
        return f"pid {info['pid']}, started {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "owner unknown"


@contextlib.contextmanager
def results_lock(folder, *, flag: str = "--results-dir"):
    """Hold ``folder``'s lock for the block (created if missing); refuse at once if another run holds it."""
    folder = check_writable_dir(folder, flag)
    made = _missing_ancestor(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:                  # this process already holds it (a stage inside the pipeline)
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ToolkitError(f"Another run is writing to {folder} ({_owner(folder)}). Wait for it to finish, or pass "
                           f"another {flag}: two runs on one folder would mix their files.") from None
    _HELD[key] = [lock, 1]
    try:
        _remove_stale_temporaries(folder)
        atomic_write_text(folder / OWNER_NAME, json.dumps({
            "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300]}) + "\n")
        yield folder
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            (folder / OWNER_NAME).unlink()
        lock.release()
        if made is not None:
            _remove_if_unused(folder, made)


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporaries of atomic writes (``core.atomic``: ``.<name>.<random>.tmp``) a killed run left in
    ``folder``: this run holds the lock now, so no writer of them is alive (``kill -9`` skips their cleanup)."""
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()


def _missing_ancestor(folder: Path):
    """The outermost of ``folder`` and its parents that does not exist yet (None if ``folder`` exists)."""
    missing = None
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_unused(folder: Path, made: Path) -> None:
    """A run refused before it wrote anything leaves no trace: remove the lock file and the folders this run
    created (``folder`` up to ``made``) while they hold nothing else."""
    with contextlib.suppress(OSError):
        if [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
        for p in (folder, *folder.parents):
            p.rmdir()                     # only an empty folder goes; OSError ends the walk
            if p == made:
                break


@contextlib.contextmanager
def shared_results(folder):
    """Inside the block, ``results_lock(folder)`` in this process is a no-op: the caller coordinates the
    writers of ``folder`` itself.  The benchmark harness runs the parts of one (seed, n) cell, which write
    different checkpoints, in parallel workers on one task folder, and holds ``results_lock`` on its
    results root so no other harness runs there."""
    key = str(Path(folder).resolve())
    if key in _HELD:
        yield Path(folder)
        return
    _HELD[key] = [None, 1]
    try:
        yield Path(folder)
    finally:
        del _HELD[key]
