"""Verified chunk bytes for reads: a bounded cache, one load per chunk, read-ahead.

Thread-safety: ``ChunkCache`` may be used by any number of threads at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from ..model import ChunkRef
from ..repo import Repo


class ChunkCache:
    """Verified chunks by id, bounded by bytes; loads each chunk once however many
    readers want it at the same moment, and can load chunks ahead in background."""

    def __init__(self, repo: Repo, max_bytes: int = 64 << 20, workers: int = 2):
        self.repo = repo
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._loading: dict[bytes, Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, "vfs-prefetch") if workers else None
        self.loads = 0

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

    def prefetch(self, refs) -> None:
        """Start loading ``refs`` in background; returns at once."""
        if self._pool is None:
            return
        for ref in refs:
            with self._lock:
                if ref.id in self._data or ref.id in self._loading:
                    continue
                fut = self._loading[ref.id] = Future()
            try:
                self._pool.submit(self._load, ref.id, fut)
            except RuntimeError:  # closing: whoever waits loads it, or gets the error
                self._abandon(ref.id, fut)
                return

    def _load(self, cid: bytes, fut: Future) -> None:
        try:
            data = self.repo.blobs.read_verified(cid, self.repo.chunk_loc(cid))
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
        fut.set_result(data)

    def _abandon(self, cid: bytes, fut: Future) -> None:
        with self._lock:
            self._loading.pop(cid, None)
        fut.set_exception(RuntimeError("the chunk cache is closed"))

    def close(self) -> None:
        """Stop the read-ahead threads; loads they had not started fail."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            pending = [(cid, f) for cid, f in self._loading.items() if not f.done()]
        for cid, fut in pending:
            self._abandon(cid, fut)


class Content:
    """The chunks of an open file and where each starts."""

    __slots__ = ("size", "chunks", "starts", "opens", "next_offset")

    def __init__(self, size: int, chunks: tuple[ChunkRef, ...]):
        self.size, self.chunks, self.opens, self.next_offset = size, chunks, 0, -1
        self.starts, pos = [], 0
        for c in chunks:
            self.starts.append(pos)
            pos += c.length
