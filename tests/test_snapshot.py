"""What a snapshot records: files, modes, mtimes, symlinks, empty directories; what it
leaves out (special files, ignored paths, ``.vfs/``); how little it reads and stores
the second time; and the options of ``vfs snapshot``.

Most tests run on both storage paths (``storage``: XFS with reflink clones, ext4 with
packs). Repositories use the default chunking parameters, as users get them.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import time
from pathlib import Path

from versionfs.records.chunking import CHUNK_THRESHOLD
from versionfs.records.hashing import hash_bytes
from versionfs.records.model import Kind
from versionfs.store.blobs import fan_out
from versionfs.workspace.scan import RACY_NS

MiB = 1 << 20
T0 = 1_600_000_000_123_456_789  # an mtime with every nanosecond digit set


def settle() -> None:
    """Wait out the stat cache's racy window, so that files written just now get
    stat cache entries (a file changed within it is always read again)."""
    time.sleep(RACY_NS / 1e9 + 0.05)


def write(ws: Path, rel: str, data: bytes | str, mode: int | None = None,
          mtime_ns: int | None = None) -> Path:
    p = ws / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        p.chmod(mode)
    if mtime_ns is not None:
        os.utime(p, ns=(mtime_ns, mtime_ns))
    return p


def new_repo(path: Path):
    from versionfs import Repo
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init(str(path))


def read(repo, rev: str, path: str) -> bytes:
    with repo.open(rev, path) as f:
        return f.read()


def entries(repo, rev: str = "HEAD") -> dict:
    return dict(repo.walk(repo.commit(repo.resolve(rev)).tree))


def snapshot_json(cli, ws: Path, *args) -> dict:
    return json.loads(cli("snapshot", "--json", *args, cwd=ws).stdout)


# -- what is recorded ------------------------------------------------------------------


def test_files_modes_and_mtimes_are_preserved(storage):
    ws = storage / "ws"
    repo = new_repo(ws)
    files = {
        "data/a.csv": (b"x,y\n1,2\n" * 100, 0o644),
        "run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "readonly.txt": (b"do not touch", 0o444),
        "group-exec": (b"g", 0o750),
        "empty.bin": (b"", 0o600),
        "nested/deep/deeper/x.bin": (os.urandom(70_000), 0o640),
        "sticky-ish": (b"s", 0o1755),
    }
    for i, (rel, (data, mode)) in enumerate(files.items()):
        write(ws, rel, data, mode, T0 + i * 1_000_000_007)
    dir_mtimes = {"nested/deep/deeper": T0 + 11, "nested/deep": T0 + 12, "nested": T0 + 13,
                  "data": T0 + 14}
    for rel, ns in dir_mtimes.items():  # deepest first: setting a child touches nothing
        os.utime(ws / rel, ns=(ns, ns))
    res = repo.snapshot(message="all kinds")
    assert res.created and res.files == len(files)
    got = entries(repo)
    for i, (rel, (data, mode)) in enumerate(files.items()):
        e = got[rel]
        assert e.kind is Kind.FILE, rel
        assert e.mode == mode, (rel, oct(e.mode))
        assert e.size == len(data), rel
        assert e.mtime_ns == T0 + i * 1_000_000_007, rel
        assert read(repo, "HEAD", rel) == data, rel
    for rel, ns in dir_mtimes.items():
        assert got[rel].kind is Kind.DIR and got[rel].mtime_ns == ns, rel
    assert got["nested/deep"].mode == stat.S_IMODE(os.stat(ws / "nested/deep").st_mode)
    repo.close()


def test_symlinks_are_recorded_as_links_never_followed(storage, tmp_path):
    ws = storage / "ws"
    repo = new_repo(ws)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"must not be read")
    write(ws, "data/real.txt", "real")
    links = {
        "rel-link": "data/real.txt",
        "dangling": "nowhere/at/all",
        "absolute": "/etc/passwd",
        "to-dir": "data",
        "to-outside-dir": str(outside),
        "data/up": "../data/real.txt",
        "loop": "loop",
    }
    for i, (rel, target) in enumerate(links.items()):
        os.symlink(target, ws / rel)
        os.utime(ws / rel, ns=(T0 + i, T0 + i), follow_symlinks=False)
    repo.snapshot(message="links")
    got = entries(repo)
    for i, (rel, target) in enumerate(links.items()):
        e = got[rel]
        assert e.kind is Kind.SYMLINK, rel
        assert e.target == target.encode(), rel
        assert e.size == len(target.encode())
        assert e.mtime_ns == T0 + i, rel
        assert e.id == hash_bytes(target.encode())
        assert read(repo, "HEAD", rel) == target.encode()  # the link, not its target
    assert not any(p.startswith(("to-dir/", "to-outside-dir/")) for p in got)
    assert sorted(p for p in got if not p.startswith("data")) == sorted(
        r for r in links if not r.startswith("data"))
    repo.close()


def test_empty_directories_are_recorded(storage):
    ws = storage / "ws"
    repo = new_repo(ws)
    (ws / "empty").mkdir()
    (ws / "a" / "b" / "empty2").mkdir(parents=True)
    (ws / "private-empty").mkdir(mode=0o700)
    os.chmod(ws / "private-empty", 0o700)
    write(ws, "file.txt", "x")
    repo.snapshot(message="dirs")
    got = entries(repo)
    for rel in ("empty", "a", "a/b", "a/b/empty2", "private-empty"):
        assert got[rel].kind is Kind.DIR, rel
    assert repo.tree(got["empty"].id).entries == ()
    assert repo.tree(got["a/b/empty2"].id).entries == ()
    assert got["private-empty"].mode == 0o700
    assert set(got) == {"empty", "a", "a/b", "a/b/empty2", "private-empty", "file.txt"}
    repo.close()


def test_fifos_and_sockets_are_skipped_with_a_warning(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    write(ws, "keep.txt", "kept")
    os.mkfifo(ws / "pipe")
    (ws / "d").mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.path.relpath(ws / "d" / "s"))  # relative: unix paths are short
    finally:
        sock.close()
    assert stat.S_ISSOCK(os.lstat(ws / "d" / "s").st_mode)
    res = cli("snapshot", "--json", "-m", "special", cwd=ws)
    out = json.loads(res.stdout)
    assert out["created"] is True
    assert sorted(out["skipped"]) == ["d/s", "pipe"]
    assert "warning: skipped pipe: a fifo cannot be versioned" in res.stderr
    assert "warning: skipped d/s: a socket cannot be versioned" in res.stderr
    listing = cli("ls", "-r", cwd=ws).stdout.split()
    assert listing == ["d/", "keep.txt"]


def test_vfsignore_and_dot_vfs(storage):
    ws = storage / "ws"
    repo = new_repo(ws)
    write(ws, ".vfsignore", "# scratch files\n*.tmp\n!keep.tmp\nbuild/\n/rootonly.log\n")
    for rel in ("data.txt", "a.tmp", "keep.tmp", "sub/x.tmp", "sub/keep.tmp", "build/out.o",
                "sub/build/out2.o", "buildfile", "rootonly.log", "sub/rootonly.log"):
        write(ws, rel, rel)
    (ws / "build" / "empty").mkdir()
    res = repo.snapshot(message="ignored")
    got = entries(repo)
    files = sorted(p for p, e in got.items() if e.kind is Kind.FILE)
    assert files == [".vfsignore", "buildfile", "data.txt", "keep.tmp", "sub/keep.tmp",
                     "sub/rootonly.log"]
    assert "build" not in got and "sub/build" not in got
    assert not any(p == ".vfs" or p.startswith(".vfs/") for p in got)
    assert res.files == len(files)
    # .vfs/ is left out even with a rule re-including everything
    write(ws, ".vfsignore", "!*\n!.vfs/\n")
    repo.snapshot(message="negate all")
    assert not any(p == ".vfs" or p.startswith(".vfs/") for p in entries(repo))
    repo.close()


# -- incremental -----------------------------------------------------------------------


def test_nothing_changed_reads_nothing_and_creates_no_commit(cli, storage):
    ws = storage / "ws"
    new_repo(ws).close()
    for i in range(20):
        write(ws, f"dir{i % 3}/f{i}.txt", f"file {i}\n" * (i + 1))
    write(ws, "big.bin", random.Random(7).randbytes(CHUNK_THRESHOLD + 123_457))
    settle()
    first = snapshot_json(cli, ws, "-m", "first")
    assert first["created"] is True and first["files"] == 21 and first["files_read"] == 21
    again = snapshot_json(cli, ws, "-m", "again")
    assert again["created"] is False
    assert again["files_read"] == 0 and again["bytes_read"] == 0
    assert again["bytes_stored"] == 0
    assert again["commit"] == first["commit"]
    assert len(json.loads(cli("log", "--json", cwd=ws).stdout)) == 1
    res = cli("snapshot", "-m", "again", cwd=ws)
    assert "nothing changed" in res.stdout


def test_modifying_one_file_reads_only_that_file(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    for i in range(30):
        write(ws, f"d/f{i}.txt", f"content {i}\n")
    settle()
    first = snapshot_json(cli, ws, "-m", "first")
    write(ws, "d/f7.txt", "changed content\n")
    second = snapshot_json(cli, ws, "-m", "second")
    assert second["created"] is True
    assert second["files_read"] == 1
    assert second["bytes_read"] == len("changed content\n")
    assert second["parent"] == first["commit"]
    assert second["changes"] == {"added": 0, "modified": 1, "removed": 0, "renamed": 0}
    assert cli("cat", "HEAD:d/f7.txt", cwd=ws).stdout == "changed content\n"
    assert cli("cat", "HEAD~1:d/f7.txt", cwd=ws).stdout == "content 7\n"


def test_scans_of_paths_use_the_stat_cache_of_those_paths_only(ext4_dir):
    """A scan of PATHS finds the cached files under each path (their keys sort among
    neighbours like ``d.txt`` and ``d0/``), also for nested PATHS, and reads exactly
    what changed."""
    from versionfs.workspace.scan import scan_workspace
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    for rel in ("d/a", "d/sub/b", "d.txt", "d0/c", "dd/e", "d-x/f"):
        write(ws, rel, rel)
    settle()
    repo.snapshot(message="first")
    for paths in (["d"], ["d", "d/sub"], ["d/sub/b", "d0"], ["d0", "d.txt", "dd"]):
        work = scan_workspace(repo, paths=paths)
        assert work.stats.files_read == 0, paths
        assert work.root == repo.commit(repo.head()).tree, paths
    write(ws, "d0/c", "changed")
    write(ws, "d/sub/b", "changed too")
    assert scan_workspace(repo, paths=["d"]).stats.files_read == 1
    assert scan_workspace(repo, paths=["d0"]).stats.files_read == 1
    assert scan_workspace(repo, paths=["d.txt", "dd"]).stats.files_read == 0
    repo.close()


def _fresh_scan(repo):
    """A scan that cannot use the dir state (its table emptied in a transaction that
    is then aborted): what the workspace holds, planned file by file."""
    from versionfs.workspace.scan import scan_workspace

    class Abort(Exception):
        pass
    try:
        with repo.index.write() as txn:
            for key in list(txn.keys("dirstate")):
                txn.delete("dirstate", key)
            out = {}
            out["root"] = scan_workspace(repo).root
            raise Abort
    except Abort:
        return out["root"]


def _dirstate(repo) -> dict:
    with repo.index.read() as txn:
        return dict(txn.items("dirstate"))


def test_a_scan_reuses_the_trees_of_directories_whose_listing_did_not_change(ext4_dir):
    """Every directory of an unchanged workspace takes its tree from the dir state;
    a change deep down replans that directory and those above it only, and the trees
    equal what a file-by-file scan gives."""
    from versionfs.workspace.scan import scan_workspace
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    for rel in ("top.txt", "a/b/c/deep.txt", "a/b/other.txt", "a/side/s.txt",
                "z/z.txt", "z/empty/.keep"):
        write(ws, rel, rel)
    os.symlink("top.txt", ws / "a" / "link")
    settle()
    repo.snapshot(message="first")
    assert set(_dirstate(repo)) == {b"/", b"/a", b"/a/b", b"/a/b/c", b"/a/side", b"/z",
                                    b"/z/empty"}
    work = scan_workspace(repo)
    assert work.stats.dirs == work.stats.dirs_reused == 7
    assert work.stats.files == 6 and work.stats.symlinks == 1 and work.stats.files_read == 0
    assert work.root == repo.commit(repo.head()).tree
    write(ws, "a/b/c/deep.txt", "changed")
    settle()
    work = scan_workspace(repo)
    assert work.stats.dirs_reused == 3   # a/side, z, z/empty
    assert work.stats.files_read == 1
    assert work.root == _fresh_scan(repo) != repo.commit(repo.head()).tree
    second = repo.snapshot(message="second")
    assert second.created and repo.commit(second.commit).stats["files"] == 6
    assert scan_workspace(repo).stats.dirs_reused == 7
    repo.close()


def test_the_scan_finds_the_entries_of_vanished_files_and_directories(ext4_dir):
    """Stat cache entries of deleted files and of everything under a deleted or
    replaced directory go, with the dir states of those directories; a directory
    whose names did not change is not searched."""
    from versionfs.workspace.scan import scan_workspace
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    for i in range(4):
        write(ws, f"d/f{i}", f"file {i}")
    for rel in ("d/sub/x", "d/sub/deeper/y", "d/sub2/z", "d.txt", "d0/w"):
        write(ws, rel, rel)
    settle()
    repo.snapshot(message="first")
    os.unlink(ws / "d" / "f3")
    import shutil
    shutil.rmtree(ws / "d" / "sub")
    shutil.rmtree(ws / "d" / "sub2")
    write(ws, "d/sub2", "now a file")
    settle()
    work = scan_workspace(repo)
    assert sorted(work.stale) == [b"d/f3", b"d/sub/deeper/y", b"d/sub/x", b"d/sub2/z"]
    assert sorted(work.stale_dirs) == [b"/d/sub", b"/d/sub/deeper", b"/d/sub2"] or \
        sorted(set(work.stale_dirs)) == [b"/d", b"/d/sub", b"/d/sub/deeper", b"/d/sub2"]
    repo.snapshot(message="second")
    with repo.index.read() as txn:
        assert sorted(txn.keys("statcache")) == [
            b"d.txt", b"d/f0", b"d/f1", b"d/f2", b"d/sub2", b"d0/w"]
    assert set(_dirstate(repo)) == {b"/", b"/d", b"/d0"}
    assert scan_workspace(repo).stats.dirs_reused == 3
    repo.close()


def test_a_directory_with_a_racy_file_is_not_remembered_nor_reused_above(ext4_dir):
    """A file too recent for the stat cache keeps its directory out of the dir state,
    so no directory above it is reused either: the next scan reads that file again."""
    from versionfs.workspace.scan import scan_workspace
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    write(ws, "a/b/old.txt", "old")
    write(ws, "c/other.txt", "other")
    settle()
    repo.snapshot(message="first")
    future = time.time_ns() + 3600 * 10**9
    write(ws, "a/b/new.txt", "new", mtime_ns=future)
    repo.snapshot(message="second")
    assert b"/a/b" not in _dirstate(repo) and b"/c" in _dirstate(repo)
    work = scan_workspace(repo)
    assert work.stats.files_read == 1 and work.stats.dirs_reused == 1
    assert work.root == repo.commit(repo.head()).tree
    repo.close()


def test_the_dir_state_is_not_used_after_the_ignore_rules_or_its_trees_change(ext4_dir):
    """New ignore rules make every listing new (and drop the stat cache entries of
    what is now ignored); a tree gc removed is never taken from the dir state."""
    from versionfs.workspace.scan import scan_workspace
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    write(ws, "keep/a.txt", "a")
    write(ws, "logs/run.log", "log")
    settle()
    repo.snapshot(message="first")
    assert scan_workspace(repo).stats.dirs_reused == 3
    write(ws, ".vfsignore", "logs/\n")
    settle()
    work = scan_workspace(repo)
    assert work.stats.dirs_reused == 0 and b"logs/run.log" in work.stale
    repo.snapshot(message="ignoring logs")
    assert scan_workspace(repo).stats.dirs_reused == 2
    with repo.index.write() as txn:   # as if gc had removed the tree of keep/
        tid = txn.get("dirstate", b"/keep")[16:48]
        saved = txn.get("trees", tid)
        txn.delete("trees", tid)
    work = scan_workspace(repo)
    assert work.stats.dirs_reused == 0
    with repo.index.write() as txn:
        txn.put("trees", tid, saved)
    repo.close()


def test_a_snapshot_streams_its_records_in_batches(ext4_dir, monkeypatch):
    """With a small FLUSH_AT the snapshot commits records in many batches (and many
    packs) while the walk goes on; the commit is the one a scan of the workspace computes, it
    reads back and fsck finds nothing wrong."""
    from versionfs.ops.fsck import fsck
    from versionfs.workspace import scan
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    files = {f"d{i % 6}/sub{i % 2}/f{i}.txt": f"content {i} " * (i % 50 + 1)
             for i in range(600)}   # beyond the scan's read-ahead window of 256
    files["big.bin"] = random.Random(5).randbytes(CHUNK_THRESHOLD * 3)
    for rel, data in files.items():
        write(ws, rel, data)
    settle()
    flushes = []
    flush = scan.WorkTree.flush
    monkeypatch.setattr(scan, "FLUSH_AT", 7)
    monkeypatch.setattr(scan.WorkTree, "flush",
                        lambda self: (flushes.append(1), flush(self)))
    res = repo.snapshot(message="streamed")
    assert len(flushes) >= 3   # checked once per directory walked
    assert repo.commit(res.commit).tree == scan.scan_workspace(repo).root
    for rel, data in files.items():
        want = data if isinstance(data, bytes) else data.encode()
        with repo.open("HEAD", rel) as f:
            assert f.read() == want, rel
    assert sum(p.is_file() for p in (ws / ".vfs" / "packs").rglob("*")) > 3
    report = fsck(repo, verify_data=True)
    assert report.ok, [p.message for p in report.problems]
    repo.close()


def test_touch_without_change_records_the_new_mtime(storage):
    ws = storage / "ws"
    repo = new_repo(ws)
    write(ws, "a.txt", "same", mtime_ns=T0)
    first = repo.snapshot(message="first")
    os.utime(ws / "a.txt", ns=(T0 + 5, T0 + 5))
    second = repo.snapshot(message="touched")
    assert second.created and second.commit != first.commit
    assert entries(repo)["a.txt"].mtime_ns == T0 + 5
    assert entries(repo)["a.txt"].id == entries(repo, "HEAD~1")["a.txt"].id
    repo.close()


def test_snapshot_of_some_paths_leaves_the_rest_uncommitted(cli, ext4_dir):
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    for rel in ("a.txt", "b.txt", "dir/c.txt", "dir/d.txt"):
        write(ws, rel, rel + " v1")
    write(ws, "gone.txt", "soon gone")
    repo.snapshot(message="first")
    for rel in ("a.txt", "b.txt", "dir/c.txt", "dir/d.txt"):
        write(ws, rel, rel + " v2")
    write(ws, "dir/new.txt", "new")
    (ws / "gone.txt").unlink()
    cli("snapshot", "a.txt", "dir/c.txt", "gone.txt", "-m", "some", cwd=ws)
    got = entries(repo)
    assert read(repo, "HEAD", "a.txt") == b"a.txt v2"
    assert read(repo, "HEAD", "dir/c.txt") == b"dir/c.txt v2"
    assert read(repo, "HEAD", "b.txt") == b"b.txt v1"
    assert read(repo, "HEAD", "dir/d.txt") == b"dir/d.txt v1"
    assert "gone.txt" not in got and "dir/new.txt" not in got
    status = json.loads(cli("status", "--json", cwd=ws).stdout)
    assert sorted(status["modified"]) == ["b.txt", "dir/d.txt"]
    assert status["added"] == ["dir/new.txt"]
    assert status["removed"] == [] and status["renamed"] == []
    # a directory path takes everything below it; a path may be relative to a
    # subdirectory of the workspace
    cli("snapshot", ".", "../b.txt", "-m", "dir and b", cwd=ws / "dir")
    assert repo.status().empty
    assert read(repo, "HEAD", "dir/new.txt") == b"new"
    assert read(repo, "HEAD", "b.txt") == b"b.txt v2"
    assert [e.commit.message for e in repo.log()] == ["dir and b", "some", "first"]
    repo.close()


def test_snapshot_of_a_path_under_new_directories_records_their_metadata(ext4_dir):
    """The directories leading to a PATH that HEAD does not have yet are recorded as
    they are in the workspace (mode, mtime), exactly as a full snapshot would."""
    ws = ext4_dir / "ws"
    repo = new_repo(ws)
    write(ws, "a.txt", "a")
    repo.snapshot(message="first")
    write(ws, "new/deeper/f.txt", "f", mtime_ns=T0)
    os.chmod(ws / "new" / "deeper", 0o700)
    os.chmod(ws / "new", 0o750)
    os.utime(ws / "new" / "deeper", ns=(T0 + 1, T0 + 1))
    os.utime(ws / "new", ns=(T0 + 2, T0 + 2))
    repo.snapshot(["new/deeper/f.txt"], message="one path")
    got = entries(repo)
    assert (got["new"].mode, got["new"].mtime_ns) == (0o750, T0 + 2)
    assert (got["new/deeper"].mode, got["new/deeper"].mtime_ns) == (0o700, T0 + 1)
    assert got["new/deeper/f.txt"].mtime_ns == T0
    # so a full snapshot afterwards finds nothing to record
    assert not repo.snapshot(message="full").created
    repo.close()


def test_summary_counts(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    write(ws, "keep.txt", "k")
    write(ws, "mod.txt", "m1")
    write(ws, "del.txt", "d")
    res = cli("snapshot", "-m", "first", cwd=ws)
    first = res.stdout.strip()
    assert len(first) == 64 and int(first, 16) >= 0
    assert "3 files" in res.stderr
    write(ws, "mod.txt", "m2 longer")
    write(ws, "add1.txt", "a")
    write(ws, "sub/add2.txt", "b")
    (ws / "del.txt").unlink()
    res = cli("snapshot", "-m", "second", cwd=ws)
    assert "2 added, 1 modified, 1 removed" in res.stderr
    assert "read" in res.stderr and "stored" in res.stderr
    log = json.loads(cli("log", "--json", cwd=ws).stdout)
    assert [e["message"] for e in log] == ["second", "first"]
    assert log[0]["id"] == res.stdout.strip() and log[1]["id"] == first
    assert log[0]["stats"]["files"] == 4


def test_tag_option(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    write(ws, "a.txt", "a")
    out = snapshot_json(cli, ws, "-m", "tagged", "--tag", "v1")
    assert out["tag"] == "v1"
    tags = json.loads(cli("tag", "--json", cwd=ws).stdout)
    assert tags == {"v1": out["commit"]}
    # nothing changed: the tag goes on HEAD, no commit is made
    res = cli("snapshot", "-m", "same", "-t", "v1-again", cwd=ws)
    assert "tagged it v1-again" in res.stdout
    tags = json.loads(cli("tag", "--json", cwd=ws).stdout)
    assert tags == {"v1": out["commit"], "v1-again": out["commit"]}
    assert cli("cat", "v1-again:a.txt", cwd=ws).stdout == "a"


def test_allow_empty(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    write(ws, "a.txt", "a")
    first = snapshot_json(cli, ws, "-m", "first")
    same = snapshot_json(cli, ws, "-m", "same")
    assert same["created"] is False
    empty = snapshot_json(cli, ws, "-m", "empty", "--allow-empty")
    assert empty["created"] is True
    assert empty["commit"] != first["commit"] and empty["parent"] == first["commit"]
    show = json.loads(cli("show", "--json", "HEAD", cwd=ws).stdout)
    first_show = json.loads(cli("show", "--json", "HEAD~1", cwd=ws).stdout)
    assert show["tree"] == first_show["tree"]
    assert show["message"] == "empty"
    assert show["changes"]["added"] == [] and show["changes"]["modified"] == []


def test_first_snapshot_of_an_empty_workspace(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    out = snapshot_json(cli, ws, "-m", "nothing yet")
    assert out["created"] is True and out["files"] == 0 and out["parent"] is None
    assert cli("ls", cwd=ws).stdout == ""


def test_author_and_message(cli, ext4_dir):
    ws = ext4_dir / "ws"
    new_repo(ws).close()
    write(ws, "a.txt", "a")
    cli("snapshot", "-m", "line one\n\nmore text", cwd=ws, env={"VFS_AUTHOR": "Ada <a@x>"})
    log = json.loads(cli("log", "--json", cwd=ws).stdout)
    assert log[0]["author"] == "Ada <a@x>"
    assert log[0]["message"] == "line one\n\nmore text"
    assert "line one" in cli("log", "--oneline", cwd=ws).stdout


# -- large files ------------------------------------------------------------------------


def _pack_bytes(vfs: Path) -> int:
    return sum(p.stat().st_size for p in (vfs / "packs").rglob("*") if p.is_file())


def test_large_file_modified_in_the_middle(cli, storage, request):
    kind = request.node.callspec.params["storage"]
    ws = storage / "ws"
    repo = new_repo(ws)
    rng = random.Random(20)
    v1 = bytearray(rng.randbytes(20 * MiB))
    write(ws, "big.bin", bytes(v1))
    write(ws, "small.txt", "small")
    settle()
    first = repo.snapshot(message="v1")
    assert first.bytes_stored >= 20 * MiB
    v2 = bytearray(v1)
    v2[10 * MiB: 10 * MiB + 64 * 1024] = rng.randbytes(64 * 1024)
    write(ws, "big.bin", bytes(v2))
    packs_before = _pack_bytes(ws / ".vfs")
    second = repo.snapshot(message="v2")
    assert second.created and second.files_read == 1
    assert 0 < second.bytes_read <= 20 * MiB  # at most the file, once
    e1 = repo.entry(first.commit, "big.bin")
    e2 = repo.entry(second.commit, "big.bin")
    assert e1.id != e2.id
    assert len(repo.chunks(e2)) > 4  # cut into chunks, not stored as one
    new_chunks = {c.id for c in repo.chunks(e2)} - {c.id for c in repo.chunks(e1)}
    assert len(new_chunks) in (1, 2, 3)
    if kind == "ext4":
        # only the chunks around the change are stored again
        assert second.bytes_stored < 8 * MiB
        assert _pack_bytes(ws / ".vfs") - packs_before == second.bytes_stored
        assert not any((ws / ".vfs" / "objects").rglob("*/*"))
    else:
        # the whole file is cloned into objects/ (instant, shares extents)
        for e in (e1, e2):
            blob = Path(fan_out(str(ws / ".vfs" / "objects"), e.id))
            assert blob.is_file() and blob.stat().st_size == 20 * MiB
            assert stat.S_IMODE(blob.stat().st_mode) & 0o222 == 0  # read-only
        assert _pack_bytes(ws / ".vfs") - packs_before < MiB
    assert read(repo, first.commit.hex(), "big.bin") == bytes(v1)
    assert read(repo, second.commit.hex(), "big.bin") == bytes(v2)
    diff = json.loads(cli("diff", "--json", "HEAD~1", "HEAD", cwd=ws).stdout)
    assert diff["modified"] == ["big.bin"]
    assert diff["stats"]["changed_bytes"] < 8 * MiB
    repo.close()


def test_file_at_the_threshold_and_just_below(storage):
    ws = storage / "ws"
    repo = new_repo(ws)
    rng = random.Random(3)
    sizes = {"below": CHUNK_THRESHOLD - 1, "at": CHUNK_THRESHOLD, "above": CHUNK_THRESHOLD + 1}
    data = {name: rng.randbytes(n) for name, n in sizes.items()}
    for name, blob in data.items():
        write(ws, name, blob)
    repo.snapshot(message="edges")
    for name, blob in data.items():
        assert read(repo, "HEAD", name) == blob, name
    assert repo.entry(repo.resolve("HEAD"), "below").id == hash_bytes(data["below"])
    repo.close()


# -- the Python API as documented -----------------------------------------------------------


def test_python_api_as_in_the_readme(tmp_path):
    from versionfs import Repo
    ws = tmp_path / "my-dataset"
    ws.mkdir()
    repo = Repo.init(str(ws))
    write(ws, "data/x.csv", "a,b\n1,2\n")
    r1 = repo.snapshot(message="raw import", tag="v1")
    write(ws, "data/x.csv", "a,b\n1,3\n")
    r2 = repo.snapshot(message="cleaned")
    changes = repo.diff("v1", "HEAD")
    assert [c.path for c in changes.modified] == ["data/x.csv"]
    assert [(e.id, e.commit.message) for e in repo.log()] == [
        (r2.commit, "cleaned"), (r1.commit, "raw import")]
    assert repo.resolve("HEAD") == r2.commit
    with repo.open("v1", "data/x.csv") as f:
        assert f.readline() == b"a,b\n"
        assert f.read() == b"1,2\n"
    repo.close()
    with Repo.open(str(ws)) as again:
        assert again.resolve("v1") == r1.commit


def test_names_that_are_not_utf8(storage):
    ws = storage / "ws"
    repo = new_repo(ws)
    raw = os.fsencode(str(ws)) + b"/caf\xe9 latin-1.txt"
    with open(raw, "wb") as f:
        f.write(b"bytes in a latin-1 name")
    os.mkdir(os.fsencode(str(ws)) + b"/dir\xff")
    repo.snapshot(message="odd names")
    name = os.fsdecode(b"caf\xe9 latin-1.txt")
    got = entries(repo)
    assert set(got) == {name, os.fsdecode(b"dir\xff")}
    assert read(repo, "HEAD", name) == b"bytes in a latin-1 name"
    assert not repo.snapshot(message="again").created
    repo.close()
