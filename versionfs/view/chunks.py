"""Chunk bytes for reads: a bounded cache of verified chunks, one load per chunk,
read-ahead, and ranges of chunks already verified (or not to be verified).

Read-ahead is a window per open file (``Content.read_ahead``) that starts at one
chunk, doubles each time a sequential reader reaches the last batch asked for, up to
a maximum, and starts over on a random access (as mountpoint-s3 and Linux readahead
do). For a local repository each chunk of a batch is loaded (read and verified) on
its own background job; when chunks must be fetched from a remote (the reader has a
fetcher) the whole batch is one job, ``ChunkReader.fetch_ahead``, so the fetcher can
ask for neighbouring chunks in one request.

Every byte comes through the repository's one read path (``store.reader``), so a
chunk that ``vfs gc`` moves to a new pack while the mount serves it is found again
there: a remembered location whose blob has gone is forgotten and the chunk loaded
(and verified) afresh.

Verification granularity: a read of less than half a chunk that is neither cached
nor verified before is checked by **block** when the chunk has block hashes
(``store.blocks``: 16 KiB blocks), so a random 4 KiB read costs one 16 KiB read and
hash, not the whole ~1 MiB chunk; larger reads load the chunk whole (it serves the
reads after it from memory). A chunk loaded whole that has no block hashes (stored
by an older versionfs, or fetched from a remote) gets them from the bytes that just
matched its id, hashed and written to the index by a background thread (skipped
while that thread is behind), so later mounts read it by block. A chunk whose whole load fails verification is
read by block when it can be: only the reads that touch a damaged block fail.

Thread-safety: ``ChunkCache`` may be used by any number of threads at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ..errors import CorruptObject, VfsError
from ..records.hashing import BLOCK_SIZE, block_hashes
from ..records.model import ChunkLoc, ChunkRef
from ..repo.repository import Repo

VERIFY_MODES = ("chunk", "off")
# Reads this close to where the last one ended count as sequential: the kernel's
# readahead requests arrive a little out of order.
SEQUENTIAL_SLACK = 8 << 20
# A read starting this close to where the last one ended continues a stream: its
# chunks are loaded whole (hashed once for all the reads that follow), not by block.
# The kernel sends a sequential reader's requests in order, so this can be tight.
STREAM_SLACK = 128 << 10
# Block hashes learned from whole loads are written in batches of this many chunks
# (one index transaction, fsynced, per batch; the rest at close).
LEARN_BATCH = 64
# Block hashes kept in memory, by chunk (~1 KiB for a 1 MiB chunk): a cold index
# lookup costs a disk read, as much as the block itself.
DIGESTS_MAX = 4096
LEARN_BACKLOG = 32 << 20  # bytes of chunks waiting to be hashed for that; past it
                          # (the hashing thread is behind) chunks are not learned

log = logging.getLogger(__name__)


class ChunkCache:
    """Verified chunks by id, bounded by bytes; loads each chunk once however many
    readers want it at the same moment, and can load chunks ahead in background.

    ``verify="chunk"`` (the default) checks every chunk against its id the first
    time it is loaded, or a small range of it against its block hashes, and
    remembers where up to ``max_verified`` verified chunks lie: a later read of one
    whose bytes left the cache re-reads just its range from that same (immutable)
    place instead of the whole chunk. ``verify="off"`` checks nothing:
    ``read_range`` serves every read straight from the blob. ``learn`` (default
    True): record the block hashes of chunks loaded whole that have none.
    """

    def __init__(self, repo: Repo, max_bytes: int = 64 << 20, workers: int = 2, *,
                 verify: str = "chunk", max_verified: int = 1 << 16, learn: bool = True):
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
        self.repo = repo
        self.max_bytes = max_bytes
        self.verify = verify
        self.max_verified = max_verified
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._loading: dict[bytes, Future] = {}
        self._verified: dict[bytes, ChunkLoc] = {}  # oldest first
        self._lock = threading.Lock()
        self._fetching: set[bytes] = set()  # asked of the fetcher, not yet here
        self._jobs: set[Future] = set()
        self._pool = ThreadPoolExecutor(workers, "vfs-prefetch") if workers else None
        self.loads = 0
        self.learn = learn and verify == "chunk" and repo.reader.blocks is not None
        self._learned: dict[bytes, bytes] = {}  # block hashes not yet written
        self._learning = 0  # bytes handed to the writer thread, not yet hashed
        self._writer: ThreadPoolExecutor | None = None
        self._digests: OrderedDict[bytes, bytes | None] = OrderedDict()  # oldest first

    def peek(self, ref: ChunkRef) -> bytes | None:
        """The chunk's verified bytes if cached, else None; never blocks."""
        with self._lock:
            data = self._data.get(ref.id)
            if data is not None:
                self._data.move_to_end(ref.id)
            return data

    def get(self, ref: ChunkRef) -> bytes:
        """The chunk's bytes, checked against its id (``CorruptObject`` if not)."""
        with self._lock:
            data = self._data.get(ref.id)
            if data is not None:
                self._data.move_to_end(ref.id)
                return data
            fut = self._loading.get(ref.id)
            if fut is None:
                fut = self._loading[ref.id] = Future()
                mine = True
            else:
                mine = False
        if mine:
            self._load(ref.id, fut)
        return fut.result()

    def get_range(self, ref: ChunkRef, offset: int, length: int):
        """``length`` bytes at ``offset`` in the chunk, from the whole chunk (loaded
        and verified, as ``get``); when the whole chunk is damaged but has block
        hashes, from the blocks holding the range, each verified, so only a range
        touching a damaged block fails (``CorruptObject``)."""
        try:
            return memoryview(self.get(ref))[offset: offset + length]
        except CorruptObject:
            part = None if ref.length <= BLOCK_SIZE else \
                self.repo.reader.read_blocks(ref.id, offset, length, strict=True)
            if part is None:
                raise
            return part

    def read_range(self, ref: ChunkRef, offset: int, length: int, *,
                   by_block: bool = True):
        """``length`` bytes at ``offset`` in the chunk, read from its blob when that
        is allowed without hashing the whole chunk: it was verified before by this
        cache, or (``by_block``) the range is under half the chunk and the chunk has
        block hashes (then the blocks holding it are read and verified), or
        ``verify="off"``. None when the whole chunk must be loaded (``get``)."""
        reader = self.repo.reader
        if self.verify == "off":
            return reader.read_unverified(ref.id, offset, length)
        with self._lock:
            loc = self._verified.get(ref.id)
            loading = ref.id in self._loading
        if loc is not None:
            data = reader.load_range(loc, offset, length)
            if data is not None:
                return data
            with self._lock:  # its blob went (gc moved the chunk): verify it anew
                if self._verified.get(ref.id) == loc:
                    del self._verified[ref.id]
        if not by_block or loading or ref.length <= BLOCK_SIZE or 2 * length > ref.length:
            return None  # load it whole, or wait for that load; a one-block chunk
        digests = self._digests_of(ref.id)
        if digests is None:
            return None
        return reader.read_blocks(ref.id, offset, length, digests=digests)

    def _digests_of(self, cid: bytes) -> bytes | None:
        with self._lock:
            if cid in self._digests:
                self._digests.move_to_end(cid)
                return self._digests[cid]
        digests = self.repo.reader.block_digests(cid)
        with self._lock:
            self._keep_digests(cid, digests)
        return digests

    def _keep_digests(self, cid: bytes, digests: bytes | None) -> None:
        """Remember a chunk's block hashes (call under the lock)."""
        self._digests[cid] = digests
        self._digests.move_to_end(cid)
        if len(self._digests) > DIGESTS_MAX:
            self._digests.popitem(last=False)

    def want_blocks(self, refs) -> None:
        """Read the block hashes of ``refs`` (chunks of a file being read at random)
        in background, in one pass over the index, so that its reads find them in
        memory; returns at once."""
        if self._pool is None or self.verify == "off" or self.repo.reader.blocks is None:
            return
        with self._lock:
            ids = [r.id for r in refs if r.length > BLOCK_SIZE and r.id not in self._digests]
        if not ids:
            return
        try:
            job = self._pool.submit(self._digests_job, ids[:DIGESTS_MAX])
        except RuntimeError:  # closing
            return
        with self._lock:
            self._jobs.add(job)
        job.add_done_callback(self._job_done)

    def _digests_job(self, ids: list[bytes]) -> None:
        found = self.repo.reader.block_digests_of(ids)
        with self._lock:
            for cid, digests in found.items():
                if cid not in self._digests:
                    self._keep_digests(cid, digests)

    def prefetch(self, refs) -> None:
        """Start loading ``refs`` in background (or, when the reader fetches from a
        remote, fetching them all in one job); returns at once."""
        if self._pool is None:
            return
        if self.repo.reader.fetcher is not None:
            self._fetch_ahead(refs)
            return
        for ref in refs:
            with self._lock:
                if ref.id in self._data or ref.id in self._loading or \
                        ref.id in self._verified:  # read_range serves those
                    continue
                fut = self._loading[ref.id] = Future()
            try:
                self._pool.submit(self._load, ref.id, fut)
            except RuntimeError:  # closing: whoever waits loads it, or gets the error
                self._abandon(ref.id, fut)
                return

    def _fetch_ahead(self, refs) -> None:
        with self._lock:
            ids = [r.id for r in refs if r.id not in self._data and
                   r.id not in self._loading and r.id not in self._fetching]
            self._fetching.update(ids)
        if not ids:
            return
        try:
            job = self._pool.submit(self._fetch_job, ids)
        except RuntimeError:  # closing
            self._fetched(ids)
            return
        with self._lock:
            self._jobs.add(job)
        job.add_done_callback(self._job_done)

    def _fetch_job(self, ids: list[bytes]) -> None:
        try:
            self.repo.reader.fetch_ahead(ids)
        except VfsError as exc:  # the read that needs a chunk fetches it and says why
            log.debug("read-ahead of %d chunks failed: %s", len(ids), exc)
        finally:
            self._fetched(ids)

    def _fetched(self, ids: list[bytes]) -> None:
        with self._lock:
            self._fetching.difference_update(ids)

    def _job_done(self, job: Future) -> None:
        with self._lock:
            self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("read-ahead failed", exc_info=job.exception())

    def wait_idle(self) -> None:
        """Return once every read-ahead (and block hashing) started so far has
        finished."""
        with self._lock:
            jobs = list(self._jobs) + list(self._loading.values())
        wait(jobs)

    def _load(self, cid: bytes, fut: Future) -> None:
        try:
            data, loc = self.repo.reader.read_located(cid, own_thread=True)
        except BaseException as exc:
            with self._lock:
                del self._loading[cid]
            fut.set_exception(exc)
            return
        with self._lock:
            del self._loading[cid]
            self.loads += 1
            if cid not in self._data:
                self._data[cid] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)
            self._verified.pop(cid, None)  # re-insert as the newest
            self._verified[cid] = loc
            if len(self._verified) > self.max_verified:
                del self._verified[next(iter(self._verified))]
        fut.set_result(data)
        if self.learn and len(data) > BLOCK_SIZE:
            self._learn(cid, data)

    def _learn(self, cid: bytes, data: bytes) -> None:
        """Have one background thread record the block hashes of a chunk whose
        bytes just matched its id, if it has none (so the read that loaded it waits
        neither for the lookup nor for the hashing), unless that thread is behind."""
        with self._lock:
            if self._digests.get(cid) is not None:
                return
            if not self.learn or self._learning + len(data) > LEARN_BACKLOG:
                return
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, "vfs-blocks")
            self._learning += len(data)
        try:
            job = self._writer.submit(self._learn_job, cid, data)
        except RuntimeError:  # closing
            with self._lock:
                self._learning -= len(data)
            return
        with self._lock:
            self._jobs.add(job)
        job.add_done_callback(self._job_done)

    def _learn_job(self, cid: bytes, data: bytes) -> None:
        try:
            digests = None if self.repo.reader.blocks.get(cid) is not None else \
                block_hashes(data)
        except VfsError:  # e.g. a malformed entry: fsck reports it
            digests = None
        with self._lock:
            self._learning -= len(data)
            batch = None
            if digests is not None:
                self._learned[cid] = digests
                if cid in self._digests:
                    self._digests[cid] = digests
                if len(self._learned) >= LEARN_BATCH:
                    batch, self._learned = self._learned, {}
        if batch:
            self._write_learned(batch)

    def _write_learned(self, batch: dict[bytes, bytes]) -> None:
        if not self.learn:
            return
        try:
            self.repo.reader.blocks.put(batch)
        except VfsError as exc:  # e.g. an index this process may not write
            self.learn = False
            log.info("block hashes of %d chunks were not recorded (%s); later mounts "
                     "verify those chunks whole", len(batch), exc)

    def _abandon(self, cid: bytes, fut: Future) -> None:
        with self._lock:
            self._loading.pop(cid, None)
        fut.set_exception(RuntimeError("the chunk cache is closed"))

    def close(self) -> None:
        """Stop the read-ahead threads (loads they had not started fail) and write
        the block hashes learned and not yet written."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            pending = [(cid, f) for cid, f in self._loading.items() if not f.done()]
        for cid, fut in pending:
            self._abandon(cid, fut)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        with self._lock:
            batch, self._learned = self._learned, {}
        if batch:
            self._write_learned(batch)


class Content:
    """The chunks of an open file, where each starts, and its read-ahead window.

    ``read_ahead`` is called after each read (under the view's lock): ``window`` is
    the size in bytes of the last batch asked for, ``mark`` its first chunk and
    ``ahead`` the chunk after its last; ``next_offset`` is where reading got to,
    ``last_end`` where the last read ended."""

    __slots__ = ("size", "chunks", "starts", "opens", "next_offset", "window", "mark",
                 "ahead", "last_end", "digests_asked")

    def __init__(self, size: int, chunks: tuple[ChunkRef, ...]):
        self.size, self.chunks, self.opens, self.next_offset = size, chunks, 0, -1
        self.last_end = -1
        self.digests_asked = False  # the chunks' block hashes asked for (random reads)
        self.window = self.mark = self.ahead = 0
        self.starts, pos = [], 0
        for c in chunks:
            self.starts.append(pos)
            pos += c.length

    def streaming(self, offset: int) -> bool:
        """Whether a read at ``offset`` continues where the last one ended, or is
        the first read and starts the file (so its chunks are best loaded whole: the
        reads after it want the rest)."""
        if self.last_end < 0:
            return offset == 0
        return abs(offset - self.last_end) <= STREAM_SLACK

    def read_ahead(self, offset: int, end: int, nxt: int, cap: int) -> tuple[int, int] | None:
        """After a read of ``[offset, end)`` whose next chunk is ``nxt``: the chunks
        ``[start, stop)`` to load ahead now, or None.

        A sequential read that reached the last batch (or overtook it) asks for the
        next one, twice as many bytes as the last (the first: one chunk), at most
        ``cap`` bytes (and at least one chunk). A random access starts over, and so
        does a reader that went back by more than the last batch (a read only a
        little behind is one of the kernel's read-ahead requests arriving late). A
        first batch is asked for only by a read that ``streaming`` says continues
        the last one: a random reader whose next read happens to land a few MiB on
        loads nothing ahead (it reads by block)."""
        streaming = self.streaming(offset)
        self.last_end = end
        if abs(offset - self.next_offset) > SEQUENTIAL_SLACK:
            self.next_offset, self.window, self.mark, self.ahead = end, 0, nxt, nxt
            return None
        if offset + self.window < self.next_offset:  # went back: start over from here
            self.next_offset, self.window, self.mark, self.ahead = end, 0, nxt, nxt
        else:
            self.next_offset = max(self.next_offset, end)
            if nxt - 1 < self.mark and self.ahead > nxt:
                return None  # still short of the last batch
        if not self.window and not streaming:
            self.mark = self.ahead = nxt
            return None
        start, chunks = max(self.ahead, nxt), self.chunks
        if start >= len(chunks) or cap <= 0:
            return None
        self.window = min(2 * self.window if self.window else chunks[start].length, cap)
        stop, total = start, 0
        while stop < len(chunks) and total < self.window:
            total += chunks[stop].length
            stop += 1
        self.mark, self.ahead = start, stop
        return start, stop
