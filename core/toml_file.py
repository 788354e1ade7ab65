"""Reading the toolkit's TOML files (circuits, processes, specs): one clear line when a file is
missing or is not TOML, naming the file and the fix."""
import tomllib
from pathlib import Path

from core.errors import ToolkitError


def read_toml(path, *, missing: str) -> dict:
    """The parsed file; ``missing`` completes "<path> not found; ..." with how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path} not found; {missing}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path} is not valid TOML ({exc})") from None
