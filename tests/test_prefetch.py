"""The read-ahead window of the view: it starts at one chunk, doubles while a reader
goes on sequentially, is capped, and starts over on a random access; with a fetcher
every batch is one fetch_ahead call. A real repository whose reader is replaced by
one over a disk chunk cache and a dict-backed fake remote (no FUSE)."""

from __future__ import annotations

import pytest

from lazy_helpers import lazy_reader
from repo_helpers import snap, write
from versionfs.records.chunking import ChunkParams
from versionfs.records.model import ChunkRef, ObjectId
from versionfs.remote.cache import ChunkDiskCache
from versionfs.repo.repository import Repo
from versionfs.view import ROOT_INO, View
from versionfs.view.chunks import SEQUENTIAL_SLACK, Content

CHUNK = 64 << 10
FIXED = ChunkParams(threshold=1 << 20, min_size=CHUNK, avg_size=CHUNK, max_size=CHUNK)
NCHUNKS = 2 * SEQUENTIAL_SLACK // CHUNK + 64  # room for a jump counted as random


@pytest.fixture
def lazy(tmp_path):
    """``(view factory, fetcher, the file's chunk ids, its bytes)``: a real repository
    with one file of NCHUNKS fixed 64 KiB chunks, read through a lazy reader."""
    ws = tmp_path / "ws"
    ws.mkdir()
    repo = Repo.init(str(ws), params=FIXED)
    data = b"".join(b"%07d\n" % k * (CHUNK // 8) for k in range(NCHUNKS))
    write(ws, "big.bin", data)
    cid = snap(repo, "one big file")
    ids = [bytes(r.id) for r in repo.chunks(repo.entry(cid, "big.bin"))]
    assert len(ids) == NCHUNKS
    remote = {i: repo.reader.read(i) for i in ids}
    cache = ChunkDiskCache(str(tmp_path / "cache"), 1 << 30, min_free=0)
    repo.reader, fetcher = lazy_reader(cache, remote)
    views = []

    def make(**kw):
        views.append(View(repo, "HEAD", **kw))
        return views[-1]

    try:
        yield make, fetcher, ids, data
    finally:
        for v in views:
            v.close()
        cache.close()
        repo.close()


def read_chunks(view, fh, first, count, data):
    """Read chunks ``first..first+count-1`` one read each, letting every read-ahead
    finish before the next read (so what is fetched where does not depend on timing)."""
    for k in range(first, first + count):
        got = view.read(fh, k * CHUNK, CHUNK)
        assert bytes(got) == data[k * CHUNK: (k + 1) * CHUNK]
        view.chunks.wait_idle()


def test_sequential_reads_fetch_growing_windows_then_a_random_access_resets(lazy):
    make, fetcher, ids, data = lazy
    view = make(prefetch_bytes=8 * CHUNK)
    fh = view.open(view.lookup(ROOT_INO, b"big.bin").ino)
    read_chunks(view, fh, 0, 40, data)
    # the read of chunk 0 fetches it; then batches of 1, 2, 4, 8, 8, ... chunks ahead
    assert fetcher.calls[0] == [ids[0]]
    sizes = [len(c) for c in fetcher.calls[1:]]
    assert sizes == [1, 2, 4, 8, 8, 8, 8, 8]
    assert sum(fetcher.calls, []) == ids[:48]  # each chunk asked for once, in order
    fetcher.calls.clear()
    far = NCHUNKS - 40  # more than SEQUENTIAL_SLACK past the last read: random
    read_chunks(view, fh, far, 5, data)
    assert fetcher.calls == [[ids[far]], [ids[far + 1]], [ids[far + 2]],
                             ids[far + 3: far + 5], ids[far + 5: far + 9]]


def test_the_default_window_with_a_fetcher_is_64_mib_and_off_still_fetches_ahead(lazy):
    make, fetcher, ids, data = lazy
    assert make().prefetch_bytes == 64 << 20
    view = make(verify="off", prefetch_bytes=4 * CHUNK)
    fh = view.open(view.lookup(ROOT_INO, b"big.bin").ino)
    read_chunks(view, fh, 0, 8, data)
    assert [len(c) for c in fetcher.calls] == [1, 1, 2, 4, 4]


def test_without_a_fetcher_the_window_is_two_average_chunks(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    repo = Repo.init(str(ws), params=FIXED)
    write(ws, "a.txt", "a")
    snap(repo)
    try:
        assert View(repo, "HEAD").prefetch_bytes == 2 << 20
        assert View(repo, "HEAD", verify="off").prefetch_bytes == 0
    finally:
        repo.close()


def _content(n: int, length: int = 100) -> Content:
    return Content(n * length, tuple(ChunkRef(ObjectId(bytes([k]) * 32), length)
                                     for k in range(n)))


def test_window_unit_doubles_caps_and_resets():
    c = _content(100)
    got = [c.read_ahead(k * 100, (k + 1) * 100, k + 1, 400) for k in range(12)]
    assert got == [(1, 2), (2, 4), (4, 8), None, (8, 12), None, None, None,
                   (12, 16), None, None, None]
    far = 90 * 100 + SEQUENTIAL_SLACK
    assert c.read_ahead(far, far + 100, 91, 400) is None  # random: no read-ahead yet
    assert c.read_ahead(far + 100, far + 200, 92, 400) == (92, 93)  # starting over
    assert c.read_ahead(far + 200, far + 300, 93, 400) == (93, 95)


def test_window_unit_a_reader_going_back_starts_over():
    c = _content(100)
    for k in range(9):
        c.read_ahead(k * 100, (k + 1) * 100, k + 1, 400)
    assert (c.window, c.mark, c.ahead) == (400, 12, 16)
    assert c.read_ahead(700, 800, 8, 400) is None  # a late read just behind: no change
    assert c.read_ahead(200, 300, 3, 400) == (3, 4)  # went back (within the slack)
    assert c.read_ahead(300, 400, 4, 400) == (4, 6)


def test_window_unit_small_reads_and_the_end_of_the_file():
    c = _content(6)
    # four reads inside chunk 0 ask for chunk 1 once
    got = [c.read_ahead(k * 25, (k + 1) * 25, 1, 1000) for k in range(4)]
    assert got == [(1, 2), None, None, None]
    assert c.read_ahead(100, 200, 2, 1000) == (2, 4)
    assert c.read_ahead(200, 300, 3, 1000) == (4, 6)
    assert c.read_ahead(400, 500, 5, 1000) is None  # nothing left to ask for
    assert c.read_ahead(500, 600, 6, 1000) is None
    assert _content(3).read_ahead(0, 100, 1, 0) is None  # no read-ahead at all
