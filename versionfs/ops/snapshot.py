"""``snapshot``: record the workspace (or some paths of it) as a new commit.

Order of durability, so that a crash at any moment leaves every earlier commit intact:
content goes to tmp/, is fsynced and renamed into objects/ or packs/; then ONE LMDB
transaction adds the chunk locations, file and tree records, the commit, the stat
cache updates and moves the branch (and tag). Until that transaction commits, nothing
new is reachable; afterwards, everything it references is already durable. The branch
moves by compare-and-swap against the parent read at the start (``refs.advance_head``),
so even a writer that ignored the lock cannot make a commit get lost.

Thread-safety: runs under the repository write lock; one snapshot at a time.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from ..records.model import Commit, Kind, ObjectId, commit_id, encode_commit
from ..repo import refs
from ..repo.refs import check_ref_name
from ..repo.repository import Repo
from ..workspace.scan import WorkTree, scan_workspace

__all__ = ["SnapshotResult", "check_ref_name", "default_author", "snapshot"]


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    commit: ObjectId          # the new commit, or HEAD when nothing changed
    parent: ObjectId | None
    created: bool             # False when the tree equals HEAD's (nothing to record)
    files: int
    files_read: int
    bytes_read: int
    bytes_stored: int
    skipped: tuple[str, ...]
    tag: str | None


def default_author() -> str:
    env = os.environ.get("VFS_AUTHOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except Exception:  # getuser raises several types when no name is known
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def snapshot(repo: Repo, paths: list[str] | None = None, *, message: str = "",
             tag: str | None = None, author: str | None = None, allow_empty: bool = False,
             run: bytes | None = None, warn: Callable[[str], None] = lambda m: None,
             progress_factory=None, on_wait: Callable[[str], None] | None = None,
             on_write: Callable | None = None) -> SnapshotResult:
    """Snapshot the workspace into a commit on the current branch.

    Error handling: ``UsageError`` for a bad or existing tag; the scan's errors
    (``PathNotFound``, ``FileChanged``, ``AccessDenied``, ``StorageFull``);
    ``RefChanged`` when HEAD's branch (or the tag) moved since the snapshot read it;
    on any error nothing becomes visible and stored content is left for ``vfs gc``.

    ``on_write(txn, commit, work)``, if given, is called inside the one transaction
    that makes the snapshot visible (``commit`` is the new commit, or HEAD when
    nothing changed), so what it writes becomes visible with the commit or not at
    all: ``vfs run`` writes its run record this way.
    """
    if tag is not None:
        check_ref_name(tag)
    with repo.lock(on_wait=on_wait):
        if tag is not None and repo.refs(f"tags/{tag}").get(f"tags/{tag}") is not None:
            raise UsageError(f"tag {tag!r} already exists; pick another name or "
                             f"delete it with 'vfs tag -d {tag}'")
        parent = repo.head()
        work = scan_workspace(repo, store=True, paths=paths, warn=warn,
                              progress_factory=progress_factory, stream=True)
        try:
            work.ingestor.finish()
        except BaseException:
            work.ingestor.abort()
            raise
        unchanged = parent is not None and repo.commit(parent).tree == work.root
        if unchanged and not allow_empty:
            if (tag is not None or work.statcache or work.stale or work.dirstate
                    or work.stale_dirs or on_write
                    or (work.journal is not None and work.journal.pending)):
                _write(repo, work, None, None, tag, parent, full=not paths,
                       on_write=on_write)
            cid, created = parent, False
        else:
            commit = Commit(
                tree=work.root, parents=(parent,) if parent else (), time_ns=time.time_ns(),
                author=author or default_author(), message=message,
                run=ObjectId(run) if run else None,
                stats=dict(zip(("files", "bytes"), _totals(work, partial=bool(paths)))),
            )
            enc = encode_commit(commit)
            cid = commit_id(enc)
            _write(repo, work, cid, enc, tag, parent, full=not paths, on_write=on_write)
            created = True
    s = work.stats
    return SnapshotResult(cid, parent, created, s.files, s.files_read, s.bytes_read,
                          s.bytes_stored, tuple(s.skipped), tag)


def _totals(work: WorkTree, *, partial: bool) -> tuple[int, int]:
    """(files, bytes) of the snapshot's tree: counted by the scan for a full one; a
    partial one grafts onto HEAD, so its whole tree is walked."""
    if not partial:
        return work.stats.files, work.stats.tree_bytes
    files = size = 0
    stack = [work.root]
    while stack:
        for e in work.tree(stack.pop()).entries:
            if e.is_dir:
                stack.append(e.id)
            else:
                files += e.kind is Kind.FILE
                size += e.size
    return files, size


def _write(repo: Repo, work: WorkTree, cid, enc, tag, parent, *, full: bool,
           on_write: Callable | None = None) -> None:
    """The one transaction that makes a snapshot visible."""
    with repo.index.write() as txn:
        if full:   # first: a state dropped here may be one the scan also made
            for key in work.stale:
                txn.delete("statcache", key)
            for key in work.stale_dirs:
                txn.delete("dirstate", key)
        else:
            work.dirstate.clear()
        work.put_records(txn)
        if full and work.journal is not None:  # the change journal's directory records
            work.journal.write(txn)
        if cid is not None:
            txn.put("commits", cid, enc)
            refs.advance_head(txn, cid, expect=parent)
        target = cid or parent
        if tag is not None and target is not None:
            refs.set_ref(txn, refs.TAG_PREFIX + tag, target, expect=None)
        if on_write is not None:
            on_write(txn, target, work)
