"""A fake remote for the lazy read path: a dict of chunk bytes behind a ``Fetcher``
that counts its calls, and a lazy store built from a real ``ChunkDiskCache`` (exists:
the remote has it; locate/load: the disk cache). Shared by test_chunk_cache and
test_prefetch."""

from __future__ import annotations

import contextlib
import threading

from versionfs.errors import MissingObject
from versionfs.records.hashing import hash_bytes
from versionfs.records.model import ObjectId
from versionfs.remote.cache import ChunkDiskCache
from versionfs.store.reader import ChunkReader


def chunk(n: int, size: int = 1000) -> tuple[bytes, bytes]:
    """``(id, bytes)`` of a distinct test chunk."""
    data = (b"%08d" % n) * (size // 8) + b"x" * (size % 8)
    return hash_bytes(data), data


class DictFetcher:
    """Fetches from ``remote`` (chunk id -> bytes) into ``cache``; ``calls`` lists the
    ids asked for by each call, in order."""

    def __init__(self, cache: ChunkDiskCache, remote: dict[bytes, bytes]):
        self.cache, self.remote = cache, remote
        self.calls: list[list[bytes]] = []
        self._lock = threading.Lock()

    def fetch(self, cids: list[bytes]) -> None:
        with self._lock:
            self.calls.append(list(cids))
        for cid in cids:
            data = self.remote.get(cid)
            if data is None:
                raise MissingObject(f"chunk {ObjectId(cid).short} is not on the remote",
                                    object_id=cid)
            assert hash_bytes(data) == cid
            self.cache.put(cid, data)

    def pin(self, cid: bytes):
        return self.cache.pin(cid)


class LazyStore:
    """``ChunkIndex`` + ``BlobStore`` of a remote version: every chunk of ``remote``
    exists; those in the disk cache are here."""

    def __init__(self, cache: ChunkDiskCache, remote: dict[bytes, bytes]):
        self.cache, self.remote = cache, remote

    def exists(self, cid: bytes) -> bool:
        return cid in self.remote

    def locate(self, cid: bytes):
        return self.cache.locate(cid)

    def chunk_view(self):
        return contextlib.nullcontext(self)

    def load(self, loc, offset=0, length=None) -> bytes:
        return self.cache.load(loc, offset, length)

    def is_local(self, loc) -> bool:
        return True


def lazy_reader(cache: ChunkDiskCache, remote: dict[bytes, bytes],
                store: LazyStore | None = None) -> tuple[ChunkReader, DictFetcher]:
    store = store or LazyStore(cache, remote)
    fetcher = DictFetcher(cache, remote)
    return ChunkReader(store, store, fetcher), fetcher
