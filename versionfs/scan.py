"""Workspace scanning: turn a directory into trees and file ids, storing content or not.

The scanner walks the workspace (honouring ``.vfsignore``), reuses file ids from the
stat cache for files whose (dev, ino, size, mtime, ctime, mode) did not change, and
reads the rest. With ``store=True`` it also stores their content (``Ingestor``): large
files are cloned into objects/ when the filesystem can (the clone is an atomic picture
of the file, hashed after cloning) and packed chunk by chunk otherwise; small files are
always packed. With ``store=False`` it only hashes, for ``status`` and ``diff``.

Nothing is visible in the index until the caller (``snapshot``) commits the
``WorkTree``'s records in one transaction.

Thread-safety: one scan per ``Ingestor``; it uses worker threads internally for large
files and guards its shared state with a lock.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import chunking
from .errors import FileChanged, PathNotFound, VfsError, from_oserror
from .hashing import hash_bytes
from .ignore import Ignore
from .model import (
    STAT_LEN,
    STATCACHE_VALUE_LEN,
    BlobKind,
    ChunkLoc,
    ChunkRef,
    FileRecord,
    Kind,
    ObjectId,
    Tree,
    TreeEntry,
    decode_file,
    decode_statcache,
    decode_tree,
    encode_file,
    encode_statcache,
    encode_tree,
    encode_tree_rows,
    file_id,
    make_tree,
    stat_bytes,
    tree_id,
)
from .objects import fsync_dir
from .repo import Repo, normalize_path

# A file whose mtime or ctime is this close to the scan's start may still change
# within the filesystem's timestamp granularity: it gets no stat cache entry.
RACY_NS = 100_000_000
# Stat caches up to this many entries are read into memory in one pass per scan.
BULK_CACHE = 1_000_000
RETRIES = 3


def _fs_name(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def stat_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


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
class FileJob:
    """A workspace file whose content must be read."""

    rel: str
    path: str
    st: os.stat_result
    fid: ObjectId | None = None
    size: int = 0
    cacheable: bool = True
    prev: ObjectId | None = None      # the id this path had when last cached
    bytes_read: int | None = None     # when less than ``size`` was read


@dataclass(slots=True)
class ScanStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    files_read: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    skipped: list[str] = field(default_factory=list)


class WorkTree:
    """The result of a scan: a root tree id plus the records it made.

    Offers ``tree(tid)`` and ``chunks(entry)`` like ``Repo``, falling back to the
    repository for records it did not make, so diff can compare it with any commit.
    """

    def __init__(self, repo: Repo):
        self.repo = repo
        self.root: ObjectId | None = None
        self.root_entry: TreeEntry | None = None
        self.trees: dict[bytes, bytes] = {}       # tree id -> encoding
        self.tree_objs: dict[bytes, Tree] = {}
        self.files: dict[bytes, bytes] = {}       # file id -> encoding
        self.file_objs: dict[bytes, FileRecord] = {}
        self.chunk_locs: dict[bytes, ChunkLoc] = {}
        self.statcache: dict[bytes, bytes] = {}   # rel path -> encoded stat record
        self.seen_paths: set[bytes] = set()
        self.stale: list[bytes] = []              # cache entries of vanished paths
        self.stats = ScanStats()

    def tree(self, tid: bytes) -> Tree:
        t = self.tree_objs.get(tid)
        if t is not None:
            return t
        enc = self.trees.get(tid)
        if enc is None:
            return self.repo.tree(tid)
        t = self.tree_objs[tid] = decode_tree(enc)   # decoded only when asked for
        return t

    def chunks(self, entry: TreeEntry) -> tuple[ChunkRef, ...]:
        rec = self.file_objs.get(entry.id)
        if rec is not None:
            return rec.chunks
        if entry.size and entry.size < self.repo.params.threshold:
            return (ChunkRef(entry.id, entry.size),)
        return self.repo.chunks(entry)


class Ingestor:
    """Reads file content, computes ids, and (with ``store``) stores new chunks."""

    def __init__(self, repo: Repo, work: WorkTree, *, store: bool,
                 warn: Callable[[str], None], progress=None):
        self.repo = repo
        self.work = work
        self.store = store
        self.params = repo.params
        self.warn = warn
        self.progress = progress
        self._early = 0
        self.lock = threading.Lock()
        self.pack = repo.store.pack_writer() if store else None
        self.clones = store and repo.store.reflinks()
        self.installed: set[bytes] = set()
        self._reads = contextlib.ExitStack()
        self._txn = None

    # -- chunk bookkeeping ------------------------------------------------
    def _known(self, cid: bytes) -> bool:
        """Whether the repository or this scan has chunk ``cid`` (call under ``lock``).

        One read transaction serves the whole scan: the writer lock is held, so the
        index cannot change under it.
        """
        if cid in self.work.chunk_locs:
            return True
        if self._txn is None:
            self._txn = self._reads.enter_context(self.repo.index.read())
        return self._txn.has("chunks", cid)

    def _keep_chunk(self, data, cid: bytes) -> None:
        """Append a chunk to a pack unless the repository has it already."""
        with self.lock:
            if self._known(cid):
                return
            loc = self.pack.add(data)
            self.work.chunk_locs[cid] = loc
            self.work.stats.bytes_stored += len(data)

    def set_progress(self, progress) -> None:
        """Start reporting to ``progress``, first with what was read so far (reads
        start while the walk still counts the total)."""
        with self.lock:
            self.progress = progress
            early, self._early = self._early, 0
        if progress is not None and early:
            progress(early)

    def _tick(self, n: int) -> None:
        progress = self.progress
        if progress is not None:
            progress(n)
        else:
            with self.lock:
                self._early += n

    # -- files --------------------------------------------------------------
    def ingest(self, job: FileJob) -> None:
        """Read, hash and (with ``store``) keep one file of any size."""
        self._retrying(job, self._ingest_any)

    def read_small(self, job: FileJob) -> bytes | None:
        """Read and hash a small file without storing it (safe in worker threads).

        Returns its bytes for ``keep_small``, or None when it grew past the
        threshold meanwhile and was ingested whole instead.
        """
        box: list = []
        self._retrying(job, lambda j: self._ingest_any(j, box))
        return box[0] if box else None

    def keep_small(self, job: FileJob, data: bytes) -> None:
        if self.store and data:
            self._keep_chunk(data, job.fid)

    def _retrying(self, job: FileJob, attempt) -> None:
        for _ in range(RETRIES):
            try:
                done = attempt(job)
            except VfsError:
                raise
            except OSError as exc:
                raise from_oserror(exc, f"reading {job.rel}") from None
            if done:
                with self.lock:
                    self.work.stats.files_read += 1
                    self.work.stats.bytes_read += \
                        job.size if job.bytes_read is None else job.bytes_read
                return
        raise FileChanged(
            f"{job.rel} kept changing while it was being read ({RETRIES} tries); "
            "stop the program writing it, or add it to .vfsignore, and retry"
        )

    def _ingest_any(self, job: FileJob, box: list | None = None) -> bool:
        """One attempt at a file; False when it changed meanwhile (try again).

        The kind of storage follows the size seen on the open file, so a file that
        grew or shrank past the threshold since the walk is still stored right.
        """
        fd = os.open(job.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            started = time.time_ns()
            before = os.fstat(fd)
            if before.st_size < self.params.threshold:
                return self._small(job, fd, before, box, started)
            if self.clones:
                return self._clone(job, fd, before)
            return self._stream(job, fd, before, started)
        finally:
            os.close(fd)

    @staticmethod
    def _recent(st: os.stat_result, started: int) -> bool:
        """Whether a write may still have been under way while we read.

        A write sets mtime and ctime when it starts, not when it ends, so a read
        that overlaps a long write sees the same stat before and after, and bytes
        of both states. Only a file changed just before the read can be in that
        state; for those the caller reads a second time and compares.
        """
        return max(st.st_mtime_ns, st.st_ctime_ns) >= started - RACY_NS

    def _small(self, job: FileJob, fd: int, before, box: list | None, started: int) -> bool:
        """A file below the threshold: one chunk whose id is the file's id."""
        data = _read_all(fd, before.st_size)
        after = os.fstat(fd)
        if stat_key(before) != stat_key(after) or len(data) != after.st_size \
                or len(data) >= self.params.threshold:
            return False
        if self._recent(after, started):
            again = os.pread(fd, len(data) + 1, 0)
            if again != data or stat_key(os.fstat(fd)) != stat_key(after):
                return False
        job.fid = ObjectId(hash_bytes(data))
        job.size = len(data)
        if box is None:
            self.keep_small(job, data)
        else:
            box.append(data)
        self._tick(len(data))
        return True

    def _stream(self, job: FileJob, fd: int, before, started: int) -> bool:
        """A large file read in place: cut, hash, and pack its new chunks."""
        refs, total = self._stream_pass(fd, store=self.store, tick=True)
        after = os.fstat(fd)
        if stat_key(before) != stat_key(after) or total != after.st_size \
                or total < self.params.threshold:
            return False
        if self._recent(after, started):
            if self._stream_pass(fd, store=False, tick=False) != (refs, total) or \
                    stat_key(os.fstat(fd)) != stat_key(after):
                return False
        self._record(job, FileRecord(total, tuple(refs)))
        return True

    def _stream_pass(self, fd: int, *, store: bool, tick: bool
                     ) -> tuple[list[ChunkRef], int]:
        os.lseek(fd, 0, os.SEEK_SET)
        reader = _Reader(fd)
        refs = []
        for chunk in chunking.iter_stream(reader.readinto, self.params):
            cid = hash_bytes(chunk)
            refs.append(ChunkRef(ObjectId(cid), len(chunk)))
            if store:
                self._keep_chunk(chunk, cid)
            if tick:
                self._tick(len(chunk))
        return refs, reader.total

    def _clone(self, job: FileJob, fd: int, before) -> bool:
        """A large file cloned into tmp/ first, then hashed: an atomic picture of it."""
        tmp = self.repo.store.clone_to_tmp(fd)
        if tmp is None:  # e.g. workspace on another filesystem than the repository
            self.clones = False
            return self._stream(job, fd, before, time.time_ns())
        after = os.fstat(fd)
        try:
            if os.stat(tmp).st_size < self.params.threshold:
                return False  # shrank below the threshold: store it as a small file
            if stat_key(before) != stat_key(after):
                # The clone holds one consistent state, but not a known one: no cache.
                job.cacheable = False
            rec = self._hash_clone(tmp, job)
            fid = self._record(job, rec)
            with self.lock:
                if fid not in self.installed and not self._file_stored(fid):
                    self._install_clone(tmp, fid, rec)
                    tmp = None
        finally:
            if tmp is not None:
                os.unlink(tmp)
        return True

    def _file_stored(self, fid: bytes) -> bool:
        """Whether the repository has file record ``fid`` (call under ``lock``)."""
        if self._txn is None:
            self._txn = self._reads.enter_context(self.repo.index.read())
        return self._txn.has("files", fid)

    def _hash_clone(self, tmp: str, job: FileJob) -> FileRecord:
        """Cut and hash a clone; chunks of the previous version that the clone still
        shares on disk (same blocks at the same offsets) are taken without reading."""
        with open(tmp, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            kept = self._unchanged_chunks(f.fileno(), job, size)
            with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mm:
                mm.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(mm)
                try:
                    refs, hashed = self._cut_hash(view, kept)
                finally:
                    view.release()
        if kept:
            job.bytes_read = hashed
        return FileRecord(size, tuple(refs))

    def _unchanged_chunks(self, fd: int, job: FileJob, size: int) -> dict[int, ChunkRef]:
        """Chunks of the file's previous version, by offset, whose bytes the clone
        provably still has: its blocks are shared with the previous object."""
        if job.prev is None:
            return {}
        with self.repo.index.read() as txn:
            raw = txn.get("files", job.prev)
        if raw is None:
            return {}
        shared = self.repo.store.shared_with_object(fd, job.prev)
        if not shared:
            return {}
        prev = decode_file(raw)
        kept = {}
        off = 0
        i = 0
        for ref in prev.chunks:
            end = off + ref.length
            while i < len(shared) and shared[i][1] < end:
                i += 1
            # The previous last chunk ended at the old end of file, not at a content
            # edge: it stays valid only if the file did not grow or shrink.
            at_old_end = end == prev.size and size != prev.size
            if end <= size and not at_old_end and i < len(shared) and shared[i][0] <= off:
                kept[off] = ref
            off = end
        return kept

    def _cut_hash(self, view, kept: dict[int, ChunkRef]) -> tuple[list[ChunkRef], int]:
        """The chunks of ``view``: taken from ``kept`` where a kept chunk starts at an
        edge, else cut (resuming FastCDC at that edge) and hashed. Returns them and
        the number of bytes hashed."""
        size = len(view)
        refs: list[ChunkRef] = []
        pos = hashed = 0
        cuts = iter(chunking.cut(view, self.params)) if not kept else None
        while pos < size:
            ref = kept.get(pos)
            if ref is not None:
                refs.append(ref)
                pos += ref.length
                continue
            if cuts is None or kept:
                cuts = _cuts_from(view, pos, self.params)
            for off, length in cuts:
                piece = view[off: off + length]
                refs.append(ChunkRef(ObjectId(hash_bytes(piece)), length))
                del piece
                self._tick(length)
                hashed += length
                pos = off + length
                if pos in kept:
                    break
        return refs, hashed

    def _install_clone(self, tmp: str, fid: bytes, rec: FileRecord) -> None:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.repo.store.install_object(tmp, fid)
        self.installed.add(fid)
        off = 0
        for ref in rec.chunks:
            if not self._known(ref.id):
                self.work.chunk_locs[ref.id] = ChunkLoc(BlobKind.OBJECT, ObjectId(fid), off,
                                                        ref.length)
                # the clone shares every other block with the workspace file
                self.work.stats.bytes_stored += ref.length
            off += ref.length

    def _record(self, job: FileJob, rec: FileRecord) -> ObjectId:
        enc = encode_file(rec)
        fid = file_id(enc)
        with self.lock:
            self.work.files[fid] = enc
            self.work.file_objs[fid] = rec
        job.fid = fid
        job.size = rec.size
        return fid

    def finish(self) -> None:
        """Make every stored chunk durable (packs fsynced and renamed)."""
        self._end_reads()
        if self.pack is not None:
            self.pack.finish()
        dirs = {os.path.dirname(self.repo.store.blob_path(BlobKind.OBJECT, f))
                for f in self.installed}
        for d in dirs:
            fsync_dir(d)

    def _end_reads(self) -> None:
        self._txn = None
        self._reads.close()

    def abort(self) -> None:
        self._end_reads()
        if self.pack is not None:
            self.pack.abort()


def _cuts_from(view, start: int, params):
    """Chunk edges of ``view`` from ``start`` (a known edge) on, as file offsets."""
    for off, length in chunking.iter_cuts(view[start:], params):
        yield start + off, length


class _Reader:
    """``readinto`` over a file descriptor, counting bytes."""

    __slots__ = ("fd", "total")

    def __init__(self, fd: int):
        self.fd = fd
        self.total = 0

    def readinto(self, view) -> int:
        n = os.readv(self.fd, [view])
        self.total += n
        return n


def _read_all(fd: int, hint: int) -> bytes:
    data = os.read(fd, hint + 1)
    if len(data) <= hint:
        return data
    parts = [data]
    while True:  # the file grew: read the rest so the caller sees the change
        more = os.read(fd, 1 << 20)
        if not more:
            return b"".join(parts)
        parts.append(more)


# --------------------------------------------------------------------------
# walking


@dataclass(slots=True)
class _Dir:
    rel: str
    st: os.stat_result
    items: list  # (name, kind, st, payload): payload = FileJob | _Dir | target bytes


class Scanner:
    """Walks a workspace into ``_Dir`` plans, then builds trees from them."""

    def __init__(self, repo: Repo, work: WorkTree, warn: Callable[[str], None]):
        self.repo = repo
        self.work = work
        self.warn = warn
        self.ignore = Ignore.load(repo.workspace)
        self.jobs: list[FileJob] = []
        self.start_ns = time.time_ns()
        self._txn = None
        self._cache: dict[bytes, bytes] | None = None
        # Called with each directory's new jobs as soon as the directory is listed.
        self.on_jobs: Callable[[list[FileJob]], None] | None = None

    def walk(self) -> _Dir:
        """The plan of the whole workspace; also lists the stat cache entries of
        paths that are gone (``work.stale``)."""
        ws = self.repo.workspace
        with self.repo.index.read() as txn:
            self._txn = txn
            # One pass over the stat cache beats one lookup per file, up to a size.
            if txn.count("statcache") <= BULK_CACHE:
                self._cache = txn.as_dict("statcache")
            try:
                try:
                    st = os.lstat(ws)
                except OSError as exc:
                    raise from_oserror(exc, "reading the workspace") from None
                node = self._walk_dir(ws, "", st)
                seen = self.work.seen_paths
                cached = self._cache if self._cache is not None else txn.keys("statcache")
                self.work.stale = [k for k in cached if k not in seen]
                return node
            finally:
                self._txn = None
                self._cache = None

    def _walk_dir(self, path: str, rel: str, st: os.stat_result) -> _Dir:
        node = _Dir(rel, st, [])
        self.work.stats.dirs += 1
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            raise from_oserror(exc, f"listing {rel or '.'}") from None
        prefix = f"{rel}/" if rel else ""
        first_job = len(self.jobs)
        subdirs = []
        for de in entries:
            sub = self._walk_entry(node, de, prefix + de.name)
            if sub is not None:
                subdirs.append(sub)
        if self.on_jobs is not None and len(self.jobs) > first_job:
            # this directory's files start being read while the walk goes on
            self.on_jobs(self.jobs[first_job:])
        for name, sub_path, sub_rel, sub_st in subdirs:
            node.items.append((name, Kind.DIR, sub_st, self._walk_dir(sub_path, sub_rel,
                                                                       sub_st)))
        return node

    def _walk_entry(self, node: _Dir, de: os.DirEntry, rel: str):
        """Plan one entry into ``node``; a subdirectory is returned to walk later."""
        try:
            st = de.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None  # vanished between listing and stat
        except OSError as exc:
            raise from_oserror(exc, f"reading {rel}") from None
        mode = st.st_mode
        if stat.S_ISREG(mode):  # the common case first
            if not self.ignore.ignored(rel, False):
                node.items.append((de.name, Kind.FILE, st, self._file(de.path, rel, st)))
        elif stat.S_ISDIR(mode):
            if not self.ignore.ignored(rel, True):
                return (de.name, de.path, rel, st)   # walked after this directory's files
        elif self.ignore.ignored(rel, False):
            return None
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(de.path.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                raise from_oserror(exc, f"reading link {rel}") from None
            node.items.append((de.name, Kind.SYMLINK, st, target))
            self.work.stats.symlinks += 1
        else:
            what = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) \
                else "device"
            self.work.stats.skipped.append(rel)
            self.warn(f"skipped {rel}: a {what} cannot be versioned")

    def _file(self, path: str, rel: str, st: os.stat_result) -> FileJob:
        self.work.stats.files += 1
        key = _fs_name(rel)
        self.work.seen_paths.add(key)
        job = FileJob(rel, path, st)
        raw = self._cache.get(key) if self._cache is not None \
            else self._txn.get("statcache", key)
        if raw is not None and len(raw) == STATCACHE_VALUE_LEN:
            if raw[:STAT_LEN] == stat_bytes(st):
                job.fid = ObjectId(raw[STAT_LEN:])
                job.size = st.st_size
                return job
            job.prev = ObjectId(raw[STAT_LEN:])
        self.jobs.append(job)
        return job

    def cache_record(self, job: FileJob) -> None:
        """Remember a freshly read file in the stat cache, unless it is racy."""
        st = job.st
        if not job.cacheable or job.size != st.st_size:
            return
        if max(st.st_mtime_ns, st.st_ctime_ns) >= self.start_ns - RACY_NS:
            return
        self.work.statcache[cache_key(job.rel)] = cache_value(st, job.fid)

    # -- trees ---------------------------------------------------------------
    def build(self, node: _Dir) -> TreeEntry:
        """The tree entry of a planned directory; its trees go to ``work.trees``."""
        tid = self._build(node)
        name = os.path.basename(node.rel) if node.rel else ""
        return TreeEntry(name, Kind.DIR, stat.S_IMODE(node.st.st_mode), 0,
                         node.st.st_mtime_ns, tid)

    def _build(self, node: _Dir) -> ObjectId:
        rows = []
        for name, kind, st, payload in node.items:
            if kind is Kind.DIR:
                row = [_fs_name(name), 2, stat.S_IMODE(st.st_mode), 0, st.st_mtime_ns,
                       bytes(self._build(payload)), b""]
            elif kind is Kind.FILE:
                row = [_fs_name(name), 1, stat.S_IMODE(st.st_mode), payload.size,
                       st.st_mtime_ns, bytes(payload.fid), b""]
            else:
                row = [_fs_name(name), 3, stat.S_IMODE(st.st_mode), len(payload),
                       st.st_mtime_ns, hash_bytes(payload), payload]
            rows.append(row)
        rows.sort(key=_first)
        enc = encode_tree_rows(rows)
        tid = tree_id(enc)
        self.work.trees[tid] = enc
        return tid


def _first(row: list) -> bytes:
    return row[0]


def scan_workspace(repo: Repo, *, store: bool = False, paths: list[str] | None = None,
                   warn: Callable[[str], None] = lambda m: None,
                   progress_factory=None, workers: int = 2) -> WorkTree:
    """Scan the workspace into a ``WorkTree``.

    ``paths`` (workspace-relative) limits the scan; the others keep their entries
    from HEAD. ``progress_factory(total_bytes)`` may return a callable fed with byte
    counts as content is read (or None).

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
    try:
        if paths:
            roots = {rel: _walk_path(scanner, rel) for rel in paths}
        else:
            roots = {"": scanner.walk()}
        if progress_factory is not None:
            progress = progress_factory(sum(j.st.st_size for j in scanner.jobs))
            ing.set_progress(progress)
        pipe.finish()
    except BaseException:
        pipe.abort()
        ing.abort()
        raise
    finally:
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    for job in scanner.jobs:
        scanner.cache_record(job)
    if paths:
        root = _graft(repo, scanner, work, roots)
    else:
        root = scanner.build(roots[""])
    work.root = root.id
    work.root_entry = root
    work.partial = bool(paths)
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
                self.large.append(self.pool.submit(self.ing.ingest, job))
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


def _walk_path(scanner: Scanner, rel: str):
    """One PATHS argument: its node (``_Dir``), a single item tuple, or None (gone)."""
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
    with scanner.repo.index.read() as txn:
        scanner._txn = txn
        try:
            holder = _Dir("", st, [])
            first_job = len(scanner.jobs)
            with os.scandir(os.path.dirname(path)) as it:
                for de in it:
                    if de.name == os.path.basename(rel):
                        sub = scanner._walk_entry(holder, de, rel)
                        if sub is not None:   # a directory: its walk hands on its jobs
                            name, sub_path, sub_rel, sub_st = sub
                            holder.items.append((name, Kind.DIR, sub_st, scanner._walk_dir(
                                sub_path, sub_rel, sub_st)))
                        elif scanner.on_jobs is not None and len(scanner.jobs) > first_job:
                            scanner.on_jobs(scanner.jobs[first_job:])
        finally:
            scanner._txn = None
    return holder.items[0] if holder.items else None


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
        if isinstance(node, _Dir) and not rel:
            return scanner.build(node)
        new = None
        if node is not None:
            name, kind, st, payload = node
            holder = _Dir("", os.lstat(repo.workspace), [node])
            built = scanner.build(holder)
            new = work.tree(built.id).get(name)
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
