"""``checkout``: materialize a commit into the workspace (moving HEAD) or into a directory.

Only what differs is touched, and only what differs is looked at. With HEAD's tree H
and the target's tree T, a walk descends only into directories whose ids differ, so
switching between two versions costs time in proportion to what differs between
them, not to the dataset's size. Two directories are compared as their stored
rows (``records.model.row_pairs``): only rows that differ become entries, and no
decoded tree is kept. At each path where H and T differ the workspace is probed
(lstat; the stat cache gives the content id, or the file is hashed):

* workspace equals H there (clean), or the path is missing: it becomes T's.
* workspace already has T's content: at most its mode and mtime are set.
* anything else (uncommitted change, untracked or ignored file in the way): a
  *conflict*. All conflicts are found before anything changes and refused
  (``Conflict``, naming the paths).
* Paths where H and T agree are left as they are, local changes included (as git
  does); untracked files T does not touch stay, and a directory T removes but that
  still holds them is kept (with a warning).

For a switch, the trees and the probes are read first on a pool of threads (``workspace.lookahead``: on cold caches these are random reads,
and many in flight finish several times sooner than one at a time); the plan then
runs on what was read, as it would without it.

``force`` makes the workspace equal T exactly: the whole workspace is scanned (the
stat cache keeps that fast) into a tree W, and a three-way walk over W, H and T
rewrites whatever differs from T, discarding local changes. ``into`` writes T into
an empty directory the same way, with no W.

The plan is carried out by ``materialize.Apply``: files are written under temporary
names and renamed over (never torn) by worker threads, large objects cloned where
the filesystem allows, other content copied chunk by chunk with every chunk
verified, all through directory fds opened ``O_NOFOLLOW``; directories' modes and
mtimes are set last. Nothing is ever linked into the cache.

Stat cache: each written file gets an entry (stat after the rename → file id). The
scanner's racy rule (no entry when mtime or ctime is within 100 ms of now) guards
against a write in the same clock tick as the stat. Here checkout itself sets the
mtime to the commit's old value, so any later write moves the mtime to "now" and is
seen; only a writer restoring the old mtime within the tick of our rename could go
unseen. Entries are therefore recorded unless the *mtime* is racy.

Thread-safety: workspace checkouts hold the repository lock, one at a time.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import (
    Conflict,
    CorruptObject,
    NotADirectory,
    UsageError,
    from_oserror,
)
from ..records.hashing import hash_bytes
from ..workspace.materialize import (
    DIRMETA,
    META,
    MKDIR,
    RMDIR,
    RMTREE,
    UNLINK,
    WRITE,
    Apply,
)
from ..records.model import (
    Kind, ObjectId, TreeEntry, decode_statcache, decode_tree_rows, row_entry, row_pairs,
    stat_bytes,
)
from ..repo import refs
from ..repo.repository import VFS_DIR, Repo
from ..workspace.scan import (
    RACY_NS,
    FileJob,
    Ingestor,
    WorkTree,
    cache_key,
    cache_value,
    cached_file_id,
    scan_workspace,
)
from ..workspace.lookahead import MISSING, Lookahead

CONFLICTS_SHOWN = 10
_NO_ID = ObjectId(bytes(32))  # content not known or not versionable: equals nothing
_VFS_NAME = VFS_DIR.encode()


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    commit: ObjectId
    head: str | None          # what HEAD names now (branch or hex id); None with ``into``
    into: str | None          # the directory written, or None for the workspace
    files_written: int        # files and symlinks (re)written
    files_updated: int        # same content, only mode or mtime set
    files_removed: int
    dirs_created: int
    dirs_removed: int
    bytes_written: int        # bytes copied from the cache
    bytes_cloned: int         # bytes cloned (reflinks: no data copied)
    forced: tuple[str, ...]   # conflicting paths overwritten because of ``force``
    kept: tuple[str, ...]     # directories kept because they hold untracked files


def checkout(repo: Repo, rev: str, *, into: str | None = None, force: bool = False,
             warn: Callable[[str], None] = lambda m: None, progress_factory=None,
             on_wait: Callable[[str], None] | None = None,
             advance: tuple[str, bytes | None] | None = None) -> CheckoutResult:
    """Materialize ``rev`` into the workspace (moving HEAD) or into directory ``into``.

    ``into`` must be empty or absent unless ``force`` (then what is there is
    overwritten where the commit has something, and left alone elsewhere).
    ``progress_factory(total_bytes)`` may return a callable fed with byte counts.

    Error handling: ``UnknownRevision``/``AmbiguousRevision`` for a bad ``rev``;
    ``Conflict`` naming the paths, before anything changed; ``UsageError`` for a bare
    repository without ``into``, or ``into`` inside the repository; ``CorruptObject``
    or ``MissingObject`` for damaged content; ``StorageFull``/``AccessDenied`` from the
    filesystem. An error part-way leaves every file either old or new (never torn) and
    HEAD unmoved; running the same checkout again finishes the job.

    ``advance=(branch ref, expected)`` moves that branch to ``rev``'s commit in the
    same transaction that moves HEAD onto it (what ``vfs pull`` does for a
    fast-forward), if the branch still holds ``expected`` (``RefChanged`` otherwise).
    """
    cid = repo.resolve(rev)
    if into is not None:
        return _checkout_into(repo, cid, into, force, warn, progress_factory)
    if repo.workspace is None:
        raise UsageError("a bare repository has no workspace; use --into DIR to "
                         "write the files somewhere")
    with repo.lock(on_wait=on_wait):
        return _checkout_workspace(repo, rev, cid, force, warn, progress_factory, advance)


def _checkout_workspace(repo, rev, cid, force, warn, progress_factory,
                        advance=None) -> CheckoutResult:
    with repo.index.read() as txn:
        seen = refs.read_head(txn)
        head = refs.head_commit(txn, seen)
    h_root = repo.commit(head).tree if head is not None else None
    t_root = repo.commit(cid).tree
    if any(row[0] == _VFS_NAME for row in decode_tree_rows(repo.tree_bytes(t_root))):
        raise CorruptObject(f"commit {cid.short} holds a '{VFS_DIR}' entry, which would "
                            "overwrite the repository; refusing to check it out")
    if force:
        work = scan_workspace(repo, warn=warn, progress_factory=progress_factory)
        plan = _ExactPlan(work, repo.workspace, force=True)
        plan.dir("", work.root, h_root, t_root, probe=True)
        scanned = work.statcache
    else:
        plan = _plan_switch(repo, h_root, t_root, warn)
        plan.check()
        scanned = plan.scanned
    apply = Apply(repo, repo.workspace, plan.actions, warn, progress_factory)
    apply.run()
    head_name = advance[0] if advance else _head_after(repo, rev, cid, seen)
    _record(repo, scanned, apply, head_name, seen, cid, advance)
    return _result(apply, plan, cid, head_name, None)


def _plan_switch(repo: Repo, h_root, t_root, warn, *, ahead: int | None = None):
    """The plan of a switch from tree ``h_root`` to ``t_root`` (conflicts listed, not
    raised), with the trees and the workspace read ahead on threads (``ahead``: the
    look-ahead's limit of entries; 0 reads nothing ahead)."""
    plan = _SwitchPlan(repo, repo.workspace, warn)
    if h_root != t_root:
        if ahead != 0:
            plan.ahead = Lookahead(repo, repo.workspace, limit=ahead)
            plan.ahead.switch(h_root, t_root)
        plan.dir("", h_root, t_root)
        plan.ahead = None
    return plan


def _checkout_into(repo, cid, into, force, warn, progress_factory) -> CheckoutResult:
    root = _prepare_into(repo, into, force)
    plan = _ExactPlan(repo, root, force)
    plan.dir("", None, None, repo.commit(cid).tree, probe=force)
    plan.check()
    apply = Apply(repo, root, plan.actions, warn, progress_factory)
    apply.run()
    return _result(apply, plan, cid, None, root)


def restore_paths(repo: Repo, cid: ObjectId, paths: list[str], *,
                  warn: Callable[[str], None] = lambda m: None, progress_factory=None
                  ) -> dict:
    """Write commit ``cid``'s entries at ``paths`` into the workspace, where nothing
    is (the caller removed what was there), like ``git restore --source``: HEAD does
    not move. Parent directories are created. Stat cache entries are recorded for
    what was written. Returns the counts. ``vfs run`` restores cached outputs so.

    Error handling: ``PathNotFound`` for a path the commit does not hold; the
    filesystem's errors as in ``checkout``.
    """
    plan = _Plan(repo, repo.workspace, force=True)
    for rel in paths:
        entry = repo.entry(cid, rel)
        parent = os.path.dirname(rel)
        if parent:
            try:
                os.makedirs(os.path.join(repo.workspace, parent), exist_ok=True)
            except OSError as exc:
                raise from_oserror(exc, f"creating {parent}") from None
        plan._create(rel, entry)
    apply = Apply(repo, repo.workspace, plan.actions, warn, progress_factory)
    apply.run()
    with repo.lock():
        with repo.index.write() as txn:
            for key, value in apply.cache.items():
                txn.put("statcache", key, value)
    return dict(apply.counts)


def _prepare_into(repo: Repo, into: str, force: bool) -> str:
    root = os.path.realpath(into)
    vfs = os.path.realpath(repo.vfs_dir)
    if root == vfs or root.startswith(vfs + os.sep):
        raise UsageError(f"{into} is inside the repository's own directory {vfs}; "
                         "choose another directory")
    if repo.workspace is not None and root == os.path.realpath(repo.workspace):
        raise UsageError(f"{into} is the workspace; run 'vfs checkout REV' without --into")
    try:
        if not os.path.exists(root):
            os.makedirs(root)
        elif not os.path.isdir(root):
            raise NotADirectory(f"{into} exists and is not a directory")
        elif os.listdir(root) and not force:
            raise Conflict(f"{into} is not empty; choose an empty or new directory, or "
                           "use --force to write over what is there")
    except OSError as exc:
        raise from_oserror(exc, f"preparing {into}") from None
    return root


def _head_after(repo: Repo, rev: str, cid: ObjectId, seen: refs.Head) -> str:
    """What HEAD should name after checking out ``rev``: a branch or a bare id."""
    name = rev.strip()
    if name == "HEAD":
        return seen.branch or cid.hex()
    branches = repo.refs(refs.BRANCH_PREFIX)
    for ref in (name, refs.BRANCH_PREFIX + name):
        if ref.startswith(refs.BRANCH_PREFIX) and branches.get(ref) == cid:
            return ref
    return cid.hex()


def _record(repo: Repo, scanned: dict, apply: Apply, head_name: str, seen: refs.Head,
            cid: ObjectId, advance=None) -> None:
    """One transaction: stat cache entries for what was hashed and what was written,
    none for what was removed, and HEAD moved last, by compare-and-swap against the
    HEAD read at the start (and the branch it lands on must still be at ``cid``)."""
    with repo.index.write() as txn:
        for key, value in scanned.items():
            if key not in apply.touched:
                txn.put("statcache", key, value)
        for key in apply.touched:
            if key not in apply.cache:  # (those are overwritten below)
                txn.delete("statcache", key)
        for prefix in apply.removed_trees:
            for key in list(txn.keys("statcache", prefix)):
                txn.delete("statcache", key)
        for key, value in apply.cache.items():
            txn.put("statcache", key, value)
        if advance is not None:
            refs.set_ref(txn, advance[0], cid, expect=advance[1])
        if head_name.startswith(refs.BRANCH_PREFIX):
            refs.expect_ref(txn, head_name, cid)
        refs.set_head(txn, head_name, expect=seen)


# --------------------------------------------------------------------------
# planning: every change and every conflict is found before anything is done


def _same_content(a: TreeEntry, b: TreeEntry | None) -> bool:
    return b is not None and a.kind == b.kind and a.id == b.id and a.target == b.target


def _clean(w: TreeEntry, h: TreeEntry | None) -> bool:
    """Whether workspace entry ``w`` holds no uncommitted change against HEAD's ``h``."""
    return _same_content(w, h) and w.mode == h.mode and w.id != _NO_ID


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _sub(e: TreeEntry | None):
    """The tree id of a directory entry, or None."""
    return e.id if e is not None and e.is_dir else None


class _Plan:
    """The actions of a checkout, in order, and the conflicts found on the way.

    ``src`` reads trees (a ``WorkTree`` falls back to the repository for records it
    did not make); a tree id of ``None`` stands for an absent tree.
    """

    def __init__(self, src, root: str, force: bool):
        self.src = src
        self.root = root
        self.force = force
        self.actions: list[tuple[int, str, TreeEntry | None]] = []
        self.conflicts: list[str] = []
        self.ahead: Lookahead | None = None  # what was read ahead of the plan

    def _rows(self, tid) -> tuple:
        """Tree ``tid``'s rows as stored (``records.model.decode_tree_rows``):
        nothing is decoded into entries or cached until a row is used."""
        return () if tid is None else decode_tree_rows(self.src.tree_bytes(tid))

    def _entries(self, tid) -> dict[str, TreeEntry]:
        return {e.name: e for e in map(row_entry, self._rows(tid))}

    def _pairs(self, a_tid, b_tid) -> list:
        """``row_pairs`` of trees ``a`` and ``b``: ``(name, a entry, b entry)`` for each
        name whose rows differ, ``b``'s names in tree order first. Equal rows are
        skipped unread, so a directory costs its rows' comparison plus what differs."""
        if self.ahead is not None:
            got = self.ahead.pairs(a_tid, b_tid)
            if got is not None:
                return got
        return row_pairs(self._rows(a_tid), self._rows(b_tid))

    def check(self) -> None:
        if self.conflicts and not self.force:
            raise Conflict(_conflict_message(self.conflicts))

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self.root, rel))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise from_oserror(exc, f"reading {rel}") from None

    def _create(self, rel: str, te: TreeEntry) -> None:
        if te.is_dir:
            self._make_dir(rel, te)
        else:
            self.actions.append((WRITE, rel, te))

    def _make_dir(self, rel: str, te: TreeEntry) -> None:
        """Create directory ``rel`` and everything T has below it."""
        self.actions.append((MKDIR, rel, te))
        for name, _, e in self._pairs(None, te.id):  # names checked
            self._create(_join(rel, name), e)
        self.actions.append((DIRMETA, rel, te))

    def _replace(self, rel: str, te: TreeEntry) -> None:
        """Put T's entry where a file or symlink is now."""
        if te.is_dir:
            self.actions.append((UNLINK, rel, None))
            self._make_dir(rel, te)
        else:
            self.actions.append((WRITE, rel, te))


class _ExactPlan(_Plan):
    """Make the disk equal T: a three-way walk over the scanned workspace W, H and T
    that descends where W and T differ (``force``, and ``into``)."""

    def dir(self, rel: str, w_tid, h_tid, t_tid, *, probe: bool) -> None:
        """``probe``: the directory exists on disk and may hold names W does not
        show (ignored or special files), so new names are checked with lstat."""
        # Names where W and T hold equal rows need nothing: only the others are
        # visited (with HEAD's entry of the same name).
        pairs = self._pairs(w_tid, t_tid)
        h = {e.name: e for e in map(row_entry, self._rows(h_tid))} if pairs else {}
        for name, we, te in pairs:
            self.entry(_join(rel, name), we, h.get(name), te, probe)

    def entry(self, rel, we, he, te, probe) -> None:
        if te is None:
            if he is not None:  # tracked, so removed; untracked stays
                self._remove(rel, we, he)
        elif we is None:
            self._create_probing(rel, te, he, probe)
        elif we.is_dir and te.is_dir:
            if we.id != te.id:
                self.dir(rel, we.id, _sub(he), te.id, probe=True)
                self.actions.append((DIRMETA, rel, te))
            elif (we.mode, we.mtime_ns) != (te.mode, te.mtime_ns):
                self.actions.append((DIRMETA, rel, te))
        elif _same_content(we, te):
            if (we.mode, we.mtime_ns) != (te.mode, te.mtime_ns):
                self.actions.append((META, rel, te))
        elif we.is_dir:  # a file or symlink takes the directory's place
            self._clear(rel, we.id, _sub(he))
            self.actions.append((RMTREE, rel, None))
            self.actions.append((WRITE, rel, te))
        else:
            if not _clean(we, he):
                self.conflicts.append(rel)
            self._replace(rel, te)

    def _remove(self, rel, we, he) -> None:
        if we.is_dir:
            if he.is_dir:  # remove what HEAD tracked; the directory goes if it empties
                self.dir(rel, we.id, he.id, None, probe=True)
                self.actions.append((RMDIR, rel, None))
        elif not he.is_dir:  # (a file where HEAD had a directory is untracked)
            if not _clean(we, he):
                self.conflicts.append(rel)
            self.actions.append((UNLINK, rel, None))

    def _clear(self, rel, w_tid, h_tid) -> None:
        """Conflicts for everything in workspace directory ``rel`` that would be lost."""
        w, h = self._entries(w_tid), self._entries(h_tid)
        for name in sorted(_listdir(self.root, rel) - set(w)):
            self.conflicts.append(_join(rel, name))  # ignored or special files
        for name, we in w.items():
            he = h.get(name)
            if we.is_dir:
                self._clear(_join(rel, name), we.id, _sub(he))
            elif not _clean(we, he):
                self.conflicts.append(_join(rel, name))

    def _create_probing(self, rel, te, he, probe) -> None:
        st = self._lstat(rel) if probe else None
        if st is not None:
            if stat.S_ISDIR(st.st_mode) and te.is_dir:  # an ignored directory: reuse
                self.dir(rel, None, _sub(he), te.id, probe=True)
                self.actions.append((DIRMETA, rel, te))
                return
            self.conflicts.append(rel)
            self.actions.append((RMTREE if stat.S_ISDIR(st.st_mode) else UNLINK, rel, None))
        self._create(rel, te)


class _SwitchPlan(_Plan):
    """Move the workspace from H to T (no ``force``): walk where H and T differ and
    probe the disk only there; local changes elsewhere are kept."""

    def __init__(self, repo: Repo, root: str, warn):
        super().__init__(repo, root, force=False)
        self.repo = repo
        self.warn = warn
        self.scanned: dict[bytes, bytes] = {}  # stat cache entries of files hashed
        self._work: WorkTree | None = None
        self._ingestor: Ingestor | None = None

    def dir(self, rel: str, h_tid, t_tid, *, present: bool = True) -> None:
        """H and T differ in directory ``rel``, which is on disk as a real directory
        (``present``) or was deleted from the workspace and is being made again."""
        for name, he, te in self._pairs(h_tid, t_tid):
            self.path(_join(rel, name), he, te, present)

    def path(self, rel: str, he: TreeEntry | None, te: TreeEntry | None,
             present: bool = True) -> None:
        we = self._probe(rel, he, te) if present else None
        if we is None:
            if te is None:
                return
            if te.is_dir and he is not None and he.is_dir:
                # deleted from the workspace: made again with only what T changes,
                # so the deletion of the rest is kept, as for single files
                self.actions.append((MKDIR, rel, te))
                self.dir(rel, he.id, te.id, present=False)
                self.actions.append((DIRMETA, rel, te))
            else:
                self._create(rel, te)
        elif we.is_dir:
            self._on_dir(rel, he, te)
        elif te is None:
            if he.is_dir:
                return  # a file where HEAD had a directory is untracked: stays
            if not _clean(we, he):
                self.conflicts.append(rel)
            self.actions.append((UNLINK, rel, None))
        elif _same_content(we, te) and we.id != _NO_ID:
            if (we.mode, we.mtime_ns) != (te.mode, te.mtime_ns):
                self.actions.append((META, rel, te))
        elif _clean(we, he):
            self._replace(rel, te)
        else:
            self.conflicts.append(rel)

    def _on_dir(self, rel: str, he, te) -> None:
        """The workspace has a directory at ``rel``."""
        if te is None:
            if he.is_dir:  # remove what HEAD tracked; the directory goes if it empties
                self.dir(rel, he.id, None)
                self.actions.append((RMDIR, rel, None))
        elif te.is_dir:
            if _sub(he) != te.id:
                self.dir(rel, _sub(he), te.id)
            self.actions.append((DIRMETA, rel, te))
        else:  # a file or symlink takes the directory's place
            self._clear(rel, _sub(he))
            self.actions.append((RMTREE, rel, None))
            self.actions.append((WRITE, rel, te))

    def _clear(self, rel: str, h_tid) -> None:
        """Conflicts for everything in workspace directory ``rel`` that is not H's."""
        h = self._entries(h_tid)
        for name in sorted(_listdir(self.root, rel)):
            sub, he = _join(rel, name), h.get(name)
            we = self._probe(sub, he, None)
            if we is None:
                continue
            if we.is_dir and he is not None and he.is_dir:
                self._clear(sub, he.id)
            elif we.is_dir or not _clean(we, he):
                self.conflicts.append(sub)

    def _probe(self, rel: str, he, te) -> TreeEntry | None:
        """What the workspace holds at ``rel``, as an entry (``_NO_ID`` when the
        content is surely neither H's nor T's, or not a file at all); None if absent."""
        got = self.ahead.probe(rel) if self.ahead is not None else MISSING
        st, raw = (self._lstat(rel), MISSING) if got is MISSING else got
        if st is None:
            return None
        name = rel.rpartition("/")[2]
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns
        if stat.S_ISDIR(st.st_mode):
            return TreeEntry(name, Kind.DIR, mode, 0, mtime, _NO_ID)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(os.path.join(self.root, rel).encode(
                    "utf-8", "surrogateescape"))
            except OSError as exc:
                raise from_oserror(exc, f"reading link {rel}") from None
            return TreeEntry(name, Kind.SYMLINK, mode, len(target), mtime,
                             ObjectId(hash_bytes(target)), target)
        fid = _NO_ID
        if stat.S_ISREG(st.st_mode) and st.st_size in {
                e.size for e in (he, te) if e is not None and e.kind is Kind.FILE}:
            fid = self._file_id(rel, st, raw)
        return TreeEntry(name, Kind.FILE, mode, st.st_size, mtime, fid)

    def _file_id(self, rel: str, st: os.stat_result, raw=MISSING) -> ObjectId:
        """The id of the file at ``rel``: from the stat cache (its value ``raw``
        when read ahead) if ``st`` matches, else hashed."""
        if raw is MISSING:
            with self.repo.index.read() as txn:
                fid = cached_file_id(txn, rel, st)
        else:
            rec = decode_statcache(raw)
            fid = rec[1] if rec is not None and rec[0] == stat_bytes(st) else None
        if fid is not None:
            return fid
        if self._ingestor is None:  # hash it as a scan would (no content stored)
            self._work = WorkTree(self.repo)
            self._ingestor = Ingestor(self.repo, self._work, store=False, warn=self.warn)
        job = FileJob(rel, os.path.join(self.root, rel), st)
        self._ingestor.ingest(job)
        if job.size == st.st_size and max(st.st_mtime_ns, st.st_ctime_ns) < \
                time.time_ns() - RACY_NS:  # the scanner's rule
            self.scanned[cache_key(rel)] = cache_value(st, job.fid)
        return job.fid


def _listdir(root: str, rel: str) -> set[str]:
    try:
        return set(os.listdir(os.path.join(root, rel)))
    except OSError as exc:
        raise from_oserror(exc, f"listing {rel}") from None


def _conflict_message(paths: list[str]) -> str:
    shown = ", ".join(paths[:CONFLICTS_SHOWN])
    more = len(paths) - CONFLICTS_SHOWN
    if more > 0:
        shown += f" and {more} more"
    return (f"checkout would overwrite uncommitted changes in {shown}; snapshot them "
            "first ('vfs snapshot'), or use --force to discard them")


def _result(apply: Apply, plan, cid, head, into) -> CheckoutResult:
    c = apply.counts
    return CheckoutResult(
        cid, head, into, c["written"], c["updated"], c["removed"], c["dirs_created"],
        c["dirs_removed"], c["bytes"], c["cloned"],
        tuple(plan.conflicts) if plan.force else (), tuple(apply.kept))
