"""The FUSE-free view of a commit, called directly (no mount).

Real repositories made with ``snapshot`` for most tests; an in-memory fake repository
for what would be too big to store (a file over 4 GiB).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
from array import array

import pytest

from versionfs.errors import (
    CorruptObject, NoSuchAttribute, NotADirectory, PathNotFound, UnknownRevision,
)
from versionfs.records.hashing import hash_bytes
from versionfs.records.model import ChunkLoc, ChunkRef, Commit, Kind, ObjectId, Tree, TreeEntry
from versionfs.records.model import BlobKind, encode_tree, encode_tree_rows, tree_id
from versionfs.repo.repository import Repo
from versionfs.store.reader import ChunkReader
from versionfs.ops.snapshot import snapshot
from versionfs.view import ROOT_INO, View
from versionfs.view.tables import FileTable

from repo_helpers import drop_block_hashes

ODD_NAME = b"caf\xe9 \xff\x01name"  # not UTF-8, holds a control byte


def _write(path, data: bytes, mtime_ns: int | None = None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def ws(tmp_path):
    """A workspace with two commits: v1 (tag) and v2 (HEAD)."""
    root = tmp_path / "ws"
    root.mkdir()
    rnd = random.Random(7)
    _write(root / "small.txt", b"hello world\n")
    _write(root / "twin1", b"same bytes", 1_600_000_000_000_000_000)
    _write(root / "twin2", b"same bytes", 1_600_000_000_000_000_000)
    _write(root / "data" / "big.bin", rnd.randbytes(9_000_000))
    _write(root / "data" / "empty.bin", b"")
    os.chmod(root / "small.txt", 0o640)
    os.mkdir(root / "emptydir")
    os.symlink("small.txt", root / "link")
    _write(os.path.join(os.fsencode(root), ODD_NAME), b"odd")
    repo = Repo.init(str(root))
    snapshot(repo, message="one", tag="v1")
    _write(root / "small.txt", b"changed\n")
    _write(root / "new.txt", b"new file\n")
    snapshot(repo, message="two")
    yield repo, root
    repo.close()


def _walk(view: View, ino: int, prefix: bytes = b""):
    """Every entry below ``ino`` as {path: Attr}, via readdir."""
    out = {}
    for ent in view.readdir(ino):
        if ent.name in (b".", b".."):
            continue
        path = prefix + ent.name
        out[path] = ent.attr
        if stat.S_ISDIR(ent.attr.mode):
            out.update(_walk(view, ent.attr.ino, path + b"/"))
    return out


def _read_all(view: View, ino: int, step: int = 128 << 10) -> bytes:
    fh = view.open(ino)
    try:
        parts, off = [], 0
        while True:
            data = bytes(view.read(fh, off, step))
            if not data:
                return b"".join(parts)
            parts.append(data)
            off += len(data)
    finally:
        view.release(fh)


def _native(root) -> dict:
    out = {}
    base = os.fsencode(root)
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d != b".vfs"]
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, base)] = os.lstat(full)
    return out


def test_view_of_a_commit_equals_the_workspace(ws):
    repo, root = ws
    view = View(repo, "HEAD")
    seen = _walk(view, ROOT_INO)
    native = _native(root)
    assert set(seen) == set(native)
    for path, attr in seen.items():
        st = native[path]
        assert attr.mode == st.st_mode, path
        assert attr.mtime_ns == st.st_mtime_ns, path
        full = os.path.join(os.fsencode(root), path)
        if stat.S_ISREG(st.st_mode):
            assert attr.size == st.st_size
            assert attr.blocks == (st.st_size + 511) // 512
            with open(full, "rb") as f:
                assert _read_all(view, attr.ino) == f.read(), path
        elif stat.S_ISLNK(st.st_mode):
            assert view.readlink(attr.ino) == os.readlink(full)
            assert attr.size == len(os.readlink(full))


def test_reads_survive_trimming_the_index_mapping(ws):
    repo, root = ws
    view = View(repo, "HEAD", tree_cache_entries=1)
    view._trees._pages.every = 1  # drop the mapped index pages after every tree
    before = _walk(view, ROOT_INO)
    view._trees._pages.trim()
    assert _walk(View(repo, "HEAD"), ROOT_INO).keys() == before.keys()
    assert len(before) == len(_native(root))


def test_lookup_matches_readdir_and_handles_dots(ws):
    repo, _ = ws
    view = View(repo, "HEAD")
    data = view.lookup(ROOT_INO, b"data")
    assert stat.S_ISDIR(data.mode)
    big = view.lookup(data.ino, b"big.bin")
    assert big.size == 9_000_000
    assert view.lookup(data.ino, b"..").ino == ROOT_INO
    assert view.lookup(data.ino, b".").ino == data.ino
    assert view.lookup(ROOT_INO, b"..").ino == ROOT_INO
    assert view.lookup(ROOT_INO, ODD_NAME).size == 3
    assert view.getattr(big.ino) == big
    with pytest.raises(PathNotFound) as err:
        view.lookup(ROOT_INO, b"nope")
    assert err.value.errno == errno.ENOENT
    with pytest.raises(NotADirectory) as err:
        view.lookup(big.ino, b"x")
    assert err.value.errno == errno.ENOTDIR


def test_reads_at_any_offset_and_size(ws):
    repo, root = ws
    view = View(repo, "v1", cache_bytes=4 << 20)
    with open(root / "data" / "big.bin", "rb") as f:
        want = f.read()
    big = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"big.bin")
    fh = view.open(big.ino)
    rnd = random.Random(1)
    n = len(want)
    cases = [(0, 0), (0, 1), (n - 1, 1), (n - 1, 10), (n, 1), (n + 5, 100), (0, n + 100),
             (n - 3000, 1 << 20), (123, 4 << 20)]
    cases += [(rnd.randrange(n), rnd.randrange(1, 3 << 20)) for _ in range(200)]
    for off, size in cases:
        assert bytes(view.read(fh, off, size)) == want[off: off + size], (off, size)
    view.release(fh)
    empty = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"empty.bin")
    assert view.read(view.open(empty.ino), 0, 4096) == b""


def test_sequential_small_reads_hash_each_chunk_once(ws):
    repo, _ = ws
    view = View(repo, "HEAD", prefetch_workers=0)
    big = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"big.bin")
    nchunks = len(repo.chunks(repo.entry(repo.resolve("HEAD"), "data/big.bin")))
    assert nchunks > 1
    _read_all(view, big.ino, step=4096)
    assert view.chunks.loads == nchunks


def test_identical_content_shares_an_inode_and_dirs_do_not(ws):
    repo, _ = ws
    view = View(repo, None)
    v1 = view.lookup(view.lookup(ROOT_INO, b"tags").ino, b"v1")
    head = view.lookup(ROOT_INO, b"HEAD")
    assert view.lookup(v1.ino, b"twin1").ino == view.lookup(head.ino, b"twin1").ino
    assert view.lookup(head.ino, b"twin1").ino == view.lookup(head.ino, b"twin2").ino
    assert view.lookup(v1.ino, b"small.txt").ino != view.lookup(head.ino, b"small.txt").ino
    assert view.lookup(v1.ino, b"emptydir").ino != view.lookup(head.ino, b"emptydir").ino
    # a directory looked up twice is the same instance
    assert view.lookup(v1.ino, b"data").ino == view.lookup(v1.ino, b"data").ino


def test_all_versions_layout(ws):
    repo, _ = ws
    view = View(repo, None)
    names = [e.name for e in view.readdir(ROOT_INO)]
    assert names == [b".", b"..", b"HEAD", b"commits", b"heads", b"tags"]
    tags = view.lookup(ROOT_INO, b"tags")
    assert [e.name for e in view.readdir(tags.ino, 2)] == [b"v1"]
    heads = view.lookup(ROOT_INO, b"heads")
    assert [e.name for e in view.readdir(heads.ino, 2)] == [b"main"]
    commits = view.lookup(ROOT_INO, b"commits")
    ids = {c.id.hex().encode() for c in repo.log()}
    assert {e.name for e in view.readdir(commits.ino, 2)} == ids
    v1 = repo.resolve("v1")
    c1 = view.lookup(commits.ino, v1.hex().encode())
    assert view.getxattr(c1.ino, b"user.versionfs.commit") == v1.hex().encode()
    assert c1.stable and not tags.stable
    with pytest.raises(PathNotFound):
        view.lookup(commits.ino, v1.hex()[:12].encode())
    with pytest.raises(PathNotFound):
        view.lookup(tags.ino, b"v9")


def test_head_follows_new_snapshots(ws):
    repo, root = ws
    view = View(repo, None)
    before = view.lookup(ROOT_INO, b"HEAD")
    assert not before.stable
    _write(root / "third.txt", b"3")
    snapshot(repo, message="three", tag="release/v3")
    after = view.lookup(ROOT_INO, b"HEAD")
    assert after.ino != before.ino
    assert view.lookup(after.ino, b"third.txt").size == 1
    release = view.lookup(view.lookup(ROOT_INO, b"tags").ino, b"release")
    v3 = view.lookup(release.ino, b"v3")
    assert v3.ino != after.ino  # another path, so another directory instance
    commit = b"user.versionfs.commit"
    assert view.getxattr(v3.ino, commit) == view.getxattr(after.ino, commit)


def test_xattrs(ws):
    repo, _ = ws
    view = View(repo, "v1")
    small = view.lookup(ROOT_INO, b"small.txt")
    names = view.listxattr(small.ino)
    assert names == [b"user.versionfs.id", b"user.versionfs.commit"]
    assert view.getxattr(small.ino, b"user.versionfs.id") == \
        hash_bytes(b"hello world\n").hex().encode()
    assert view.getxattr(ROOT_INO, b"user.versionfs.commit") == \
        repo.resolve("v1").hex().encode()
    with pytest.raises(NoSuchAttribute) as err:
        view.getxattr(small.ino, b"user.versionfs.run")
    assert err.value.errno == errno.ENODATA
    with pytest.raises(NoSuchAttribute) as err:  # ls -l stops asking after this
        view.getxattr(small.ino, b"security.selinux")
    assert err.value.errno == errno.EOPNOTSUPP


def test_forget_drops_every_inode(ws):
    repo, _ = ws
    view = View(repo, None)
    counts: dict[int, int] = {}

    def walk(ino):
        for ent in view.readdir(ino):
            if ent.name in (b".", b".."):
                continue
            counts[ent.attr.ino] = counts.get(ent.attr.ino, 0) + 1
            if stat.S_ISDIR(ent.attr.mode):
                walk(ent.attr.ino)

    walk(ROOT_INO)
    first = dict(counts)
    assert view.inode_count() > 20
    view.forget(counts.items())
    assert view.inode_count() == 1
    counts.clear()
    walk(ROOT_INO)  # files come back with the same inodes (directories get new ones)
    files = {ino for ino in first if ino >= 1 << 62}
    assert files and files <= set(counts)
    view.forget(counts.items())
    assert view.inode_count() == 1


def test_damaged_chunk_is_an_error_not_data(ws):
    repo, _ = ws
    entry = repo.entry(repo.resolve("HEAD"), "data/big.bin")
    ref = repo.chunks(entry)[1]
    loc = repo.chunk_loc(ref.id)
    path = repo.store.blob_path(loc.blob_kind, loc.blob)
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, loc.offset + 10)
        os.pwrite(fd, bytes([byte[0] ^ 0xFF]), loc.offset + 10)
    finally:
        os.close(fd)
    view = View(repo, "HEAD")
    big = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"big.bin")
    fh = view.open(big.ino)
    assert len(view.read(fh, 0, 100)) == 100  # chunk 0 is intact
    with pytest.raises(CorruptObject) as err:
        view.read(fh, repo.chunks(entry)[0].length + 5, 100)
    assert err.value.errno == errno.EIO
    assert "damaged" in str(err.value)


def _damage(repo, ref) -> None:
    loc = repo.chunk_loc(ref.id)
    fd = os.open(repo.store.blob_path(loc.blob_kind, loc.blob), os.O_RDWR)
    try:
        byte = os.pread(fd, 1, loc.offset + 10)
        os.pwrite(fd, bytes([byte[0] ^ 0xFF]), loc.offset + 10)
    finally:
        os.close(fd)


def test_verify_off_reads_exact_ranges_without_hashing(ws):
    repo, root = ws
    want = (root / "data" / "big.bin").read_bytes()
    view = View(repo, "HEAD", verify="off")
    big = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"big.bin")
    fh = view.open(big.ino)
    rnd = random.Random(2)
    n = len(want)
    cases = [(0, 4096), (n - 10, 100), (n, 1)]
    cases += [(rnd.randrange(n), rnd.randrange(1, 3 << 20)) for _ in range(100)]
    for off, size in cases:
        assert bytes(view.read(fh, off, size)) == want[off: off + size], (off, size)
    assert view.chunks.loads == 0  # nothing was loaded whole, nothing hashed
    assert view.read(fh, 0, 10, load=False, pread=False) is None  # nothing is cached
    assert bytes(view.read(fh, 0, 10, load=False)) == want[:10]  # a range needs no load


def test_verify_off_returns_damaged_bytes_and_chunk_refuses_them(ws):
    repo, _ = ws
    entry = repo.entry(repo.resolve("HEAD"), "data/big.bin")
    refs = repo.chunks(entry)
    _damage(repo, refs[1])
    for verify in ("off", "chunk"):
        view = View(repo, "HEAD", verify=verify)
        big = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"big.bin")
        fh = view.open(big.ino)
        if verify == "off":  # the trade-off it documents: no check at all
            assert len(view.read(fh, refs[0].length, 100)) == 100
        else:
            with pytest.raises(CorruptObject):
                view.read(fh, refs[0].length, 100)
        view.close()
    with pytest.raises(ValueError):
        View(repo, "HEAD", verify="sometimes")


def test_verified_chunks_are_reread_by_range_after_eviction(ws):
    repo, root = ws
    assert drop_block_hashes(repo)  # chunks stored by an older versionfs
    want = (root / "data" / "big.bin").read_bytes()
    entry = repo.entry(repo.resolve("HEAD"), "data/big.bin")
    refs = repo.chunks(entry)
    view = View(repo, "HEAD", cache_bytes=1, prefetch_workers=0)  # keeps one chunk
    big = view.lookup(view.lookup(ROOT_INO, b"data").ino, b"big.bin")
    fh = view.open(big.ino)
    assert bytes(view.read(fh, 5, 100)) == want[5:105]
    assert bytes(view.read(fh, refs[0].length + 5, 100)) == \
        want[refs[0].length + 5: refs[0].length + 105]  # evicts chunk 0
    loads = view.chunks.loads
    for off in (0, 7, 4096, refs[0].length - 50):
        assert bytes(view.read(fh, off, 4096)) == want[off: off + 4096]
    assert view.chunks.loads == loads  # chunk 0 was verified once; ranges since
    # a chunk damaged before its first read is still refused
    _damage(repo, refs[2])
    with pytest.raises(CorruptObject):
        view.read(fh, refs[0].length + refs[1].length + 1, 10)
    view.close()


def test_unknown_revision(ws):
    repo, _ = ws
    with pytest.raises(UnknownRevision, match="unknown revision 'v7'"):
        View(repo, "v7")


# -- a fake repository: a file over 4 GiB and a directory of 100,000 entries -----------

CHUNK = 1 << 20


def _chunk_bytes(k: int) -> bytes:
    return k.to_bytes(8, "little") * (CHUNK // 8)


class _FakeTxn:
    def __init__(self, trees):
        self.trees = trees

    def get(self, db, key):
        return self.trees.get(bytes(key)) if db == "trees" else None


class _FakeIndex:
    def __init__(self, trees):
        self.trees = trees

    @contextlib.contextmanager
    def read(self):
        yield _FakeTxn(self.trees)


class _FakeBlobs:
    """A ``BlobStore``: chunk k of the huge file lives at "offset" k of a fake blob."""

    def is_local(self, loc):
        return True

    def load(self, loc, offset=0, length=None):
        data = _chunk_bytes(loc.offset)[:loc.length]
        return data[offset:] if length is None else data[offset: offset + length]


class FakeRepo:
    """Just what ``View`` reads: one commit with a huge file and a huge directory."""

    vfs_dir = "/"

    def __init__(self, file_size: int, dir_entries: int, readable=()):
        """Only the chunks listed in ``readable`` get their true ids (the view
        checks every chunk it loads); hashing 5 GiB for the others would be slow."""
        self.file_size = file_size
        nchunks = -(-file_size // CHUNK)
        lengths = [min(CHUNK, file_size - k * CHUNK) for k in range(nchunks)]
        self.refs_ = tuple(
            ChunkRef(ObjectId(hash_bytes(_chunk_bytes(k)[:n] if k in readable
                                         else b"%d" % k)), n)
            for k, n in enumerate(lengths))
        self.locs = {r.id: (k, r.length) for k, r in enumerate(self.refs_)}
        big = [TreeEntry(f"f{i:06d}", Kind.FILE, 0o644, i, i, ObjectId(hash_bytes(b"x%d" % i)))
               for i in range(dir_entries)]
        bigdir = Tree(tuple(big))
        bid = tree_id(encode_tree(bigdir))
        huge = TreeEntry("huge", Kind.FILE, 0o600, file_size, 5, ObjectId(hash_bytes(b"h")))
        top = Tree((TreeEntry("dir", Kind.DIR, 0o755, 0, 1, bid), huge))
        self.top = tree_id(encode_tree(top))
        self.index = _FakeIndex({bytes(self.top): encode_tree(top),
                                 bytes(bid): encode_tree(bigdir)})
        self.reader = ChunkReader(self, _FakeBlobs())  # FakeRepo is the ChunkIndex
        self.cid = ObjectId(hash_bytes(b"commit"))

    def resolve(self, rev):
        return self.cid

    def commit(self, cid):
        return Commit(self.top, (), 1, "a", "m")

    def chunks(self, entry):
        return self.refs_ if entry.name == "huge" else ()

    def locate(self, cid):
        return ChunkLoc(BlobKind.PACK, cid, *self.locs[cid])

    def exists(self, cid):
        return cid in self.locs


def test_file_over_4_gib():
    size = (5 << 30) + 12345
    near_4gib, last = (4 << 30) // CHUNK, size // CHUNK
    view = View(FakeRepo(size, 1, {near_4gib - 1, near_4gib, near_4gib + 1, last}), "x",
                cache_bytes=8 << 20)
    huge = view.lookup(ROOT_INO, b"huge")
    assert huge.size == size

    def want(off, n):
        n = max(0, min(n, size - off))
        out = bytearray()
        while n > 0:
            k, inner = divmod(off, CHUNK)
            piece = _chunk_bytes(k)[inner: inner + n]
            out += piece
            off += len(piece)
            n -= len(piece)
        return bytes(out)

    fh = view.open(huge.ino)
    for off in [(4 << 30) - 100, 4 << 30, (4 << 30) + CHUNK - 7, size - 10, size - 1, size,
                size + 1 << 20]:
        assert bytes(view.read(fh, off, 300_000)) == want(off, 300_000), off


def test_directory_of_100000_entries():
    view = View(FakeRepo(1, 100_000), "x", tree_cache_entries=1000)
    d = view.lookup(ROOT_INO, b"dir")
    names, off = [], 0
    while True:  # read it the way the kernel does: a few entries per call, resuming
        batch = []
        for ent in view.readdir(d.ino, off):
            batch.append(ent)
            if len(batch) == 37:
                break
        if not batch:
            break
        names += [e.name for e in batch if e.name not in (b".", b"..")]
        off = batch[-1].next_offset
    assert len(names) == 100_000
    assert names == sorted(names) and len(set(names)) == 100_000
    assert view.lookup(d.ino, b"f099999").size == 99_999


def test_file_table_against_a_dict():
    table = FileTable(8)
    model: dict[int, int] = {}
    rnd = random.Random(3)
    live: list[int] = []
    for step in range(20000):
        if live and rnd.random() < 0.45:
            ino = live.pop(rnd.randrange(len(live)))
            i = table.slot(ino)
            assert table.inos[i] == ino
            table.remove(i)
            del model[ino]
        else:
            ino = rnd.getrandbits(62) | (1 << 62)
            i = table.slot(ino)
            assert table.inos[i] == 0
            table.insert(i, ino, 0, step)
            model[ino] = step
            live.append(ino)
        if step % 997 == 0:
            for k, v in model.items():
                assert table.locs[table.slot(k)] == v
    assert table.count == len(model)
    for k, v in model.items():
        assert table.locs[table.slot(k)] == v


def test_place_names_the_commit_and_path_an_inode_came_from(ws):
    repo, _ = ws
    view = View(repo, None)
    v1 = repo.resolve("v1").hex()
    tags_v1 = view.lookup(view.lookup(ROOT_INO, b"tags").ino, b"v1")
    big = view.lookup(view.lookup(tags_v1.ino, b"data").ino, b"big.bin").ino
    d, idx, exact = view.place(big)
    commit, prefix, tree = view.dir_place(d)
    f = view.opened(commit, prefix, tree, idx, exact)
    assert (f.commit, f.path, f.size, f.exact) == (v1, "data/big.bin", 9_000_000, True)
    assert f.id == view.getxattr(big, b"user.versionfs.id").decode()
    odd = view.lookup(tags_v1.ino, ODD_NAME).ino
    d, idx, _ = view.place(odd)
    assert view.opened(*view.dir_place(d), idx).path == \
        ODD_NAME.decode("utf-8", "surrogateescape")
    # twin1 and twin2 share an inode: once both were looked up, neither name is certain
    twin = view.lookup(tags_v1.ino, b"twin1").ino
    assert view.place(twin)[2]
    assert view.lookup(tags_v1.ino, b"twin2").ino == twin
    assert not view.place(twin)[2]
    # and an unchanged file is the same inode in v1 and HEAD
    head = view.lookup(ROOT_INO, b"HEAD")
    assert view.lookup(head.ino, b"data").ino != view.lookup(tags_v1.ino, b"data").ino
    assert view.place(big)[2]    # HEAD's data/big.bin was not handed out yet
    list(view.readdir(view.lookup(head.ino, b"data").ino))   # lists HEAD's big.bin
    assert not view.place(big)[2]
    # forgetting every lookup frees the inode, and with it what was known of it
    view.forget([(twin, 2)])
    with pytest.raises(PathNotFound):
        view.place(twin)


def test_tracking_records_places_and_names_them_at_collect(ws):
    import subprocess
    import sys

    from versionfs.repo.observe import proc_stat
    from versionfs.view import Tracking
    repo, _ = ws
    view = View(repo, "v1")
    tracking = Tracking(view)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        t = tracking.track(os.getpid(), proc_stat(os.getpid()).start)
        small = view.lookup(ROOT_INO, b"small.txt").ino
        data = view.lookup(ROOT_INO, b"data").ino
        empty = view.lookup(data, b"empty.bin").ino
        assert tracking.record(child.pid, small) == 1
        assert tracking.record(child.pid, empty) == 1
        assert tracking.record(child.pid, small) == 1       # once
        assert tracking.record(os.getpid(), view.lookup(ROOT_INO, b"twin1").ino) == 0
        v1 = repo.resolve("v1").hex()
        got = [(f.commit, f.path, f.size) for f in tracking.reads(t)]
        assert got == [(v1, "data/empty.bin", 0), (v1, "small.txt", 12)]
    finally:
        child.stdin.close()
        child.wait()
    tracking.untrack(t)
    assert tracking.cached() == 0


def test_file_table_add_refs_matches_one_at_a_time_through_growth():
    """``add_refs`` (the listing's batch count) does what ``slot``/``insert`` and a
    count per entry do, across many growths of the table."""
    rnd = random.Random(5)
    pool = [rnd.getrandbits(62) | (1 << 62) for _ in range(3000)]
    chks = {ino: rnd.getrandbits(32) for ino in pool}
    table, model = FileTable(8), {}
    for step in range(40):
        batch = [rnd.choice(pool) if rnd.random() < 0.7 else 0 for _ in range(rnd.randrange(1, 300))]
        lo, base = rnd.randrange(1000), (step + 1) << 32
        bchks = array("I", [0] * lo + [chks.get(ino, 0) for ino in batch])
        added, skipped = table.add_refs(array("Q", batch), bchks, lo, base)
        assert skipped == [j for j, ino in enumerate(batch) if not ino]
        new = 0
        for j, ino in enumerate(batch):
            if not ino:
                continue
            if ino not in model:
                model[ino] = [base | (lo + j), 0, 0]
                new += 1
            m = model[ino]
            m[1] += 1
            if m[0] != base | (lo + j):
                m[2] = 1
        assert added == new and table.count == len(model)
    for ino, (loc, refs, aliased) in model.items():
        i = table.slot(ino)
        assert (table.inos[i], table.chks[i], table.locs[i], table.refs[i],
                table.aliased[i]) == (ino, chks[ino], loc, refs, aliased)
    # another content on the same inode: left to the caller, not counted
    ino = next(iter(model))
    added, skipped = table.add_refs(array("Q", [ino]), array("I", [chks[ino] ^ 1]), 0, 0)
    assert (added, skipped) == (0, [0]) and table.refs[table.slot(ino)] == model[ino][1]


def test_batch_counts_match_per_entry_counts_and_forget_frees_them(ws):
    """``count_entries`` counts what ``readdir`` yields; forgetting what it returned
    (the listing's entries the kernel did not take) leaves nothing behind."""
    repo, _ = ws
    one, many = View(repo, "HEAD"), View(repo, "HEAD")
    data_one = one.lookup(ROOT_INO, b"data").ino
    data_many = many.lookup(ROOT_INO, b"data").ino
    by_entry = [(e.attr.ino, e.attr) for e in one.readdir(ROOT_INO, 2)]
    tree = many.listing(ROOT_INO)
    inos = many.count_entries(ROOT_INO, tree, 0, len(tree))
    assert list(inos) == [ino for ino, _ in by_entry]
    assert [tree.attr(ino, i)[1:] for i, ino in enumerate(inos)] == \
        [a[1:] for _, a in by_entry]
    assert one.inode_count() == many.inode_count()
    assert many.listing(data_many) is not None and one.listing(data_one) is not None
    for view, extra in ((one, data_one), (many, data_many)):
        view.forget([(ino, 1) for ino, _ in by_entry] + [(extra, 1)])
        assert view.inode_count() == 1


def test_a_taken_inode_moves_the_entry_to_its_next_candidate(ws):
    repo, _ = ws
    view = View(repo, "HEAD")
    tree = view.listing(ROOT_INO)
    idx = tree.find(b"small.txt")
    first = tree.inos[idx]
    t = view._files  # another content already holds the first candidate
    t.insert(t.slot(first), first, tree.chks[idx] ^ 1, 12345 << 32)
    attr = view.lookup(ROOT_INO, b"small.txt")
    assert attr.ino != first and tree.inos[idx] == attr.ino
    assert view.count_entries(ROOT_INO, tree, idx, idx + 1)[0] == attr.ino
    assert [e.attr.ino for e in view.readdir(ROOT_INO, idx + 2)][:1] == [attr.ino]
    fh = view.open(attr.ino)
    assert bytes(view.read(fh, 0, 100)) == b"changed\n"


def test_packed_tree_attributes_are_the_entries(ws):
    repo, _ = ws
    view = View(repo, "v1")
    tree = view.listing(ROOT_INO)
    rows = {}
    for i in range(len(tree)):
        e = tree.entry(i)
        size = len(e.target) if e.kind is Kind.SYMLINK else e.size
        blocks = 0 if e.kind is Kind.DIR else (size + 511) // 512
        rows[e.name] = (tree.modes[i], tree.sizes[i], tree.blocks[i], tree.mtimes[i],
                        bool(tree.inos[i]))
        assert rows[e.name] == (e.st_mode, size, blocks, e.mtime_ns, e.kind is not Kind.DIR)
    assert tree.ndirs == sum(1 for i in range(len(tree)) if tree.is_dir(i)) == 2
    assert rows["link"][1] == len(b"small.txt")


@pytest.mark.parametrize("rows", [
    [[b"a/b", 1, 0o644, 1, 1, bytes(32), b""]],
    [[b"..", 1, 0o644, 1, 1, bytes(32), b""]],
    [[b"", 1, 0o644, 1, 1, bytes(32), b""]],
    [[b"a\0", 1, 0o644, 1, 1, bytes(32), b""]],
    [[b"a", 9, 0o644, 1, 1, bytes(32), b""]],
    [[b"a", 1, 0o644, 1, 1, bytes(31), b""]],
    [[b"a", 1, 0o644, 1, 1, bytes(32), b"", b"extra"], [b"b", 1, 0o644, 1, 1, bytes(32), b""]],
    [["text", 1, 0o644, 1, 1, bytes(32), b""]],
    [[b"a", 1, -5, 1, 1, bytes(32), b""]],
], ids=["slash", "dotdot", "empty", "nul", "kind", "id", "fields", "str-name", "mode"])
def test_a_malformed_tree_is_corrupt_when_listed(ws, rows):
    repo, _ = ws
    view = View(repo, "HEAD")
    bad = encode_tree_rows(rows)
    tid = tree_id(bad)
    with repo.index.write() as txn:
        txn.put("trees", bytes(tid), bad)
    with pytest.raises(CorruptObject):
        view._trees.get(bytes(tid))


def test_forgetting_a_subdirectory_names_the_parent_whose_listing_went_stale(ws):
    repo, _ = ws
    view = View(repo, "v1")
    data = view.lookup(ROOT_INO, b"data")
    big = view.lookup(data.ino, b"big.bin")
    assert view.forget([(data.ino, 1)]) == []  # still pinned by big.bin
    again = view.lookup(ROOT_INO, b"data")
    assert again.ino == data.ino
    assert view.forget([(big.ino, 1)]) == []
    # the last lookup of data/ goes: it is freed, and the root's listing named it
    assert view.forget([(data.ino, 1)]) == [ROOT_INO]
    assert view.lookup(ROOT_INO, b"data").ino != data.ino


def test_tree_read_ahead_is_only_a_hint(ws):
    """``Index.willneed`` (the mount's read-ahead of subdirectories' trees) changes
    nothing read: missing keys are skipped, values read after it are the same."""
    repo, _ = ws
    view = View(repo, "v1")
    root = view.listing(ROOT_INO)
    tids = [bytes(root.fields(i)[4]) for i in root.dirs]
    with repo.index.read() as txn:
        before = [txn.get("trees", t) for t in tids]
    big = encode_tree_rows([[b"f%06d" % i, 1, 0o644, i, i, bytes(32), b""]
                            for i in range(2000)])  # ~90 KB: many pages
    with repo.index.write() as txn:
        txn.put("trees", bytes(tree_id(big)), big)
    repo.index.willneed("trees", tids + [bytes(tree_id(big)), bytes(32)])
    with repo.index.read() as txn:
        assert [txn.get("trees", t) for t in tids] == before
        assert txn.get("trees", bytes(tree_id(big))) == big
    view.prefetch_subtrees(root)
    view.close()  # waits for the read-ahead threads
