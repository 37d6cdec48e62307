"""``checkout``: materialize a commit into the workspace (moving HEAD) or into a directory.

Only what differs is touched. The workspace is scanned first (stat cache: unchanged
files are not read), giving its tree W; with HEAD's tree H and the target's tree T, a
three-way walk descends only into directories whose ids differ between W and T, so
switching between two versions of a large dataset costs time in proportion to what
differs between them, not to its size.

Rules, per path:

* W equals T: nothing to do. Same content but another mode or mtime: only the
  metadata is set (no data is written).
* W's content or mode differs from H's (an uncommitted change, or an untracked file
  in W) and the checkout would overwrite or remove it: a *conflict*. Conflicts are
  all found before anything is changed and refused (``Conflict``, naming the paths)
  unless ``force``. A path missing from W (deleted by the user) is simply recreated.
  Files ignored by ``.vfsignore`` (or special files) in the way are conflicts too.
* Untracked files that T does not touch are left alone; a directory T removes but
  that still holds them is kept (with a warning).

A file is written under a temporary name in its directory, then renamed over: never
a torn file. Large files whose whole-file blob is in objects/ are cloned (FICLONE:
instant, shares extents copy-on-write, independent of the cache afterwards); other
content is copied chunk by chunk through user space and every chunk is checked
against its id (``CorruptObject`` rather than wrong bytes). Clones are trusted: the
blob was hashed when it was made and is read-only; ``vfs fsck --verify-data`` checks
it. Nothing is ever hard-linked or symlinked into the cache. Every operation goes
through directory file descriptors opened with ``O_NOFOLLOW``, so a symlink in the
workspace can never redirect a write outside it, and tree entry names were validated
when decoded (``model.check_name``). Set-user/group-id bits are not restored.

Written files get the commit's mode and mtime; directories get theirs after their
contents (deepest first). Checked-out files are not fsynced (git does not either).

Stat cache: a file checkout wrote gets an entry (its stat after the rename → its
file id), so the next status or snapshot does not read it again. The scanner's racy
rule (no entry when mtime or ctime is within 100 ms of now) exists because a write in
the same clock tick as the stat could leave every stat field unchanged. Here the
mtime is set by checkout to the commit's (old) value, so any later write moves the
mtime to "now" and is detected; only ctime is recent, and it would only matter for a
writer that also restores the old mtime within the same tick as our rename. Entries
are therefore recorded unless the *mtime* is racy.

Thread-safety: workspace checkouts run under the repository lock, one at a time.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    Conflict, CorruptObject, NotADirectory, UsageError, VfsError, from_oserror,
)
from .model import Kind, ObjectId, TreeEntry, check_name
from .repo import VFS_DIR, Repo
from .scan import RACY_NS, cache_key, cache_value, scan_workspace

# Mode bits a checkout restores: permissions and sticky, never set-user/group-id.
MODE_MASK = 0o1777
CONFLICTS_SHOWN = 10
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# plan operations
WRITE, META, UNLINK, RMDIR, RMTREE, MKDIR, DIRMETA = range(7)


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
             on_wait: Callable[[str], None] | None = None) -> CheckoutResult:
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
    """
    cid = repo.resolve(rev)
    if into is not None:
        return _checkout_into(repo, cid, into, force, warn, progress_factory)
    if repo.workspace is None:
        raise UsageError("a bare repository has no workspace; use --into DIR to "
                         "write the files somewhere")
    with repo.lock(on_wait=on_wait):
        return _checkout_workspace(repo, rev, cid, force, warn, progress_factory)


def _checkout_workspace(repo, rev, cid, force, warn, progress_factory) -> CheckoutResult:
    work = scan_workspace(repo, warn=warn, progress_factory=progress_factory)
    head = repo.head()
    h_root = repo.commit(head).tree if head is not None else None
    t_root = repo.commit(cid).tree
    if repo.tree(t_root).get(VFS_DIR) is not None:
        raise CorruptObject(f"commit {cid.short} holds a '{VFS_DIR}' entry, which would "
                            "overwrite the repository; refusing to check it out")
    plan = _Plan(work, repo.workspace, force)
    plan.dir("", work.root, h_root, t_root, probe=True)
    plan.check()
    apply = _Apply(repo, repo.workspace, plan, warn, progress_factory)
    apply.run()
    head_name = _head_after(repo, rev, cid)
    _record(repo, work, apply, head_name)
    return apply.result(cid, head_name, None)


def _checkout_into(repo, cid, into, force, warn, progress_factory) -> CheckoutResult:
    root = _prepare_into(repo, into, force)
    plan = _Plan(repo, root, force)
    plan.dir("", None, None, repo.commit(cid).tree, probe=force)
    plan.check()
    apply = _Apply(repo, root, plan, warn, progress_factory)
    apply.run()
    return apply.result(cid, None, root)


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


def _head_after(repo: Repo, rev: str, cid: ObjectId) -> str:
    """What HEAD should name after checking out ``rev``: a branch or a bare id."""
    name = rev.strip()
    if name == "HEAD":
        return repo.head_ref() or cid.hex()
    refs = repo.refs("heads/")
    for ref in (name, f"heads/{name}"):
        if ref.startswith("heads/") and refs.get(ref) == cid:
            return ref
    return cid.hex()


def _record(repo: Repo, work, apply: _Apply, head_name: str) -> None:
    """One transaction: stat cache entries for what the scan read and what was
    written, none for what was removed, and HEAD moved last."""
    with repo.index.write() as txn:
        for key, value in work.statcache.items():
            if key not in apply.touched:
                txn.put("statcache", key, value)
        for key in apply.touched:
            txn.delete("statcache", key)
        for prefix in apply.removed_trees:
            for key in list(txn.keys("statcache", prefix)):
                txn.delete("statcache", key)
        for key, value in apply.cache.items():
            txn.put("statcache", key, value)
        txn.put("meta", b"HEAD", head_name.encode())


# --------------------------------------------------------------------------
# planning: a three-way walk that finds every change and conflict before acting


def _same_content(a: TreeEntry, b: TreeEntry | None) -> bool:
    return b is not None and a.kind == b.kind and a.id == b.id and a.target == b.target


def _clean(w: TreeEntry, h: TreeEntry | None) -> bool:
    """Whether workspace entry ``w`` holds no uncommitted change against HEAD's ``h``."""
    return _same_content(w, h) and w.mode == h.mode


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


class _Plan:
    """The actions of a checkout, in order, and the conflicts found on the way.

    ``src`` reads trees (a ``WorkTree`` falls back to the repository for records it
    did not make); ``None`` stands for a tree that is absent.
    """

    def __init__(self, src, root: str, force: bool):
        self.src = src
        self.root = root
        self.force = force
        self.actions: list[tuple[int, str, TreeEntry | None]] = []
        self.conflicts: list[str] = []

    def _entries(self, tid) -> dict[str, TreeEntry]:
        if tid is None:
            return {}
        return {e.name: e for e in self.src.tree(tid).entries}

    def _conflict(self, rel: str) -> None:
        self.conflicts.append(rel)

    def check(self) -> None:
        if self.conflicts and not self.force:
            raise Conflict(_conflict_message(self.conflicts))

    def dir(self, rel: str, w_tid, h_tid, t_tid, *, probe: bool) -> None:
        """Plan directory ``rel``: W and T differ (or W is absent).

        ``probe``: the directory exists on disk and may hold names W does not show
        (ignored or special files), so new names are checked with lstat first.
        """
        w, h, t = self._entries(w_tid), self._entries(h_tid), self._entries(t_tid)
        for name, te in t.items():
            check_name(name)
            self.entry(_join(rel, name), w.get(name), h.get(name), te, probe)
        for name, we in w.items():
            if name not in t:
                self.entry(_join(rel, name), we, h.get(name), None, probe)

    def entry(self, rel, we, he, te, probe) -> None:
        if te is None:
            if he is not None:  # tracked, so removed; untracked stays
                self._remove(rel, we, he)
        elif we is None:
            self._create(rel, te, he, probe)
        elif we.is_dir and te.is_dir:
            if we.id != te.id:
                self.dir(rel, we.id, he.id if he and he.is_dir else None, te.id, probe=True)
                self.actions.append((DIRMETA, rel, te))
            elif (we.mode, we.mtime_ns) != (te.mode, te.mtime_ns):
                self.actions.append((DIRMETA, rel, te))
        elif _same_content(we, te):
            if (we.mode, we.mtime_ns) != (te.mode, te.mtime_ns):
                self.actions.append((META, rel, te))
        else:
            self._replace(rel, we, he, te)

    def _remove(self, rel, we, he) -> None:
        if we.is_dir:
            if he.is_dir:  # remove what HEAD tracked; the directory goes if it empties
                self.dir(rel, we.id, he.id, None, probe=True)
                self.actions.append((RMDIR, rel, None))
        elif not he.is_dir:  # (a file where HEAD had a directory is untracked)
            if not _clean(we, he):
                self._conflict(rel)
            self.actions.append((UNLINK, rel, None))

    def _replace(self, rel, we, he, te) -> None:
        if we.is_dir:  # a file or symlink takes the directory's place
            self._clear(rel, we.id, he.id if he and he.is_dir else None)
            self.actions.append((RMTREE, rel, we))
            self.actions.append((WRITE, rel, te))
            return
        if not _clean(we, he):
            self._conflict(rel)
        if te.is_dir:
            self.actions.append((UNLINK, rel, None))
            self._make_dir(rel, te)
        else:
            self.actions.append((WRITE, rel, te))

    def _clear(self, rel, w_tid, h_tid) -> None:
        """Conflicts for everything in workspace directory ``rel`` that would be lost."""
        if self.force:
            return
        w, h = self._entries(w_tid), self._entries(h_tid)
        on_disk = self._listdir(rel)
        for name in sorted(on_disk - set(w)):
            self._conflict(_join(rel, name))  # ignored or special files
        for name, we in w.items():
            he = h.get(name)
            if we.is_dir:
                self._clear(_join(rel, name), we.id, he.id if he and he.is_dir else None)
            elif not _clean(we, he):
                self._conflict(_join(rel, name))

    def _listdir(self, rel: str) -> set[str]:
        try:
            return set(os.listdir(os.path.join(self.root, rel)))
        except OSError as exc:
            raise from_oserror(exc, f"listing {rel}") from None

    def _create(self, rel, te, he, probe) -> None:
        if probe:
            try:
                st = os.lstat(os.path.join(self.root, rel))
            except FileNotFoundError:
                st = None
            except OSError as exc:
                raise from_oserror(exc, f"reading {rel}") from None
            if st is not None:
                if stat.S_ISDIR(st.st_mode) and te.is_dir:  # an ignored directory: reuse
                    self.dir(rel, None, he.id if he and he.is_dir else None, te.id,
                             probe=True)
                    self.actions.append((DIRMETA, rel, te))
                    return
                self._conflict(rel)
                self.actions.append((RMTREE if stat.S_ISDIR(st.st_mode) else UNLINK,
                                     rel, None))
        if te.is_dir:
            self._make_dir(rel, te)
        else:
            self.actions.append((WRITE, rel, te))

    def _make_dir(self, rel, te) -> None:
        self.actions.append((MKDIR, rel, te))
        self.dir(rel, None, None, te.id, probe=False)
        self.actions.append((DIRMETA, rel, te))


def _conflict_message(paths: list[str]) -> str:
    shown = ", ".join(paths[:CONFLICTS_SHOWN])
    more = len(paths) - CONFLICTS_SHOWN
    if more > 0:
        shown += f" and {more} more"
    return (f"checkout would overwrite uncommitted changes in {shown}; snapshot them "
            "first ('vfs snapshot'), or use --force to discard them")


# --------------------------------------------------------------------------
# applying the plan


class _Apply:
    """Carries out a plan through directory fds; counts what it did."""

    def __init__(self, repo: Repo, root: str, plan: _Plan, warn, progress_factory):
        self.repo = repo
        self.plan = plan
        self.warn = warn
        self.fds = _DirFds(root)
        self.threshold = repo.params.threshold
        self.touched: set[bytes] = set()     # stat cache keys written over or removed
        self.removed_trees: list[bytes] = []  # stat cache key prefixes of removed dirs
        self.cache: dict[bytes, bytes] = {}   # new stat cache entries
        self.kept: list[str] = []
        self.counts = dict.fromkeys(("written", "updated", "removed", "dirs_created",
                                     "dirs_removed", "bytes", "cloned"), 0)
        self._seq = 0
        total = sum(e.size for op, _, e in plan.actions if op == WRITE and e.kind is Kind.FILE)
        self.progress = progress_factory(total) if progress_factory and total else None

    def run(self) -> None:
        rel = ""
        try:
            for op, rel, entry in self.plan.actions:
                self._do(op, rel, entry)
        except OSError as exc:
            raise _stopped(from_oserror(exc, f"checking out {rel or '.'}"), rel) from None
        except VfsError as exc:
            raise _stopped(exc, rel) from None
        finally:
            self.fds.close()
            if self.progress is not None and hasattr(self.progress, "close"):
                self.progress.close()

    def result(self, cid, head, into) -> CheckoutResult:
        c = self.counts
        return CheckoutResult(
            cid, head, into, c["written"], c["updated"], c["removed"], c["dirs_created"],
            c["dirs_removed"], c["bytes"], c["cloned"],
            tuple(self.plan.conflicts) if self.plan.force else (), tuple(self.kept))

    def _do(self, op: int, rel: str, e: TreeEntry | None) -> None:
        if op == DIRMETA:
            fd = self.fds.get(rel)
            os.fchmod(fd, e.mode & MODE_MASK)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
            return
        parent, _, name = rel.rpartition("/")
        dfd = self.fds.get(parent)
        bname = _fs(name)
        if op == WRITE:
            self._write(dfd, bname, rel, e)
        elif op == META:
            self._meta(dfd, bname, e)
            self.counts["updated"] += 1
            self.touched.add(cache_key(rel))
        elif op == UNLINK:
            os.unlink(bname, dir_fd=dfd)
            self.counts["removed"] += 1
            self.touched.add(cache_key(rel))
        elif op == MKDIR:
            os.mkdir(bname, 0o700, dir_fd=dfd)
            self.counts["dirs_created"] += 1
        elif op == RMDIR:
            self._rmdir(dfd, bname, rel)
        elif op == RMTREE:
            self.fds.drop(rel)
            shutil.rmtree(bname, dir_fd=dfd)
            self.removed_trees.append(cache_key(rel) + b"/")
            self.counts["dirs_removed"] += 1

    def _rmdir(self, dfd: int, bname: bytes, rel: str) -> None:
        self.fds.drop(rel)
        try:
            os.rmdir(bname, dir_fd=dfd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            self.kept.append(rel)
            self.warn(f"kept {rel}/: it holds untracked or ignored files")
            return
        self.counts["dirs_removed"] += 1

    def _tmp_name(self) -> bytes:
        self._seq += 1
        return f".vfs-tmp-{os.getpid()}-{self._seq}".encode()

    def _make_tmp(self, dfd: int, make) -> tuple:
        """Create a temporary name in ``dfd`` with ``make(name)``; skips leftovers."""
        while True:
            tmp = self._tmp_name()
            try:
                return tmp, make(tmp)
            except FileExistsError:  # left by a crashed process with our pid
                continue

    def _write(self, dfd: int, bname: bytes, rel: str, e: TreeEntry) -> None:
        key = cache_key(rel)
        self.touched.add(key)
        if e.kind is Kind.SYMLINK:
            tmp, _ = self._make_tmp(dfd, lambda t: os.symlink(e.target, t, dir_fd=dfd))
            try:
                os.utime(tmp, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
                os.rename(tmp, bname, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(tmp, dfd)
                raise
            self.counts["written"] += 1
            return
        tmp, fd = self._make_tmp(dfd, lambda t: os.open(t, _CREATE, 0o600, dir_fd=dfd))
        try:
            try:
                self._fill(fd, e)
                os.fchmod(fd, e.mode & MODE_MASK)
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
                os.rename(tmp, bname, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(tmp, dfd)
                raise
            st = os.fstat(fd)  # after the rename, which sets the ctime
        finally:
            os.close(fd)
        self.counts["written"] += 1
        if st.st_mtime_ns < time.time_ns() - RACY_NS:
            self.cache[key] = cache_value(st, e.id)

    def _fill(self, fd: int, e: TreeEntry) -> None:
        if e.size == 0:
            return
        if e.size >= self.threshold and self.repo.store.clone_object(e.id, fd, e.size):
            self.counts["cloned"] += e.size
            self._tick(e.size)
            return
        done = 0
        for ref in self.repo.chunks(e):
            data = self.repo.blobs.read_verified(ref.id, self.repo.chunk_loc(ref.id))
            _write_all(fd, data)
            done += len(data)
            self._tick(len(data))
        self.counts["bytes"] += done
        if done != e.size:
            raise CorruptObject(f"file {e.id.short} has {done} bytes in its chunks but "
                                f"its entry says {e.size}; run 'vfs fsck'")

    def _meta(self, dfd: int, bname: bytes, e: TreeEntry) -> None:
        if e.kind is Kind.SYMLINK:  # a symlink's own mode cannot be set on Linux
            os.utime(bname, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            return
        fd = os.open(bname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dfd)
        try:
            os.fchmod(fd, e.mode & MODE_MASK)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)


class _DirFds:
    """Open directory fds along the current path (plans are depth first).

    Each directory below the root is opened relative to its parent with
    ``O_NOFOLLOW``, so nothing a checkout does can land outside the root.
    """

    def __init__(self, root: str):
        self.fds = {"": os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)}
        self.root_user = os.geteuid() == 0

    def get(self, rel: str) -> int:
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        for key in [k for k in self.fds if k and not rel.startswith(k + "/")]:
            os.close(self.fds.pop(key))
        parent, _, name = rel.rpartition("/")
        pfd = self.get(parent)
        fd = os.open(_fs(name), _OPEN_DIR, dir_fd=pfd)
        self.fds[rel] = fd
        if not self.root_user:  # make room to write; the plan's DIRMETA restores the mode
            mode = os.fstat(fd).st_mode
            if mode & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(mode) | 0o700)
        return fd

    def drop(self, rel: str) -> None:
        for key in [k for k in self.fds if k == rel or k.startswith(rel + "/")]:
            os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _fs(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(name: bytes, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _stopped(exc: VfsError, rel: str) -> VfsError:
    """The same error, saying where the checkout stopped."""
    new = type(exc)(f"{exc.message} (checkout stopped at {rel or '.'}; every file is "
                    "either old or new: fix the cause and run the checkout again)")
    new.errno = exc.errno
    return new
