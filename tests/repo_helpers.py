"""Small helpers shared by the gc, fsck and diff tests: repositories with tiny chunk
parameters (so chunked files stay small), snapshots, and reading a commit back."""

from __future__ import annotations

import os
import time
from pathlib import Path


from versionfs.records.chunking import ChunkParams
from versionfs.records.model import BlobKind, Kind, ObjectId, decode_statcache
from versionfs.repo.repository import Repo
from versionfs.ops.snapshot import snapshot

# Files of 64 KiB and more are cut into chunks of 4-64 KiB (16 KiB on average).
SMALL = ChunkParams(threshold=64 << 10, min_size=4 << 10, avg_size=16 << 10,
                    max_size=64 << 10)


def make_repo(path: Path) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init(str(path), params=SMALL)


def write(ws: Path, rel: str, data: bytes | str, mode: int | None = None) -> None:
    p = ws / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        p.chmod(mode)


def snap(repo: Repo, message: str = "", *, settle: bool = False, **kw) -> ObjectId:
    """A snapshot of the whole workspace; ``settle`` waits out the stat cache's
    racy window so that the files just written get stat cache entries."""
    if settle:
        time.sleep(0.15)
    return snapshot(repo, message=message, allow_empty=True, **kw).commit


def read_commit(repo: Repo, cid: bytes) -> dict[str, bytes]:
    """Every file (content) and symlink (``b'->' + target``) of a commit, read back
    through the verified read path; directories as ``b'<dir>'``."""
    out = {}
    for path, e in repo.walk(repo.commit(cid).tree):
        if e.kind is Kind.DIR:
            out[path] = b"<dir>"
        elif e.kind is Kind.SYMLINK:
            out[path] = b"->" + e.target
        else:
            with repo.open_file(cid.hex(), path) as f:
                out[path] = f.read()
    return out


def read_workspace(ws: Path) -> dict[str, bytes]:
    out = {}
    for root, dirs, files in os.walk(ws):
        dirs[:] = [d for d in dirs if d != ".vfs"]
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, ws)
            if os.path.islink(full):
                out[rel] = b"->" + os.readlink(full).encode()
            elif os.path.isdir(full):
                out[rel] = b"<dir>"
            else:
                with open(full, "rb") as f:
                    out[rel] = f.read()
    return out


def set_ref(repo: Repo, name: str, cid: bytes | None) -> None:
    with repo.index.write() as txn:
        if cid is None:
            txn.delete("refs", name.encode())
        else:
            txn.set_ref(name, cid)


def blob_files(repo: Repo, kind: BlobKind) -> list[str]:
    return sorted(repo.store.blob_path(k, b) for k, b in repo.store.iter_blobs() if k is kind)


def statcache(repo: Repo) -> dict[str, bytes]:
    """Workspace path → file id, from the stat cache."""
    with repo.index.read() as txn:
        return {k.decode(): bytes(decode_statcache(v)[1])
                for k, v in txn.items("statcache")}


def flip_byte(path: str, offset: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def drop_block_hashes(repo: Repo) -> int:
    """Delete every block hash entry, as in a repository an older versionfs wrote;
    returns how many there were."""
    with repo.index.write() as txn:
        keys = list(txn.keys("blocks"))
        for key in keys:
            txn.delete("blocks", key)
    return len(keys)
