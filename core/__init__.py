"""Small shared pieces used by every entry point: user errors, atomic writes, run settings."""
from core import interrupt
from core.errors import ToolkitError
from core.atomic import atomic_write_bytes, atomic_write_text, atomic_path, atomic_paths

__all__ = ["ToolkitError", "atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_paths"]

interrupt.install()   # Ctrl-C during an entry point's imports: one line, as run_main gives once it runs
