"""Workspace scanning: turn a directory into trees and file ids, storing content or not.

The scanner walks the workspace (honouring ``.vfsignore``), reuses file ids from the
stat cache for files whose (dev, ino, size, mtime, ctime, mode) did not change, and
hands the rest, directory by directory as the walk lists them, to reader threads
that use ``ingest.Ingestor`` (which, with ``store=True``, also keeps their content:
clones on reflink filesystems, packed chunks otherwise). With ``store=False`` it only
hashes, for ``status`` and ``diff``. Then it builds the trees bottom-up; a partial
scan (PATHS) grafts its trees into HEAD's.

Nothing is visible in the index until the caller (``snapshot``) commits the
``WorkTree``'s records in one transaction.

Thread-safety: one scan at a time per ``Scanner``; the reader threads share only the
``Ingestor``, which guards its state with a lock.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter

from ..errors import PathNotFound, VfsError, from_oserror
from ..records.hashing import hash_bytes
from .ignore import Ignore
from .journal import Journal, for_scan
from .ingest import (  # noqa: F401  (re-exported: the scan's records)
    RACY_NS, RETRIES, FileJob, Ingestor, ScanStats, WorkTree, stat_key,
)
from ..records.model import (
    DIRSTATE_DIGEST_LEN, DIRSTATE_SALT, DIRSTATE_SALT_LEN, DIRSTATE_STAT, DIRSTATE_TREE,
    STAT_LEN, STAT_PACK, STATCACHE_VALUE_LEN, Kind, ObjectId, TreeEntry, decode_statcache,
    encode_statcache, encode_tree, encode_tree_rows, make_tree, stat_bytes, tree_id,
)
from ..repo.repository import Repo, normalize_path

def _fs_name(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def cache_key(rel: str) -> bytes:
    """The stat cache key of workspace-relative path ``rel``."""
    return _fs_name(rel)


def cache_value(st: os.stat_result, fid: bytes) -> bytes:
    """A stat cache value: a file with stat ``st`` holds file ``fid`` (used by
    ``Scanner.cache_record``, and by checkout for the files it writes)."""
    return encode_statcache(st, fid)


def cached_record(txn, rel: str | bytes) -> tuple[bytes, ObjectId] | None:
    """``(packed stat, file id)`` the stat cache holds for ``rel``, or None."""
    return decode_statcache(
        txn.get("statcache", rel if isinstance(rel, bytes) else cache_key(rel)))


def cached_file_id(txn, rel: str | bytes, st: os.stat_result) -> ObjectId | None:
    """The file id the stat cache holds for ``rel``, if ``st`` still matches it."""
    rec = cached_record(txn, rel)
    return rec[1] if rec is not None and rec[0] == stat_bytes(st) else None


@dataclass(slots=True)
class _Dir:
    """A listed directory: its tree rows, some still to be completed by ``build``.

    ``rows`` are tree rows ``(name bytes, kind, mode, size, mtime_ns, id, target)``
    (see ``encode_tree_rows``); a cached file's or a link's row is final when the
    walk makes it, a tuple (which the garbage collector stops tracking); the
    others are lists. ``subdirs`` pairs each directory's row with its plan (the id is
    its tree's), ``jobs`` each file to read with its row (size and id come from the
    read); ``size`` sums the final rows' file and link sizes. A directory whose
    listing matches its dir state (see ``Scanner._plan``) has no rows: ``reused`` is
    its tree id.
    """
    rel: str
    st: os.stat_result
    rows: list = field(default_factory=list)
    subdirs: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    size: int = 0
    digest: bytes | None = None    # of the listing, when a dir state may be recorded
    reused: bytes | None = None    # the tree id, when taken from the dir state (or
                                   # unlisted from the change journal's dircache)
    built: bytes | None = None     # the tree id, once built (rows, jobs dropped)
    linked: bool = False           # holds a file with several links (the journal
                                   # never vouches for it)


class Scanner:
    """Walks a workspace into ``_Dir`` plans, then builds trees from them.

    A full scan consults and keeps the **dir state** (the ``dirstate`` table, see
    docs/format.md): per directory, a digest of its listing (each entry's name and
    packed lstat), the tree id it gave and its own packed stat. A directory whose
    listing digest matches and whose subdirectories all matched theirs has that tree
    again: no row, encoding or hash is made for it. The stat cache is read one file
    at a time (an LMDB lookup costs what a dict's did, without holding a million
    entries), and the entries of vanished paths are found per directory, only where
    the directory's own stat says names came or went.
    """

    def __init__(self, repo: Repo, work: WorkTree, warn: Callable[[str], None]):
        self.repo = repo
        self.work = work
        self.warn = warn
        self.ignore = Ignore.load(repo.workspace)
        self.job_bytes = 0   # the sizes of the files to read, as listed
        self.start_ns = time.time_ns()
        # Walked directories not yet built, children before parents (post-order).
        self._walked: deque[_Dir] = deque()
        # Called when the held records reach FLUSH_AT (``scan_workspace``'s stream).
        self.on_flush: Callable[[], None] | None = None
        self._txn = None
        self._read = None
        # Full scans use and keep the dir state; a scan of PATHS neither.
        self._use_state = False
        # Listings of different ignore rules never match (nor does an old state).
        self._salt = hash_bytes("\n".join(("vfs-dirstate-1",) + self.ignore.lines)
                                .encode("utf-8", "surrogateescape"))[:DIRSTATE_SALT_LEN]
        # Called with each directory's new jobs as soon as the directory is listed.
        self.on_jobs: Callable[[list[FileJob]], None] | None = None
        # The change journal (workspace/journal.py) of a full scan with a watcher.
        self.journal: Journal | None = None

    def walk(self) -> _Dir:
        """The plan of the whole workspace; also lists the stat cache and dir state
        entries of paths that are gone (``work.stale``, ``work.stale_dirs``)."""
        ws = self.repo.workspace
        with self.reading():
            self._use_state = True
            if self.journal is not None:  # -- change journal hook: what changed?
                self.journal.begin(self._txn)
            try:
                try:
                    st = os.lstat(ws)
                except OSError as exc:
                    raise from_oserror(exc, "reading the workspace") from None
                return self._walk_dir(ws, "", st)
            finally:
                self._use_state = False
                if self.journal is not None:
                    self.journal.end_walk()

    @contextlib.contextmanager
    def reading(self):
        """Hold the index read transaction the walk looks things up in."""
        self._read = self.repo.index.read()
        self._txn = self._read.__enter__()
        try:
            yield
        finally:
            read, self._read, self._txn = self._read, None, None
            read.__exit__(None, None, None)

    def _renew(self) -> None:
        """A fresh read transaction, after a flush: one held across the flushes would
        keep LMDB from reusing the pages they free (the index file grew to 2 GB for
        360 MB of records at a million files) and map all of them."""
        if self._read is not None:
            self._read.__exit__(None, None, None)
            self._read = self.repo.index.read()
            self._txn = self._read.__enter__()

    def _walk_dir(self, path: str, rel: str, st: os.stat_result,
                  parent_fd: int | None = None) -> _Dir:
        """The plan of directory ``path`` (opened by its name in ``parent_fd`` when
        given: the kernel then resolves one name per stat, not the whole path)."""
        journal = self.journal
        if journal is not None:  # -- change journal hook: an unchanged directory
            tid = journal.reuse(rel, st, self.work.stats, self._txn)
            if tid is not None:
                return _Dir(rel, st, reused=tid)
        node = _Dir(rel, st)
        self.work.stats.dirs += 1
        try:
            fd = os.open(path if parent_fd is None else os.path.basename(path),
                         DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            raise from_oserror(exc, f"listing {rel or '.'}") from None
        try:
            try:
                with os.scandir(fd) as it:
                    entries = list(it)
            except OSError as exc:
                raise from_oserror(exc, f"listing {rel or '.'}") from None
            self._plan(node, entries, path, fd)
        finally:
            os.close(fd)
        self._walked.append(node)
        self._settle()
        return node

    def _settle(self) -> None:
        """Build the walked directories whose files are all read, oldest first (so
        their plans are dropped while the walk goes on: memory follows the files in
        flight, not the workspace), and flush the records when enough are held."""
        walked = self._walked
        while walked:
            node = walked[0]
            if node.reused is None and not all(job.done for _, job in node.jobs):
                break
            walked.popleft()
            self._build(node)
        if self.on_flush is not None and self.work.held_records() >= FLUSH_AT:
            self.on_flush()
            self._renew()
        elif self.work.stats.dirs % RELEASE_EVERY == 0:
            # the stat cache pages looked up so far stay mapped (and counted in the
            # resident set) until given back: 150 MB of them at a million files
            self.repo.index.release_pages()

    def _plan(self, node: _Dir, entries: list, path: str, fd: int) -> None:
        """Plan entries of directory ``path`` (listed from its descriptor ``fd``)
        into ``node``, then walk its subdirectories.

        The loop is the scan's hot path: one lstat and one packed stat per entry;
        the digest of those decides whether the directory is planned file by file.
        """
        rel = node.rel
        prefix = f"{rel}/" if rel else ""
        # Without .vfsignore rules only dot names can be ignored (see ``Ignore``).
        check = self.ignore.has_rules or rel.startswith(".vfs")
        ignored = self.ignore.ignored
        pack = STAT_PACK
        listed = []
        parts = [self._salt]
        subdirs = []
        files = size = links = 0
        special = False
        for de in entries:
            name = de.name
            try:
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished between listing and stat
            except OSError as exc:
                raise from_oserror(exc, f"reading {prefix}{name}") from None
            mode = st.st_mode
            if (check or name.startswith(".")) and ignored(prefix + name, S_ISDIR(mode)):
                continue
            bname = name.encode("utf-8", "surrogateescape")
            packed = pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                          st.st_ctime_ns, mode)
            parts.append(bname + b"/" + packed)   # a name holds no "/": unambiguous
            if S_ISREG(mode):  # the common case first
                files += 1
                size += st.st_size
                listed.append((name, bname, st, packed))
                if st.st_nlink > 1:
                    node.linked = True
            elif S_ISDIR(mode):
                subdirs.append((bname, f"{path}/{name}", prefix + name, st))
            else:
                if stat.S_ISLNK(mode):
                    links += 1
                    size += st.st_size
                else:
                    special = True   # planned each time, so its warning is given
                listed.append((name, bname, st, packed))
        self.work.stats.files += files
        prev = None
        if self._use_state:
            node.digest = hash_bytes(b"".join(parts))[:DIRSTATE_DIGEST_LEN]
            prev = self._txn.get("dirstate", state_key(rel))
            if prev is not None and prev[DIRSTATE_SALT] != self._salt:
                prev = None
        same = prev is not None and not special and prev.startswith(node.digest)
        if not same:
            self._files(node, listed, path, prefix, fd)
            if self._use_state and (prev is None
                                    or prev[DIRSTATE_STAT] != stat_bytes(node.st)):
                self._find_stale(rel, listed, subdirs)
        children = [self._walk_dir(sub_path, sub_rel, sub_st, fd)
                    for _, sub_path, sub_rel, sub_st in subdirs]
        if same:
            tid = prev[DIRSTATE_TREE]
            if all(c.reused is not None for c in children) and self._txn.has("trees", tid):
                node.reused = tid
                self.work.stats.dirs_reused += 1
                self.work.stats.symlinks += links
                self.work.stats.tree_bytes += size
                if self.journal is not None:  # -- change journal hook
                    self.journal.built(rel, node.st, tid, files, links, size,
                                       [c.rel for c in children], node.linked)
                return
            self._files(node, listed, path, prefix, fd)
        for (bname, _, _, sub_st), child in zip(subdirs, children):
            row = [bname, 2, stat.S_IMODE(sub_st.st_mode), 0, sub_st.st_mtime_ns, None, b""]
            node.rows.append(row)
            node.subdirs.append((row, child))

    def _files(self, node: _Dir, listed: list, path: str, prefix: str, fd: int) -> None:
        """Rows of the listed files and links: a regular file whose stat matches its
        stat cache value (one bytes compare) gets its final row at once; the others
        become jobs, handed to ``on_jobs`` before the walk goes deeper."""
        get = self._txn.get
        rows = node.rows
        bprefix = _fs_name(prefix)
        new = []
        size = 0
        for name, bname, st, packed in listed:
            mode = st.st_mode
            if not S_ISREG(mode):
                size += self._special(rows, bname, fd, prefix + name, st)
                continue
            raw = get("statcache", bprefix + bname)
            n = st.st_size
            mtime = st.st_mtime_ns
            if raw is not None and len(raw) == STATCACHE_VALUE_LEN:
                if raw.startswith(packed):
                    rows.append((bname, 1, mode & 0o7777, n, mtime, raw[STAT_LEN:], b""))
                    size += n
                    continue
                prev = ObjectId(raw[STAT_LEN:])
            else:
                prev = None
            job = FileJob(prefix + name, f"{path}/{name}", st, prev=prev)
            row = [bname, 1, mode & 0o7777, 0, mtime, None, b""]
            rows.append(row)
            node.jobs.append((row, job))
            new.append(job)
            self.job_bytes += n
        node.size += size
        if self.on_jobs is not None and new:
            # this directory's files start being read while the walk goes on
            self.on_jobs(new)

    def _find_stale(self, rel: str, listed: list, subdirs: list) -> None:
        """Stat cache entries of files no longer directly in ``rel`` and of anything
        under its subdirectories that are gone (``work.stale``), and the dir state
        of those subdirectories (``work.stale_dirs``)."""
        files = {bname for _, bname, st, _ in listed if S_ISREG(st.st_mode)}
        dirs = {bname for bname, _, _, _ in subdirs}
        self.work.stale += _gone(self._txn, "statcache", _fs_name(f"{rel}/" if rel else ""),
                                 files, dirs)
        self.work.stale_dirs += _gone(self._txn, "dirstate", state_key(rel).rstrip(b"/")
                                      + b"/", dirs, dirs)

    def _special(self, rows: list, bname: bytes, fd: int, rel: str,
                 st: os.stat_result) -> int:
        """Plan a symbolic link (returns its size) or skip a fifo, socket or device."""
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(bname, dir_fd=fd)
            except OSError as exc:
                raise from_oserror(exc, f"reading link {rel}") from None
            rows.append((bname, 3, stat.S_IMODE(mode), len(target),
                         st.st_mtime_ns, hash_bytes(target), target))
            self.work.stats.symlinks += 1
            return len(target)
        what = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) \
            else "device"
        self.work.stats.skipped.append(rel)
        self.warn(f"skipped {rel}: a {what} cannot be versioned")
        return 0

    def cache_record(self, job: FileJob) -> bool:
        """Remember a freshly read file in the stat cache, unless it is racy."""
        st = job.st
        if not job.cacheable or job.size != st.st_size:
            return False
        if max(st.st_mtime_ns, st.st_ctime_ns) >= self.start_ns - RACY_NS:
            return False
        self.work.statcache[cache_key(job.rel)] = cache_value(st, job.fid)
        return True

    # -- trees ---------------------------------------------------------------
    def build(self, node: _Dir) -> TreeEntry:
        """The tree entry of a planned directory; its trees go to ``work.trees``."""
        tid = self._build(node)
        name = os.path.basename(node.rel) if node.rel else ""
        return TreeEntry(name, Kind.DIR, stat.S_IMODE(node.st.st_mode), 0,
                         node.st.st_mtime_ns, tid)

    def _build(self, node: _Dir) -> ObjectId:
        """The tree of a planned directory whose files are read (and of its
        subdirectories not built yet); its rows and jobs are dropped."""
        if node.reused is not None:
            return ObjectId(node.reused)
        if node.built is not None:
            return ObjectId(node.built)
        size = node.size
        cached = True
        for row, job in node.jobs:
            row[3] = job.size
            row[5] = bytes(job.fid)
            size += job.size
            cached &= self.cache_record(job)
        for row, sub in node.subdirs:
            row[5] = bytes(self._build(sub))
        self.work.stats.tree_bytes += size
        rows = node.rows
        rows.sort(key=_first)
        enc = encode_tree_rows(rows)
        tid = tree_id(enc)
        self.work.trees[tid] = enc
        self.work.tree_rows += len(rows)
        if node.digest is not None:
            self._remember(node, tid, cached)
        if self.journal is not None:  # -- change journal hook: what it produced
            kinds = [r[1] for r in rows]
            self.journal.built(node.rel, node.st, tid, kinds.count(1), kinds.count(3),
                               size, [sub.rel for _, sub in node.subdirs], node.linked)
        node.built = tid
        node.rows = node.jobs = node.subdirs = ()
        return tid

    def _remember(self, node: _Dir, tid: bytes, cached: bool) -> None:
        """Keep the directory's state for the next scan, or drop a stale one: a
        directory is remembered only when every file read in it got its stat cache
        entry (``cached``) and its own stat is not racy (a name could still come or
        go unseen)."""
        key = state_key(node.rel)
        st = node.st
        if cached and max(st.st_mtime_ns, st.st_ctime_ns) < self.start_ns - RACY_NS:
            self.work.dirstate[key] = node.digest + bytes(tid) + stat_bytes(st) + self._salt
        else:
            self.work.stale_dirs.append(key)


def state_key(rel: str) -> bytes:
    """The dir state key of workspace directory ``rel``: ``/`` + its path (the root
    is ``/``; LMDB keys cannot be empty)."""
    return b"/" + _fs_name(rel)


def _gone(txn, db: str, prefix: bytes, keep: set, dirs: set) -> list[bytes]:
    """Keys of ``db`` under directory ``prefix`` (``/``-terminated, or empty for the
    workspace root) but for its direct children named in ``keep`` and anything under
    its subdirectories named in ``dirs`` (skipped, not read)."""
    gone = []
    start = prefix
    skip = len(prefix)
    while True:
        for key in txn.keys(db, prefix, start=start):
            rest = key[skip:]
            cut = rest.find(b"/")
            if cut < 0:
                if rest and rest not in keep:
                    gone.append(key)
                continue
            sub = rest[:cut]
            if sub in dirs:
                start = prefix + sub + b"0"   # "0" follows "/": past all of sub/
                break
            gone.append(key)
        else:
            return gone



# A streaming scan commits what it holds when its chunk locations, file records, stat
# cache entries and the rows of its trees number this many (~20 MB of records).
FLUSH_AT = 50_000
# ... and gives back the index pages it mapped every this many directories.
RELEASE_EVERY = 128

_first = itemgetter(0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
S_ISREG = stat.S_ISREG
S_ISDIR = stat.S_ISDIR


def scan_workspace(repo: Repo, *, store: bool = False, paths: list[str] | None = None,
                   warn: Callable[[str], None] = lambda m: None,
                   progress_factory=None, workers: int = 2,
                   stream: bool = False) -> WorkTree:
    """Scan the workspace into a ``WorkTree``.

    ``paths`` (workspace-relative) limits the scan; the others keep their entries
    from HEAD. ``progress_factory(total_bytes)`` may return a callable fed with byte
    counts as content is read (or None). With ``store`` and ``stream`` (the caller
    holds the repository lock) records are committed every ``FLUSH_AT`` as their
    data becomes durable (``WorkTree.flush``), so the memory a snapshot holds does
    not grow with the workspace; they stay unreachable until the caller commits.

    Error handling: raises ``PathNotFound`` for a missing path, ``FileChanged`` for a
    file that keeps changing, ``AccessDenied``/``StorageFull`` from the filesystem. With
    ``store`` the caller must call ``finish`` or ``abort`` on ``work.ingestor``.
    """
    if repo.workspace is None:
        raise VfsError("this is a bare repository: it has no workspace to scan")
    work = WorkTree(repo)
    scanner = Scanner(repo, work, warn)
    ing = Ingestor(repo, work, store=store, warn=warn)
    work.ingestor = ing
    progress = None
    pipe = _Pipeline(ing, repo.params.threshold, workers)
    scanner.on_jobs = pipe.add
    if store and stream:
        scanner.on_flush = work.flush
    try:
        if paths:
            roots = {rel: _walk_path(scanner, rel) for rel in paths}
        else:
            scanner.journal = work.journal = for_scan(repo, scanner.ignore, warn)
            roots = {"": scanner.walk()}
        if progress_factory is not None:
            progress = progress_factory(scanner.job_bytes)
            ing.set_progress(progress)
        pipe.finish()
    except BaseException:
        pipe.abort()
        ing.abort()
        raise
    finally:
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    if paths:
        root = _graft(repo, scanner, work, roots)
    else:
        root = scanner.build(roots[""])
    work.root = root.id
    work.root_entry = root
    return work


# Small files are read by this many threads, ahead of the thread that stores them,
# in inode order. Measured on the 20,000-file benchmark (XFS on a loop device, cold):
# 1 reader 3.2-3.5 s, 2: 3.5 s, 4: 3.7 s, 8: 3.7-4.3 s (the loop device serializes
# requests, so more readers only scatter them); `cat` of the same files takes 2.9 s.
# Two keep the disk busy while this thread hashes and packs, without scattering.
READERS = 2
WINDOW = 256


class _Pipeline:
    """Reads files while the walk goes on: each listed directory's jobs go to the
    pool at once (small files to ``READERS`` threads in inode order, large files to
    ``workers`` threads), and this thread stores small files' chunks in order.

    Overlapping the walk with the reads saves most of the walk's time on a cold
    cache (it is disk-bound too).
    """

    def __init__(self, ing: Ingestor, threshold: int, workers: int):
        if not ing.clones:
            # Files read in place hold the GIL for long stretches (cutting a 16 MiB
            # block, copying into packs); two at once convoy on it: 1 GiB on ext4 took
            # 3.9-4.9 s with two threads and 2.9 s with one.
            workers = 1
        self.ing = ing
        self.threshold = threshold
        self.pool = ThreadPoolExecutor(max_workers=workers + READERS,
                                       thread_name_prefix="vfs-ingest")
        self.pending: deque = deque()
        self.large: list = []

    def add(self, jobs: list[FileJob]) -> None:
        for job in sorted(jobs, key=_by_inode):
            if job.st.st_size >= self.threshold:
                self.large.append(self.pool.submit(_ingest_large, self.ing, job))
                continue
            self.pending.append((job, self.pool.submit(self.ing.read_small, job)))
            if len(self.pending) >= WINDOW:
                _keep_next(self.ing, self.pending)

    def finish(self) -> None:
        while self.pending:
            _keep_next(self.ing, self.pending)
        for fut in self.large:
            fut.result()
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _by_inode(job: FileJob) -> int:
    # Inode order follows allocation order on XFS and ext4, so the disk reads ahead.
    return job.st.st_ino


def _keep_next(ing: Ingestor, pending: deque) -> None:
    job, fut = pending.popleft()
    data = fut.result()
    if data is not None:
        ing.keep_small(job, data)
    job.done = True


def _ingest_large(ing: Ingestor, job: FileJob) -> None:
    ing.ingest(job)
    job.done = True


def _walk_path(scanner: Scanner, rel: str) -> _Dir | None:
    """One PATHS argument: the whole workspace's plan (``rel`` names the root), a
    plan of its parent directory holding just that entry, or None (gone, ignored)."""
    rel = normalize_path(rel)
    if not rel:
        return scanner.walk()
    path = os.path.join(scanner.repo.workspace, rel)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise from_oserror(exc, f"reading {rel}") from None
    name = os.path.basename(rel)
    parent = os.path.dirname(path)
    holder = _Dir(os.path.dirname(rel), st)
    with scanner.reading():
        fd = None
        try:
            fd = os.open(parent, DIR_FLAGS)
            with os.scandir(fd) as it:
                found = [de for de in it if de.name == name]
            scanner._plan(holder, found, parent, fd)
        finally:
            if fd is not None:
                os.close(fd)
    return holder if holder.rows else None


def _graft(repo: Repo, scanner: Scanner, work: WorkTree, roots: dict) -> TreeEntry:
    """HEAD's tree with the scanned paths replaced (or removed when gone)."""
    head = repo.head()
    base = repo.root_entry(head) if head is not None else None
    for rel, node in roots.items():
        if node is None and (base is None or _lookup(work, base, rel) is None):
            raise PathNotFound(f"path {rel!r} is neither in the workspace nor in HEAD")
    entry = base
    for rel, node in sorted(roots.items()):
        rel = normalize_path(rel)
        if not rel:
            return scanner.build(node)
        new = None
        if node is not None:
            built = scanner.build(node)
            new = work.tree(built.id).get(os.path.basename(rel))
        entry = _replace(work, entry, rel.split("/"), new, repo)
    return entry


def _lookup(work: WorkTree, entry: TreeEntry, rel: str) -> TreeEntry | None:
    for part in rel.split("/"):
        if entry is None or not entry.is_dir:
            return None
        entry = work.tree(entry.id).get(part)
    return entry


def _replace(work: WorkTree, entry: TreeEntry | None, parts: list[str],
             new: TreeEntry | None, repo: Repo, prefix: str = "") -> TreeEntry:
    """A copy of dir ``entry`` with ``parts`` set to ``new`` (None removes it).

    Directories on the way take their mode and mtime from the workspace, as a full
    snapshot would record them; one missing there keeps what HEAD had.
    """
    items = {e.name: e for e in work.tree(entry.id).entries} if entry is not None else {}
    head, rest = parts[0], parts[1:]
    if rest:
        child = items.get(head)
        if child is not None and not child.is_dir:
            child = None
        sub = _replace(work, child, rest, new, repo, f"{prefix}{head}/")
        items[head] = TreeEntry(head, Kind.DIR, sub.mode, 0, sub.mtime_ns, sub.id)
    elif new is None:
        items.pop(head, None)
    else:
        items[head] = new
    tree = make_tree(items.values())
    enc = encode_tree(tree)
    tid = tree_id(enc)
    work.trees[tid] = enc
    work.tree_objs[tid] = tree
    mode, mtime_ns = _dir_meta(repo, prefix.rstrip("/"), entry)
    return TreeEntry(entry.name if entry else os.path.basename(prefix.rstrip("/")),
                     Kind.DIR, mode, 0, mtime_ns, tid)


def _dir_meta(repo: Repo, rel: str, entry: TreeEntry | None) -> tuple[int, int]:
    """(mode, mtime_ns) of workspace directory ``rel``, else of ``entry``."""
    try:
        st = os.lstat(os.path.join(repo.workspace, rel) if rel else repo.workspace)
        if stat.S_ISDIR(st.st_mode):
            return stat.S_IMODE(st.st_mode), st.st_mtime_ns
    except OSError:
        pass
    if entry is not None:
        return entry.mode, entry.mtime_ns
    return 0o755, time.time_ns()
