"""gc removes what nothing reaches, never what something reaches, and stays safe when
interrupted at any step."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from repo_helpers import (
    blob_files, flip_byte, make_repo, read_commit, set_ref, snap, statcache, write,
)
from versionfs.errors import CorruptObject
from versionfs.ops.fsck import fsck
from versionfs.ops import roots
from versionfs.ops.gc import gc
from versionfs.records.model import BlobKind
from versionfs.store.blobs import PackWriter, ObjectStore
from versionfs.repo.repository import Repo


def _history(ws):
    """Three commits on main: v1 (tagged), v2, v3; v2 and v3 add and drop data."""
    repo = make_repo(ws)
    write(ws, "keep.txt", "kept in every commit")
    write(ws, "data/big.bin", os.urandom(400_000))
    write(ws, "data/small.csv", "a,b\n1,2\n")
    os.symlink("keep.txt", ws / "link")
    v1 = snap(repo, "v1", tag="v1")
    write(ws, "data/big.bin", os.urandom(300_000))      # v2 replaces the big file
    write(ws, "scratch/tmp.bin", os.urandom(200_000))
    v2 = snap(repo, "v2")
    os.remove(ws / "scratch/tmp.bin")
    write(ws, "data/small.csv", "a,b\n3,4\n")
    v3 = snap(repo, "v3")
    return repo, v1, v2, v3


def _all_live_content(repo):
    return {cid: read_commit(repo, cid) for cid in _reachable_commits(repo)}


def _reachable_commits(repo):
    out, stack = set(), list(repo.refs().values())
    while stack:
        c = stack.pop()
        if c not in out:
            out.add(c)
            stack += repo.commit(c).parents
    return out


def test_gc_on_a_fresh_history_removes_nothing(storage):
    repo, *_ = _history(storage / "ws")
    before = _all_live_content(repo)
    r = gc(repo)
    assert (r.commits, r.trees, r.files, r.chunks, r.blobs) == (0, 0, 0, 0, 0)
    assert _all_live_content(repo) == before
    assert fsck(repo, verify_data=True).ok


def test_gc_removes_unreachable_and_keeps_every_reachable_byte(storage):
    repo, v1, v2, v3 = _history(storage / "ws")
    # Rewind main to v1: v2 and v3 become unreachable (v1 is also tagged).
    set_ref(repo, "heads/main", v1)
    expected = read_commit(repo, v1)
    blobs_before = list(repo.store.iter_blobs())

    dry = gc(repo, dry_run=True)
    assert dry.dry_run and dry.commits == 2
    assert list(repo.store.iter_blobs()) == blobs_before  # dry run changes nothing
    with repo.index.read() as txn:
        assert txn.has("commits", v3)

    r = gc(repo)
    assert r.commits == 2 and r.trees >= 2 and r.chunks > 0 and r.bytes_freed > 0
    assert (r.commits, r.trees, r.files, r.chunks) == \
        (dry.commits, dry.trees, dry.files, dry.chunks)
    with repo.index.read() as txn:
        assert not txn.has("commits", v2) and not txn.has("commits", v3)
    assert read_commit(repo, v1) == expected
    res = fsck(repo, verify_data=True)
    assert res.ok, res.problems
    assert not [n for n in res.notes if n.kind in ("unreferenced-blob", "unreachable")]
    again = gc(repo)
    assert (again.commits, again.trees, again.files, again.chunks, again.blobs) == \
        (0, 0, 0, 0, 0)


def test_parents_tags_detached_head_and_providers_are_roots(ext4_dir):
    repo, v1, v2, v3 = _history(ext4_dir / "ws")
    set_ref(repo, "tags/v1", None)
    # main keeps v3 and (as parents) v2 and v1.
    r = gc(repo)
    assert r.commits == 0
    # A detached HEAD keeps its commit even when no ref names it.
    with repo.index.write() as txn:
        txn.put("meta", b"HEAD", v2.hex().encode())
        txn.delete("refs", b"heads/main")
    r = gc(repo)
    assert r.commits == 1  # v3
    assert set(_reachable_from(repo, v2)) == {v1, v2}
    # A registered root provider (as a feature adds) keeps what it names.
    def run_roots(repo, txn, report):
        return {bytes(v2): "a run record"} if txn.meta("test-root") else {}

    roots.register("test-runs", run_roots)
    try:
        with repo.index.write() as txn:
            txn.put("meta", b"test-root", b"names v2")
            txn.put("meta", b"HEAD", b"heads/main")
            assert roots.collect(repo, txn).index == {bytes(v2): "a run record"}
        r = gc(repo)
        assert r.commits == 0
        assert read_commit(repo, v2)["keep.txt"] == b"kept in every commit"
        assert fsck(repo, verify_data=True).ok
    finally:
        roots.unregister("test-runs")
    assert [p.name for p in roots.PROVIDERS] == ["refs", "HEAD", "mounts", "runs"]


def _reachable_from(repo, cid):
    out = [cid]
    while repo.commit(out[-1]).parents:
        out.append(repo.commit(out[-1]).parents[0])
    return out


def test_statcache_entries_of_removed_files_are_purged(ext4_dir):
    ws = ext4_dir / "ws"
    repo = make_repo(ws)
    write(ws, "f.txt", "version one")
    write(ws, "same.txt", "never changes")
    v1 = snap(repo, "v1", settle=True)
    write(ws, "f.txt", "version two")
    v2 = snap(repo, "v2", settle=True)
    cache = statcache(repo)
    assert set(cache) == {"f.txt", "same.txt"}
    two_id = cache["f.txt"]
    # Drop v2. Its content for f.txt is now unreachable; the stat cache must forget it,
    # or the next snapshot would reuse the id without storing the bytes again.
    set_ref(repo, "heads/main", v1)
    r = gc(repo)
    assert r.commits == 1 and r.statcache == 1
    assert set(statcache(repo)) == {"same.txt"}
    with repo.index.read() as txn:
        assert not txn.has("chunks", two_id)
    v3 = snap(repo, "v3")  # f.txt did not change on disk since v2
    assert read_commit(repo, v3)["f.txt"] == b"version two"
    assert fsck(repo, verify_data=True).ok


def test_sparse_packs_are_rewritten(ext4_dir):
    ws = ext4_dir / "ws"
    repo = make_repo(ws)
    keep = {f"keep/{i}.bin": os.urandom(3000) for i in range(3)}
    for rel, data in keep.items():
        write(ws, rel, data)
    for i in range(40):
        write(ws, f"junk/{i}.bin", os.urandom(3000))
    snap(repo, "everything")  # one pack, mostly junk
    assert len(blob_files(repo, BlobKind.PACK)) == 1
    old_pack = blob_files(repo, BlobKind.PACK)[0]
    for i in range(40):
        os.remove(ws / f"junk/{i}.bin")
    v2 = _drop_history(repo, snap(repo, "only keep"))
    r = gc(repo)
    assert r.packs_rewritten == 1
    assert not os.path.exists(old_pack)
    packs = blob_files(repo, BlobKind.PACK)
    assert len(packs) == 1 and os.path.getsize(packs[0]) == 3 * 3000
    assert {k: v for k, v in read_commit(repo, v2).items() if k.startswith("keep/")} == keep
    assert fsck(repo, verify_data=True).ok


def _drop_history(repo, cid):
    """Make ``cid`` the only commit on main by re-recording it without parents."""
    from versionfs.records.model import Commit, commit_id, encode_commit
    c = repo.commit(cid)
    root = Commit(c.tree, (), c.time_ns, c.author, c.message)
    enc = encode_commit(root)
    new = commit_id(enc)
    with repo.index.write() as txn:
        txn.put("commits", new, enc)
        txn.set_ref("heads/main", new)
    return new


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_tmp_leftovers_of_dead_processes_are_removed(ext4_dir):
    repo = make_repo(ext4_dir / "ws")
    dead = os.path.join(repo.store.tmp, f"pack-{_dead_pid()}-0123456789abcdef")
    alive = os.path.join(repo.store.tmp, f"pack-{os.getppid()}-0123456789abcdef")
    for p in (dead, alive):
        with open(p, "wb") as f:
            f.write(b"x" * 5000)
    assert gc(repo, dry_run=True).tmp_files == 1
    r = gc(repo)
    assert r.tmp_files == 1 and r.bytes_freed >= 5000
    assert not os.path.exists(dead) and os.path.exists(alive)


def test_gc_refuses_a_repository_it_cannot_walk(ext4_dir):
    repo, v1, v2, v3 = _history(ext4_dir / "ws")
    set_ref(repo, "heads/main", v1)
    tree = repo.commit(v3).tree
    with repo.index.write() as txn:
        txn.delete("trees", tree)
    repo._trees.clear()
    set_ref(repo, "heads/main", v3)
    with pytest.raises(CorruptObject, match="gc refused: tree .* is missing"):
        gc(repo)
    with repo.index.read() as txn:
        assert txn.has("commits", v2)  # nothing was removed


# -- interrupted pack rewrites ---------------------------------------------------------


class Crash(Exception):
    pass


def _sparse_pack_repo(ws):
    repo = make_repo(ws)
    for i in range(20):
        write(ws, f"f{i}.bin", os.urandom(2000))
    snap(repo, "all")
    for i in range(2, 20):
        os.remove(ws / f"f{i}.bin")
    v2 = _drop_history(repo, snap(repo, "two files"))
    return repo, v2


def test_crash_after_new_packs_before_relocation_is_harmless(ext4_dir, monkeypatch):
    repo, v2 = _sparse_pack_repo(ext4_dir / "ws")
    expected = read_commit(repo, v2)
    real_finish = PackWriter.finish

    def finish_then_crash(self):
        real_finish(self)
        raise Crash()

    monkeypatch.setattr(PackWriter, "finish", finish_then_crash)
    with pytest.raises(Crash):
        gc(repo)
    monkeypatch.undo()
    assert read_commit(repo, v2) == expected
    res = fsck(repo, verify_data=True)
    assert res.ok, res.problems
    assert [n.kind for n in res.notes] == ["unreferenced-blob"]  # the new, unused pack
    r = gc(repo)
    assert r.blobs == 1 and r.packs_rewritten == 1
    assert read_commit(repo, v2) == expected
    assert fsck(repo, verify_data=True).notes == ()


def test_crash_before_the_old_pack_is_deleted_is_harmless(ext4_dir, monkeypatch):
    repo, v2 = _sparse_pack_repo(ext4_dir / "ws")
    expected = read_commit(repo, v2)

    def crash(self, kind, blob):
        raise Crash()

    with repo.index.read() as txn:
        n_chunks = txn.count("chunks")
    monkeypatch.setattr(ObjectStore, "remove_blob", crash)
    with pytest.raises(Crash):
        gc(repo)
    monkeypatch.undo()
    with repo.index.read() as txn:
        assert txn.count("chunks") == 2 < n_chunks  # the sweep committed
    assert read_commit(repo, v2) == expected
    assert fsck(repo, verify_data=True).ok
    r = gc(repo)
    assert r.blobs >= 1
    assert read_commit(repo, v2) == expected
    assert fsck(repo, verify_data=True).notes == ()


# -- command line ---------------------------------------------------------------------


def test_cli_gc(cli, ext4_dir):
    ws = ext4_dir / "ws"
    repo, v1, v2, v3 = _history(ws)
    set_ref(repo, "heads/main", v1)
    repo.close()
    out = cli("gc", "--dry-run", cwd=ws).stdout
    assert out.startswith("would remove 2 commits") and "would free about" in out
    out = cli("gc", cwd=ws).stdout
    assert out.startswith("removed 2 commits") and "freed" in out
    data = json.loads(cli("gc", "--json", cwd=ws).stdout)
    assert data["commits"] == 0 and data["dry_run"] is False
    assert set(data) >= {"commits", "trees", "files", "chunks", "statcache", "blobs",
                         "packs_rewritten", "tmp_files", "bytes_freed"}
    with Repo.open(str(ws)) as repo:
        assert read_commit(repo, v1)["keep.txt"] == b"kept in every commit"


def test_commits_passed_in_keep_are_roots(ext4_dir):
    repo, v1, v2, v3 = _history(ext4_dir / "ws")
    expected = read_commit(repo, v3)
    set_ref(repo, "heads/main", v1)
    r = gc(repo, keep=[v3, b"\x07" * 32])  # an unknown id is ignored
    assert r.commits == 0
    assert read_commit(repo, v3) == expected
    assert gc(repo).commits == 2


def test_gc_keeps_commits_served_by_mounts(ext4_dir, monkeypatch):
    mounts = pytest.importorskip("versionfs.repo.mounts")
    repo, v1, v2, v3 = _history(ext4_dir / "ws")
    state = mounts.MountState("/mnt/x", str(ext4_dir / "ws"), v3.hex(), v3.hex(), 1, "")
    other = mounts.MountState("/mnt/y", "s3://bucket/repo", None, v2.hex(), 1, "")
    monkeypatch.setattr(mounts, "active_mounts", lambda: [(None, state), (None, other),
                                                          (None, None)])
    assert roots.mounted_commits(repo) == {bytes(v3)}
    expected = read_commit(repo, v3)
    set_ref(repo, "heads/main", v1)
    assert gc(repo, dry_run=True).commits == 0  # v3 (and its parent v2) is mounted
    assert gc(repo).commits == 0
    assert read_commit(repo, v3) == expected
    monkeypatch.setattr(mounts, "active_mounts", lambda: [])
    assert gc(repo).commits == 2  # unmounted: now v3 and v2 go


def test_a_damaged_chunk_keeps_its_pack_from_being_rewritten(ext4_dir):
    repo, v2 = _sparse_pack_repo(ext4_dir / "ws")
    entry = repo.entry(v2, "f1.bin")
    loc = repo.chunk_loc(entry.id)
    pack = repo.store.blob_path(loc.blob_kind, loc.blob)
    flip_byte(pack, loc.offset + 10)
    r = gc(repo)
    assert r.packs_rewritten == 0 and r.chunks == 18
    assert len(r.warnings) == 1 and loc.blob.short in r.warnings[0]
    assert os.path.exists(pack)
    assert blob_files(repo, BlobKind.PACK) == [pack]  # the partial copy was dropped too
    res = fsck(repo, verify_data=True)
    assert [(p.kind, p.object) for p in res.problems] == [("chunk", entry.id.hex())]


def test_phase_bars_draw_and_close(capsys):
    from versionfs.cli.maint_cmds import PhaseBars
    with PhaseBars() as bars:
        bars.enabled = True
        bars("mark", 1000, None)
        bars("mark", 2000, None)
        bars("verify data", 10, 100)
        bars("verify data", 100, 100)
    assert bars.bar is None
