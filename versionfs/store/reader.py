"""The one read path for chunk bytes: locate, load, verify, re-locate.

Every reader of stored content goes through ``ChunkReader``: ``Repo.open``/``vfs
cat``, checkout's materialize, the mount's chunk cache, gc's pack rewrite, and later
the fsspec filesystem and remote transfers. Its rules, in one place:

* **locate** a chunk in the ``ChunkIndex`` (``MissingObject`` when the repository has
  no location for it);
* **fetch** it first when it exists but is not here (a lazy store of a remote
  version, made with a ``Fetcher``): the fetcher brings it into a local cache, and
  the chunk is *pinned* from before its lookup until its bytes are loaded, so that
  cache does not evict it in between;
* **load** its bytes from the ``BlobStore`` (which keeps a bounded cache of open fds);
* **verify** them against the chunk id (BLAKE3) unless the caller asked for an
  unverified range; damaged bytes are ``CorruptObject``, never returned;
* or, for a range of a chunk that has **block hashes** (``blocks``: the 16-byte
  BLAKE3 of each 16 KiB block, recorded from bytes that matched the chunk id),
  ``read_blocks`` reads just the blocks holding the range and checks each against
  its hash: a 4 KiB read costs a 16 KiB read and hash instead of the whole ~1 MiB
  chunk. A block that does not match sends the read to the whole chunk: damaged
  bytes fail its id too (``CorruptObject``, as ever), and if the chunk matches its
  id the block hashes were what was wrong (logged; the range is served from the
  verified chunk and that entry is not used again by this reader);
* **re-locate** once when the blob is gone: ``vfs gc`` may have moved the chunk to a
  new pack between our lookup and our read (it moves locations first, in one
  transaction, and deletes the old pack after), so a second lookup that gives a
  different location is read instead; and a cache file that another process evicted
  meanwhile is fetched again. Only when the location did not change and nothing was
  fetched is the chunk missing.

A location that was verified once can be read by range later without hashing the
whole chunk again (blobs are immutable once in place): ``load_range`` does that and
answers None when the blob has gone meanwhile, so the caller verifies the chunk at
its new location. ``fetch_ahead`` brings many chunks here in one call (read-ahead:
the fetcher can then coalesce neighbours into one request). Thread-safety: any
number of threads at once.
"""

from __future__ import annotations

import contextlib
import logging

from ..errors import CorruptObject, MissingObject
from ..records.hashing import (
    BLOCK_DIGEST, BLOCK_SHIFT, BLOCK_SIZE, block_hash, hash_bytes, hasher,
)
from ..records.model import ChunkLoc, ObjectId
from .interface import BlobStore, BlockHashes, ChunkIndex, Fetcher

log = logging.getLogger(__name__)


class ChunkReader:
    """Reads chunks by id from one store, verified unless asked otherwise;
    with a ``fetcher``, chunks that exist but are not here are fetched first;
    with ``blocks``, ranges of chunks that have block hashes are verified by block."""

    def __init__(self, chunks: ChunkIndex, blobs: BlobStore,
                 fetcher: Fetcher | None = None, blocks: BlockHashes | None = None):
        self.chunks = chunks
        self.blobs = blobs
        self.fetcher = fetcher
        self.blocks = blocks
        self._wrong: set[bytes] = set()  # chunks whose block hashes proved wrong

    def locate(self, cid: bytes) -> ChunkLoc:
        """Where the chunk is here, fetched first if it exists only elsewhere."""
        return self._locate(cid)[0]

    def _locate(self, cid: bytes) -> tuple[ChunkLoc, bool]:
        """The location and whether it was fetched for this lookup."""
        loc = self.chunks.locate(cid)
        if loc is not None:
            return loc, False
        if self.fetcher is not None and self.chunks.exists(cid):
            self.fetcher.fetch([cid])
            loc = self.chunks.locate(cid)
            if loc is not None:
                return loc, True
            raise MissingObject(f"chunk {ObjectId(cid).short} was fetched but is not in "
                                "the chunk cache; check that the cache directory is "
                                "writable and has room", object_id=cid)
        raise MissingObject(f"chunk {ObjectId(cid).short} is missing; run 'vfs fsck'",
                            object_id=cid)

    def _pinned(self, cid: bytes):
        return self.fetcher.pin(cid) if self.fetcher is not None else \
            contextlib.nullcontext()

    def is_local(self, cid: bytes) -> bool:
        """Whether reading ``cid`` is a local read (False: a transfer, or absent)."""
        loc = self.chunks.locate(cid)
        return loc is not None and self.blobs.is_local(loc)

    def fetch_ahead(self, cids) -> None:
        """Bring here, in one call to the fetcher, those of ``cids`` that exist but
        are not here (read-ahead); a no-op without a fetcher. Errors as ``fetch``."""
        if self.fetcher is None:
            return
        chunks = self.chunks
        wanted = [c for c in cids if chunks.locate(c) is None and chunks.exists(c)]
        if wanted:
            self.fetcher.fetch(wanted)

    def read(self, cid: bytes, *, own_thread: bool = False) -> bytes:
        """The whole chunk, verified; see ``read_located``."""
        return self.read_located(cid, own_thread=own_thread)[0]

    def read_located(self, cid: bytes, *, own_thread: bool = False) -> tuple[bytes, ChunkLoc]:
        """The whole chunk, verified, and the location it was read from.

        ``own_thread`` hashes on the calling thread alone: right for callers that
        already load chunks in parallel (BLAKE3's own pool, used from 1 MiB on,
        only adds hand-offs there)."""
        with self._pinned(cid):
            loc, _ = self._locate(cid)
            try:
                return self.read_at(cid, loc, own_thread=own_thread), loc
            except MissingObject:
                again, fetched = self._locate(cid)
                if again == loc and not fetched:
                    raise
                return self.read_at(cid, again, own_thread=own_thread), again

    def read_at(self, cid: bytes, loc: ChunkLoc, *, own_thread: bool = False) -> bytes:
        """The whole chunk from exactly ``loc`` (no re-locating), verified."""
        data = self.blobs.load(loc)
        if own_thread:
            h = hasher()
            h.update(data)
            digest = h.digest()
        else:
            digest = hash_bytes(data)
        if digest != cid:
            raise CorruptObject(
                f"chunk {ObjectId(cid).short} in blob {loc.blob.short} is damaged "
                "(its bytes do not match its id); run 'vfs fsck --verify-data'",
                object_id=cid)
        return data

    def block_digests(self, cid: bytes) -> bytes | None:
        """The block hashes of chunk ``cid`` here, or None (none, or not trusted)."""
        if self.blocks is None or cid in self._wrong:
            return None
        try:
            return self.blocks.get(cid)
        except CorruptObject:  # a malformed entry: not a reason to fail the read
            self._distrust(cid, "are malformed")
            return None

    def block_digests_of(self, cids) -> dict[bytes, bytes | None]:
        """``block_digests`` of many chunks in one pass over the index; their
        locations are looked up in the same pass, so the index pages that reading
        them will need are in memory (a cold lookup costs a disk read)."""
        out: dict[bytes, bytes | None] = {}
        if self.blocks is None:
            return out
        with self.chunks.chunk_view() as view:
            for cid in cids:
                view.locate(cid)
        for cid, digests in self.blocks.get_many(cids).items():
            out[cid] = None if cid in self._wrong else digests
        return out

    def read_blocks(self, cid: bytes, offset: int, length: int, *,
                    strict: bool = False, digests: bytes | None = None):
        """``length`` bytes at ``offset`` in chunk ``cid`` (a bytes-like object),
        read with the blocks that hold them, each checked against its block hash
        (``digests``, the chunk's ``block_digests``, when the caller has them);
        None when the chunk has no block hashes here (read it whole instead).

        A block that does not match its hash: the whole chunk is read and verified
        (``CorruptObject`` when damaged, as ``read``) and the range served from it;
        ``strict`` raises ``CorruptObject`` at once instead (the caller found the
        whole chunk damaged already and wants the blocks that are intact).
        Fetched and re-located like ``read_located``."""
        if digests is None or cid in self._wrong:
            digests = self.block_digests(cid)
        if digests is None:
            return None
        first, last = offset >> BLOCK_SHIFT, (offset + length - 1) >> BLOCK_SHIFT
        start = first << BLOCK_SHIFT
        with self._pinned(cid):
            loc, _ = self._locate(cid)
            if len(digests) != ((loc.length + BLOCK_SIZE - 1) >> BLOCK_SHIFT) * BLOCK_DIGEST:
                self._distrust(cid, "do not fit its length")
                return None
            end = min((last + 1) << BLOCK_SHIFT, loc.length)
            try:
                data = self.blobs.load(loc, start, end - start)
            except MissingObject:
                again, fetched = self._locate(cid)
                if again == loc and not fetched:
                    raise
                loc = again
                data = self.blobs.load(loc, start, end - start)
        view = memoryview(data)
        for k in range(first, last + 1):
            at = (k - first) << BLOCK_SHIFT
            if block_hash(view[at: at + BLOCK_SIZE]) != \
                    digests[k * BLOCK_DIGEST: (k + 1) * BLOCK_DIGEST]:
                return self._block_mismatch(cid, loc, k, offset, length, strict)
        return view[offset - start: offset - start + length]

    def _block_mismatch(self, cid: bytes, loc: ChunkLoc, k: int, offset: int,
                        length: int, strict: bool):
        if strict:
            raise CorruptObject(
                f"block {k} (bytes {k << BLOCK_SHIFT}-{min((k + 1) << BLOCK_SHIFT, loc.length)}) "
                f"of chunk {ObjectId(cid).short} in blob {loc.blob.short} is damaged (its "
                "bytes do not match its block hash); run 'vfs fsck --verify-data'",
                object_id=cid)
        data = self.read(cid, own_thread=True)  # CorruptObject when the bytes are bad
        self._distrust(cid, "do not match its bytes, which match the chunk's id")
        return memoryview(data)[offset: offset + length]

    def _distrust(self, cid: bytes, why: str) -> None:
        log.warning("the block hashes of chunk %s %s; its reads verify the whole chunk "
                    "('vfs fsck --verify-data' reports such entries)", ObjectId(cid).short, why)
        self._wrong.add(cid)

    def load_range(self, loc: ChunkLoc, offset: int, length: int) -> bytes | None:
        """``length`` bytes at ``offset`` in the chunk at ``loc``, a location the
        caller verified before; None when that blob is gone (gc moved the chunk):
        the caller then reads the chunk again, verified, at its new location."""
        try:
            return self.blobs.load(loc, offset, length)
        except MissingObject:
            return None

    def read_unverified(self, cid: bytes, offset: int, length: int) -> bytes:
        """A range of a chunk, not checked (``--verify=off``); fetched and
        re-located like ``read_located``."""
        with self._pinned(cid):
            loc, _ = self._locate(cid)
            try:
                return self.blobs.load(loc, offset, length)
            except MissingObject:
                again, fetched = self._locate(cid)
                if again == loc and not fetched:
                    raise
                return self.blobs.load(again, offset, length)
