"""What a store offers the layers above it: two narrow interfaces and one record.

A repository's chunk bytes are reached through two facts kept apart:

* ``ChunkIndex`` — which chunks *exist* (``exists``), and where the bytes of one are
  *here*, if they are (``locate``: a ``ChunkLoc`` or None). For the local store the
  two coincide (every chunk it knows has a local location); a lazy cache of a remote
  repository knows every chunk the remote's index lists and has locations only for
  those it has fetched, so dedup can trust ``exists`` while reads need ``locate``.
* ``BlobStore`` — blobs of chunk bytes: ``load`` a range of one, ``is_local`` (whether
  a load is a local, cheap read or a transfer), list them with their sizes, start a
  new pack (``new_pack``: a ``PackSink``), remove one.

A third, optional interface serves a store whose chunks may exist without being
here: a ``Fetcher`` brings chunks here (``fetch``: afterwards ``locate`` answers for
them) and ``pin``s one while it is read, so the cache it went to does not evict it.
A fourth, ``BlockHashes``, holds the 16-byte hashes of each 16 KiB block of chunks
(``blocks.BlockTable`` over an index), so a read can verify one block, not a chunk.

``reader.ChunkReader`` is the one read path on top of them (locate, fetch when a
chunk exists but is not here, load, verify, re-locate after gc moved a chunk); the
verbs, the mount and the Python API read through it. ``local.LocalStore`` implements
both interfaces for a ``.vfs`` directory.

In the spirit of restic's ``internal/restic`` interfaces: the verbs depend on what
a store does, not on LMDB or on files. Thread-safety: implementations say theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..records.model import BlobKind, ChunkLoc, ObjectId


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One stored blob: its kind and id, its size in bytes and the disk space it
    takes (``allocated``; for a remote blob the same as ``size``)."""

    kind: BlobKind
    id: ObjectId
    size: int
    allocated: int


class ChunkIndex(Protocol):
    """Which chunks exist, and where the bytes of each are locally."""

    def exists(self, cid: bytes) -> bool:
        """Whether the repository has chunk ``cid`` (its bytes may be elsewhere)."""

    def locate(self, cid: bytes) -> ChunkLoc | None:
        """Where the chunk's bytes are here, or None when they are not."""

    def chunk_view(self) -> AbstractContextManager[ChunkIndex]:
        """A consistent picture for many lookups in a row (a scan's dedup): the
        same two questions, answered from one snapshot of the index."""


class PackSink(Protocol):
    """Appends chunks to new packs; nothing is visible before ``finish``."""

    bytes_written: int

    def add(self, data) -> ChunkLoc:
        """Append one chunk; returns where it will be once finished."""

    def finish(self) -> list[ObjectId]:
        """Make every pack durable and visible; returns their ids."""

    def abort(self) -> None:
        """Drop everything not yet finished."""


class BlobStore(Protocol):
    """Blobs of chunk bytes: load ranges, list, write new packs, remove."""

    def load(self, loc: ChunkLoc, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of the chunk at ``loc`` (or a range inside it), unverified.

        ``MissingObject`` when the blob is gone, ``CorruptObject`` when it is
        shorter than the location says."""

    def is_local(self, loc: ChunkLoc) -> bool:
        """Whether loading from ``loc`` is a local read (no transfer)."""

    def blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob."""

    def new_pack(self) -> PackSink:
        """A writer of new packs."""

    def remove(self, kind: BlobKind, blob: bytes) -> int:
        """Delete a blob; returns the space it took (0 when it was absent)."""


class Fetcher(Protocol):
    """Brings chunks that exist elsewhere (a remote) here, where ``locate`` finds them.

    ``fetch`` may be called from several threads at once, also for the same chunk
    (a read and a read-ahead meeting): an implementation should transfer each chunk
    once and let the second caller wait for it.
    """

    def fetch(self, cids: list[bytes]) -> None:
        """Bring every chunk of ``cids`` here (as few requests as it can: neighbours
        in one range); returns when all are here. A ``VfsError`` when it cannot
        (``MissingObject`` for a chunk the remote does not have)."""

    def pin(self, cid: bytes) -> AbstractContextManager[None]:
        """While held, chunk ``cid`` (here, or about to be fetched) is not evicted."""


class BlockHashes(Protocol):
    """Block digests by chunk id (``records.hashing.block_hashes``; see ``blocks``)."""

    def get(self, cid: bytes) -> bytes | None:
        """The chunk's block digests, or None when none are known here."""

    def get_many(self, cids) -> dict[bytes, bytes | None]:
        """``get`` of each of ``cids`` at once."""

    def put(self, items) -> None:
        """Record ``{chunk id: digests}``, each computed from bytes that matched
        the chunk id; entries already there are kept."""


class Store(ChunkIndex, BlobStore, Protocol):
    """Both halves, as one repository's storage offers them."""
