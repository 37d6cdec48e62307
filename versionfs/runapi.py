"""Runs from Python: ``with versionfs.Run("train") as run:`` records the block as a
run, as ``vfs run`` records a command, and ``versionfs.load`` reads back the
objects a run saved.

Inside the block, ``run.input(path)`` declares an input (its content id is taken
then), ``run.param(name, value)`` a param (part of the cache key),
``run.output(path)`` an output, ``run.metric`` and ``run.label`` what they say, and
``run.save(name, obj)`` writes an object through a materializer
(``materializers``) as an output. On leaving the block the run goes through the
recording of ``ops.run`` (``record``): the outputs and the workspace inputs are
snapshotted in one commit naming the run, with the record in the same transaction.
An exception records a failed run (no commit) and propagates; ``KeyboardInterrupt``
records an interrupted one.

Unlike ``vfs run``, the block is never skipped by the cache (``run.cached()`` says
whether an equal run exists) and outputs are not removed before it runs (the block
writes them while it runs, so an output it does not rewrite keeps its old content
and is recorded as it is). No log is kept and reads through mounts are not observed.
Params and metrics are recorded in the group ``"python"`` (``vfs runs show``:
``python:lr = 0.1``). argv is ``sys.argv``; the working directory is the one at
``__enter__`` (recorded relative to the workspace, ``..`` parts included when it is
outside). Thread-safety: a ``Run`` belongs to one thread; separate runs may proceed
in separate threads or processes at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Self

from . import materializers as M
from .api import Repo
from .errors import PathNotFound, UnknownRevision, UsageError
from .ops import params as P
from .ops import run as R
from .records import runs as rr
from .records.model import ObjectId

GROUP = "python"          # the params/metrics group of an in-process run
ARTIFACTS = "artifacts"   # run.save's default directory: ARTIFACTS/<run name>/


class Run:
    """A block of this process recorded as a run; see the module docstring.

    ``repo``: a path in the workspace (or an open ``Repo``). ``dir``: where
    ``save`` writes objects (relative to the working directory; default
    ``artifacts/<name>`` at the workspace root). ``warn`` receives warnings (an
    input that changed during the run); default: printed to stderr.
    """

    def __init__(self, name: str, repo: str | Repo = ".", *, labels: dict | None = None,
                 dir: str | None = None, warn: Callable[[str], None] | None = None):
        if not name or not isinstance(name, str):
            raise UsageError("a run needs a name, e.g. versionfs.Run('train')")
        self.name = name
        self._repo_arg = repo
        self._dir = dir
        self._warn = warn or (lambda m: print(f"versionfs: {m}", file=sys.stderr))
        self.labels = dict(labels or {})
        self.params: dict = {}
        self.metrics: dict = {}
        self.repo: Repo | None = None
        self.result: R.RunResult | None = None
        self._deps: list[rr.Input] = []
        self._ws_deps: list[str] = []
        self._keys: dict[str, str] = {}
        self._outs: list[str] = []
        self._active = False

    # -- the block ----------------------------------------------------------------
    def __enter__(self) -> Self:
        if self._active or self.result is not None:
            raise UsageError(f"run {self.name!r} was already entered; make a new "
                             "versionfs.Run for each run")
        repo = self._repo_arg
        self.repo = Repo.open(repo) if isinstance(repo, (str, os.PathLike)) else repo
        try:
            if self.repo.workspace is None:
                raise UsageError("a run needs a workspace; this is a bare repository")
            self._ws = os.path.realpath(self.repo.workspace)
            self._cwd = os.path.realpath(os.getcwd())
            self._code = R.code_version(self._cwd)
        except BaseException:
            self._close()
            raise
        self.argv = list(sys.argv) or ["python"]
        self.start_ns = rr.now_ns()
        self._rid = rr.new_run_id(self.argv, self.start_ns)
        self._active = True
        return self

    def __exit__(self, et, ev, tb) -> bool:
        end_ns = rr.now_ns()
        self._active = False
        code, message, interrupted = _exit_status(et, ev)
        metrics = {GROUP: self.metrics} if self.metrics else {}
        out = R.Outcome(self._rid, self.start_ns, end_ns, code, message=message,
                        interrupted_by=interrupted, metrics=metrics)
        try:
            self.result = R.record(self.repo, self._prepared(), out, warn=self._warn)
        finally:
            self._close()
        return False

    def _close(self) -> None:
        if self.repo is not None and self.repo is not self._repo_arg:
            self.repo.close()

    @property
    def id(self) -> str:
        """The run id (hex), fixed when the block starts."""
        self._check()
        return self._rid.hex()

    @property
    def record(self) -> rr.RunRecord | None:
        """The run record, once the block has ended."""
        return self.result.record if self.result else None

    def _check(self) -> None:
        if not self._active:
            raise UsageError(f"run {self.name!r} is not running; use it inside "
                             f"'with versionfs.Run({self.name!r}) as run:'")

    # -- declarations -------------------------------------------------------------
    def input(self, path: str) -> str:
        """Declare ``path`` an input: its content id is taken now (and compared with
        what the commit holds at the end). Returns ``path``."""
        self._check()
        try:
            deps, ws_deps, keys = R.resolve_inputs(self.repo, [os.fspath(path)],
                                                   os.getcwd(), self._outs, self._warn)
        except PathNotFound:
            raise PathNotFound(f"input {path} does not exist; create it before "
                               "run.input names it", path=str(path)) from None
        for d in deps:
            self._deps = [x for x in self._deps if x.path != d.path] + [d]
        self._ws_deps = sorted(set(self._ws_deps) | set(ws_deps))
        self._keys.update(keys)
        return path

    def param(self, name: str, value):
        """Record param ``name`` (a map is flattened to dotted names). Returns
        ``value``."""
        self._check()
        self.params.update(P.flatten({name: _plain(value)}))
        return value

    def output(self, path: str) -> str:
        """Declare ``path`` an output: it must exist when the block ends and is
        snapshotted then. It is not removed first (see the module docstring).
        Returns ``path``."""
        self._check()
        (rel,) = R.output_paths(self.repo, os.getcwd(), [os.fspath(path)])
        for d in self._ws_deps:
            if d == rel or not d or d.startswith(rel + "/") or rel.startswith(d + "/"):
                raise UsageError(f"{path} is both an input and an output ({d}); a run "
                                 "must not overwrite what it reads")
        if rel not in self._outs:
            self._outs.append(rel)
        return path

    def metric(self, name: str, value):
        """Record metric ``name``. Returns ``value``."""
        self._check()
        self.metrics.update(P.flatten({name: _plain(value)}))
        return value

    def label(self, key: str, value: str) -> str:
        """Attach label ``key=value`` to the run. Returns ``value``."""
        self._check()
        self.labels[str(key)] = _plain(value)
        return value

    def save(self, name: str, obj, *, pickle: bool = False, dir: str | None = None) -> str:
        """Write ``obj`` as an output through its materializer (NumPy array, pandas
        DataFrame, JSON value, a registered type, or with ``pickle=True`` anything);
        ``versionfs.load(REPO@REV, name)`` reads it back. Returns the data file's
        path."""
        self._check()
        where = dir or self._dir or os.path.join(self._ws, ARTIFACTS, self.name)
        data, side = M.save(obj, os.path.join(os.getcwd(), where), name, pickle=pickle)
        self.output(data)
        self.output(side)
        return data

    def cached(self) -> rr.RunRecord | None:
        """A successful earlier run with the same argv, params, inputs, code and
        outputs as declared so far, whose outputs are still stored (or None). The
        block runs anyway; this lets it decide to reuse that run's outputs."""
        self._check()
        return R.find_cached(self.repo, self._prepared())

    def _prepared(self) -> R.Prepared:
        cwd_rel = os.path.relpath(self._cwd, self._ws)
        cwd_rel = "" if cwd_rel == "." else cwd_rel
        spec = R.RunSpec(argv=self.argv, name=self.name, deps=[d.path for d in self._deps],
                         outs=list(self._outs), cwd=self._cwd, observe=False,
                         labels=dict(self.labels))
        ws = [d for d in self._deps if d.origin == rr.WORKSPACE]
        deps = sorted(ws, key=lambda d: d.path) + [d for d in self._deps if d not in ws]
        params = {GROUP: dict(self.params)} if self.params else {}
        return R.assemble(spec, cwd_rel, deps, list(self._ws_deps), params,
                          list(self._outs), len(self._outs), self._code, self._keys)


def _exit_status(et, ev) -> tuple[int, str, str | None]:
    """(exit code, message, interrupting signal) for how the block ended."""
    if et is None:
        return 0, "", None
    if issubclass(et, KeyboardInterrupt):
        return 130, "interrupted by KeyboardInterrupt", "SIGINT"
    if issubclass(et, SystemExit):
        if ev.code is None or isinstance(ev.code, int):
            code = ev.code or 0
            return code, "" if code == 0 else f"sys.exit({code})", None
        return 1, f"sys.exit: {_first_line(str(ev.code))}", None
    text = _first_line(str(ev))
    return 1, f"{et.__name__}: {text}" if text else et.__name__, None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _plain(value):
    """NumPy scalars and 0-d arrays as Python numbers; the rest as it is."""
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        return value.item()
    return value


# -- loading objects back --------------------------------------------------------------


def load(source: str | Repo, name: str, *, run: str | None = None):
    """The object ``name`` saved by ``run.save``, read through the repository.

    ``source``: ``"REPO@REV"``, ``"REPO"`` (HEAD) or an open ``Repo``. ``name``:
    the object's name, or its path without extension (``artifacts/train/model``).
    Without ``run`` the object is looked for in the run whose commit REV is, then
    among the runs that saved an object of that name and whose file REV holds,
    newest first. With ``run`` (an id or prefix) it is that run's object, read from
    REV when one was given, else from the run's commit.

    Error handling: ``PathNotFound`` when no such object is in REV;
    ``UnknownRevision``/``AmbiguousRevision`` for REV or the run id.
    """
    if isinstance(source, Repo):
        return _load(source, None, name, run)
    path, rev = _split_source(os.fspath(source))
    with Repo.open(path) as repo:
        return _load(repo, rev, name, run)


def _split_source(spec: str) -> tuple[str, str | None]:
    """``REPO[@REV]``, split as ``versionfs mount`` splits it: at the last ``@``
    whose right part is non-empty and has no ``/`` (unless the whole names a
    directory and the left part does not)."""
    i = spec.rfind("@")
    if i >= 0 and spec[i + 1:] and "/" not in spec[i + 1:]:
        path = spec[:i] or "."
        if not (os.path.isdir(spec) and not os.path.isdir(path)):
            return path, spec[i + 1:]
    return spec or ".", None


def _load(repo: Repo, rev: str | None, name: str, run: str | None):
    if run is not None:
        rec = R.get_run(repo, run)
        if rec.commit is None:
            raise PathNotFound(f"run {rec.short} ({rec.status}) made no commit, so it "
                               "holds no objects")
        cid = repo.resolve(rev).hex() if rev is not None else rec.commit
        side = _sidecar_of(rec, name)
        if side is None or not _holds(repo, cid, side):
            raise PathNotFound(f"run {rec.short} saved no object {name!r}"
                               + (f" that {rev} holds" if side else ""), path=name)
        return M.load(repo, cid, side)
    cid = repo.resolve(rev or "HEAD")
    side = _find(repo, cid, name)
    if side is None:
        raise PathNotFound(f"no object {name!r} in {rev or 'HEAD'} ({cid.short}); "
                           "'vfs runs' lists the runs, 'vfs ls' the files", path=name)
    return M.load(repo, cid.hex(), side)


def _find(repo: Repo, cid: ObjectId, name: str) -> str | None:
    """The sidecar path of object ``name`` in commit ``cid``, or None."""
    if "/" in name:
        side = name.strip("/") + M.SIDECAR
        return side if _holds(repo, cid.hex(), side) else None
    made_by = repo.commit(cid).run
    candidates = []
    if made_by is not None:
        try:
            candidates.append(R.get_run(repo, made_by.hex()))
        except UnknownRevision:  # its record was removed: look among the others
            pass
    candidates += reversed(R.list_runs(repo, status=rr.SUCCEEDED))
    for rec in candidates:
        side = _sidecar_of(rec, name)
        if side is not None and _holds(repo, cid.hex(), side):
            return side
    return None


def _sidecar_of(rec: rr.RunRecord, name: str) -> str | None:
    want = name + M.SIDECAR
    hits = [o.path for o in rec.outs if o.path == want or o.path.endswith("/" + want)]
    if len(hits) > 1:
        raise UsageError(f"run {rec.short} saved {len(hits)} objects named {name!r} ("
                         + ", ".join(h.removesuffix(M.SIDECAR) for h in hits)
                         + "); load one by its path")
    return hits[0] if hits else None


def _holds(repo: Repo, cid_hex: str, path: str) -> bool:
    tree = repo.commit(ObjectId.from_hex(cid_hex)).tree
    return R.entry_at(repo, tree, path) is not None
