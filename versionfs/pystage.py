"""Pipeline stages declared in Python: the ``versionfs.stage`` decorator.

A module that ``vfs.yaml`` names under ``python:`` declares stages by decorating
functions::

    from versionfs import stage

    @stage(deps=["data/prepared"], outs=["model.json"],
           params=["params.yaml:train.lr,train.epochs"], metrics=["train.json"])
    def train(lr, epochs):
        ...

Each becomes a stage of the pipeline (named after the function unless ``name=``),
run by ``vfs repro`` like any other: its command is
``python -m versionfs.stage_runner MODULE.py:FUNC``, the module file is one of its
inputs, so editing the code re-runs it. The function's parameters are filled from
the selected params by the last part of their dotted key (``train.lr`` -> ``lr``);
a parameter named ``params`` receives them all, flattened. Paths are relative to
the workspace root, where the function runs.

The decorator only attaches a ``StageDecl`` to the function (no registry, no global
state); ``load_module`` imports a module file under a private name and collects
them. Thread-safety: ``load_module`` executes user code; call it from one thread.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import UsageError

__all__ = ["StageDecl", "stage", "load_module", "collect", "import_file", "call_args"]

ATTR = "__vfs_stage__"


@dataclass(frozen=True, slots=True)
class StageDecl:
    """What ``@stage`` declared; ``func`` and ``module`` are filled in by loading."""

    name: str
    func: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    params: tuple = ()       # items as in vfs.yaml: "FILE[:KEY,...]" or {FILE: [KEY]}
    metrics: tuple[str, ...] = ()
    module: str = ""         # the module file, workspace-relative
    signature: tuple[str, ...] = field(default=())


def stage(func: Callable | None = None, *, name: str | None = None, deps=(), outs=(),
          params=(), metrics=()):
    """Declare ``func`` a pipeline stage (usable bare, ``@stage``, or with
    arguments). The function is returned unchanged, callable as before."""
    def mark(f: Callable) -> Callable:
        sig = tuple(inspect.signature(f).parameters)
        decl = StageDecl(name or f.__name__, f.__name__, tuple(_strs(deps, "deps")),
                         tuple(_strs(outs, "outs")), tuple(params),
                         tuple(_strs(metrics, "metrics")), signature=sig)
        setattr(f, ATTR, decl)
        return f
    return mark(func) if func is not None else mark


def _strs(items, what: str) -> list[str]:
    if isinstance(items, str):
        items = [items]
    if not all(isinstance(i, str) for i in items):
        raise UsageError(f"@stage {what} must be a list of paths")
    return list(items)


def load_module(path: str, rel: str) -> list[StageDecl]:
    """The stages module file ``path`` declares (in source order); ``rel`` is how
    the pipeline names it (workspace-relative)."""
    return collect(import_file(path), rel)


def collect(mod, rel: str) -> list[StageDecl]:
    """The stages an imported module declares, in source order."""
    found = []
    for value in vars(mod).values():
        decl = getattr(value, ATTR, None)
        if isinstance(decl, StageDecl) and getattr(value, "__module__", None) == mod.__name__:
            found.append((value.__code__.co_firstlineno, decl))
    return [_with_module(d, rel) for _, d in sorted(found, key=lambda t: t[0])]


def _with_module(d: StageDecl, rel: str) -> StageDecl:
    from dataclasses import replace
    return replace(d, module=rel)


def import_file(path: str):
    """Import a Python file as a fresh module (never cached in ``sys.modules``
    beyond the import itself, so loading twice reads the file twice)."""
    name = "_vfs_stages_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)   # its sibling modules import as in `python FILE`
    try:
        spec.loader.exec_module(mod)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist (named under 'python:' in vfs.yaml)",
                         path=path) from None
    except Exception as exc:  # user code: any error, shown in one line
        raise UsageError(f"importing {path} failed: {type(exc).__name__}: {exc}",
                         path=path) from None
    finally:
        sys.modules.pop(name, None)
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
    return mod


def call_args(decl: StageDecl, values: dict) -> dict:
    """Keyword arguments for the stage function from flattened param ``values``:
    each parameter by the last part of a dotted key; ``params`` gets all."""
    by_last: dict[str, list[str]] = {}
    for k in values:
        by_last.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    kwargs = {}
    for p in decl.signature:
        if p == "params":
            kwargs[p] = dict(values)
        elif p in by_last:
            keys = by_last[p]
            if len(keys) > 1:
                raise UsageError(f"stage {decl.name}: parameter {p!r} matches the params "
                                 f"{', '.join(keys)}; take 'params' and pick one")
            kwargs[p] = values[keys[0]]
    return kwargs
