"""Block hashes: recorded when chunks are stored, used to verify 16 KiB of a chunk.

Real repositories on ext4 (chunks in packs) and XFS (whole-file clone objects); the
view called directly. Damage is a flipped byte in a blob; an "old" repository is one
whose block hash entries were deleted (or whose ``blocks`` database never existed).
Reads through a real mount are in test_mount_blocks.py.
"""

from __future__ import annotations

import logging
import os
import random

import lmdb
import pytest

from repo_helpers import drop_block_hashes, flip_byte
from versionfs.errors import CorruptObject
from versionfs.ops.fsck import fsck
from versionfs.ops.gc import gc
from versionfs.ops.snapshot import snapshot
from versionfs.records.hashing import BLOCK_SIZE, block_hash, block_hashes, hash_bytes
from versionfs.records.model import BlobKind
from versionfs.repo.repository import Repo
from versionfs.store import blocks
from versionfs.store.index import Index
from versionfs.view import ROOT_INO, View
from versionfs.view.chunks import STREAM_SLACK

BIG = 9_000_000     # chunked: ~9 chunks of ~1 MiB
MEDIUM = 300_001    # one chunk of 19 blocks, the last one short
TINY = 10_000       # one chunk of one block: no entry


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def ws(storage):
    root = storage / "ws"
    root.mkdir()
    files = {"big.bin": _data(1, BIG), "medium.bin": _data(2, MEDIUM),
             "tiny.bin": _data(3, TINY)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    repo = Repo.init(str(root))
    snapshot(repo, message="one")
    yield repo, files
    repo.close()


def _refs(repo, name):
    return repo.chunks(repo.entry(repo.resolve("HEAD"), name))


def _open(view, name):
    ino = view.lookup(ROOT_INO, name.encode()).ino
    return view.open(ino)


def _entries(repo) -> dict[bytes, bytes]:
    with repo.index.read() as txn:
        return dict(txn.items(blocks.DB))


def _flip(repo, cid: bytes, offset: int) -> None:
    """Damage one byte of chunk ``cid``, ``offset`` bytes into it, in its blob."""
    loc = repo.chunk_loc(cid)
    flip_byte(repo.store.blob_path(loc.blob_kind, loc.blob), loc.offset + offset)


def _random_reads(view, fh, want: bytes, n: int, seed: int, size: int = 4096):
    """``n`` reads at random offsets, none continuing the one before (a sequential
    reader is served whole chunks) unless the file is small, answered as the mount
    asks: without loading a whole chunk first, then with."""
    rnd = random.Random(seed)
    end = -1
    for _ in range(n):
        off = rnd.randrange(len(want))
        while abs(off - end) <= STREAM_SLACK and len(want) > 4 * STREAM_SLACK:
            off = rnd.randrange(len(want))
        got = view.read(fh, off, size, load=False, pread=True)
        if got is None:
            got = view.read(fh, off, size)
        assert bytes(got) == want[off: off + size], off
        end = off + size


# -- recording -------------------------------------------------------------------------


def test_block_hashes_are_blake3_of_each_16k_piece():
    data = _data(4, 3 * BLOCK_SIZE + 5)
    got = block_hashes(data)
    assert len(got) == 4 * 16
    pieces = [data[i: i + BLOCK_SIZE] for i in range(0, len(data), BLOCK_SIZE)]
    assert got == b"".join(hash_bytes(p)[:16] for p in pieces)  # b3sum agrees
    assert block_hash(pieces[3]) == got[48:]
    assert block_hashes(data[:BLOCK_SIZE]) == b""  # one block: the chunk id checks it


def test_the_stored_value_round_trips_and_is_checked():
    digests = block_hashes(_data(5, 40_000))
    raw = blocks.encode(digests)
    assert raw[0] == 14 and blocks.decode(raw) == digests
    assert blocks.problem(raw, 40_000) is None
    assert "has 3 block hashes for a chunk of 4 blocks" in blocks.problem(raw, 50_000)
    assert blocks.decode(bytes([15]) + digests) is None  # another block size: absent
    with pytest.raises(CorruptObject, match="malformed"):
        blocks.decode(raw[:-3])
    assert "is malformed" in blocks.problem(raw[:20], 40_000)


def test_a_snapshot_records_the_block_hashes_of_every_stored_chunk(ws):
    repo, files = ws
    entries = _entries(repo)
    for name in ("big.bin", "medium.bin"):
        pos = 0
        for ref in _refs(repo, name):
            piece = files[name][pos: pos + ref.length]
            assert blocks.decode(entries[bytes(ref.id)]) == block_hashes(piece)
            pos += ref.length
    tiny = _refs(repo, "tiny.bin")[0]
    assert bytes(tiny.id) not in entries
    assert len(entries) == len(_refs(repo, "big.bin")) + 1


def test_a_chunk_already_stored_is_not_hashed_again(ws):
    repo, files = ws
    root = repo.workspace
    with open(os.path.join(root, "copy.bin"), "wb") as f:
        f.write(files["big.bin"])
    before = _entries(repo)
    snapshot(repo, message="copy")
    assert _entries(repo) == before


# -- reading ---------------------------------------------------------------------------


def test_random_reads_check_blocks_and_load_no_chunk(ws):
    repo, files = ws
    view = View(repo, "HEAD", prefetch_workers=0)
    try:
        _random_reads(view, _open(view, "big.bin"), files["big.bin"], 150, seed=1)
        assert view.chunks.loads == 0  # every read was checked by block
        fh = _open(view, "medium.bin")
        for off in (100, 200_000, 17, 299_000):  # far apart, not at 0: by block
            assert bytes(view.read(fh, off, 1000)) == files["medium.bin"][off: off + 1000]
        assert view.chunks.loads == 0
        for name in ("medium.bin", "tiny.bin"):
            _random_reads(view, _open(view, name), files[name], 50, seed=len(name))
        # reads spanning blocks and chunks, of odd sizes
        fh = _open(view, "big.bin")
        refs = _refs(repo, "big.bin")
        edge = refs[0].length
        for off, size in ((BLOCK_SIZE - 1, 2), (edge - 100, 300), (5, 3 * BLOCK_SIZE),
                          (BIG - 7, 4096), (BIG - BLOCK_SIZE - 1, BLOCK_SIZE + 1)):
            assert bytes(view.read(fh, off, size)) == files["big.bin"][off: off + size]
    finally:
        view.close()


def test_a_sequential_reader_loads_whole_chunks(ws):
    repo, files = ws
    view = View(repo, "HEAD", prefetch_workers=0)
    try:
        fh = _open(view, "big.bin")
        got = bytearray()
        while len(got) < BIG:
            got += view.read(fh, len(got), 128 << 10)
        assert bytes(got) == files["big.bin"]
        assert view.chunks.loads == len(_refs(repo, "big.bin"))  # each hashed once
    finally:
        view.close()


def test_chunks_without_block_hashes_read_whole_and_learn_them(ws):
    repo, files = ws
    want = _entries(repo)
    assert drop_block_hashes(repo) == len(want)
    view = View(repo, "HEAD", prefetch_workers=0)
    refs = _refs(repo, "big.bin")
    try:
        fh = _open(view, "big.bin")
        pos = 0
        for ref in refs:  # one small read in the middle of each chunk
            mid = pos + ref.length // 2
            assert bytes(view.read(fh, mid, 100)) == files["big.bin"][mid: mid + 100]
            view.chunks.wait_idle()  # a chunk is skipped while the hashing is behind
            pos += ref.length
        assert view.chunks.loads == len(refs)
    finally:
        view.close()  # writes what it learned
    learned = _entries(repo)
    assert learned == {k: v for k, v in want.items()
                       if k in {bytes(r.id) for r in _refs(repo, "big.bin")}}
    again = View(repo, "HEAD", prefetch_workers=0)
    try:
        _random_reads(again, _open(again, "big.bin"), files["big.bin"], 100, seed=2)
        assert again.chunks.loads == 0
    finally:
        again.close()


def test_a_view_that_may_not_learn_writes_nothing(ws):
    repo, files = ws
    drop_block_hashes(repo)
    view = View(repo, "HEAD", prefetch_workers=0)
    view.chunks.learn = False
    try:
        _random_reads(view, _open(view, "medium.bin"), files["medium.bin"], 20, seed=3)
    finally:
        view.close()
    assert _entries(repo) == {}


def test_an_old_index_without_the_blocks_database_still_reads(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    data = _data(6, BIG)
    (root / "big.bin").write_bytes(data)
    repo = Repo.init(str(root))
    snapshot(repo, message="one")
    repo.close()
    path = str(root / ".vfs" / "index.lmdb")
    env = lmdb.open(path, max_dbs=20)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"blocks", txn=txn), delete=True)
    env.close()
    ro = Index(path, readonly=True)  # as an older versionfs left it: no such db
    try:
        with ro.read() as txn:
            assert txn.get("blocks", b"x" * 32) is None
            assert list(txn.items("blocks")) == []
            assert txn.count("chunks") > 1
    finally:
        ro.close()
    repo = Repo.open_repo(str(root))
    try:
        view = View(repo, "HEAD", prefetch_workers=0)
        _random_reads(view, _open(view, "big.bin"), data, 50, seed=4)
        view.close()
        assert len(_entries(repo)) == len(_refs(repo, "big.bin"))
    finally:
        repo.close()


# -- damage ----------------------------------------------------------------------------


def test_a_damaged_block_fails_alone(ws):
    repo, files = ws
    want = files["big.bin"]
    refs = _refs(repo, "big.bin")
    start = refs[0].length
    _flip(repo, refs[1].id, 2 * BLOCK_SIZE + 100)   # block 2 of chunk 1
    bad = start + 2 * BLOCK_SIZE
    for learn in (True, False):
        view = View(repo, "HEAD", prefetch_workers=0)
        view.chunks.learn = learn
        try:
            fh = _open(view, "big.bin")
            # a random read touching the damaged block: refused, whole or in part
            for off, size in ((bad, 4096), (bad - 10, 20), (bad + BLOCK_SIZE - 1, 1)):
                with pytest.raises(CorruptObject, match="is damaged"):
                    view.read(fh, off, size)
            # the other blocks of that chunk, and its neighbours, still read
            for off in (start, start + BLOCK_SIZE, bad + BLOCK_SIZE, start - 4096):
                assert bytes(view.read(fh, off, 4096)) == want[off: off + 4096]
            # a sequential reader (whole chunk loads) gets every intact block too
            pos = start - (256 << 10)
            while pos + 4096 <= bad:
                assert bytes(view.read(fh, pos, 4096)) == want[pos: pos + 4096]
                pos += 4096
            with pytest.raises(CorruptObject):
                view.read(fh, pos, 4096)
            with pytest.raises(CorruptObject):  # a large read spanning it
                view.read(fh, start, refs[1].length)
            assert bytes(view.read(fh, bad + BLOCK_SIZE, 8192)) == \
                want[bad + BLOCK_SIZE: bad + BLOCK_SIZE + 8192]
        finally:
            view.close()


def test_damage_in_the_short_last_block_is_found(ws):
    repo, files = ws
    ref = _refs(repo, "medium.bin")[0]
    _flip(repo, ref.id, MEDIUM - 1)
    view = View(repo, "HEAD", prefetch_workers=0)
    try:
        fh = _open(view, "medium.bin")
        with pytest.raises(CorruptObject):
            view.read(fh, MEDIUM - 10, 4096)
        assert bytes(view.read(fh, 0, 4096)) == files["medium.bin"][:4096]
    finally:
        view.close()


def test_wrong_block_hashes_never_refuse_good_bytes(ws, caplog):
    repo, files = ws
    ref = _refs(repo, "big.bin")[3]
    with repo.index.write() as txn:
        raw = bytearray(txn.get(blocks.DB, bytes(ref.id)))
        raw[1 + 16 * 5] ^= 1  # block 5's hash
        txn.put(blocks.DB, bytes(ref.id), bytes(raw))
    start = sum(r.length for r in _refs(repo, "big.bin")[:3])
    view = View(repo, "HEAD", prefetch_workers=0)
    try:
        fh = _open(view, "big.bin")
        with caplog.at_level(logging.WARNING, logger="versionfs.store.reader"):
            off = start + 5 * BLOCK_SIZE + 3
            assert bytes(view.read(fh, off, 100)) == files["big.bin"][off: off + 100]
        assert "do not match its bytes" in caplog.text
        assert view.chunks.loads == 0  # served from the whole chunk the reader checked
    finally:
        view.close()
    res = fsck(repo, verify_data=True)
    assert [p.kind for p in res.problems] == ["blocks"]
    assert f"block hash for bytes {5 * BLOCK_SIZE}-{6 * BLOCK_SIZE} does not" in \
        res.problems[0].message
    assert "used by" in res.problems[0].message
    assert fsck(repo).ok  # structure alone cannot tell


def test_fsck_checks_block_hash_entries(ws):
    repo, files = ws
    assert fsck(repo, verify_data=True).ok
    ref = _refs(repo, "medium.bin")[0]
    with repo.index.write() as txn:
        txn.put(blocks.DB, bytes(ref.id), txn.get(blocks.DB, bytes(ref.id))[:-16])
        txn.put(blocks.DB, b"\x01" * 32, blocks.encode(block_hashes(b"x" * 40_000)))
    res = fsck(repo)
    assert [p.kind for p in res.problems] == ["blocks"]
    assert "has 18 block hashes for a chunk of 19 blocks" in res.problems[0].message
    assert any("1 block hash entries name chunks the repository no longer has" in
               n.message for n in res.notes)
    # such an entry is not trusted: the reads still verify the whole chunk
    view = View(repo, "HEAD", prefetch_workers=0)
    try:
        fh = _open(view, "medium.bin")
        assert bytes(view.read(fh, 50_000, 10)) == files["medium.bin"][50_000:50_010]
    finally:
        view.close()


def test_fsck_verify_data_finds_a_damaged_block(ws):
    repo, _ = ws
    ref = _refs(repo, "big.bin")[2]
    _flip(repo, ref.id, 7 * BLOCK_SIZE)
    res = fsck(repo, verify_data=True)
    assert [p.kind for p in res.problems] == ["chunk"]
    assert ref.id.hex() == res.problems[0].object


def test_gc_deletes_the_block_hashes_of_the_chunks_it_deletes(ws):
    repo, files = ws
    medium = bytes(_refs(repo, "medium.bin")[0].id)
    os.unlink(os.path.join(repo.workspace, "medium.bin"))
    snapshot(repo, message="two")
    with repo.index.write() as txn:  # forget commit one: its medium.bin goes
        txn.delete("refs", b"tags/none")
    _drop_first_commit(repo)
    with repo.index.write() as txn:
        txn.put(blocks.DB, b"\x02" * 32, blocks.encode(block_hashes(b"y" * 40_000)))
    gc(repo)
    left = _entries(repo)
    assert medium not in left and b"\x02" * 32 not in left
    assert len(left) == len(_refs(repo, "big.bin"))
    assert fsck(repo, verify_data=True).ok


def _drop_first_commit(repo) -> None:
    """Make HEAD a root commit (its parent unreachable), keeping its tree."""
    from versionfs.records.model import Commit, commit_id, encode_commit
    head = repo.commit(repo.resolve("HEAD"))
    enc = encode_commit(Commit(head.tree, (), head.time_ns, head.author, head.message))
    cid = commit_id(enc)
    with repo.index.write() as txn:
        txn.put("commits", cid, enc)
        txn.set_ref("heads/main", cid)


def test_object_blobs_are_read_by_block_too(xfs_dir):
    root = xfs_dir / "ws"
    root.mkdir()
    data = _data(7, BIG)
    (root / "big.bin").write_bytes(data)
    repo = Repo.init(str(root))
    try:
        snapshot(repo, message="one")
        refs = _refs(repo, "big.bin")
        assert {repo.chunk_loc(r.id).blob_kind for r in refs} == {BlobKind.OBJECT}
        assert len(_entries(repo)) == len(refs)
        view = View(repo, "HEAD", prefetch_workers=0)
        try:
            _random_reads(view, _open(view, "big.bin"), data, 100, seed=8)
            assert view.chunks.loads == 0
        finally:
            view.close()
        _flip(repo, refs[0].id, 100)
        view = View(repo, "HEAD", prefetch_workers=0)
        try:
            fh = _open(view, "big.bin")
            with pytest.raises(CorruptObject):
                view.read(fh, 0, 4096)
            assert bytes(view.read(fh, BLOCK_SIZE, 4096)) == data[BLOCK_SIZE: BLOCK_SIZE + 4096]
            assert (root / "big.bin").read_bytes() == data  # the workspace copy is intact
        finally:
            view.close()
    finally:
        repo.close()


def test_a_clone_records_the_block_hashes_of_what_it_pulled(ws, tmp_path):
    from versionfs.ops import remote as ops_remote
    repo, files = ws
    ops_remote.add_remote(repo, "origin", str(tmp_path / "remote"), {})
    ops_remote.push(repo)
    clone, _ = ops_remote.clone(str(tmp_path / "remote"), str(tmp_path / "b"))
    try:
        assert _entries(clone) == _entries(repo)
        assert fsck(clone, verify_data=True).ok
    finally:
        clone.close()


def test_block_hashes_are_written_with_a_snapshot_s_batches(storage, monkeypatch):
    from versionfs.workspace import ingest, scan
    monkeypatch.setattr(scan, "FLUSH_AT", 3)
    flushes = []
    real = ingest.WorkTree.flush
    monkeypatch.setattr(ingest.WorkTree, "flush",
                        lambda self: (flushes.append(len(self.chunk_blocks)), real(self)))
    root = storage / "ws"
    root.mkdir()
    files = {f"d{i}/f{j}.bin": _data(100 * i + j, 40_000 + 20_000 * j if j < 2 else 100)
             for i in range(6) for j in range(60)}  # past the scan's read-ahead of 256
    for name, data in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    repo = Repo.init(str(root))
    try:
        res = snapshot(repo, message="batches")
        assert res.commit is not None
        assert len(flushes) >= 2 and sum(flushes) > 0  # some went with a batch
        entries = _entries(repo)
        for name, data in files.items():
            [ref] = _refs(repo, name)
            if len(data) > BLOCK_SIZE:
                assert blocks.decode(entries[bytes(ref.id)]) == block_hashes(data), name
        assert len(entries) == 12
        assert fsck(repo, verify_data=True).ok
    finally:
        repo.close()


def test_a_file_read_at_random_has_its_block_hashes_read_in_one_pass(ws, monkeypatch):
    repo, files = ws
    calls = []
    table = repo.reader.blocks
    real_get = table.get
    monkeypatch.setattr(table, "get", lambda cid: (calls.append(cid), real_get(cid))[1])
    view = View(repo, "HEAD")  # with read-ahead threads: the pass runs on one
    try:
        fh = _open(view, "big.bin")
        assert bytes(view.read(fh, 5_000_000, 4096)) == files["big.bin"][5_000_000: 5_004_096]
        view.chunks.wait_idle()
        before = len(calls)
        assert before <= 1  # the first read's own lookup, unless the pass came first
        _random_reads(view, fh, files["big.bin"], 100, seed=9)
        assert len(calls) == before  # every later read found them in memory
        assert view.chunks.loads == 0
    finally:
        view.close()
