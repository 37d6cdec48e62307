"""checkout: round trips, touching only what differs, conflicts, --into, damage, CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from versionfs.ops.checkout import checkout
from versionfs.records.chunking import ChunkParams
from versionfs.errors import Conflict, CorruptObject, StorageFull, UnknownRevision, UsageError
from versionfs.records.model import BlobKind, decode_statcache, stat_bytes
from versionfs.repo.repository import Repo
from versionfs.workspace.scan import cache_key, scan_workspace
from versionfs.ops.snapshot import snapshot

# Files of 64 KiB and more are cut into chunks (4-64 KiB), so "large" stays small.
PARAMS = ChunkParams(threshold=64 << 10, min_size=4 << 10, avg_size=16 << 10,
                     max_size=64 << 10)
OLD = 1_600_000_000 * 10**9  # an mtime far from now: never racy


def make_repo(ws: Path) -> Repo:
    ws.mkdir(parents=True, exist_ok=True)
    return Repo.init(str(ws), params=PARAMS)


def put(ws: Path, rel: str, data: bytes | str, mode: int = 0o644, mtime: int = OLD) -> Path:
    p = ws / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink() or p.exists():
        p.unlink()
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    p.chmod(mode)
    os.utime(p, ns=(mtime, mtime))
    return p


def link(ws: Path, rel: str, target: str, mtime: int = OLD) -> None:
    p = ws / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, p)
    os.utime(p, ns=(mtime, mtime), follow_symlinks=False)


def settle_dirs(ws: Path, mtime: int = OLD) -> None:
    """Give every directory below ``ws`` an old mtime (deepest first)."""
    for root, dirs, _ in os.walk(ws, topdown=False):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p) and ".vfs" not in Path(p).relative_to(ws).parts:
                os.utime(p, ns=(mtime, mtime))


def describe(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (``.vfs`` excluded): kind, mode, mtime, content."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirs[:] = [d for d in dirs if d != ".vfs"]
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            s = os.lstat(p)
            if stat.S_ISLNK(s.st_mode):
                out[rel] = ("link", s.st_mtime_ns, os.readlink(p))
            elif stat.S_ISDIR(s.st_mode):
                out[rel] = ("dir", stat.S_IMODE(s.st_mode), s.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(s.st_mode), s.st_mtime_ns, f.read())
    return out


def inodes(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".vfs"]
        for name in files:
            s = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (s.st_ino, s.st_ctime_ns)
    return out


def snap(repo: Repo, tag: str) -> bytes:
    return snapshot(repo, message=tag, tag=tag, allow_empty=True).commit


def clean(repo: Repo) -> bool:
    """Whether the workspace equals HEAD (the scan's root tree is HEAD's)."""
    return scan_workspace(repo).root == repo.commit(repo.head()).tree


def v1_tree(ws: Path) -> None:
    put(ws, "a.txt", "alpha\n")
    put(ws, "exec.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    put(ws, "ro.dat", b"\x00\x01read-only", mode=0o444)
    put(ws, "priv", "secret", mode=0o600)
    put(ws, "empty.bin", b"")
    put(ws, "big.bin", os.urandom(300_000))
    put(ws, "d/e/deep.txt", "deep")
    put(ws, "d/sibling.txt", "sib")
    put(ws, "d/e/big2.bin", os.urandom(100_000), mode=0o640)
    put(ws, "gone/file", "will be removed in v2")
    put(ws, "becomes_dir", "a file in v1, a directory in v2")
    (ws / "becomes_file").mkdir()
    put(ws, "becomes_file/inner", "a directory in v1")
    link(ws, "link", "a.txt")
    link(ws, "dangling", "does/not/exist")
    (ws / "empty_dir").mkdir()
    (ws / "ro_dir").mkdir()
    put(ws, "ro_dir/x", "in a read-only dir")
    os.chmod(ws / "ro_dir", 0o555)
    settle_dirs(ws)


def v2_mutate(ws: Path) -> None:
    os.chmod(ws / "ro_dir", 0o755)
    put(ws, "a.txt", "alpha, changed\n")
    os.chmod(ws / "exec.sh", 0o644)
    big = bytearray((ws / "big.bin").read_bytes())
    big[150_000:150_010] = b"0123456789"
    put(ws, "big.bin", bytes(big) + os.urandom(70_000))
    put(ws, "d/e/big2.bin", os.urandom(120_000), mode=0o640)
    (ws / "gone/file").unlink()
    (ws / "gone").rmdir()
    (ws / "becomes_dir").unlink()
    put(ws, "becomes_dir/now", "inside")
    (ws / "becomes_file/inner").unlink()
    (ws / "becomes_file").rmdir()
    put(ws, "becomes_file", "now a file")
    (ws / "link").unlink()
    link(ws, "link", "exec.sh")
    put(ws, "new/sub/file", "added in v2")
    put(ws, "ro_dir/x", "changed in a read-only dir")
    os.utime(ws / "d/sibling.txt", ns=(OLD + 5, OLD + 5))  # metadata only
    os.chmod(ws / "ro_dir", 0o555)
    settle_dirs(ws, OLD + 10**9)


@pytest.fixture
def two_versions(storage):
    ws = storage / "ws"
    repo = make_repo(ws)
    v1_tree(ws)
    snap(repo, "v1")
    d1 = describe(ws)
    v2_mutate(ws)
    snap(repo, "v2")
    d2 = describe(ws)
    assert d1 != d2
    yield repo, ws, d1, d2
    repo.close()


# -- round trips ----------------------------------------------------------------------


def test_round_trip_both_ways(two_versions, request):
    repo, ws, d1, d2 = two_versions
    res = checkout(repo, "v1")
    assert describe(ws) == d1
    assert clean(repo)
    assert repo.head() == repo.resolve("v1") and repo.head_ref() is None
    if request.node.callspec.params["storage"] == "xfs":
        assert res.bytes_cloned == 400_000  # the large files came back as reflinks
    else:
        assert res.bytes_cloned == 0 and res.bytes_written >= 300_000
    checkout(repo, "v2")
    assert describe(ws) == d2
    assert clean(repo)


def test_repeated_checkout_does_nothing(two_versions):
    repo, ws, d1, _ = two_versions
    checkout(repo, "v1")
    before = inodes(ws)
    res = checkout(repo, "v1")
    assert (res.files_written, res.files_removed, res.files_updated) == (0, 0, 0)
    assert inodes(ws) == before


def test_switch_touches_only_differing_files(two_versions):
    repo, ws, d1, d2 = two_versions
    before = inodes(ws)
    res = checkout(repo, "v1")
    after = inodes(ws)
    untouched = {"priv", "ro.dat", "empty.bin", "d/e/deep.txt"}
    assert after["d/e/big2.bin"][0] != before["d/e/big2.bin"][0]
    for rel in untouched:
        assert after[rel] == before[rel], f"{rel} was touched"
    assert after["a.txt"][0] != before["a.txt"][0]  # rewritten: a new inode
    assert after["d/sibling.txt"][0] == before["d/sibling.txt"][0]  # only its mtime
    assert res.files_updated == 2  # d/sibling.txt (mtime) and exec.sh (mode)
    assert describe(ws) == d1


def test_switch_reads_only_the_trees_that_differ_and_keeps_none(storage, monkeypatch):
    ws = storage / "ws"
    repo = make_repo(ws)
    for i in range(30):
        put(ws, f"same/deep/f{i}", f"unchanged {i}")
        put(ws, f"changed/f{i}", f"v1 {i}")
    settle_dirs(ws)
    snap(repo, "v1")
    put(ws, "changed/f7", "v2 7")
    put(ws, "changed/f8", "v2 8", mtime=OLD + 1)
    os.utime(ws / "changed/f9", ns=(OLD + 2, OLD + 2))  # metadata only
    settle_dirs(ws)
    snap(repo, "v2")
    v1, v2 = (repo.commit(repo.resolve(r)).tree for r in ("v1", "v2"))
    same = repo.tree(v1).get("same").id
    repo._trees.clear()
    reads = []
    real = repo.tree_bytes
    monkeypatch.setattr(repo, "tree_bytes", lambda tid: reads.append(bytes(tid)) or real(tid))
    res = checkout(repo, "v1")
    assert (res.files_written, res.files_updated) == (2, 1)
    assert same not in reads and len(reads) == 5  # v1's root (the .vfs check), 2 x 2
    assert not repo._trees  # rows compared raw: no decoded tree kept (memory at scale)
    assert (ws / "changed/f7").read_text() == "v1 7" and clean(repo)


def test_stat_cache_is_refreshed_for_written_files(storage):
    ws = storage / "ws"
    repo = make_repo(ws)
    for name in ("a", "b", "c"):
        put(ws, name, f"{name} in v1")
    put(ws, "big", os.urandom(100_000))
    time.sleep(0.15)  # past the racy window, so the snapshots cache every file
    snap(repo, "v1")
    put(ws, "a", "a in v2")
    put(ws, "big", os.urandom(100_000))
    (ws / "b").unlink()
    put(ws, "d", "d in v2")
    time.sleep(0.15)
    snap(repo, "v2")
    for rev in ("v1", "v2", "v1"):
        checkout(repo, rev)
        for name in ("a", "big"):
            with repo.index.read() as txn:
                rec = decode_statcache(txn.get("statcache", cache_key(name)))
            entry = repo.entry(repo.resolve(rev), name)
            assert rec == (stat_bytes(os.lstat(ws / name)), entry.id)
        work = scan_workspace(repo)
        assert work.stats.files_read == 0  # nothing needs reading again
        assert work.root == repo.commit(repo.resolve(rev)).tree
    repo.close()


def test_branch_attaches_and_other_revisions_detach(two_versions):
    repo, ws, d1, d2 = two_versions
    checkout(repo, "v1")
    assert repo.head_ref() is None
    put(ws, "on_detached", "x")
    res = snapshot(repo, message="on a detached head")
    assert repo.head() == res.commit and repo.head_ref() is None
    checkout(repo, "main")
    assert repo.head_ref() == "heads/main" and repo.head() == repo.resolve("v2")
    assert not (ws / "on_detached").exists()
    assert describe(ws) == d2


# -- conflicts ------------------------------------------------------------------------


def test_uncommitted_change_is_a_conflict_naming_the_file(two_versions):
    repo, ws, d1, d2 = two_versions
    put(ws, "a.txt", "my local edit")
    with pytest.raises(Conflict, match=r"a\.txt.*--force"):
        checkout(repo, "v1")
    assert (ws / "a.txt").read_text() == "my local edit"
    assert describe(ws)["new/sub/file"] == d2["new/sub/file"]  # nothing was changed
    assert repo.head() == repo.resolve("v2")
    res = checkout(repo, "v1", force=True)
    assert res.forced == ("a.txt",)
    assert describe(ws) == d1


def test_untracked_file_in_the_way_is_a_conflict(two_versions):
    repo, ws, d1, _ = two_versions
    checkout(repo, "v1")
    put(ws, "new/sub/file", "untracked, but v2 has this path")
    with pytest.raises(Conflict, match="new/sub/file"):
        checkout(repo, "v2")
    put(ws, "new/sub/file", "added in v2", mtime=OLD + 123)  # same content: no conflict
    checkout(repo, "v2")
    assert (ws / "new/sub/file").read_text() == "added in v2"


def test_untracked_content_in_a_dir_replaced_by_a_file_is_a_conflict(two_versions):
    repo, ws, _, _ = two_versions
    put(ws, "becomes_dir/mine", "untracked")
    with pytest.raises(Conflict, match="becomes_dir/mine"):
        checkout(repo, "v1")
    checkout(repo, "v1", force=True)
    assert (ws / "becomes_dir").read_text() == "a file in v1, a directory in v2"


def test_metadata_only_change_is_not_a_conflict(two_versions):
    repo, ws, d1, _ = two_versions
    os.utime(ws / "a.txt", ns=(OLD + 42, OLD + 42))
    checkout(repo, "v1")
    assert describe(ws) == d1


def test_deleted_file_is_restored_where_the_target_differs(two_versions):
    repo, ws, d1, _ = two_versions
    (ws / "a.txt").unlink()
    checkout(repo, "v1")
    assert describe(ws) == d1


def test_local_changes_where_both_versions_agree_are_kept(two_versions):
    repo, ws, d1, d2 = two_versions
    put(ws, "priv", "edited locally; v1 and v2 have the same priv")
    (ws / "empty.bin").unlink()
    checkout(repo, "v1")
    now = describe(ws)
    assert now.pop("priv")[3] == b"edited locally; v1 and v2 have the same priv"
    assert "empty.bin" not in now
    assert now == {k: v for k, v in d1.items() if k not in ("priv", "empty.bin")}


def test_force_discards_every_local_change(two_versions):
    repo, ws, _, d2 = two_versions
    put(ws, "priv", "edited locally")
    (ws / "empty.bin").unlink()
    put(ws, "d/e/untracked", "new")
    res = checkout(repo, "HEAD")
    assert (res.files_written, res.files_removed) == (0, 0)
    res = checkout(repo, "HEAD", force=True)
    assert set(res.forced) == {"priv"}
    after = describe(ws)
    assert after.pop("d/e/untracked")[3] == b"new"  # untracked files stay
    assert after == d2


def test_many_conflicts_are_summarized(storage):
    ws = storage / "ws"
    repo = make_repo(ws)
    for i in range(15):
        put(ws, f"f{i:02d}", f"v1 {i}")
    snap(repo, "v1")
    for i in range(15):
        put(ws, f"f{i:02d}", f"v2 {i}")
    snap(repo, "v2")
    for i in range(15):
        put(ws, f"f{i:02d}", f"local {i}")
    with pytest.raises(Conflict) as info:
        checkout(repo, "v1")
    msg = str(info.value)
    assert "f00" in msg and "f09" in msg and "f10" not in msg and "and 5 more" in msg
    assert "\n" not in msg


def test_untracked_files_are_left_alone(two_versions):
    repo, ws, d1, _ = two_versions
    put(ws, "mine.txt", "untracked at the top")
    put(ws, "new/sub/mine", "untracked inside a directory v1 does not have")
    warnings = []
    res = checkout(repo, "v1", warn=warnings.append)
    assert (ws / "mine.txt").read_text() == "untracked at the top"
    assert (ws / "new/sub/mine").read_text() == "untracked inside a directory v1 does not have"
    assert not (ws / "new/sub/file").exists()
    assert set(res.kept) == {"new/sub", "new"}
    assert any("new/sub" in w for w in warnings)
    rest = describe(ws)
    for extra in ("mine.txt", "new", "new/sub", "new/sub/mine"):
        rest.pop(extra)
    assert rest == d1


def test_ignored_file_in_the_way_is_a_conflict(storage):
    ws = storage / "ws"
    repo = make_repo(ws)
    put(ws, "cache.bin", "tracked in v1")
    snap(repo, "v1")
    put(ws, ".vfsignore", "cache.bin\n")
    put(ws, "cache.bin", "ignored now, and precious")
    snap(repo, "v2")
    with pytest.raises(Conflict, match="cache.bin"):
        checkout(repo, "v1")
    assert (ws / "cache.bin").read_text() == "ignored now, and precious"


def test_symlink_in_the_workspace_cannot_redirect_writes(storage):
    ws, outside = storage / "ws", storage / "outside"
    outside.mkdir()
    repo = make_repo(ws)
    put(ws, "d/file", "inside")
    snap(repo, "v1")
    (ws / "d/file").unlink()
    (ws / "d").rmdir()
    link(ws, "d", str(outside))
    snap(repo, "v2")
    checkout(repo, "v1")
    assert os.listdir(outside) == []
    assert not (ws / "d").is_symlink() and (ws / "d/file").read_text() == "inside"


# -- --into ---------------------------------------------------------------------------


def test_into_a_new_directory(two_versions, tmp_path):
    repo, ws, d1, d2 = two_versions
    out = tmp_path / "export"
    res = checkout(repo, "v1", into=str(out))
    assert res.into == str(out) and res.head is None
    assert describe(out) == d1
    assert repo.head() == repo.resolve("v2") and describe(ws) == d2


def test_into_refuses_a_non_empty_directory_without_force(two_versions, tmp_path):
    repo, _, d1, _ = two_versions
    out = tmp_path / "export"
    put(out, "a.txt", "something else")
    put(out, "big.bin/x", "a directory where v1 has a file")
    with pytest.raises(Conflict, match="not empty"):
        checkout(repo, "v1", into=str(out))
    checkout(repo, "v1", into=str(out), force=True)
    assert describe(out) == d1


def test_into_the_repository_or_workspace_is_refused(two_versions):
    repo, ws, _, _ = two_versions
    with pytest.raises(UsageError, match="inside the repository"):
        checkout(repo, "v1", into=str(ws / ".vfs" / "x"))
    with pytest.raises(UsageError, match="is the workspace"):
        checkout(repo, "v1", into=str(ws))


def test_bare_repository_needs_into(tmp_path):
    ws = tmp_path / "ws"
    repo = make_repo(ws)
    put(ws, "f", "x")
    snap(repo, "v1")
    repo.close()
    bare = Repo(str(ws / ".vfs"), None)
    try:
        with pytest.raises(UsageError, match="--into"):
            checkout(bare, "v1")
        checkout(bare, "v1", into=str(tmp_path / "out"))
        assert (tmp_path / "out/f").read_text() == "x"
    finally:
        bare.close()


# -- damage and errors ------------------------------------------------------------------


def _damage_chunk(repo: Repo, cid: bytes) -> None:
    loc = repo.chunk_loc(cid)
    path = repo.store.blob_path(loc.blob_kind, loc.blob)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(loc.offset)
        byte = f.read(1)
        f.seek(loc.offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_blob_fails_instead_of_writing_wrong_bytes(tmp_path):
    ws = tmp_path / "ws"
    repo = make_repo(ws)
    put(ws, "small", "the original small file")
    put(ws, "large", os.urandom(200_000))
    snap(repo, "v1")
    put(ws, "small", "changed")
    put(ws, "large", os.urandom(200_000))
    snap(repo, "v2")
    v1 = repo.resolve("v1")
    small = repo.entry(v1, "small")
    _damage_chunk(repo, small.id)
    with pytest.raises(CorruptObject, match=r"damaged.*while checking out small"):
        checkout(repo, "v1")
    assert (ws / "small").read_text() == "changed"
    assert not [n for n in os.listdir(ws) if n.startswith(".vfs-tmp")]
    large = repo.entry(v1, "large")
    chunks = repo.chunks(large)
    assert repo.chunk_loc(chunks[0].id).blob_kind is BlobKind.PACK  # ext4: no clone
    _damage_chunk(repo, chunks[-1].id)
    with pytest.raises(CorruptObject):
        checkout(repo, "v1", into=str(tmp_path / "out"))
    assert not (tmp_path / "out/large").exists()


def test_unknown_revision_fails_with_its_name(two_versions):
    repo, _, _, _ = two_versions
    with pytest.raises(UnknownRevision, match="'nope'"):
        checkout(repo, "nope")


def test_disk_full_is_a_clear_error_and_a_rerun_finishes(small_fs):
    ws = small_fs / "ws"
    repo = make_repo(ws)
    v1_data = os.urandom(3 << 20)
    put(ws, "data", v1_data)
    put(ws, "small", "v1")
    snap(repo, "v1")
    put(ws, "data", os.urandom(3 << 20))
    put(ws, "small", "v2")
    snap(repo, "v2")
    filler = small_fs / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    try:
        # small files are written by several threads while the large one is copied:
        # whichever meets the full disk first is the one named
        with pytest.raises(StorageFull,
                           match="no space left while checking out (data|small)"):
            checkout(repo, "v1")
        assert repo.head() == repo.resolve("v2")
        assert not [n for n in os.listdir(ws) if n.startswith(".vfs-tmp")]
        filler.unlink()
        checkout(repo, "v1")  # the files already switched are no conflict
        assert (ws / "data").read_bytes() == v1_data and (ws / "small").read_text() == "v1"
    finally:
        if filler.exists():
            filler.unlink()
        repo.close()


# -- the command line -----------------------------------------------------------------


def test_cli_checkout(cli, tmp_path):
    ws = tmp_path / "ws"
    repo = make_repo(ws)
    put(ws, "a.txt", "one")
    snap(repo, "v1")
    put(ws, "a.txt", "two")
    snap(repo, "v2")
    repo.close()
    res = cli("checkout", "v1", cwd=ws)
    assert "HEAD is now at" in res.stdout and "1 file written" in res.stderr
    assert (ws / "a.txt").read_text() == "one"
    out = json.loads(cli("checkout", "main", "--json", cwd=ws).stdout)
    assert out["head"] == "heads/main" and out["files_written"] == 1
    put(ws, "a.txt", "local")
    fail = cli.fail("checkout", "v1", cwd=ws, code=Conflict.exit_code)
    assert "a.txt" in fail.stderr and "--force" in fail.stderr
    cli("checkout", "v1", "--force", cwd=ws)
    assert (ws / "a.txt").read_text() == "one"
    cli("checkout", "v2", "--into", tmp_path / "out", cwd=ws)
    assert (tmp_path / "out/a.txt").read_text() == "two"
    fail = cli.fail("checkout", "nope", cwd=ws, code=UnknownRevision.exit_code)
    assert "unknown revision 'nope'" in fail.stderr


# -- property: any tree survives a snapshot and a checkout ----------------------------

NAMES = st.sampled_from(["a", "b", "c", "dd", "e.txt", "F", "g h", "ü"])
MTIMES = st.integers(min_value=10**18, max_value=1_700_000_000 * 10**9)
FILES = st.tuples(st.just("file"), st.binary(max_size=300),
                  st.sampled_from([0o644, 0o600, 0o755, 0o444]), MTIMES)
LINKS = st.tuples(st.just("link"), st.sampled_from(["a", "../b", "/nowhere", "dd/e.txt"]),
                  MTIMES)
TREES = st.recursive(
    st.one_of(FILES, LINKS),
    lambda kids: st.tuples(st.just("dir"), st.dictionaries(NAMES, kids, max_size=4),
                           st.sampled_from([0o755, 0o700, 0o555]), MTIMES),
    max_leaves=12)
ROOTS = st.dictionaries(NAMES, TREES, max_size=5)


def build(root: Path, tree: dict) -> None:
    for name, node in tree.items():
        p = root / name
        if node[0] == "file":
            p.write_bytes(node[1])
            os.chmod(p, node[2])
            os.utime(p, ns=(node[3], node[3]))
        elif node[0] == "link":
            os.symlink(node[1], p)
            os.utime(p, ns=(node[2], node[2]), follow_symlinks=False)
        else:
            p.mkdir()
            build(p, node[1])
            os.chmod(p, node[2])
            os.utime(p, ns=(node[3], node[3]))


def wipe(ws: Path) -> None:
    for name in os.listdir(ws):
        if name == ".vfs":
            continue
        p = ws / name
        if p.is_symlink() or not p.is_dir():
            p.unlink()
        else:
            for dirpath, dirs, _ in os.walk(p):
                for d in dirs:
                    os.chmod(os.path.join(dirpath, d), 0o755)
            os.chmod(p, 0o755)
            shutil.rmtree(p)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(a=ROOTS, b=ROOTS)
def test_any_trees_round_trip_and_switch(a, b):
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        repo = make_repo(ws)
        try:
            build(ws, a)
            snap(repo, "a")
            da = describe(ws)
            wipe(ws)
            build(ws, b)
            snap(repo, "b")
            db = describe(ws)
            checkout(repo, "a", into=str(Path(tmp) / "out"))
            assert describe(Path(tmp) / "out") == da
            checkout(repo, "a")
            assert describe(ws) == da
            checkout(repo, "b")
            assert describe(ws) == db
        finally:
            repo.close()


def files_of(desc: dict) -> dict:
    return {p: v for p, v in desc.items() if v[0] != "dir"}


def three_workspaces(tmp: str, a: dict, b: dict, c: dict):
    """A repository with commits a and b (HEAD) whose workspace holds tree c."""
    ws = Path(tmp) / "ws"
    repo = make_repo(ws)
    out = []
    for tree, tag in ((a, "a"), (b, "b"), (c, None)):
        wipe(ws)
        build(ws, tree)
        if tag:
            snap(repo, tag)
        out.append(describe(ws))
    return repo, ws, out


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(a=ROOTS, b=ROOTS, c=ROOTS)
def test_switch_from_any_workspace(a, b, c):
    """Without force: refused with nothing changed, or every path where a and b
    differ is a's and every other path is as the workspace had it (a file where b
    has a directory is untracked: it stays unless a needs the path)."""
    with tempfile.TemporaryDirectory() as tmp:
        repo, ws, (da, db, dc) = three_workspaces(tmp, a, b, c)
        try:
            try:
                checkout(repo, "a")
            except Conflict:
                assert describe(ws) == dc
                return
            now = files_of(describe(ws))
            fa, fc = files_of(da), files_of(dc)
            for p in set(fa) | set(files_of(db)) | set(fc):
                untracked = p in fc and p not in da and db.get(p, ("",))[0] == "dir"
                expected = fc.get(p) if da.get(p) == db.get(p) or untracked else fa.get(p)
                assert now.get(p) == expected, p
        finally:
            repo.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(a=ROOTS, b=ROOTS, c=ROOTS)
def test_force_from_any_workspace_gives_the_target(a, b, c):
    """With force: every path of a is a's; anything else left is untracked."""
    with tempfile.TemporaryDirectory() as tmp:
        repo, ws, (da, db, dc) = three_workspaces(tmp, a, b, c)
        try:
            checkout(repo, "a", force=True)
            now = describe(ws)
            for p, v in da.items():
                assert now.get(p) == v, p
            for p, v in files_of(now).items():
                if p not in da:
                    assert dc.get(p) == v and (p not in db or db[p][0] == "dir"), p
        finally:
            repo.close()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(a=ROOTS, b=ROOTS, c=ROOTS)
def test_reading_ahead_changes_no_plan(a, b, c):
    """The look-ahead only reads: with it cut short anywhere, or not at all, the
    switch plans the same actions and finds the same conflicts."""
    from versionfs.ops.checkout import _plan_switch
    with tempfile.TemporaryDirectory() as tmp:
        repo, ws, _ = three_workspaces(tmp, a, b, c)
        try:
            h, t = (repo.commit(repo.resolve(r)).tree for r in ("b", "a"))
            plans = [_plan_switch(repo, h, t, print, ahead=k) for k in (None, 0, 1, 4)]
            for plan in plans[1:]:
                assert (plan.actions, plan.conflicts) == (plans[0].actions,
                                                          plans[0].conflicts)
        finally:
            repo.close()


def test_lookahead_reads_the_pairs_and_probes_the_plan_will_ask_for(two_versions):
    from versionfs.workspace.lookahead import MISSING, Lookahead
    repo, ws, d1, d2 = two_versions
    h, t = (repo.commit(repo.resolve(r)).tree for r in ("v2", "v1"))
    (ws / "d/e/big2.bin").unlink()
    ahead = Lookahead(repo, str(ws))
    ahead.switch(h, t)
    assert [name for name, _, _ in ahead.pairs(h, t)][:3] == ["a.txt", "becomes_dir",
                                                             "becomes_file"]
    st, raw = ahead.probe("a.txt")
    with repo.index.read() as txn:
        assert raw == txn.get("statcache", b"a.txt")
    assert st.st_ino == os.lstat(ws / "a.txt").st_ino
    assert ahead.probe("a.txt") is MISSING  # taken once
    assert ahead.probe("new/sub/file") != MISSING  # under a directory HEAD has
    assert ahead.probe("d/e/big2.bin") == (None, None)  # absent from the workspace
    assert ahead.probe("ro.dat") is MISSING  # equal in both trees: never looked at
    assert ahead.probe("gone/file") is MISSING  # below a directory HEAD lacks
    short = Lookahead(repo, str(ws), limit=1)
    short.switch(h, t)
    assert short.pairs(h, t) is not None and short.probe("d/e") is MISSING


def test_a_missing_tree_fails_the_switch_before_anything_is_written(two_versions):
    from versionfs.errors import MissingObject
    repo, ws, d1, d2 = two_versions
    lost = repo.entry(repo.resolve("v1"), "d/e").id
    with repo.index.write() as txn:
        txn.delete("trees", lost)
    head = repo.head()
    with pytest.raises(MissingObject, match=f"tree {lost.short} is missing"):
        checkout(repo, "v1")
    assert describe(ws) == d2 and repo.head() == head


def many_small_versions(ws: Path, dirs: int = 7, per_dir: int = 100):
    """A repository whose v1 and v2 differ in every file of ``dirs`` directories
    (more files than the writers keep in flight), some of them read-only."""
    repo = make_repo(ws)
    for v in ("v1", "v2"):
        for d in range(dirs):
            for i in range(per_dir):
                put(ws, f"d{d}/f{i}", f"{v} {d} {i}" * (1 + i % 7), mtime=OLD + i)
        for d in range(0, dirs, 3):
            os.chmod(ws / f"d{d}", 0o555)
        settle_dirs(ws, OLD + (v == "v2"))
        snap(repo, v)
        if v == "v1":
            for d in range(dirs):
                os.chmod(ws / f"d{d}", 0o755)
    return repo


def test_many_files_written_in_parallel_round_trip(storage):
    ws = storage / "ws"
    repo = many_small_versions(ws)
    d2 = describe(ws)
    try:
        res = checkout(repo, "v1")
        assert res.files_written == 700
        d1 = describe(ws)
        assert d1 != d2 and d1["d3"] == ("dir", 0o555, OLD) and d1["d1"][1] == 0o755
        assert d1["d1/f5"] == ("file", 0o644, OLD + 5, b"v1 1 5" * 6)
        time.sleep(0.15)  # past the racy window, so the scan could use every entry
        work = scan_workspace(repo)
        assert work.stats.files_read == 0 and work.root == repo.commit(repo.head()).tree
        checkout(repo, "v2")
        assert describe(ws) == d2
    finally:
        repo.close()


def test_a_failure_among_parallel_writes_leaves_every_file_old_or_new(storage):
    ws = storage / "ws"
    repo = many_small_versions(ws)
    try:
        v1 = repo.resolve("v1")
        head = repo.head()
        _damage_chunk(repo, repo.entry(v1, "d4/f50").id)
        with pytest.raises(CorruptObject, match=r"damaged.*while checking out d4/f50"):
            checkout(repo, "v1")
        assert repo.head() == head
        for d in range(7):
            names = os.listdir(ws / f"d{d}")
            assert sorted(names) == sorted(f"f{i}" for i in range(100)), names
            for i in range(100):
                data = (ws / f"d{d}/f{i}").read_bytes()
                assert data in (f"v1 {d} {i}".encode() * (1 + i % 7),
                                f"v2 {d} {i}".encode() * (1 + i % 7))
        assert (ws / "d4/f50").read_bytes().startswith(b"v2")
    finally:
        repo.close()


def test_non_utf8_names_round_trip(tmp_path):
    ws = tmp_path / "ws"
    repo = make_repo(ws)
    raw = os.fsencode(str(ws)) + b"/caf\xe9"
    os.mkdir(raw)
    with open(raw + b"/\xff.bin", "wb") as f:
        f.write(b"latin-1 names")
    os.utime(raw + b"/\xff.bin", ns=(OLD, OLD))
    os.utime(raw, ns=(OLD, OLD))
    snap(repo, "v1")
    d1 = describe(ws)
    os.unlink(raw + b"/\xff.bin")
    os.rmdir(raw)
    snap(repo, "v2")
    checkout(repo, "v1")
    assert describe(ws) == d1
    checkout(repo, "v1", into=str(tmp_path / "out"))
    assert describe(tmp_path / "out") == d1
    checkout(repo, "v2")
    assert not os.path.exists(raw)
    repo.close()
