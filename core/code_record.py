"""Which toolkit source files a stage is made of, with their hashes (for checkpoint staleness).

A checkpoint records ``code_record(stage_module)``: ``{repo-relative path: sha256 prefix}`` for the
stage's module and every toolkit module it imports, followed transitively through the source
(``ast``, so nothing is executed and the answer does not depend on what this process has already
imported).  The pipeline and the benchmark harness compare that record with today's files: a
checkpoint made by other code is retrained instead of silently reused.  Why: the settings, split,
data and parent checks cannot see a code change (a harness ``--fresh`` rerun after a fine-tune
change once reused the old dual-head checkpoints).

Only toolkit modules count (``TOOLKIT_TOP_LEVEL``); ``config`` does not -- its values are in the
checkpoint's settings snapshot, and an edited comment there must not retrain anything.  Imports
inside functions count too: a false "changed" costs a retrain, a false "unchanged" a wrong number.
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT_TOP_LEVEL = {"core", "data_loader", "models", "losses", "training", "fine_tune", "inference", "inverse",
                     "spice", "benchmarks", "pipeline", "inverse_mdn", "inverse_opt", "surrogate", "sweep", "active",
                     "active_learning",
                     "tests"}   # tests: toy stages registered at test time record their code like any stage
HASH_CHARS = 16


def _module_files(name: str) -> list[Path]:
    """The files executed by ``import name``: each package ``__init__.py`` on the way, then the module."""
    parts = name.split(".")
    if parts[0] not in TOOLKIT_TOP_LEVEL:
        return []
    files = []
    for i in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:i])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
            break                       # a module, not a package: nothing below it
        else:
            break
    return files


def _imported_names(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (``from a.b import c`` gives a.b and a.b.c)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)   # c may be a submodule
    return names


def _closure(module: str) -> tuple[Path, ...]:
    # not cached: an edit that adds an import must be seen by a long-lived process too (~30 files, ms)
    seen, todo = set(), list(_module_files(module))
    if not todo:
        raise ValueError(f"{module!r} is not a toolkit module under {ROOT}")
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            todo.extend(f for f in _module_files(name) if f not in seen)
    return tuple(sorted(seen))


def code_record(module: str) -> dict[str, str]:
    """``{repo-relative path: sha256[:16]}`` of ``module`` (dotted, e.g. ``fine_tune.fine_tune``) and its imports."""
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:HASH_CHARS]
            for p in _closure(module)}


def changed_files(saved: dict, module: str) -> list[str]:
    """Paths whose hash differs between ``saved`` (a checkpoint's record) and today's files, added or gone."""
    now = code_record(module)
    return sorted(p for p in set(saved) | set(now) if saved.get(p) != now.get(p))
