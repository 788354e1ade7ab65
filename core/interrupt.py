"""Ctrl-C while an entry point is still importing its modules (before ``core.cli.run_main`` handles it) is the
same one line and exit status 130, not a traceback through the import machinery.

Installed as ``sys.excepthook`` only when the running script is one of the toolkit's own files (``python -m
active``): a user's script or notebook that imports the toolkit keeps Python's handling of its own Ctrl-C.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted: files already written are complete (writes are atomic)."


def _toolkit_script() -> bool:
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.suffix != ".py":
        return False
    try:
        relative = script.resolve().relative_to(ROOT)
    except (OSError, ValueError):
        return False
    return relative.parts[0] != "tests"


def _hook(kind, value, tb):
    if issubclass(kind, KeyboardInterrupt):
        print(INTERRUPTED, file=sys.stderr)   # Python still exits 130 (by SIGINT) for an uncaught KeyboardInterrupt
        return
    sys.__excepthook__(kind, value, tb)


def install() -> None:
    if _toolkit_script() and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _hook
