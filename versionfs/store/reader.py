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

from ..errors import CorruptObject, MissingObject
from ..records.hashing import hash_bytes, hasher
from ..records.model import ChunkLoc, ObjectId
from .interface import BlobStore, ChunkIndex, Fetcher


class ChunkReader:
    """Reads chunks by id from one store, verified unless asked otherwise;
    with a ``fetcher``, chunks that exist but are not here are fetched first."""

    def __init__(self, chunks: ChunkIndex, blobs: BlobStore,
                 fetcher: Fetcher | None = None):
        self.chunks = chunks
        self.blobs = blobs
        self.fetcher = fetcher

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
