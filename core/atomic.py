"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or Ctrl-C mid-write leaves the previous file intact, never a half file.  Files get the
mode a plain ``open(path, "w")`` would give (0666 minus the umask), not ``mkstemp``'s 0600, so
others on a shared results folder can read checkpoints, metrics and data.  ``atomic_paths``
writes several files as one unit (a checkpoint and its JSON sidecar): all temporaries are
written first, then renamed with Ctrl-C held back, so an interrupt never leaves a new file
beside an old partner.
"""
import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)      # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold back SIGINT (Ctrl-C) inside the block; raise KeyboardInterrupt once it is left.

    Only the main thread can own signal handlers; elsewhere (and where SIGINT is not Python's
    to handle) the block runs unprotected, as before.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except (ValueError, AttributeError):
        yield
        return
    if previous is None or previous in (signal.SIG_IGN, signal.SIG_DFL):
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_paths(*paths):
    """Yield temporary paths, one per target; on success rename them all onto the targets together."""
    paths = [Path(p) for p in paths]
    tmps = []
    try:
        for p in paths:
            tmps.append(_temp_beside(p))
        yield tmps if len(tmps) != 1 else tmps[0]
        with deferred_interrupts():          # the renames are one unit: never a new file beside an old partner
            for tmp, p in zip(tmps, paths):
                os.replace(tmp, p)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_path(path):
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success."""
    return atomic_paths(path)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
