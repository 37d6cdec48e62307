"""Tags and branches as verbs: list, create, move and delete them.

Both the CLI (``vfs tag``, ``vfs branch``) and ``versionfs.Repo`` (``tag``,
``branch``, ``delete_tag``, ...) call these; each returns a small frozen result that
``to_dict()`` turns into JSON. Every change runs under the repository lock in one
write transaction and goes through ``repo.refs`` (compare-and-swap). Deleting a
branch whose commits nothing else reaches (no other branch, tag or HEAD, walking
commit parents) is refused unless ``force``: those commits would be left for
``vfs gc`` to remove.

Thread-safety: changes take the repository lock; listing only reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from ..records.model import ObjectId
from ..repo import refs
from ..repo.repository import Repo
from .reach import ancestors

KINDS = {"tag": refs.TAG_PREFIX, "branch": refs.BRANCH_PREFIX}


@dataclass(frozen=True, slots=True)
class RefInfo:
    """One tag or branch; ``head`` is True for the branch HEAD is on."""

    kind: str
    name: str
    commit: ObjectId
    head: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "commit": self.commit.hex(),
                "head": self.head}


@dataclass(frozen=True, slots=True)
class RefChange:
    """What a create, move or delete did. ``action`` is ``created``, ``moved`` or
    ``deleted``; ``commit`` is the commit the ref names now (None once deleted),
    ``previous`` the one it named before (None when created); ``unreachable`` counts
    the commits a forced branch deletion left without any other ref or HEAD."""

    kind: str
    name: str
    action: str
    commit: ObjectId | None
    previous: ObjectId | None
    unreachable: int = 0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "action": self.action,
                "commit": self.commit.hex() if self.commit else None,
                "previous": self.previous.hex() if self.previous else None,
                "unreachable": self.unreachable}


def _prefix(kind: str) -> str:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"kind must be 'tag' or 'branch', not {kind!r}") from None


def list_refs(repo: Repo, kind: str) -> tuple[RefInfo, ...]:
    """Every tag or branch (``kind``), by name."""
    prefix = _prefix(kind)
    with repo.index.read() as txn:
        current = refs.read_head(txn).branch
        found = refs.list_refs(txn, prefix)
    return tuple(RefInfo(kind, ref[len(prefix):], cid, ref == current)
                 for ref, cid in found.items())


def create(repo: Repo, kind: str, name: str, rev: str = "HEAD", *, force: bool = False,
           on_wait: Callable[[str], None] | None = None) -> RefChange:
    """Point a new tag or branch ``name`` at ``rev``; with ``force`` an existing one
    moves there.

    Error handling: ``UsageError`` for a bad name or an existing ref without
    ``force``; ``UnknownRevision``/``AmbiguousRevision`` for a bad ``rev``;
    ``LockBusy`` and ``RefChanged`` as for any write.
    """
    prefix = _prefix(kind)
    refs.check_ref_name(name, kind)
    cid = repo.resolve(rev)
    with repo.lock(on_wait=on_wait), repo.index.write() as txn:
        existing = refs.read_ref(txn, prefix + name)
        if existing is not None and not force:
            raise UsageError(f"{kind} {name!r} already exists; use --force to move it "
                             f"or -d to delete it")
        refs.set_ref(txn, prefix + name, cid, expect=existing)
    return RefChange(kind, name, "created" if existing is None else "moved", cid, existing)


def delete(repo: Repo, kind: str, name: str, *, force: bool = False,
           on_wait: Callable[[str], None] | None = None) -> RefChange:
    """Delete tag or branch ``name``.

    Error handling: ``UsageError`` for a bad or unknown name, for the branch HEAD is
    on, and (unless ``force``) for a branch whose commits no other ref or HEAD
    reaches; ``LockBusy`` and ``RefChanged`` as for any write.
    """
    prefix = _prefix(kind)
    refs.check_ref_name(name, kind)
    ref = prefix + name
    with repo.lock(on_wait=on_wait), repo.index.write() as txn:
        existing = refs.read_ref(txn, ref)
        if existing is None:
            raise UsageError(f"no {kind} named {name!r}; 'vfs {kind}' lists them")
        lost = 0
        if kind == "branch":
            head = refs.read_head(txn)
            if head.branch == ref:
                raise UsageError(f"cannot delete branch {name!r}: HEAD is on it; "
                                 "check out another branch first")
            lost = unreachable_without(txn, ref, head)
            if lost and not force:
                raise UsageError(
                    f"branch {name!r} has {lost} commit(s) that no other branch, tag or "
                    f"HEAD reaches; deleting it would leave them for 'vfs gc' to remove; "
                    f"use 'vfs branch -D {name}' (or --force) to delete it anyway")
        refs.delete_ref(txn, ref, expect=existing)
    return RefChange(kind, name, "deleted", None, existing, lost)


def unreachable_without(txn, ref: str, head: refs.Head | None = None) -> int:
    """How many commits ref ``ref`` reaches that no other ref or HEAD does (commit
    parents only: cheap, no trees are read)."""
    tip = refs.read_ref(txn, ref)
    if tip is None:
        return 0
    head = refs.read_head(txn) if head is None else head
    others = [cid for name, cid in refs.list_refs(txn).items() if name != ref]
    if head.detached is not None:
        others.append(head.detached)
    return len(ancestors(txn, [tip]) - ancestors(txn, others))
