"""Reading workspace files: content ids, and (when storing) chunks kept in the cache.

``Ingestor`` reads one file at a time for the scanner: small files as one chunk,
large files cut by FastCDC, either read in place (packing new chunks) or, on
reflink filesystems, cloned into tmp/ first and hashed there (the clone is one atomic
state of the file; chunks still sharing disk blocks with the previous version's
object are reused without reading). Every read is checked against the file's stat
before and after; a file changed less than ``RACY_NS`` (+ a clock tick) before the
read is not read until it has been quiet that long (see ``_unsettled``). It fills a
``WorkTree``, which the snapshot commits in one transaction.

Constants, and why:

* ``RACY_NS`` (100 ms): a write sets ctime when it *starts* (Linux calls
  ``file_update_time`` before copying the data), so a write still copying while we
  read leaves the stat unchanged. A read is accepted only if it started at least
  this long after the file's ctime: then a write overlapping it either changed the
  ctime during the read (seen) or had been running for longer than 100 ms. Copying
  1 MiB takes ~0.2 ms; under load a writer descheduled mid-copy for 5-20 ms left
  both reads of the old double-read check with the same torn bytes (1 commit in 45
  in CI), so the window must be long against scheduling delays, yet short enough
  that a file written just before a snapshot delays it unnoticeably.
* ``TICK_NS`` (10 ms): kernel timestamps come from the coarse clock
  (``current_time``), which lags ``time.time_ns()`` by up to one jiffy (10 ms at
  HZ=100, the slowest common setting); ``COARSE_TICK_NS`` (2 s) replaces it for a
  ctime of whole seconds (ext4 with 128-byte inodes, FAT, some network mounts).
* ``SETTLE_NS`` (300 ms): how much longer than one window we wait for a file that
  keeps being written before giving up with ``FileChanged``.
* ``RETRIES`` (3): reads that saw the stat change, before giving up.

Thread-safety: an ``Ingestor`` is shared by the scan's worker threads; its shared
state is guarded by ``lock``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..records import chunking
from ..errors import FileChanged, VfsError, from_oserror
from ..records.hashing import BLOCK_SIZE, block_hashes, hash_bytes
from ..records.model import (
    BlobKind, ChunkLoc, ChunkRef, FileRecord, ObjectId, Tree, TreeEntry, decode_file,
    decode_tree, encode_file, file_id,
)
from ..store import blocks
from ..store.blobs import fsync_dir
from ..repo.repository import Repo

# A file whose mtime or ctime is this close to the scan's start may still change
# within the filesystem's timestamp granularity: it gets no stat cache entry. A file
# whose ctime is this close to a read (plus TICK_NS) is read only once it is not.
RACY_NS = 100_000_000
TICK_NS = 10_000_000
COARSE_TICK_NS = 2_000_000_000
SETTLE_NS = 300_000_000
RETRIES = 3


def stat_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


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
    done: bool = False                # read and (when storing) its content kept


@dataclass(slots=True)
class ScanStats:
    files: int = 0
    dirs: int = 0
    dirs_reused: int = 0  # directories whose tree came from the dir state
    symlinks: int = 0
    files_read: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    tree_bytes: int = 0   # sizes of the files and links in the trees built (full scans)
    flushes: int = 0      # records committed before the end (``stream``)
    skipped: list[str] = field(default_factory=list)


class WorkTree:
    """The result of a scan: a root tree id plus the records it made.

    Offers ``tree(tid)``, ``tree_bytes(tid)`` and ``chunks(entry)`` like ``Repo``,
    falling back to the repository for records it did not make, so diff can compare
    it with any commit.
    """

    def __init__(self, repo: Repo):
        self.repo = repo
        self.root: ObjectId | None = None
        self.root_entry: TreeEntry | None = None
        self.trees: dict[bytes, bytes] = {}       # tree id -> encoding
        self.tree_rows = 0                        # rows of the trees in ``trees``
        self.tree_objs: dict[bytes, Tree] = {}
        self.files: dict[bytes, bytes] = {}       # file id -> encoding
        self.file_objs: dict[bytes, FileRecord] = {}
        self.chunk_locs: dict[bytes, ChunkLoc] = {}
        self.chunk_blocks: dict[bytes, bytes] = {}  # new chunk id -> its block hashes
        self.statcache: dict[bytes, bytes] = {}   # rel path -> encoded stat record
        self.stale: list[bytes] = []              # cache entries of vanished paths
        self.dirstate: dict[bytes, bytes] = {}    # dir state key -> value (full scans)
        self.stale_dirs: list[bytes] = []         # dir states to drop (full scans)
        self.ingestor: Ingestor | None = None     # what read the files (scan_workspace)
        self.journal = None   # the change journal of a full scan (workspace.journal)
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

    def tree_bytes(self, tid: bytes) -> bytes:
        enc = self.trees.get(tid)
        return enc if enc is not None else self.repo.tree_bytes(tid)

    def chunks(self, entry: TreeEntry) -> tuple[ChunkRef, ...]:
        rec = self.file_objs.get(entry.id)
        if rec is not None:
            return rec.chunks
        if entry.size and entry.size < self.repo.params.threshold:
            return (ChunkRef(entry.id, entry.size),)
        return self.repo.chunks(entry)

    def put_records(self, txn, *, dirstate: bool = True) -> None:
        """Write the records the scan holds (chunk locations, file records, trees,
        stat cache and, with ``dirstate``, dir state entries) in index transaction
        ``txn``."""
        for chunk, loc in self.chunk_locs.items():
            if not txn.has("chunks", chunk):
                txn.put_chunk_loc(chunk, loc)
        for chunk, digests in self.chunk_blocks.items():
            blocks.record(txn, chunk, digests)
        for fid, rec in self.files.items():
            txn.put("files", fid, rec, overwrite=False)
        for tid, rec in self.trees.items():
            txn.put("trees", tid, rec, overwrite=False)
        for key, rec in self.statcache.items():
            txn.put("statcache", key, rec)
        if dirstate:
            for key, rec in self.dirstate.items():
                txn.put("dirstate", key, rec)

    def held_records(self) -> int:
        """Records held, a tree counting as its rows (a directory of a thousand files
        is one record of ~90 KB)."""
        return len(self.chunk_locs) + len(self.files) + len(self.statcache) + self.tree_rows

    def flush(self) -> None:
        """Commit the records held so far and forget them (``scan_workspace``'s
        ``stream``): every chunk is made durable first (packs fsynced and renamed,
        cloned objects' directories fsynced), so each record written names only
        data the repository holds; the caller's commit writes the rest. The dir
        states wait for that commit (a few per thousand files): written with the
        stale ones' deletion, a directory's state is never older than its
        subdirectories' even after a crash. The caller must hold the repository
        lock."""
        ing = self.ingestor
        with ing.lock:
            ing.make_durable()
            with self.repo.index.write() as txn:
                self.put_records(txn, dirstate=False)
            for held in (self.chunk_locs, self.chunk_blocks, self.files, self.file_objs,
                         self.trees, self.tree_objs, self.statcache):
                held.clear()
            self.tree_rows = 0
            self.repo.index.release_pages()
            self.stats.flushes += 1


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
        self._synced: set[bytes] = set()   # installed objects whose directory is synced
        self._reads = contextlib.ExitStack()
        self._txn = None
        self._chunks = None

    # -- chunk bookkeeping ------------------------------------------------
    def _known(self, cid: bytes) -> bool:
        """Whether the repository or this scan has chunk ``cid`` (call under ``lock``).

        One view of the store's chunk index serves the whole scan: the writer lock
        is held, so the index cannot change under it. ``exists``, not ``locate``: a
        chunk the repository has is not stored again, wherever its bytes are.
        """
        if cid in self.work.chunk_locs:
            return True
        if self._chunks is None:
            self._chunks = self._reads.enter_context(self.repo.store.chunk_view())
        return self._chunks.exists(cid)

    def _keep_chunk(self, data, cid: bytes) -> None:
        """Append a chunk to a pack unless the repository has it already."""
        self._note_blocks(cid, data)
        with self.lock:
            if self._known(cid):
                return
            loc = self.pack.add(data)
            self.work.chunk_locs[cid] = loc
            self.work.stats.bytes_stored += len(data)

    def _note_blocks(self, cid: bytes, data) -> None:
        """Keep the block hashes (``store.blocks``) of a chunk the repository lacks,
        from ``data``, the very bytes just hashed into ``cid``; the snapshot writes
        them with the chunk's location. Hashed outside the lock (other threads read
        on); a chunk of one block has none."""
        if len(data) <= BLOCK_SIZE:
            return
        with self.lock:
            if cid in self.work.chunk_blocks or self._known(cid):
                return
        digests = block_hashes(data)
        with self.lock:
            self.work.chunk_blocks[cid] = digests

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
        """Run ``attempt`` until it reads the file: it returns True when done, False
        when the file changed during the read (tried again at once, ``RETRIES`` times
        in all), or how many ns to wait until the file has been quiet long enough."""
        changed = 0
        first = deadline = None
        while True:
            try:
                res = attempt(job)
            except VfsError:
                raise
            except OSError as exc:
                raise from_oserror(exc, f"reading {job.rel}") from None
            if res is True:
                with self.lock:
                    self.work.stats.files_read += 1
                    self.work.stats.bytes_read += \
                        job.size if job.bytes_read is None else job.bytes_read
                return
            if res is False:
                changed += 1
                if changed >= RETRIES:
                    why = f"{RETRIES} tries"
                    break
                continue
            now = time.monotonic_ns()
            if deadline is None:  # one full window, then SETTLE_NS more
                first, deadline = now, now + res + SETTLE_NS
            if now + res > deadline:
                why = f"not {RACY_NS // 1_000_000} ms unchanged in " \
                      f"{(now - first) / 1e9:.1f} s of waiting"
                break
            time.sleep(res / 1e9)
        raise FileChanged(
            f"{job.rel} kept changing while it was being read ({why}); "
            "stop the program writing it, or add it to .vfsignore, and retry"
        )

    def _ingest_any(self, job: FileJob, box: list | None = None) -> bool | int:
        """One attempt at a file: True when read, False when it changed meanwhile
        (try again), or the ns to wait before a read can be trusted.

        The kind of storage follows the size seen on the open file, so a file that
        grew or shrank past the threshold since the walk is still stored right.
        """
        fd = os.open(job.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            started = time.time_ns()
            before = os.fstat(fd)
            large = before.st_size >= self.params.threshold
            if large and self.clones:
                done = self._clone(job, fd, before)
                if done is not None:
                    return done
            wait = _unsettled(before, started)
            if wait > 0:
                return wait
            twice = wait < 0  # the clock is off: the best left is two agreeing reads
            if large:
                return self._stream(job, fd, before, twice)
            return self._small(job, fd, before, box, twice)
        finally:
            os.close(fd)

    def _small(self, job: FileJob, fd: int, before, box: list | None, twice: bool) -> bool:
        """A file below the threshold: one chunk whose id is the file's id."""
        data = _read_all(fd, before.st_size)
        after = os.fstat(fd)
        if stat_key(before) != stat_key(after) or len(data) != after.st_size \
                or len(data) >= self.params.threshold:
            return False
        if twice:
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

    def _stream(self, job: FileJob, fd: int, before, twice: bool) -> bool:
        """A large file read in place: cut, hash, and pack its new chunks."""
        refs, total = self._stream_pass(fd, store=self.store, tick=True)
        after = os.fstat(fd)
        if stat_key(before) != stat_key(after) or total != after.st_size \
                or total < self.params.threshold:
            return False
        if twice:
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

    def _clone(self, job: FileJob, fd: int, before) -> bool | None:
        """A large file cloned into tmp/ first, then hashed: an atomic picture of it
        (FICLONE locks out writes). None when it cannot be cloned: read it instead."""
        tmp = self.repo.store.clone_to_tmp(fd)
        if tmp is None:  # e.g. workspace on another filesystem than the repository
            self.clones = False
            return None
        after = os.fstat(fd)
        try:
            if os.stat(tmp).st_size < self.params.threshold:
                return False  # shrank below the threshold: store it as a small file
            if stat_key(before) != stat_key(after):
                # The clone holds one consistent state, but not a known one: no cache.
                job.cacheable = False
            rec = self._hash_clone(tmp, job)
            enc = encode_file(rec)
            fid = file_id(enc)
            with self.lock:   # the object and its chunks before the record names them
                if fid not in self.installed and not self._file_stored(fid):
                    self._install_clone(tmp, fid, rec)
                    tmp = None
                self._put_record(job, fid, enc, rec)
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
                cid = ObjectId(hash_bytes(piece))
                refs.append(ChunkRef(cid, length))
                self._note_blocks(cid, piece)  # while the clone's pages are in memory
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
            self._put_record(job, fid, enc, rec)
        return fid

    def _put_record(self, job: FileJob, fid: ObjectId, enc: bytes, rec: FileRecord) -> None:
        """Hold file record ``rec`` (call under ``lock``)."""
        self.work.files[fid] = enc
        self.work.file_objs[fid] = rec
        job.fid = fid
        job.size = rec.size

    def finish(self) -> None:
        """Make every stored chunk durable (packs fsynced and renamed)."""
        self._end_reads()
        self.make_durable()

    def make_durable(self) -> None:
        """fsync and rename the packs written so far (later chunks go to new ones)
        and fsync the directories of installed objects (call under ``lock``, or
        when no other thread stores). The chunk index is read afresh afterwards."""
        self._end_reads()
        if self.pack is not None:
            self.pack.finish()
        dirs = {os.path.dirname(self.repo.store.blob_path(BlobKind.OBJECT, f))
                for f in self.installed - self._synced}
        for d in dirs:
            fsync_dir(d)
        self._synced |= self.installed

    def _end_reads(self) -> None:
        self._txn = self._chunks = None
        self._reads.close()
        self._reads = contextlib.ExitStack()

    def abort(self) -> None:
        self._end_reads()
        if self.pack is not None:
            self.pack.abort()


def _unsettled(st: os.stat_result, started: int) -> int:
    """How many ns after ``started`` a read of a file with stat ``st`` must start to
    be trusted: 0 if it may start now, -1 if the file's ctime is in the future.

    The rule: a read is trusted if it starts ``RACY_NS`` + one clock tick after the
    ctime seen before it and that stat is unchanged after it. Every write sets ctime
    to the (coarse) current time before it copies data, so a write overlapping such
    a read either began during it (ctime changes: retried) or began more than
    ``RACY_NS`` before it and is still copying. mtime is not used: anyone can set it
    (``touch -d``), e.g. into the future, and ctime is never older than a write.
    A ctime ahead of our clock means the clock was set back or the file's times come
    from another machine: waiting proves nothing then (-1).
    """
    ct = st.st_ctime_ns
    tick = COARSE_TICK_NS if ct % 1_000_000_000 == 0 else TICK_NS
    if ct > started + tick:
        return -1
    return max(0, ct + RACY_NS + tick - started)


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
