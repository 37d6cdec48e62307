"""fsck passes a sound repository and names every damaged object in a broken one."""

from __future__ import annotations

import json
import os

import msgpack

from repo_helpers import blob_files, flip_byte, make_repo, set_ref, snap, write
from versionfs.ops.fsck import fsck
from versionfs.records.model import (
    BlobKind, ChunkLoc, Commit, Kind, ObjectId, commit_id, encode_commit, encode_tree,
    make_tree, tree_id, TreeEntry,
)
from versionfs.repo.repository import Repo


def _repo(ws):
    repo = make_repo(ws)
    write(ws, "a/small.txt", "small file")
    write(ws, "a/b/big.bin", os.urandom(200_000))
    write(ws, "empty.txt", b"")
    os.symlink("a/small.txt", ws / "link")
    (ws / "emptydir").mkdir()
    cid = snap(repo, "one", tag="v1")
    return repo, cid


def _kinds(res):
    return sorted({p.kind for p in res.problems})


def test_a_sound_repository_passes(storage):
    repo, _ = _repo(storage / "ws")
    for verify in (False, True):
        res = fsck(repo, verify_data=verify)
        assert res.ok, res.problems
        assert res.notes == ()
        assert res.checked.commits == 1 and res.checked.files == 3
    assert res.checked.bytes_verified == 200_000 + len("small file")


def test_an_empty_repository_passes(ext4_dir):
    repo = make_repo(ext4_dir / "ws")
    assert fsck(repo, verify_data=True).ok


def test_progress_is_reported(ext4_dir):
    repo, _ = _repo(ext4_dir / "ws")
    seen = []
    fsck(repo, verify_data=True, progress=lambda *a: seen.append(a))
    phase, done, total = seen[-1]
    assert phase == "verify data" and done == total == 200_000 + len("small file")


def test_a_flipped_byte_is_found_by_verify_data_only(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    big = repo.entry(cid, "a/b/big.bin")
    victim = repo.chunks(big)[1].id
    loc = repo.chunk_loc(victim)
    flip_byte(repo.store.blob_path(loc.blob_kind, loc.blob), loc.offset + 7)
    assert fsck(repo).ok  # structure is intact
    res = fsck(repo, verify_data=True)
    assert _kinds(res) == ["chunk"]
    (p,) = res.problems
    assert p.object == victim.hex()
    assert loc.blob.short in p.message and "do not match its id" in p.message
    assert f"{cid.short}:a/b/big.bin" in p.message


def test_a_damaged_object_blob_is_found(xfs_dir):
    repo, cid = _repo(xfs_dir / "ws")
    objects = blob_files(repo, BlobKind.OBJECT)
    assert len(objects) == 1  # the big file, cloned
    flip_byte(objects[0], 100_000)
    res = fsck(repo, verify_data=True)
    assert _kinds(res) == ["chunk"]
    assert all("a/b/big.bin" in p.message for p in res.problems)


def test_a_missing_blob_is_named_with_its_users(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    loc = repo.chunk_loc(repo.entry(cid, "a/small.txt").id)
    path = repo.store.blob_path(loc.blob_kind, loc.blob)
    os.remove(path)
    res = fsck(repo)
    blob_problems = [p for p in res.problems if p.kind == "blob"]
    assert [p.object for p in blob_problems] == [loc.blob.hex()]
    assert "is missing" in blob_problems[0].message
    assert f"{cid.short}:a/small.txt" in blob_problems[0].message


def test_a_truncated_blob_is_found(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    loc = repo.chunk_loc(repo.entry(cid, "a/small.txt").id)
    path = repo.store.blob_path(loc.blob_kind, loc.blob)
    os.chmod(path, 0o644)
    os.truncate(path, loc.offset + 3)
    res = fsck(repo)
    assert "chunk" in _kinds(res)
    assert any("past the end" in p.message for p in res.problems)


def _put_tree(repo, rows) -> bytes:
    """Store a tree record written by hand (so it may hold names make_tree refuses)."""
    enc = msgpack.packb(rows, use_bin_type=True)
    tid = tree_id(enc)
    with repo.index.write() as txn:
        txn.put("trees", tid, enc)
    return tid


def _commit_tree(repo, tid, ref="heads/evil") -> bytes:
    enc = encode_commit(Commit(ObjectId(tid), (), 1, "x", "evil"))
    cid = commit_id(enc)
    with repo.index.write() as txn:
        txn.put("commits", cid, enc)
        txn.set_ref(ref, cid)
    return cid


def test_a_tree_with_a_dotdot_name_is_reported(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    small = repo.entry(cid, "a/small.txt")
    row = [b"..", int(Kind.FILE), 0o644, small.size, 0, bytes(small.id), b""]
    tid = _put_tree(repo, [row])
    _commit_tree(repo, tid)
    res = fsck(repo)
    (p,) = res.problems
    assert p.kind == "tree" and p.object == tid.hex() and "invalid name '..'" in p.message


def test_missing_records_are_reported(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    big = repo.entry(cid, "a/b/big.bin")
    sub = repo.entry(cid, "a/b")
    with repo.index.write() as txn:
        txn.delete("files", big.id)
    res = fsck(repo)
    assert [(p.kind, p.object) for p in res.problems] == [("file", big.id.hex())]
    assert "a/b/big.bin" in res.problems[0].message
    with repo.index.write() as txn:
        txn.delete("trees", sub.id)
        txn.set_ref("heads/ghost", b"\x01" * 32)
    res = fsck(repo)
    assert ("tree", sub.id.hex()) in [(p.kind, p.object) for p in res.problems]
    assert any(p.kind == "commit" and "ref heads/ghost" in p.message for p in res.problems)


def test_a_missing_parent_and_a_bad_chunk_location(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    c = repo.commit(cid)
    enc = encode_commit(Commit(c.tree, (ObjectId(b"\x02" * 32),), 2, "x", "orphan"))
    child = commit_id(enc)
    small = repo.entry(cid, "a/small.txt")
    with repo.index.write() as txn:
        txn.put("commits", child, enc)
        txn.set_ref("heads/main", child)
        txn.put_chunk_loc(b"\x03" * 32, ChunkLoc(BlobKind.PACK, ObjectId(b"\x04" * 32), 0, 9))
        txn.put("chunks", small.id, b"short")
    res = fsck(repo)
    objs = {(p.kind, p.object) for p in res.problems}
    assert ("commit", "02" * 32) in objs
    assert ("blob", "04" * 32) in objs
    assert ("chunk", small.id.hex()) in objs


def test_damaged_records_are_found_by_verify_data(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    sub = repo.entry(cid, "a")
    tree = repo.tree(sub.id)
    changed = make_tree([TreeEntry(e.name, e.kind, 0o600 if not e.is_dir else e.mode,
                                   e.size, e.mtime_ns, e.id, e.target)
                         for e in tree.entries])
    with repo.index.write() as txn:  # same key, other (still decodable) bytes
        txn.put("trees", sub.id, encode_tree(changed))
    assert fsck(repo).ok
    res = fsck(repo, verify_data=True)
    assert [(p.kind, p.object) for p in res.problems] == [("record", sub.id.hex())]


def test_stale_statcache_entries_are_problems(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    with repo.index.write() as txn:
        txn.put("statcache", b"gone.txt",
                msgpack.packb([1, 2, 3, 4, 5, 0o100644, b"\x05" * 32], use_bin_type=True))
        txn.put("statcache", b"junk.txt", b"\xc1")
    res = fsck(repo)
    assert {(p.kind, p.object) for p in res.problems} == {
        ("statcache", "gone.txt"), ("statcache", "junk.txt")}


def test_leftovers_are_notes_not_problems(ext4_dir):
    repo, cid = _repo(ext4_dir / "ws")
    with open(os.path.join(repo.store.tmp, "pack-1-abc"), "wb") as f:
        f.write(b"partial")
    writer = repo.store.pack_writer()
    writer.add(b"nobody points here")
    (orphan,) = writer.finish()
    set_ref(repo, "tags/v1", None)
    with repo.index.write() as txn:  # an unreachable commit
        txn.put("commits", b"\x06" * 32, encode_commit(repo.commit(cid))[:-1] + b"\x80")
    res = fsck(repo)
    assert res.ok
    kinds = sorted(n.kind for n in res.notes)
    assert kinds == ["tmp", "unreachable", "unreferenced-blob"]
    assert any(n.object == orphan.hex() for n in res.notes)


# -- command line ---------------------------------------------------------------------


def test_cli_fsck_clean(cli, ext4_dir):
    ws = ext4_dir / "ws"
    _repo(ws)[0].close()
    out = cli("fsck", "--verify-data", cwd=ws).stdout
    assert "no problems" in out and "verified" in out
    data = json.loads(cli("fsck", "--json", cwd=ws).stdout)
    assert data["ok"] is True and data["problems"] == [] and data["checked"]["commits"] == 1


def test_cli_fsck_exits_nonzero_and_names_the_damage(cli, ext4_dir):
    ws = ext4_dir / "ws"
    repo, cid = _repo(ws)
    loc = repo.chunk_loc(repo.entry(cid, "a/small.txt").id)
    flip_byte(repo.store.blob_path(loc.blob_kind, loc.blob), loc.offset)
    chunk = repo.entry(cid, "a/small.txt").id
    repo.close()
    cli("fsck", cwd=ws)  # structure is fine
    r = cli.fail("fsck", "--verify-data", cwd=ws, code=1)
    assert f"error: chunk {chunk.hex()}" in r.stdout and "a/small.txt" in r.stdout
    assert "fsck found 1 problem(s)" in r.stderr
    r = cli.fail("fsck", "--verify-data", "--json", cwd=ws, code=1)
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["problems"][0]["object"] == chunk.hex()


def test_cli_fsck_reports_a_deleted_blob_and_a_hostile_tree(cli, ext4_dir):
    ws = ext4_dir / "ws"
    repo, cid = _repo(ws)
    row = [b"..", int(Kind.SYMLINK), 0o777, 2, 0, bytes(ObjectId(os.urandom(32))), b"/e"]
    _commit_tree(repo, _put_tree(repo, [row]))
    loc = repo.chunk_loc(repo.chunks(repo.entry(cid, "a/b/big.bin"))[0].id)
    os.remove(repo.store.blob_path(loc.blob_kind, loc.blob))
    repo.close()
    r = cli.fail("fsck", cwd=ws, code=1)
    assert f"error: blob {loc.blob.hex()}" in r.stdout
    assert "invalid name '..'" in r.stdout
    with Repo.open(str(ws)) as repo:  # fsck changed nothing
        assert repo.refs("heads/evil")
