"""Small shared pieces used by every entry point: user errors, atomic writes, run settings."""
from core.errors import ToolkitError
from core.atomic import atomic_write_bytes, atomic_write_text, atomic_path, atomic_paths

__all__ = ["ToolkitError", "atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_paths"]
