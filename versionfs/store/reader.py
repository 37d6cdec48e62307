"""The one read path for chunk bytes: locate, load, verify, re-locate.

Every reader of stored content goes through ``ChunkReader``: ``Repo.open``/``vfs
cat``, checkout's materialize, the mount's chunk cache, gc's pack rewrite, and later
the fsspec filesystem and remote transfers. Its rules, in one place:

* **locate** a chunk in the ``ChunkIndex`` (``MissingObject`` when the repository has
  no location for it);
* **load** its bytes from the ``BlobStore`` (which keeps a bounded cache of open fds);
* **verify** them against the chunk id (BLAKE3) unless the caller asked for an
  unverified range; damaged bytes are ``CorruptObject``, never returned;
* **re-locate** once when the blob is gone: ``vfs gc`` may have moved the chunk to a
  new pack between our lookup and our read (it moves locations first, in one
  transaction, and deletes the old pack after), so a second lookup that gives a
  different location is read instead. Only when the location did not change is the
  chunk missing.

A location that was verified once can be read by range later without hashing the
whole chunk again (blobs are immutable once in place): ``load_range`` does that and
answers None when the blob has gone meanwhile, so the caller verifies the chunk at
its new location. Thread-safety: any number of threads at once.
"""

from __future__ import annotations

from ..errors import CorruptObject, MissingObject
from ..records.hashing import hash_bytes, hasher
from ..records.model import ChunkLoc, ObjectId
from .interface import BlobStore, ChunkIndex


class ChunkReader:
    """Reads chunks by id from one store, verified unless asked otherwise."""

    def __init__(self, chunks: ChunkIndex, blobs: BlobStore):
        self.chunks = chunks
        self.blobs = blobs

    def locate(self, cid: bytes) -> ChunkLoc:
        loc = self.chunks.locate(cid)
        if loc is None:
            raise MissingObject(f"chunk {ObjectId(cid).short} is missing; run 'vfs fsck'",
                                object_id=cid)
        return loc

    def is_local(self, cid: bytes) -> bool:
        """Whether reading ``cid`` is a local read (False: a transfer, or absent)."""
        loc = self.chunks.locate(cid)
        return loc is not None and self.blobs.is_local(loc)

    def read(self, cid: bytes, *, own_thread: bool = False) -> bytes:
        """The whole chunk, verified; see ``read_located``."""
        return self.read_located(cid, own_thread=own_thread)[0]

    def read_located(self, cid: bytes, *, own_thread: bool = False) -> tuple[bytes, ChunkLoc]:
        """The whole chunk, verified, and the location it was read from.

        ``own_thread`` hashes on the calling thread alone: right for callers that
        already load chunks in parallel (BLAKE3's own pool, used from 1 MiB on,
        only adds hand-offs there)."""
        loc = self.locate(cid)
        try:
            return self.read_at(cid, loc, own_thread=own_thread), loc
        except MissingObject:
            again = self.locate(cid)
            if again == loc:
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
        """A range of a chunk, not checked (``--verify=off``); re-located like
        ``read_located`` when its blob is gone."""
        loc = self.locate(cid)
        try:
            return self.blobs.load(loc, offset, length)
        except MissingObject:
            again = self.locate(cid)
            if again == loc:
                raise
            return self.blobs.load(again, offset, length)

