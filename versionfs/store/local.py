"""The local store: a ``.vfs`` directory's blobs and its LMDB chunk index as one
``Store`` (see ``interface``).

``LocalStore`` is the blob files of ``blobs.ObjectStore`` (clones, packs, tmp/) plus
what the interface asks for: ``exists``/``locate`` answered by the index's ``chunks``
database (locally, every chunk that exists has a location), ``load`` through a small
cache of open fds (``blobs.BlobReader``), ``blobs`` listing with sizes, and
``leftovers`` of interrupted writes in tmp/. Operations that only make sense on a
local filesystem (cloning, FIEMAP comparison) stay on ``ObjectStore`` and are used by
the workspace side (ingest, materialize) alone.

Thread-safety: as ``ObjectStore`` and ``BlobReader``: any number of reader threads;
one writer (under the repository lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..records.model import BlobKind, ChunkLoc
from .blobs import BlobReader, ObjectStore, PackWriter
from .index import Index
from .interface import BlobInfo


class LocalStore(ObjectStore):
    """The blobs and chunk index of one local repository."""

    def __init__(self, vfs_dir: str, index: Index, *, max_fds: int = 128):
        super().__init__(vfs_dir)
        self.index = index
        self._reader = BlobReader(self, max_fds=max_fds)

    # -- ChunkIndex ---------------------------------------------------------
    def exists(self, cid: bytes) -> bool:
        with self.index.read() as txn:
            return txn.has("chunks", cid)

    def locate(self, cid: bytes) -> ChunkLoc | None:
        with self.index.read() as txn:
            return txn.chunk_loc(cid)

    @contextlib.contextmanager
    def chunk_view(self) -> Iterator[_TxnChunks]:
        with self.index.read() as txn:
            yield _TxnChunks(txn)

    # -- BlobStore ------------------------------------------------------------
    def load(self, loc: ChunkLoc, offset: int = 0, length: int | None = None) -> bytes:
        return self._reader.pread(loc, offset, length)

    def is_local(self, loc: ChunkLoc) -> bool:
        return True

    def blobs(self) -> Iterator[BlobInfo]:
        yield from self.blob_infos()

    def new_pack(self) -> PackWriter:
        return self.pack_writer()

    def remove(self, kind: BlobKind, blob: bytes) -> int:
        return self.remove_blob(kind, blob)

    # -- local only -------------------------------------------------------------
    def leftovers(self) -> Iterator[tuple[str, str]]:
        """``(name, path)`` of every entry in tmp/ (interrupted or running writes)."""
        try:
            names = sorted(os.listdir(self.tmp))
        except FileNotFoundError:
            return
        for name in names:
            yield name, os.path.join(self.tmp, name)

    def close(self) -> None:
        self._reader.close()


class _TxnChunks:
    """``exists``/``locate`` answered inside one read transaction."""

    __slots__ = ("_txn",)

    def __init__(self, txn):
        self._txn = txn

    def exists(self, cid: bytes) -> bool:
        return self._txn.has("chunks", cid)

    def locate(self, cid: bytes) -> ChunkLoc | None:
        return self._txn.chunk_loc(cid)
