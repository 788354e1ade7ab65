"""What a SPICE model library file holds, read without ngspice: its ``.lib`` section names.

Shared by ``spice.processes`` (a process file's ``section`` is checked when it loads) and
``spice.conditions`` (a corner is a section), neither of which may import the other's dependencies
(``spice.conditions`` reaches ``spice.sky130``, which reaches the circuits that load processes).
"""
import functools
import re

VDD_MAX = 10.0    # V: the largest supply a process file or a run condition may ask for (a mV slip is refused)


@functools.lru_cache(maxsize=16)
def library_sections(lib: str) -> list[str] | None:
    """The ``.lib`` section names of a model library (read once per file: ``simulate`` applies the
    conditions on every call, and --verify calls it once per design), or None when it cannot be read."""
    try:
        text = open(lib, encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    return sorted(set(re.findall(r"^\s*\.lib\s+(\w+)\s*$", text, re.I | re.M)))
