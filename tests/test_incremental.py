"""Incremental snapshots of large files.

On a reflink filesystem, a new version of a large file reuses the chunks whose disk
blocks it still shares with the previous version's clone (FIEMAP), and cuts and hashes
only around what changed. The result must be exactly what cutting the whole file
gives; the only difference allowed is how many bytes were read.
"""

from __future__ import annotations

import os
import time

import pytest

from versionfs import Repo
from versionfs.records import chunking
from versionfs.records.hashing import hash_bytes
from versionfs.store.blobs import extents, shared_ranges

MIB = 1 << 20


def _settle() -> None:
    """Let the racy window pass, so the stat cache records the file."""
    time.sleep(0.15)


def _expected_chunks(data: bytes) -> list[tuple[bytes, int]]:
    return [(hash_bytes(data[o:o + n]), n) for o, n in chunking.cut(data)]


def _check(repo: Repo, path: str, data: bytes) -> None:
    entry = repo.entry(repo.head(), "big")
    got = [(bytes(c.id), c.length) for c in repo.chunks(entry)]
    assert got == _expected_chunks(data)
    with repo.open("HEAD", "big") as f:
        assert f.read() == data


def _edit(path, how: str, rng) -> None:
    if how == "overwrite":
        with open(path, "r+b") as f:
            f.seek(30 * MIB)
            f.write(rng.randbytes(64 << 10))
    elif how == "append":
        with open(path, "ab") as f:
            f.write(rng.randbytes(8 * MIB))
    elif how == "truncate":
        os.truncate(path, 41 * MIB + 12345)
    elif how == "insert":
        data = open(path, "rb").read()
        tmp = str(path) + ".new"
        with open(tmp, "wb") as f:
            f.write(b"hello" + data)
        os.rename(tmp, path)


@pytest.mark.parametrize("how", ["overwrite", "append", "truncate", "insert"])
def test_new_version_of_a_large_file_is_cut_exactly_as_a_whole(storage, request, how):
    import random
    rng = random.Random(7)
    ws = storage / "ws"
    ws.mkdir()
    big = ws / "big"
    big.write_bytes(rng.randbytes(64 * MIB))
    repo = Repo.init(str(ws))
    _settle()
    repo.snapshot(message="v1")
    _edit(big, how, rng)
    _settle()
    res = repo.snapshot(message="v2")
    data = big.read_bytes()
    _check(repo, "big", data)
    on_xfs = request.node.callspec.params["storage"] == "xfs"
    if on_xfs and how != "insert":
        # only the chunks around the change were read
        assert res.bytes_read < 12 * MIB, res
    else:
        assert res.bytes_read == len(data)
    if how != "insert":
        assert res.bytes_stored < 12 * MIB, res
    assert not repo.fsck(verify_data=True).problems
    repo.close()


def test_shared_ranges_follow_copy_on_write(xfs_dir):
    a = xfs_dir / "a"
    a.write_bytes(os.urandom(8 * MIB))
    b = xfs_dir / "b"
    os.system(f"cp --reflink=always {a} {b}")
    with open(b, "r+b") as f:
        f.seek(3 * MIB)
        f.write(b"x" * 10)
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        ranges = shared_ranges(extents(fa), extents(fb))
    finally:
        os.close(fa)
        os.close(fb)
    assert ranges[0][0] == 0 and ranges[0][1] <= 3 * MIB
    assert ranges[-1][1] == 8 * MIB and ranges[-1][0] > 3 * MIB
    covered = sum(hi - lo for lo, hi in ranges)
    assert 8 * MIB - 64 * 1024 <= covered < 8 * MIB


def test_shared_ranges_of_unrelated_files_are_empty(xfs_dir):
    a = xfs_dir / "a"
    b = xfs_dir / "b"
    a.write_bytes(os.urandom(MIB))
    b.write_bytes(a.read_bytes())   # same bytes, other blocks: not provably shared
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        assert shared_ranges(extents(fa), extents(fb)) == []
    finally:
        os.close(fa)
        os.close(fb)


def test_every_file_is_read_once(storage):
    """Files are read while the walk goes on; each exactly once, whether the whole
    workspace or a directory PATH is snapshotted."""
    ws = storage / "ws"
    for d in range(4):
        for f in range(25):
            p = ws / f"d{d}" / f"s{f % 3}" / f"f{f}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(100 + f))
    (ws / "big").write_bytes(os.urandom(5 * MIB))
    repo = Repo.init(str(ws))
    _settle()   # else the files are too fresh for the stat cache and read again
    res = repo.snapshot(["d1"], message="one dir")
    assert (res.files_read, res.files) == (25, 25)
    res = repo.snapshot(message="all")
    assert res.files == 101 and res.files_read == 76
    for p, e in repo.walk(repo.commit(repo.head()).tree):
        if e.kind.name == "FILE":
            with repo.open("HEAD", p) as f:
                assert f.read() == (ws / p).read_bytes()
    repo.close()
