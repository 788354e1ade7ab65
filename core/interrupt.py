"""Ctrl-C while an entry point is still importing its modules (before ``core.cli.run_main`` handles it) is the
same one line and exit status 130, not a traceback through the import machinery.

The hook acts only when the running program is one of the toolkit's entry points (``python -m active``): a
user's script that imports the toolkit keeps Python's handling of its own Ctrl-C (the hook defers to it).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted: files already written are complete (writes are atomic)."


def _toolkit_script() -> bool:
    """Whether the running program is one of the toolkit's entry points: ``python -m active`` (the main module's
    name) or ``python active.py`` (its path under the repository), not another tool run beside it (pytest, a
    kernel launcher, a script in a .venv inside the checkout)."""
    from core.code_record import TOOLKIT_TOP_LEVEL
    entry = TOOLKIT_TOP_LEVEL - {"tests"}
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.origin:
        name, origin = spec.name, Path(spec.origin)
    elif sys.argv and sys.argv[0].endswith(".py"):
        try:
            relative = Path(sys.argv[0]).resolve().relative_to(ROOT)
        except (OSError, ValueError):
            return False
        name, origin = ".".join(relative.with_suffix("").parts), ROOT / relative
    else:
        return False
    try:
        inside = origin.resolve().is_relative_to(ROOT)
    except OSError:
        return False
    return inside and name.split(".")[0] in entry


def _hook(kind, value, tb):
    if issubclass(kind, KeyboardInterrupt) and _toolkit_script():   # decided now: runpy names __main__ late
        print(INTERRUPTED, file=sys.stderr)   # Python still exits 130 (by SIGINT) for an uncaught KeyboardInterrupt
        return
    sys.__excepthook__(kind, value, tb)


def install() -> None:
    """Python's own handler is replaced by ``_hook``, which defers to it for anything but a toolkit entry point's
    Ctrl-C (whether the program is one is decided when the exception arrives: ``python -m training.train``
    imports ``core`` through its package before runpy names ``__main__``)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _hook
