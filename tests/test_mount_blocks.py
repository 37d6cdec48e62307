"""Reads through real mounts with block hashes: random 4 KiB reads equal the file, a
damaged 16 KiB block is EIO while the rest of its chunk reads, and a repository (or
remote) without block hashes reads whole chunks and gets them recorded.

Each read is a ``pread`` on a file opened with ``POSIX_FADV_RANDOM``, so the kernel
asks the daemon for exactly the pages read (no read-ahead into a damaged block).
"""

from __future__ import annotations

import errno
import glob
import os
import random
from pathlib import Path

import pytest

from repo_helpers import drop_block_hashes, flip_byte
from test_mount import mounter  # noqa: F401  (the fixture)
from versionfs.ops.snapshot import snapshot
from versionfs.records.hashing import BLOCK_SIZE
from versionfs.repo import mounts
from versionfs.repo.repository import Repo
from versionfs.store import blocks

pytestmark = pytest.mark.mount

SIZE = 9_000_000


@pytest.fixture
def big(tmp_path):
    """A workspace holding one ~9 MB file (~9 chunks), snapshotted."""
    ws = tmp_path / "ws"
    ws.mkdir()
    data = random.Random(11).randbytes(SIZE)
    (ws / "big.bin").write_bytes(data)
    repo = Repo.init(str(ws))
    snapshot(repo, message="one")
    yield ws, repo, data
    repo.close()


def _preads(path: Path, offsets, size: int = 4096) -> dict[int, bytes | int]:
    """``{offset: bytes read, or the errno of the failure}``."""
    out: dict[int, bytes | int] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for off in offsets:
            try:
                out[off] = os.pread(fd, size, off)
            except OSError as exc:
                out[off] = exc.errno
    finally:
        os.close(fd)
    return out


def _entries(repo: Repo) -> int:
    with repo.index.read() as txn:
        return txn.count(blocks.DB)


def test_random_reads_through_a_mount_equal_the_file(big, mounter):  # noqa: F811
    ws, repo, data = big
    assert _entries(repo) > 1
    mp = mounter(f"{ws}@HEAD")
    rnd = random.Random(3)
    offsets = [rnd.randrange(SIZE - 4096) for _ in range(400)] + [0, SIZE - 4096]
    for off, got in _preads(mp / "big.bin", offsets).items():
        assert got == data[off: off + 4096], off
    sizes = _preads(mp / "big.bin", [5, BLOCK_SIZE - 3, SIZE - 100], size=70_000)
    for off, got in sizes.items():
        assert got == data[off: off + 70_000], off


def test_a_damaged_block_is_eio_and_the_rest_of_its_chunk_reads(big, mounter):  # noqa: F811
    ws, repo, data = big
    refs = repo.chunks(repo.entry(repo.resolve("HEAD"), "big.bin"))
    start = refs[0].length  # chunk 1, block 3 gets one flipped byte
    loc = repo.chunk_loc(refs[1].id)
    flip_byte(repo.store.blob_path(loc.blob_kind, loc.blob), loc.offset + 3 * BLOCK_SIZE + 7)
    bad = start + 3 * BLOCK_SIZE
    mp = mounter(f"{ws}@HEAD")
    fine = [start, start + BLOCK_SIZE, start + 5 * BLOCK_SIZE, start + refs[1].length - 4096,
            start - 4096, 100]
    got = _preads(mp / "big.bin", [bad + 4096] + fine + [bad])
    assert got[bad] == errno.EIO and got[bad + 4096] == errno.EIO
    for off in fine:
        assert got[off] == data[off: off + 4096], off
    log = Path(mounts.state_base(str(mp)) + ".log").read_text()
    assert "is damaged" in log
    # a whole read of the file fails at the damaged block, not before its chunk
    got = bytearray()
    with open(mp / "big.bin", "rb", buffering=0) as f:
        with pytest.raises(OSError) as err:
            while True:
                piece = f.read(1 << 16)  # short where a failed request begins
                assert piece, "read the whole file without an error"
                got += piece
    assert err.value.errno == errno.EIO
    assert start <= len(got) <= bad and got == data[:len(got)]


def test_an_old_repository_reads_and_the_daemon_records_block_hashes(big, cli, mounter):  # noqa: F811
    ws, repo, data = big
    n = drop_block_hashes(repo)
    assert n > 1
    mp = mounter(f"{ws}@HEAD")
    refs = repo.chunks(repo.entry(repo.resolve("HEAD"), "big.bin"))
    mids, pos = [], 0
    for ref in refs:
        mids.append(pos + ref.length // 2)
        pos += ref.length
    for off, got in _preads(mp / "big.bin", mids).items():
        assert got == data[off: off + 4096], off
    cli("umount", mp)  # the daemon writes what it learned as it exits
    assert _entries(repo) == n
    mp2 = mounter(f"{ws}@HEAD")
    rnd = random.Random(4)
    offsets = [rnd.randrange(SIZE - 4096) for _ in range(100)]
    for off, got in _preads(mp2 / "big.bin", offsets).items():
        assert got == data[off: off + 4096], off


def test_a_lazy_remote_records_block_hashes_of_the_chunks_it_read(tmp_path, big, cli,
                                                                  mounter):  # noqa: F811
    ws, repo, data = big
    remote, cache = tmp_path / "remote", tmp_path / "cache"
    cli("remote", "add", "origin", remote, cwd=ws)
    cli("push", cwd=ws)
    mp = mounter(f"{remote}@main", "--cache-dir", cache)
    rnd = random.Random(5)
    offsets = [rnd.randrange(SIZE - 4096) for _ in range(30)]
    for off, got in _preads(mp / "big.bin", offsets).items():
        assert got == data[off: off + 4096], off
    cli("umount", mp)
    [lazy] = glob.glob(str(cache / "remotes" / "*" / "repo"))
    with Repo.open_repo(lazy) as copy:
        assert _entries(copy) > 0
        with copy.index.read() as txn, repo.index.read() as mine:
            for cid, raw in txn.items(blocks.DB):
                assert mine.get(blocks.DB, cid) == raw
    mp2 = mounter(f"{remote}@main", "--cache-dir", cache)
    for off, got in _preads(mp2 / "big.bin", offsets[::-1]).items():
        assert got == data[off: off + 4096], off
