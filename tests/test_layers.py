"""Imports flow one way, as drawn in docs/design.md; third-party back ends stay in one place.

Every module under ``versionfs/`` is parsed (never imported) and each ``import`` and
``from ... import`` in it, at any depth (functions, ``TYPE_CHECKING`` blocks), is
checked against two kinds of rule:

* third-party confinement: only ``store.index`` imports lmdb, only ``records.hashing``
  imports blake3, only ``fuse/`` imports pyfuse3, only ``remote/`` and ``fsspec/``
  import fsspec;
* layering: a module may import only versionfs modules of a strictly lower rank
  (``RANKS``). Ranks are given per dotted module name, so the rule holds *inside* a
  sub-package too: ``store.local`` may use ``store.blobs`` but not the reverse, and
  two verbs of ``ops/`` may not import each other. A package's ``__init__`` has the
  package's own name (``view``) and usually the highest rank of its folder, since it
  re-exports from it. ``versionfs/__init__.py`` is exempt: it re-exports the public API.

Every module must have a rank: a new one fails ``test_every_module_has_a_rank`` until
it is added here, and a change of the layering is said in docs/design.md.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "versionfs"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

# Bottom to top; keys are dotted module names relative to the package ("" is
# versionfs/__init__.py as an import target). Equal ranks may not import each other.
RANKS: dict[str, float] = {
    "errors": 0,
    # the @versionfs.stage decorator: user code imports it, so it stands alone
    "pystage": 0.5,
    # records/: ids, canonical records, chunk boundaries
    "records": 1, "records.hashing": 1, "records.model": 1.1, "records.chunking": 1.1,
    "records.runs": 1.1,
    # store/: where bytes and records live, behind one interface
    "store": 2, "store.interface": 2, "store.index": 2.1, "store.blobs": 2.1,
    "store.local": 2.2, "store.blocks": 2.2, "store.reader": 2.3,
    # repo/: an open repository, its refs and revisions, the machine's live mounts
    "repo": 3, "repo.mounts": 3, "repo.observe": 3.01, "repo.refs": 3.05,
    "repo.producers": 3.06, "repo.revisions": 3.1,
    "repo.repository": 3.2,
    # remote/: a repository's versions on object storage; stores (a directory, any
    # fsspec filesystem) and s3 are the primitives of one kind of store, lease the
    # lock object, backend one remote root with retries and errors above them; layout
    # the names and encodings, state the local copy of a remote's index, plan what one
    # side lacks, transfer the bytes, refs the compare-and-swap, lazy a Repo over a
    # remote whose chunks are fetched on read into the disk cache (cache)
    "remote.stores": 3.22, "remote.s3": 3.23, "remote.lease": 3.24,
    "remote.backend": 3.25, "remote.layout": 3.25, "remote.config": 3.25,
    "remote.plan": 3.25, "remote.cache": 3.25,
    "remote.state": 3.26, "remote.transfer": 3.27, "remote.refs": 3.27,
    "remote.lazy": 3.28,
    "remote": 3.29,
    # workspace/: the user's directory: ignore rules, reading files, scanning, writing
    "workspace": 3.3, "workspace.ignore": 3.3, "workspace.ingest": 3.4,
    # the change journal: inotify through ctypes < the scan's view of the watcher
    # (client, dircache records) < the watcher's state < its process (watchd); the
    # scan asks the journal
    "workspace.inotify": 3.3, "workspace.journal": 3.42, "workspace.watcher": 3.44,
    "workspace.watchd": 3.45,
    "workspace.scan": 3.5, "workspace.lookahead": 3.55, "workspace.materialize": 3.6,
    # ops/: the verbs, one module each (equal rank: they may not import one another),
    # above the helpers they share
    "ops": 3.8, "ops.reach": 3.8, "ops.params": 3.8, "ops.roots": 3.9,
    "ops.snapshot": 4, "ops.checkout": 4, "ops.diff": 4, "ops.gc": 4, "ops.fsck": 4,
    "ops.refs": 4, "ops.watch": 4,
    # a run composes the verbs: it restores (checkout) and commits (snapshot)
    "ops.run": 4.1,
    "ops.remote": 4.15, "ops.remote_gc": 4.16,  # push/pull carry run records (ops.run.put_record), checkout
    # inspecting runs: lineage walks run records upstream, compare puts two side by side
    "ops.lineage": 4.2, "ops.compare": 4.2, "ops.lineage_formats": 4.3,
    # the JSON form of inspecting results, shared by the CLI's --json and vfs ui
    "ops.results": 4.25,
    # pipelines: vfs.yaml parsed into a graph (pure), then reproduced through ops.run
    "ops.pipeline": 3.85, "ops.repro": 4.2,
    "api": 4.5,  # versionfs.Repo: repo.Repository plus one method per operation
    # Python objects as run outputs, and versionfs.Run (a block recorded as a run)
    "materializers": 4.55, "runapi": 4.6,
    # view/: the FUSE-free picture of commits
    "view.records": 5, "view.tables": 5.1, "view.chunks": 5.1, "view.observe": 5.1,
    "view.core": 5.2,
    "view": 5.3,
    # fsspec/: versionfs:// for fsspec users (pandas, pyarrow), above view/ to share
    # its verified chunk cache; errors and URLs < open repositories < files < the fs
    "fsspec.oserrors": 5.4, "fsspec.urls": 5.4, "fsspec.opened": 5.42,
    "fsspec.files": 5.44, "fsspec.filesystem": 5.46, "fsspec": 5.5,
    # fuse/: the pyfuse3 adapter and the mount's life
    "fuse": 6, "fuse.request": 6, "fuse.ops": 6, "fuse.control": 6,
    "fuse.serve": 6.1, "fuse.mount": 6.2,
    # ui/: vfs ui, a read-only web app (Starlette) over the api, ops and view; below
    # the CLI that starts it. previews and SVG drawing < the data of each page < app
    "ui.preview": 6.6, "ui.svg": 6.6, "ui.pages": 6.7, "ui.app": 6.8, "ui": 6.9,
    # the public API facade as an import target: only the CLI may lean on it
    "": 6.5,
    # cli/: formatting, the click group, one module per command family, the entry
    "cli.format": 7, "cli.base": 7.1,
    "cli.repo_cmds": 7.2, "cli.maint_cmds": 7.2, "cli.diff_cmds": 7.2,
    "cli.checkout_cmds": 7.2, "cli.mount_cmds": 7.2, "cli.run_cmds": 7.2,
    "cli.lineage_cmds": 7.2,
    "cli.pipeline_cmds": 7.2, "cli.remote_cmds": 7.2, "cli.ui_cmds": 7.2,
    "cli.watch_cmds": 7.2,
    "cli.commands": 7.3, "cli": 7.4,
    "__main__": 8, "stage_runner": 8,
}
EXEMPT = {""}  # versionfs/__init__.py re-exports the public API


def _top(rel: str) -> str:
    return rel.split(".")[0]


# third-party top-level module -> (where it may be imported, predicate on importer)
CONFINED = {
    "lmdb": ("versionfs/store/index.py", lambda rel: rel == "store.index"),
    "blake3": ("versionfs/records/hashing.py", lambda rel: rel == "records.hashing"),
    "pyfuse3": ("versionfs/fuse/", lambda rel: _top(rel) == "fuse"),
    "fsspec": ("versionfs/remote/ and versionfs/fsspec/",
               lambda rel: _top(rel) in ("remote", "fsspec")),
    "starlette": ("versionfs/ui/", lambda rel: _top(rel) == "ui"),
    "uvicorn": ("versionfs/ui/", lambda rel: _top(rel) == "ui"),
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


def rank_of(rel: str) -> float | None:
    """The rank of a module or package (its ``__init__``); None when unranked."""
    return RANKS.get(rel)


def test_the_package_was_found():
    for core in ("errors", "records.hashing", "records.model", "store.index",
                 "store.blobs", "repo.repository"):
        assert core in MODULES, f"versionfs.{core} not found under {PACKAGE_DIR}"


def test_every_module_has_a_rank():
    missing = sorted(rel for rel in MODULES if rel and rel not in RANKS)
    assert not missing, ("modules without a rank in RANKS (tests/test_layers.py); add "
                         "each where it belongs and say why in docs/design.md: "
                         + ", ".join(missing))


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_third_party_library_is_confined(library):
    allowed_in, allowed = CONFINED[library]
    bad = [f"{imp.where()}: imports {imp.target}; only {allowed_in} may import {library}"
           for imp in ALL_IMPORTS
           if imp.target.split(".")[0] == library and not allowed(imp.module)]
    assert not bad, "\n".join(bad)


def _layer_violation(imp: Import) -> str | None:
    target = _internal(imp.target)
    if target is None or imp.module in EXEMPT:
        return None
    here, there = rank_of(imp.module), rank_of(target)
    src = _absolute(imp.module)
    if here is None or there is None:
        which = imp.module if here is None else target
        return (f"{imp.where()}: {src} imports {imp.target}, but versionfs.{which} has "
                f"no rank in RANKS (tests/test_layers.py)")
    if there < here:
        return None
    return (f"{imp.where()}: {src} (rank {here:g}) imports {imp.target} (rank {there:g}); "
            f"imports must go to a strictly lower layer (see RANKS in tests/test_layers.py "
            f"and the layer drawing in docs/design.md)")


def test_imports_only_go_down():
    bad = [msg for imp in ALL_IMPORTS if (msg := _layer_violation(imp))]
    assert not bad, "layering violations:\n" + "\n".join(bad)


# -- the checker checks what it should ---------------------------------------------


def _imp(module: str, target: str) -> Import:
    return Import(module, target, PACKAGE_DIR / "x.py", 1)


@pytest.mark.parametrize("module,target,ok", [
    ("repo.repository", "versionfs.store.index", True),
    ("store.index", "versionfs.repo.repository", False),
    ("store.local", "versionfs.store.blobs", True),     # inside one sub-package: down
    ("store.blobs", "versionfs.store.local", False),    # inside one sub-package: up
    ("store.index", "versionfs.store.blobs", False),    # peers inside a sub-package
    ("ops.snapshot", "versionfs.workspace.scan", True),
    ("workspace.scan", "versionfs.workspace.ignore", True),
    ("workspace.ignore", "versionfs.workspace.scan", False),
    ("ops.snapshot", "versionfs.ops.diff", False),      # two verbs
    ("ops.gc", "versionfs.ops.reach", True),
    ("view.core", "versionfs.ops.snapshot", True),
    ("api", "versionfs.ops.checkout", True),
    ("ops.checkout", "versionfs.api", False),
    ("fuse.ops", "versionfs.view", True),
    ("fuse.mount", "versionfs.fuse.serve", True),
    ("fuse.serve", "versionfs.fuse.mount", False),
    ("view.core", "versionfs.fuse.ops", False),
    ("cli.base", "versionfs.repo.repository", True),
    ("cli.base", "versionfs.cli.repo_cmds", False),
    ("cli.commands", "versionfs.cli.repo_cmds", True),
    ("repo.repository", "versionfs", False),
    ("cli.base", "versionfs", True),
    ("newthing", "versionfs.repo.repository", False),   # unranked: refused
    ("errors", "versionfs.errors", False),
    ("repo.repository", "lmdb", True),
])
def test_layer_rule(module, target, ok):
    assert (_layer_violation(_imp(module, target)) is None) == ok


def test_relative_imports_resolve():
    node = ast.parse("from ..errors import VfsError").body[0]
    assert _resolve_from(node, "cli.base", False) == "versionfs.errors"
    node = ast.parse("from .base import cli").body[0]
    assert _resolve_from(node, "cli", True) == "versionfs.cli.base"
    node = ast.parse("from . import reach").body[0]
    assert _resolve_from(node, "ops.gc", False) == "versionfs.ops"
    node = ast.parse("from ..store.blobs import BlobReader").body[0]
    assert _resolve_from(node, "repo.repository", False) == "versionfs.store.blobs"


def test_from_package_import_name():
    assert _is_submodule("versionfs", "api")
    assert _is_submodule("versionfs.ops", "reach")
    assert _is_submodule("versionfs", "not_written_yet")
    assert not _is_submodule("versionfs", "__version__")
    assert not _is_submodule("lmdb", "open")
