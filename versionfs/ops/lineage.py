"""Lineage: which recorded runs made a file version, from what, and so on upstream.

A *file version* (an ``Artifact``) is a path with a content id. Its producer is found
through the run cache's output index (``repo.producers``: content id → run ids):

1. a run that output this content id, ran to its end before the content was used
   (before the consuming run started; for the file asked about, before its commit
   was made), preferring the run whose commit is the one asked about, then one whose
   output *path* is the same, then the newest;
2. else the nearest enclosing directory of the path, in the commit that holds it,
   whose tree id a run output by rule 1 (a file inside an output directory was made
   by the run that made the directory: only declared outputs are indexed);
3. else, for a directory, its *members*: the entries below it that a run made by
   rule 1, found by walking its tree (not below such an entry, and at most
   ``MAX_MEMBER_SCAN`` entries); a directory input ``data/`` holding a file a
   previous stage wrote is linked to that stage this way;
4. else it was not produced by a recorded run (raw data, a hand-written script).

Each run's inputs (declared with ``-d`` and observed through mounts) are explained in
turn, breadth first, so every run appears once, at its shortest distance, and at most
``depth`` runs deep (deeper runs are named but their inputs not followed). Rule 1's
time order makes the graph acyclic; a visited set guards it all the same. Inputs that
live in another repository are looked up in this one only.

Thread-safety: ``lineage`` builds a fresh value each call; the result is frozen.
"""

from __future__ import annotations

import os
import shlex
from collections import deque
from dataclasses import dataclass, field

from ..errors import AmbiguousRevision, NotADirectory, PathNotFound, UnknownRevision, VfsError
from ..records import runs as rr
from ..records.model import Kind, ObjectId
from ..repo import producers as P
from ..repo.repository import Repo, normalize_path

__all__ = ["Artifact", "Step", "Lineage", "lineage", "resolve_target", "DEFAULT_DEPTH"]

DEFAULT_DEPTH = 32          # runs deep; a pipeline deeper than this is rare
MAX_MEMBER_SCAN = 10_000    # entries of an unproduced directory looked at (rule 3)
_KIND = {Kind.FILE: "file", Kind.DIR: "dir", Kind.SYMLINK: "symlink"}


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file version in the lineage. ``key`` is ``path@id``. ``produced_by``: the
    run that made it (None: no recorded run); ``part_of``: the key of the output
    directory through which that run made it (rule 2); ``members``: for a directory
    no run made, the keys of the entries below it that runs made (rule 3)."""

    key: str
    path: str
    kind: str
    id: str
    origin: str = rr.WORKSPACE
    commit: str | None = None
    repo: str | None = None
    produced_by: str | None = None
    part_of: str | None = None
    members: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"key": self.key, "path": self.path, "kind": self.kind, "id": self.id,
                "origin": self.origin, "commit": self.commit, "repo": self.repo,
                "produced_by": self.produced_by, "part_of": self.part_of,
                "members": list(self.members)}


@dataclass(frozen=True, slots=True)
class Step:
    """A run in the lineage: the record's essentials, the keys of the artifacts it
    used (with their role, ``declared`` or ``observed``) and made. ``expanded`` is
    False past the depth limit: then its inputs were not followed."""

    run: rr.RunRecord
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    expanded: bool = True

    @property
    def command(self) -> str:
        return shlex.join(self.run.argv)

    def to_dict(self) -> dict:
        r = self.run
        git = r.env.get("git") or {}
        return {"id": r.id, "name": r.name, "command": self.command, "argv": list(r.argv),
                "cwd": r.cwd, "status": r.status, "start_ns": r.start_ns,
                "end_ns": r.end_ns, "commit": r.commit, "params": r.params,
                "code": git.get("commit"), "user": r.env.get("user"),
                "host": r.env.get("host"), "expanded": self.expanded,
                "inputs": [{"entity": k, "role": role} for k, role in self.inputs],
                "outputs": list(self.outputs)}


@dataclass(frozen=True)
class Lineage:
    """The lineage of ``target`` (an artifact key) at ``rev`` (commit ``commit``):
    artifacts and steps in the order they were found (breadth first)."""

    target: str
    rev: str
    commit: str
    artifacts: dict[str, Artifact]
    steps: dict[str, Step]
    depth: int
    truncated: bool = False     # some run's inputs were not followed (depth)

    @property
    def root(self) -> Artifact:
        return self.artifacts[self.target]

    def to_dict(self) -> dict:
        return {"target": self.target, "rev": self.rev, "commit": self.commit,
                "depth": self.depth, "truncated": self.truncated,
                "entities": [a.to_dict() for a in self.artifacts.values()],
                "runs": [s.to_dict() for s in self.steps.values()]}


def resolve_target(repo: Repo, spec: str, to_path=normalize_path) -> tuple[str, ObjectId, str]:
    """``PATH@REV``, ``REV:PATH`` or ``PATH`` (at HEAD) → ``(rev, commit id, path)``.

    ``to_path`` turns the PATH of the ``@`` and bare forms into a workspace path
    (the CLI passes one that honours the current directory); ``REV:PATH`` is
    relative to the workspace root, as for ``vfs cat``. The forms are tried in that
    order and the first that names an existing path wins, so a file whose name holds
    ``@`` or ``:`` is still found; otherwise the first form's error is raised.
    """
    forms = []
    path, at, rev = spec.rpartition("@")
    if at and path and rev:
        forms.append((rev, path, to_path))
    rev, colon, path = spec.partition(":")
    if colon and rev and path:
        forms.append((rev, path, normalize_path))
    forms.append(("HEAD", spec, to_path))
    first: VfsError | None = None
    for rev, path, norm in forms:
        try:
            cid = repo.resolve(rev)
            p = norm(path)
            repo.entry(cid, p)
            return rev, cid, p
        except (UnknownRevision, AmbiguousRevision, PathNotFound, NotADirectory) as exc:
            first = first or exc
    raise first


def lineage(repo: Repo, rev: str, path: str, *, depth: int = DEFAULT_DEPTH) -> Lineage:
    """The lineage of ``path`` in revision ``rev``; see the module docstring.

    Error handling: ``UnknownRevision``/``AmbiguousRevision`` for a bad ``rev``,
    ``PathNotFound`` for a path the commit lacks.
    """
    cid = repo.resolve(rev)
    path = normalize_path(path)
    entry = repo.entry(cid, path)
    b = _Builder(repo, max(0, depth))
    key = b.artifact(path, _KIND[entry.kind], entry.id.hex(), rr.WORKSPACE, cid.hex(), None)
    b.queue.append((key, repo.commit(cid).time_ns, cid.hex(), 1))
    b.run()
    return Lineage(key, rev, cid.hex(), b.frozen_artifacts(), b.frozen_steps(),
                   b.depth, b.truncated)


@dataclass
class _Art:
    fields: dict
    members: list = field(default_factory=list)
    seen: bool = False


class _Builder:
    def __init__(self, repo: Repo, depth: int):
        self.repo, self.depth = repo, depth
        self.arts: dict[str, _Art] = {}
        self.steps: dict[str, dict] = {}
        self.queue: deque = deque()   # (artifact key, used before ns, commit, level)
        self.truncated = False
        self._made: dict[str, list[rr.RunRecord]] = {}
        self.here = os.path.realpath(repo.vfs_dir)

    # -- artifacts and steps -------------------------------------------------------
    def artifact(self, path, kind, oid, origin, commit, repo) -> str:
        key = f"{path}@{oid}"
        if key not in self.arts:
            self.arts[key] = _Art({"key": key, "path": path, "kind": kind, "id": oid,
                                   "origin": origin, "commit": commit, "repo": repo})
        return key

    def attach(self, key: str, rec: rr.RunRecord, level: int, part_of=None) -> None:
        f = self.arts[key].fields
        f.setdefault("produced_by", rec.id)
        if part_of:
            f.setdefault("part_of", part_of)
        if rec.id in self.steps:
            return
        outs = []
        for o in rec.outs:
            k = self.artifact(o.path, o.kind, o.id, rr.WORKSPACE, rec.commit, None)
            self.arts[k].fields.setdefault("produced_by", rec.id)
            self.arts[k].seen = True
            outs.append(k)
        step = {"run": rec, "inputs": [], "outputs": tuple(outs), "expanded": True}
        self.steps[rec.id] = step
        if level > self.depth:
            step["expanded"] = False
            self.truncated = True
            return
        for i, role in [(d, "declared") for d in rec.deps] + \
                       [(d, "observed") for d in rec.observed]:
            k = self.artifact(i.path, i.kind, i.id, i.origin, i.commit, i.repo)
            step["inputs"].append((k, role))
            self.queue.append((k, rec.start_ns, None, level + 1))

    # -- the walk ------------------------------------------------------------------
    def run(self) -> None:
        while self.queue:
            key, before, commit, level = self.queue.popleft()
            art = self.arts[key]
            if art.seen:
                continue
            art.seen = True
            self.explain(key, art.fields, before, commit, level)

    def explain(self, key, f, before, commit, level) -> None:
        rec = self.choose(f["id"], f["path"], before, commit)
        if rec is not None:                                       # rule 1
            self.attach(key, rec, level)
            return
        found = self.enclosing(f, before)                         # rule 2
        if found is not None:
            dkey, rec = found
            self.arts[dkey].seen = True
            self.attach(dkey, rec, level)
            self.attach(key, rec, level, part_of=dkey)
            return
        if f["kind"] == "dir":                                    # rule 3
            self.members(key, f, before, level)

    def made(self, oid: str) -> list[rr.RunRecord]:
        if oid not in self._made:
            with self.repo.index.read() as txn:
                self._made[oid] = P.producers(txn, bytes.fromhex(oid))
        return self._made[oid]

    def choose(self, oid, path, before, commit=None) -> rr.RunRecord | None:
        ok = [r for r in self.made(oid) if before is None or r.end_ns <= before]
        if not ok:
            return None
        return max(ok, key=lambda r: (commit is not None and r.commit == commit,
                                      any(o.path == path and o.id == oid for o in r.outs),
                                      r.end_ns, r.id))

    def _local_commit(self, f) -> ObjectId | None:
        if not f["commit"] or f["origin"] == rr.EXTERNAL:
            return None
        if f["repo"] and os.path.realpath(f["repo"]) != self.here:
            return None
        return ObjectId.from_hex(f["commit"])

    def enclosing(self, f, before):
        """Rule 2: ``(directory artifact key, run)`` or None."""
        cid = self._local_commit(f)
        parts = f["path"].split("/")
        if cid is None or len(parts) < 2:
            return None
        try:
            e = self.repo.root_entry(cid)
            ancestors = []
            for i, part in enumerate(parts[:-1]):
                e = self.repo.tree(e.id).get(part)
                if e is None or not e.is_dir:
                    return None
                ancestors.append(("/".join(parts[: i + 1]), e.id.hex()))
        except VfsError:
            return None
        for dpath, tid in reversed(ancestors):
            rec = self.choose(tid, dpath, before)
            if rec is not None:
                return self.artifact(dpath, "dir", tid, f["origin"], f["commit"],
                                     f["repo"]), rec
        return None

    def members(self, key, f, before, level) -> None:
        """Rule 3: entries below directory ``f`` that runs made."""
        if f["origin"] == rr.EXTERNAL or (f["repo"] and
                                          os.path.realpath(f["repo"]) != self.here):
            return
        budget = [MAX_MEMBER_SCAN]
        stack = [(f["path"], ObjectId.from_hex(f["id"]))]
        while stack:
            prefix, tid = stack.pop()
            try:
                entries = self.repo.tree(tid).entries
            except VfsError:
                continue
            for e in entries:
                budget[0] -= 1
                if budget[0] < 0:
                    self.truncated = True
                    return
                p = f"{prefix}/{e.name}" if prefix else e.name
                rec = self.choose(e.id.hex(), p, before)
                if rec is not None:
                    k = self.artifact(p, _KIND[e.kind], e.id.hex(), f["origin"],
                                      f["commit"], f["repo"])
                    self.arts[key].members.append(k)
                    self.arts[k].seen = True
                    self.attach(k, rec, level)
                elif e.is_dir:
                    stack.append((p, e.id))

    # -- the result ----------------------------------------------------------------
    def frozen_artifacts(self) -> dict[str, Artifact]:
        return {k: Artifact(**a.fields, members=tuple(a.members))
                for k, a in self.arts.items()}

    def frozen_steps(self) -> dict[str, Step]:
        return {rid: Step(s["run"], tuple(s["inputs"]), s["outputs"], s["expanded"])
                for rid, s in self.steps.items()}
