"""The roots of gc and fsck: the commits that must be kept, from pluggable providers.

A *root provider* is a function ``provider(repo, txn, report) -> {commit id: label}``
naming commits that must stay, each with a label saying why (``"ref heads/main"``).
``txn`` is the read (or write) transaction the caller works in; ``report(kind,
object, message)`` (possibly None) receives what the provider cannot understand, with
a kind of ``reach.BLOCKING`` when the roots are incomplete because of it.

Providers come in two sorts, given when registering:

* ``from_index=True``: derived only from the index inside ``txn`` (refs, HEAD, run
  records). gc computes them again in its sweep transaction and refuses to sweep
  when they changed since its mark (a writer that ignored the lock).
* ``from_index=False``: from outside the index (the commits live mounts of this
  repository serve). They are taken once, are not compared, and only commits the
  index holds count; a provider of this sort must not raise for an unreadable
  outside source (no mount table): it names no commit then.

Built in: ``refs`` (every branch and tag), ``HEAD`` (also detached) and ``mounts``.
A feature adds its own with ``register``, at import of its module::

    from versionfs.ops import roots
    roots.register("runs", run_roots)          # run_roots(repo, txn, report) -> dict

Thread-safety: the registry is a module-level list changed only by ``register`` and
``unregister`` (meant for import time); collecting roots reads it and is safe from
any thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CorruptObject, VfsError
from ..records.model import ID_LEN
from ..repo import refs
from ..repo.repository import find_repo_dir
from .reach import Report

Provider = Callable[..., dict[bytes, str]]


@dataclass(frozen=True, slots=True)
class RootProvider:
    name: str
    func: Provider
    from_index: bool = True


@dataclass(frozen=True, slots=True)
class Roots:
    """The roots found: ``index`` (compared by gc before it sweeps) and ``outside``
    (kept as they are)."""

    index: dict[bytes, str]
    outside: dict[bytes, str]

    @property
    def all(self) -> dict[bytes, str]:
        return {**self.outside, **self.index}


PROVIDERS: list[RootProvider] = []


def register(name: str, func: Provider, *, from_index: bool = True) -> RootProvider:
    """Add (or replace, by ``name``) a root provider; returns it."""
    provider = RootProvider(name, func, from_index)
    unregister(name)
    PROVIDERS.append(provider)
    return provider


def unregister(name: str) -> None:
    """Remove the provider called ``name`` (nothing happens if there is none)."""
    PROVIDERS[:] = [p for p in PROVIDERS if p.name != name]


def index_roots(repo, txn, report: Report | None = None) -> dict[bytes, str]:
    """The roots the index itself names (every ``from_index`` provider)."""
    out: dict[bytes, str] = {}
    for p in PROVIDERS:
        if p.from_index:
            for cid, label in p.func(repo, txn, report).items():
                out.setdefault(bytes(cid), label)
    return out


def outside_roots(repo, txn, report: Report | None = None) -> dict[bytes, str]:
    """Roots from outside the index, limited to commits the index holds."""
    out: dict[bytes, str] = {}
    for p in PROVIDERS:
        if not p.from_index:
            for cid, label in p.func(repo, txn, report).items():
                if txn.has("commits", bytes(cid)):
                    out.setdefault(bytes(cid), label)
    return out


def collect(repo, txn, report: Report | None = None) -> Roots:
    """Every root, from every registered provider."""
    return Roots(index_roots(repo, txn, report), outside_roots(repo, txn, report))


# -- the built-in providers --------------------------------------------------------------


def ref_roots(repo, txn, report: Report | None = None) -> dict[bytes, str]:
    """Every branch and tag."""
    out: dict[bytes, str] = {}
    for name, value in txn.items("refs"):
        label = name.decode("utf-8", "replace")
        if len(value) != ID_LEN:
            if report:
                report("ref", label, f"ref {label} is malformed ({len(value)} bytes)")
            continue
        out.setdefault(bytes(value), f"ref {label}")
    return out


def head_roots(repo, txn, report: Report | None = None) -> dict[bytes, str]:
    """A detached HEAD's commit (HEAD on a branch is kept by ``ref_roots``)."""
    raw = txn.meta("HEAD")
    try:
        head = refs.parse_head(raw)
    except CorruptObject:
        if report:
            text = (raw or b"").decode("utf-8", "replace")
            report("head", "HEAD", f"HEAD is neither a branch nor a commit id: {text!r}")
        return {}
    return {bytes(head.detached): "detached HEAD"} if head.detached is not None else {}


def mounted_commits(repo) -> set[bytes]:
    """Commits that live versionfs mounts of this repository serve."""
    return set(_mounts_of(repo))


def _mounts_of(repo) -> dict[bytes, str]:
    try:
        from ..repo.mounts import active_mounts
        mounts = active_mounts()
    except (ImportError, OSError, VfsError):
        return {}  # no mount support here, or no mount table: nothing is mounted
    here = os.path.realpath(repo.vfs_dir)
    out: dict[bytes, str] = {}
    for _, state in mounts:
        if state is None or not state.commit:
            continue
        try:
            if os.path.realpath(find_repo_dir(state.repo)[0]) == here:
                out.setdefault(bytes.fromhex(state.commit), f"the mount at {state.mountpoint}")
        except (VfsError, ValueError, OSError):
            continue  # another repository, or a remote one
    return out


def mount_roots(repo, txn, report: Report | None = None) -> dict[bytes, str]:
    """The commits live mounts of this repository serve (so gc cannot pull data
    from under a mount of an otherwise unreachable commit)."""
    return _mounts_of(repo)


def run_roots(repo, txn, report: Report | None = None) -> dict[bytes, str]:
    """The commits run records name: a run's output commit, the commit holding its
    declared workspace inputs, and commits of this repository it was observed to read
    through a mount. So a run record and what it points at stay together: gc deletes
    neither while the record exists (``vfs runs rm`` removes records)."""
    from ..records.runs import decode_run
    here = os.path.realpath(repo.vfs_dir)
    same: dict[str, bool] = {}

    def ours(path: str | None) -> bool:
        if not path:
            return False
        if path not in same:
            try:
                same[path] = os.path.realpath(find_repo_dir(path)[0]) == here
            except (VfsError, OSError, ValueError):
                same[path] = False
        return same[path]

    out: dict[bytes, str] = {}
    for key, raw in txn.items("runs"):
        try:
            rec = decode_run(key, raw)
        except CorruptObject as exc:
            if report:
                report("run", key.hex(), str(exc))
            continue
        names = set(rec.commits())
        names.update(i.commit for i in rec.observed if i.commit and ours(i.repo))
        for cid in names:
            try:
                out.setdefault(bytes.fromhex(cid), f"run {rec.short}")
            except ValueError:
                if report:
                    report("run", rec.id, f"run {rec.short} names a malformed commit id")
    return out


register("refs", ref_roots)
register("HEAD", head_roots)
register("mounts", mount_roots, from_index=False)
register("runs", run_roots)
