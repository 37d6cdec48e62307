"""Imports flow one way, as drawn in DESIGN.md; third-party back ends stay in one place.

Every module under ``versionfs/`` is parsed (never imported) and each ``import`` and
``from ... import`` in it, at any depth (functions, ``TYPE_CHECKING`` blocks), is
checked against two kinds of rule:

* third-party confinement: only ``index`` imports lmdb, only ``hashing`` imports
  blake3, only ``fuse/`` imports pyfuse3, only ``remote*`` imports fsspec;
* layering: a module may import only versionfs modules of a strictly lower rank
  (``RANKS``). Modules of one subpackage (``fuse/``, ``cli/``) may import each other.
  ``versionfs/__init__.py`` is exempt: it re-exports the public API.

A new module gets ``DEFAULT_RANK`` (an operation module) until it is added to
``RANKS``; to change the layering, change ``RANKS`` and say why in docs/design.md.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "versionfs"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

# Bottom to top. Keys are module names relative to the package; a subpackage's rank
# covers every module inside it.
RANKS: dict[str, float] = {
    "errors": 0, "hashing": 0,
    "model": 1, "chunking": 1,
    "index": 2, "objects": 2,
    "repo": 3,
    # helpers that several operations share sit just below them
    "ignore": 3.3,  # .vfsignore rules, used by scan
    "ingest": 3.4,  # reading files for the scanner: ids, chunks, clones
    "scan": 3.5, "workspace": 3.5,
    "reach": 3.5,  # reachability walk shared by gc and fsck
    "materialize": 3.7,  # writing a planned checkout into a tree (checkout's half)
    # operations, one verb each: they may not import one another
    "snapshot": 4, "checkout": 4, "diff": 4, "gc": 4, "fsck": 4, "status": 4,
    "runs": 4, "remote": 4,
    "api": 4.5,  # versionfs.Repo: repo.Repo plus one method per operation
    "view": 5,
    "fuse": 6,
    # the public API facade (versionfs/__init__.py) as an import target: only the
    # CLI and __main__ may lean on it; library code imports the defining module.
    "": 6.5,
    "cli": 7,
    "__main__": 8,
}
DEFAULT_RANK = 4
EXEMPT = {""}  # versionfs/__init__.py re-exports the public API

# third-party top-level module -> predicate on the importing module's relative name
CONFINED = {
    "lmdb": ("versionfs/index.py", lambda rel: rel == "index"),
    "blake3": ("versionfs/hashing.py", lambda rel: rel == "hashing"),
    "pyfuse3": ("versionfs/fuse/", lambda rel: rel.split(".")[0] == "fuse"),
    "fsspec": ("versionfs/remote*.py", lambda rel: rel.split(".")[0].startswith("remote")),
}


@dataclass(frozen=True)
class Import:
    module: str  # importing module, relative to the package ("" for __init__)
    target: str  # absolute dotted name of what is imported
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(PACKAGE_DIR.parent)}:{self.line}"


def _module_name(path: Path) -> tuple[str, bool]:
    """``(relative dotted name, is_package)`` for a file under the package."""
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _all_modules() -> dict[str, Path]:
    return {_module_name(p)[0]: p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


MODULES = _all_modules()


def _absolute(rel: str) -> str:
    return f"{PACKAGE}.{rel}" if rel else PACKAGE


def _internal(target: str) -> str | None:
    """The target relative to the package, or None for a third-party import."""
    if target == PACKAGE:
        return ""
    if target.startswith(PACKAGE + "."):
        return target[len(PACKAGE) + 1:]
    return None


def _resolve_from(node: ast.ImportFrom, rel: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = _absolute(rel).split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _is_submodule(source: str, name: str) -> bool:
    """Whether ``from source import name`` imports a versionfs submodule.

    True for a module that exists, and also for one not written yet: a name that the
    package's ``__init__.py`` does not define can only be a submodule.
    """
    rel = _internal(source)
    if rel is None:
        return False
    sub = f"{rel}.{name}" if rel else name
    if sub in MODULES:
        return True
    init = MODULES.get(rel)
    return init is not None and init.name == "__init__.py" \
        and name not in _top_level_names(init)


def _imports_of(path: Path) -> list[Import]:
    rel, is_package = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel, a.name, path, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(node, rel, is_package)
            for alias in node.names:
                target = source
                if _is_submodule(source, alias.name):
                    target = f"{source}.{alias.name}"
                found.append(Import(rel, target, path, node.lineno))
    return found


ALL_IMPORTS = [imp for path in MODULES.values() for imp in _imports_of(path)]


def rank_of(rel: str) -> float:
    if rel in RANKS:
        return RANKS[rel]
    return RANKS.get(rel.split(".")[0], DEFAULT_RANK)


def test_the_package_was_found():
    for core in ("errors", "hashing", "model", "index", "objects", "repo"):
        assert core in MODULES, f"versionfs/{core}.py not found under {PACKAGE_DIR}"


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_third_party_library_is_confined(library):
    allowed_in, allowed = CONFINED[library]
    bad = [f"{imp.where()}: imports {imp.target}; only {allowed_in} may import {library}"
           for imp in ALL_IMPORTS
           if imp.target.split(".")[0] == library and not allowed(imp.module)]
    assert not bad, "\n".join(bad)


def _same_subpackage(a: str, b: str) -> bool:
    if "." not in a and "." not in b:
        return False
    top_a, top_b = a.split(".")[0], b.split(".")[0]
    return top_a == top_b and (top_a != a or top_b != b)


def _layer_violation(imp: Import) -> str | None:
    target = _internal(imp.target)
    if target is None or imp.module in EXEMPT:
        return None
    if _same_subpackage(imp.module, target):
        return None
    here, there = rank_of(imp.module), rank_of(target)
    if there < here:
        return None
    src = _absolute(imp.module)
    return (f"{imp.where()}: {src} (rank {here:g}) imports {imp.target} (rank {there:g}); "
            f"imports must go to a strictly lower layer (see RANKS in tests/test_layers.py "
            f"and the layer drawing in DESIGN.md)")


def test_imports_only_go_down():
    bad = [msg for imp in ALL_IMPORTS if (msg := _layer_violation(imp))]
    assert not bad, "layering violations:\n" + "\n".join(bad)


# -- the checker checks what it should ---------------------------------------------


def _imp(module: str, target: str) -> Import:
    return Import(module, target, PACKAGE_DIR / "x.py", 1)


@pytest.mark.parametrize("module,target,ok", [
    ("repo", "versionfs.index", True),
    ("index", "versionfs.repo", False),
    ("snapshot", "versionfs.scan", True),
    ("scan", "versionfs.ignore", True),
    ("ignore", "versionfs.scan", False),
    ("snapshot", "versionfs.diff", False),
    ("view", "versionfs.snapshot", True),
    ("api", "versionfs.checkout", True),
    ("checkout", "versionfs.api", False),
    ("fuse.ops", "versionfs.view", True),
    ("fuse.ops", "versionfs.fuse.mount", True),
    ("view", "versionfs.fuse.ops", False),
    ("cli.base", "versionfs.repo", True),
    ("cli.base", "versionfs.cli.util", True),
    ("repo", "versionfs", False),
    ("cli.base", "versionfs", True),
    ("newthing", "versionfs.repo", True),
    ("newthing", "versionfs.snapshot", False),
    ("errors", "versionfs.errors", False),
    ("repo", "lmdb", True),
])
def test_layer_rule(module, target, ok):
    assert (_layer_violation(_imp(module, target)) is None) == ok


def test_relative_imports_resolve():
    node = ast.parse("from ..errors import VfsError").body[0]
    assert _resolve_from(node, "cli.base", False) == "versionfs.errors"
    node = ast.parse("from .base import cli").body[0]
    assert _resolve_from(node, "cli", True) == "versionfs.cli.base"
    node = ast.parse("from . import repo").body[0]
    assert _resolve_from(node, "snapshot", False) == "versionfs"


def test_from_package_import_name():
    assert _is_submodule("versionfs", "repo")
    assert _is_submodule("versionfs", "not_written_yet")
    assert not _is_submodule("versionfs", "__version__")
    assert not _is_submodule("lmdb", "open")
