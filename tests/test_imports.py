"""The import graph: no cycles, and the library never reaches up into training code (issue 19).

Walks every toolkit module's source with ``ast`` (imports inside functions count too: they are
edges all the same, just later), so nothing is executed.
"""
import ast
from pathlib import Path

import pytest

from core.code_record import ROOT, TOOLKIT_TOP_LEVEL

TRAINING = ("training", "fine_tune")
# package -> top-level names it must never import
FORBIDDEN = {pkg: TRAINING + ("pipeline", "benchmarks", "surrogate", "inverse_mdn", "inverse_opt")
             for pkg in ("inference", "inverse", "models", "losses", "data_loader", "spice")}
# the loop's library: its entry points (active, sweep) use it, never the other way round
FORBIDDEN["active_learning"] = FORBIDDEN["inference"] + ("active", "sweep")
FORBIDDEN["core"] = tuple(TOOLKIT_TOP_LEVEL - {"core"})   # the bottom layer (config aside: entry-point CLI)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def toolkit_modules() -> dict:
    """{dotted name: path} of every toolkit module (tests excluded)."""
    out = {}
    for top in sorted(TOOLKIT_TOP_LEVEL - {"tests"}):
        base = ROOT / top
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        out.update({_module_name(f): f for f in files if f.is_file()})
    return out


def imports_of(path: Path, known: dict) -> set:
    """Toolkit modules ``path`` imports (``from a import b``: a.b when that is a module, else a)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def graph() -> dict:
    known = toolkit_modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def find_cycle(edges: dict):
    """One import cycle as a list of modules, or None (iterative DFS)."""
    state = {}
    for start in edges:
        if state.get(start):
            continue
        stack, trail = [(start, iter(sorted(edges[start])))], [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            nxt = next(children, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                trail.pop()
            elif state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
                trail.append(nxt)
    return None


def forbidden_edges(edges: dict) -> list:
    bad = []
    for module, targets in edges.items():
        banned = FORBIDDEN.get(module.split(".")[0], ())
        bad += [f"{module} -> {t}" for t in sorted(targets) if t.split(".")[0] in banned]
    return bad


def test_no_import_cycles():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_library_never_imports_training_or_entry_points():
    assert forbidden_edges(graph()) == []


def test_the_walker_sees_cycles_and_forbidden_edges():
    """Controls: the checks fail on a made-up cycle and a made-up upward import, and see real edges."""
    edges = graph()
    assert "models.model_utils" in edges["training.stage"] and "core.stages" in edges["pipeline"]
    assert find_cycle({**edges, "core.errors": {"inference.predict"}}) is not None
    assert forbidden_edges({**edges, "inference.metrics": {"training.loop"}}) == ["inference.metrics -> training.loop"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_every_guarded_package_is_walked(package):
    assert any(m == package or m.startswith(package + ".") for m in graph())


def test_every_toolkit_module_on_disk_is_installed_and_in_the_import_graph():
    """A module left out of pyproject imports only from the repository root (``from surrogate import ...`` in a
    user's notebook folder failed), and one left out of TOOLKIT_TOP_LEVEL escapes this file's checks."""
    import tomllib
    on_disk = {p.stem for p in ROOT.glob("*.py")} | {p.parent.name for p in ROOT.glob("*/__init__.py")}
    on_disk -= {"tests", "conftest", "setup"}
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    installed = set(tool["py-modules"]) | {pattern.rstrip("*") for pattern in tool["packages"]["find"]["include"]}
    assert on_disk - installed == set(), "add these to pyproject.toml's py-modules or packages.find include"
    assert on_disk - {"config"} - TOOLKIT_TOP_LEVEL == set(), "add these to core.code_record.TOOLKIT_TOP_LEVEL"
