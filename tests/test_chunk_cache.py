"""The disk chunk cache (remote.cache) and fetch on miss in the one read path
(store.reader): bounds, pins, shared roots, crashes, and the reader's re-fetch rules."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from lazy_helpers import LazyStore, chunk, lazy_reader
from versionfs.errors import MissingObject, StorageFull
from versionfs.records.model import BlobKind, ChunkLoc
from versionfs.remote import cache as cache_mod
from versionfs.remote.cache import ChunkDiskCache
from versionfs.store.reader import ChunkReader


def make(tmp_path, max_bytes=1 << 20, **kw) -> ChunkDiskCache:
    kw.setdefault("min_free", 0)
    return ChunkDiskCache(str(tmp_path / "cache"), max_bytes, **kw)


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def cached_ids(cache: ChunkDiskCache) -> set[bytes]:
    out = set()
    for fan in os.listdir(os.path.join(cache.root, "chunks")):
        for rest in os.listdir(os.path.join(cache.root, "chunks", fan)):
            out.add(bytes.fromhex(fan + rest))
    return out


# -- the cache ----------------------------------------------------------------------------

def test_put_locate_load(tmp_path):
    cache = make(tmp_path)
    cid, data = chunk(1)
    assert cache.locate(cid) is None
    loc = cache.put(cid, data)
    assert loc == ChunkLoc(BlobKind.CACHE, cid, 0, len(data))
    assert cache.locate(cid) == loc
    assert cache.load(loc) == data
    assert cache.load(loc, 10, 5) == data[10:15]
    assert cached_ids(cache) == {cid}
    s = cache.stats()
    assert (s.bytes, s.entries, s.hits, s.misses, s.puts) == (len(data), 1, 1, 1, 1)


def test_least_recently_used_go_first_to_keep_the_byte_bound(tmp_path):
    cache = make(tmp_path, max_bytes=3000)
    (a, da), (b, db), (c, dc), (d, dd) = (chunk(i) for i in range(4))
    for cid, data in ((a, da), (b, db), (c, dc)):
        cache.put(cid, data)
    assert cache.locate(a) is not None  # a is now more recent than b
    cache.put(d, dd)
    assert cached_ids(cache) == {a, c, d}
    assert cache.locate(b) is None
    s = cache.stats()
    assert s.bytes == 3000 and s.entries == 3 and s.evicted == 1


def test_a_pinned_chunk_is_never_evicted(tmp_path):
    cache = make(tmp_path, max_bytes=2000)
    ids = [chunk(i) for i in range(6)]
    cache.put(*ids[0])
    with cache.pin(ids[0][0]):
        for cid, data in ids[1:]:
            cache.put(cid, data)
        assert ids[0][0] in cached_ids(cache)
        assert cache.stats().bytes == 2000
    cache.put(*chunk(10))  # unpinned: now the least recently used
    assert ids[0][0] not in cached_ids(cache)


def test_the_chunk_just_put_stays_even_when_larger_than_the_bound(tmp_path):
    cache = make(tmp_path, max_bytes=100)
    cid, data = chunk(1)
    cache.put(cid, data)
    assert cache.load(cache.locate(cid)) == data


def test_min_free_is_kept(tmp_path):
    disk = 6000  # a pretend filesystem of 6000 bytes holding only the cache

    def free(root):
        used = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root)
                   for f in fs)
        return disk - used

    cache = make(tmp_path, max_bytes=1 << 30, min_free=3500, free=free)
    ids = [chunk(i) for i in range(5)]
    for cid, data in ids:
        cache.put(cid, data)
    assert cached_ids(cache) == {ids[3][0], ids[4][0]}  # 4000 free, 2 chunks left
    assert free(cache.root) >= 3500


def test_two_caches_share_a_root(tmp_path):
    one = make(tmp_path, max_bytes=2000)
    a, da = chunk(1)
    one.put(a, da)
    two = make(tmp_path, max_bytes=2000)  # another process: learns the root by scanning
    assert two.stats().entries == 1
    assert two.load(two.locate(a)) == da
    b, db = chunk(2)
    one.put(b, db)
    assert two.locate(b) is not None  # put by the other one after the scan
    loc = one.locate(a)
    two.put(*chunk(3))  # two evicts its least recently used: a
    assert a not in cached_ids(one)
    assert one.locate(a) is None
    with pytest.raises(MissingObject, match="left the chunk cache"):
        one.load(loc)


def test_an_open_file_keeps_reading_after_another_cache_evicts_it(tmp_path):
    one, two = make(tmp_path), make(tmp_path, max_bytes=1000)
    a, da = chunk(1)
    loc = one.put(a, da)
    assert one.load(loc, 0, 10) == da[:10]  # its fd is now open in one
    two.rescan()
    two.put(*chunk(2))  # evicts a
    assert a not in cached_ids(one)
    assert one.load(loc) == da


def test_threads_putting_and_reading_the_same_chunks(tmp_path):
    cache = make(tmp_path, max_bytes=3000)
    chunks = [chunk(i) for i in range(5)]
    barrier = threading.Barrier(8)
    errors = []

    def work(k):
        barrier.wait()
        try:
            for n in range(60):
                cid, data = chunks[(k + n) % len(chunks)]
                with cache.pin(cid):
                    if cache.locate(cid) is None:
                        cache.put(cid, data)
                    assert cache.load(cache.locate(cid)) == data
        except BaseException as exc:  # reported below, with its thread
            errors.append((k, exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.listdir(os.path.join(cache.root, "tmp")) == []
    assert cache.stats().bytes == 1000 * len(cached_ids(cache))


def test_leftovers_of_dead_processes_are_removed_at_start(tmp_path):
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    cid, data = chunk(1)
    dead = tmp / f"{dead_pid()}-0123456789abcdef"
    dead.write_bytes(data[:300])  # a torn write of chunk cid
    alive = tmp / f"{os.getppid()}-fedcba9876543210"
    alive.write_bytes(b"being written")
    odd = tmp / "not-a-pid"
    odd.write_bytes(b"?")
    cache = make(tmp_path)
    assert sorted(os.listdir(tmp)) == [alive.name]
    assert cache.locate(cid) is None


def test_a_torn_write_is_never_served(tmp_path, monkeypatch):
    cache = make(tmp_path)
    cid, data = chunk(1)
    real_write = os.write

    def half_then_full(fd, buf):
        real_write(fd, bytes(buf[: len(buf) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "write", half_then_full)
    with pytest.raises(StorageFull, match="writing a chunk into the chunk cache"):
        cache.put(cid, data)
    monkeypatch.undo()
    assert cache.locate(cid) is None
    assert os.listdir(os.path.join(cache.root, "tmp")) == []
    reader, fetcher = lazy_reader(cache, {cid: data})
    assert reader.read(cid) == data
    assert fetcher.calls == [[cid]]


# -- fetch on miss in the read path -----------------------------------------------------

def test_the_reader_fetches_on_miss_once(tmp_path):
    cache = make(tmp_path)
    (a, da), (b, db) = chunk(1), chunk(2)
    reader, fetcher = lazy_reader(cache, {a: da, b: db})
    assert reader.read(a) == da
    assert reader.read(a) == da
    assert reader.read_unverified(b, 5, 10) == db[5:15]
    assert fetcher.calls == [[a], [b]]


def test_a_chunk_evicted_between_locate_and_load_is_fetched_again(tmp_path):
    cache = make(tmp_path)
    a, da = chunk(1)

    class EvictedAfterLookup(LazyStore):
        """Another process evicts the file right after each of the first lookups."""
        evictions = 1

        def locate(self, cid):
            loc = super().locate(cid)
            if loc is not None and self.evictions:
                self.evictions -= 1
                os.unlink(cache.blob_path(BlobKind.CACHE, cid))
            return loc

    b, db = chunk(2)
    remote = {a: da, b: db}
    reader, fetcher = lazy_reader(cache, remote, EvictedAfterLookup(cache, remote))
    cache.put(a, da)
    assert reader.read(a) == da
    assert fetcher.calls == [[a]]
    EvictedAfterLookup.evictions = 2  # evicted again after the re-fetch: given up
    reader2, _ = lazy_reader(cache, remote, EvictedAfterLookup(cache, remote))
    cache.put(b, db)
    with pytest.raises(MissingObject, match="left the chunk cache"):
        reader2.read(b)


def test_a_damaged_cache_file_is_fetched_again(tmp_path):
    cache = make(tmp_path)
    a, da = chunk(1)
    reader, fetcher = lazy_reader(cache, {a: da})
    cache.put(a, da)
    path = cache.blob_path(BlobKind.CACHE, a)
    os.chmod(path, 0o644)
    os.truncate(path, 100)  # as a power loss without fsync may leave it
    assert reader.read(a) == da
    assert fetcher.calls == [[a]]


def test_a_chunk_that_does_not_exist_is_missing(tmp_path):
    cache = make(tmp_path)
    a, da = chunk(1)
    reader, fetcher = lazy_reader(cache, {a: da})
    nowhere, _ = chunk(99)
    with pytest.raises(MissingObject, match="is missing; run 'vfs fsck'"):
        reader.read(nowhere)
    assert fetcher.calls == []
    listed = LazyStore(cache, {a: da})  # the remote's index lists it, its packs do not
    reader2, _ = lazy_reader(cache, {}, listed)
    with pytest.raises(MissingObject, match="is not on the remote"):
        reader2.read(a)


def test_fetch_ahead_asks_once_for_what_is_not_here(tmp_path):
    cache = make(tmp_path)
    chunks = dict(chunk(i) for i in range(4))
    ids = list(chunks)
    reader, fetcher = lazy_reader(cache, chunks)
    cache.put(ids[1], chunks[ids[1]])
    nowhere, _ = chunk(99)
    reader.fetch_ahead(ids + [nowhere])
    assert fetcher.calls == [[ids[0], ids[2], ids[3]]]
    reader.fetch_ahead(ids)
    assert len(fetcher.calls) == 1


def test_without_a_fetcher_nothing_is_fetched(tmp_path):
    cache = make(tmp_path)
    a, da = chunk(1)
    store = LazyStore(cache, {a: da})
    reader = ChunkReader(store, store)
    reader.fetch_ahead([a])
    with pytest.raises(MissingObject, match="is missing"):
        reader.read(a)
