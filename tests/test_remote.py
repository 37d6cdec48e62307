"""Push, fetch, pull and clone against real remotes: a directory (and, through the
``remote_url`` fixture, every other kind the suite can start), faults included:
a push killed at each of its writes, tampered and truncated remote objects, a
rejected non-fast-forward, run records carried along."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from repo_helpers import SMALL, make_repo, read_commit, read_workspace, snap, write
from test_mount import mounter  # noqa: F401  (the fixture)
from versionfs.errors import RemoteCorrupt, RemoteRejected, UsageError
from versionfs.ops import remote as ops_remote
from versionfs.ops.fsck import fsck
from versionfs.remote import layout
from versionfs.remote.backend import Backend
from versionfs.repo.repository import Repo


@pytest.fixture
def remote_dir(tmp_path) -> str:
    return str(tmp_path / "remote")


_memory_names = iter(range(1 << 30))


@pytest.fixture(params=["dir", "memory", "s3"])
def remote(request, tmp_path):
    """``(url, options)`` of a fresh remote of each kind: the same flows run on a
    directory, fsspec's memory:// and S3 (moto's server on loopback)."""
    if request.param == "dir":
        yield str(tmp_path / "remote"), {}
    elif request.param == "memory":
        name = f"memory://vfs-test-{os.getpid()}-{next(_memory_names)}"
        yield name, {}
        import fsspec
        fs = fsspec.filesystem("memory")
        if fs.exists(name[len("memory://"):]):
            fs.rm(name[len("memory://"):], recursive=True)
    else:
        url, options = request.getfixturevalue("s3_url")
        yield url, {"endpoint_url": options["endpoint_url"]}


def _listing(remote, prefix: str) -> list[str]:
    url, options = remote
    with Backend(url, options) as b:
        return [n for n, _ in b.list(prefix)]


def _ws_repo(path: Path) -> Repo:
    return make_repo(path)


def _clone(url, dest: Path, **kw) -> Repo:
    repo, _ = ops_remote.clone(url, str(dest), **kw)
    return repo


def _assert_clean(repo: Repo) -> None:
    rep = fsck(repo)
    assert rep.ok, rep.problems


def test_push_clone_round_trip(tmp_path, remote):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "data/big.bin", os.urandom(300_000))
    write(tmp_path / "a", "data/small.txt", "hello")
    write(tmp_path / "a", "notes.md", "# notes")
    c1 = snap(a, "one")
    ops_remote.add_remote(a, "origin", *remote)
    res = ops_remote.push(a)
    assert [u.status for u in res.refs] == ["created"]
    assert res.chunks > 3 and res.bytes >= 300_005
    b = _clone(remote[0], tmp_path / "b", options=remote[1])
    assert read_workspace(tmp_path / "b") == read_workspace(tmp_path / "a")
    assert b.resolve("main") == c1 and b.resolve("origin/main") == c1
    assert b.params == SMALL          # the clone takes the remote's chunking
    _assert_clean(b)


def test_push_with_nothing_new_moves_nothing(tmp_path, remote):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "f.bin", os.urandom(200_000))
    snap(a, "one")
    ops_remote.add_remote(a, "origin", *remote)
    ops_remote.push(a)
    before = _listing(remote, "")
    res = ops_remote.push(a)
    assert (res.chunks, res.records, res.bytes) == (0, 0, 0)
    assert [u.status for u in res.refs] == ["up to date"]
    assert _listing(remote, "") == before


def test_second_version_sends_only_changed_chunks(tmp_path, remote):
    a = _ws_repo(tmp_path / "a")
    base = os.urandom(1_000_000)
    write(tmp_path / "a", "big.bin", base)
    snap(a, "v1")
    ops_remote.add_remote(a, "origin", *remote)
    first = ops_remote.push(a)
    write(tmp_path / "a", "big.bin", base + os.urandom(20_000))   # an append
    snap(a, "v2")
    second = ops_remote.push(a)
    # the append changes the last chunk or two (<= 2 * max chunk 64 KiB + 20 KB)
    assert second.bytes <= 2 * SMALL.max_size + 20_000 < first.bytes
    b = _clone(remote[0], tmp_path / "b", options=remote[1])
    assert (tmp_path / "b" / "big.bin").read_bytes() == base + (tmp_path / "a" / "big.bin").read_bytes()[1_000_000:]


def test_pull_fast_forwards_branch_and_workspace(tmp_path, remote):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "x.txt", "1")
    snap(a, "one")
    ops_remote.add_remote(a, "origin", *remote)
    ops_remote.push(a)
    b = _clone(remote[0], tmp_path / "b", options=remote[1])
    write(tmp_path / "a", "x.txt", "2")
    write(tmp_path / "a", "y/z.txt", "new")
    c2 = snap(a, "two")
    ops_remote.push(a)
    res = ops_remote.pull(b)
    assert res.refs[0].status == "fast-forward"
    assert b.resolve("main") == c2 and b.head() == c2
    assert read_workspace(tmp_path / "b") == read_workspace(tmp_path / "a")
    assert ops_remote.pull(b).refs[0].status == "up to date"
    _assert_clean(b)


def test_diverged_push_and_pull_are_refused(tmp_path, remote):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "x.txt", "1")
    snap(a, "one")
    ops_remote.add_remote(a, "origin", *remote)
    ops_remote.push(a)
    b = _clone(remote[0], tmp_path / "b", options=remote[1])
    write(tmp_path / "a", "x.txt", "a")
    ca = snap(a, "a2")
    ops_remote.push(a)
    write(tmp_path / "b", "x.txt", "b")
    cb = snap(b, "b2")
    packs_before = _listing(remote, "packs/")
    with pytest.raises(RemoteRejected, match="pull"):
        ops_remote.push(b)
    # refused before anything was uploaded
    assert _listing(remote, "packs/") == packs_before
    with pytest.raises(RemoteRejected, match="diverged"):
        ops_remote.pull(b)
    assert b.resolve("main") == cb
    # the refused pull still fetched a's commit: a forced push replaces it knowingly
    res = ops_remote.push(b, force=True)
    assert res.refs[0].status == "forced"
    with pytest.raises(RemoteRejected):
        ops_remote.pull(a)
    assert a.resolve("main") == ca


def test_tags_do_not_move_without_force(tmp_path, remote):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "x.txt", "1")
    snap(a, "one")
    from versionfs.ops import refs as ops_refs
    ops_refs.create(a, "tag", "v1")
    ops_remote.add_remote(a, "origin", *remote)
    ops_remote.push(a, all_refs=True)
    write(tmp_path / "a", "x.txt", "2")
    snap(a, "two")
    ops_refs.create(a, "tag", "v1", force=True)
    with pytest.raises(RemoteRejected, match="tags do not move"):
        ops_remote.push(a, revs=["v1"])
    assert ops_remote.push(a, revs=["v1"], force=True).refs[0].status == "forced"


def test_fetch_brings_branches_tags_and_runs(tmp_path, remote_dir, cli):
    ws = tmp_path / "a"
    ws.mkdir()
    cli("init", cwd=ws)
    write(ws, "in.txt", "3\n")
    cli("snapshot", "-m", "input", cwd=ws)
    cli("run", "-d", "in.txt", "-o", "out.txt", "--",
        "sh", "-c", "cat in.txt in.txt > out.txt", cwd=ws)
    cli("tag", "v1", cwd=ws)
    cli("branch", "dev", cwd=ws)
    cli("remote", "add", "origin", remote_dir, cwd=ws)
    out = json.loads(cli("push", "--all", "--json", cwd=ws).stdout)
    assert {u["ref"] for u in out["refs"]} == {"heads/main", "heads/dev", "tags/v1"}
    assert out["runs"] == 1
    cli("clone", remote_dir, str(tmp_path / "b"), cwd=tmp_path)
    b = tmp_path / "b"
    assert (b / "out.txt").read_text() == "3\n3\n"
    runs = json.loads(cli("runs", "--json", cwd=b).stdout)
    assert len(runs) == 1
    # the run cache came along: the same run is a cache hit in the clone
    hit = cli("run", "-d", "in.txt", "-o", "out.txt", "--",
              "sh", "-c", "cat in.txt in.txt > out.txt", cwd=b)
    assert "cached" in (hit.stdout + hit.stderr).lower()
    log = cli("log", "--oneline", "origin/dev", cwd=b).stdout
    assert "input" in log
    assert cli("fetch", "--json", cwd=b).returncode == 0


class _KilledAt(Exception):
    pass


class _Dying(Backend):
    """A backend whose process 'dies' at its n-th write (data or ref)."""

    died: list[str] = []

    def __init__(self, url, options=None, *, die_at: int):
        super().__init__(url, options)
        self.left = die_at

    def _tick(self, name):
        self.left -= 1
        if self.left < 0:
            self.died.append(name.split("/", 1)[0])
            raise _KilledAt()

    def write(self, name, data):
        self._tick(name)
        return super().write(name, data)

    def write_if(self, name, data, expect):
        self._tick(name)
        return super().write_if(name, data, expect)


def _remote_consistent(url: str, tmp: Path, options: dict | None = None) -> dict:
    """Whatever the remote's refs name, it holds: a fresh repository fetches it all
    and fsck finds nothing wrong."""
    tmp.mkdir()
    r = Repo.init(str(tmp), bare=True, params=SMALL)
    try:
        ops_remote.add_remote(r, "o", url, options)
        ops_remote.fetch(r, "o")
        _assert_clean(r)
        for cid in r.refs("remotes/").values():
            read_commit(r, cid)  # every byte, verified
        return r.refs("remotes/")
    finally:
        r.close()


def test_push_killed_at_every_write_then_rerun(tmp_path, monkeypatch, remote):
    """For each n: a fresh remote, a push that dies before its n-th write (the
    remote consistent), then the push again (complete)."""
    a = _ws_repo(tmp_path / "a")
    for i in range(6):
        write(tmp_path / "a", f"d/f{i}.bin", os.urandom(90_000))
    c1 = snap(a, "one")
    _Dying.died.clear()
    n = 0
    while True:
        url = f"{remote[0]}{n}"
        ops_remote.add_remote(a, f"r{n}", url, remote[1])
        monkeypatch.setattr(ops_remote, "open_backend",
                            lambda conf, n=n: _Dying(conf.url, conf.options, die_at=n))
        try:
            ops_remote.push(a, f"r{n}")
        except _KilledAt:
            _remote_consistent(url, tmp_path / f"check{n}", remote[1])
            monkeypatch.undo()
            assert ops_remote.push(a, f"r{n}").refs[0].new == c1.hex()
            _remote_consistent(url, tmp_path / f"done{n}", remote[1])
            n += 1
            continue
        break
    # it died before each kind of write at least once: packs, index, records, ref
    assert {"packs", "index", "records", "refs"} <= set(_Dying.died)


def _one_pack(url: str) -> Path:
    packs = sorted(p for p in Path(url, "packs").rglob("*") if p.is_file())
    assert packs
    return packs[0]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_remote_pack_is_reported_and_never_stored(tmp_path, remote_dir, damage):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "f.bin", os.urandom(200_000))
    snap(a, "one")
    ops_remote.add_remote(a, "origin", remote_dir)
    ops_remote.push(a)
    pack = _one_pack(remote_dir)
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    if damage == "flip":
        data[10] ^= 0xFF
    else:
        del data[len(data) // 2:]
    pack.write_bytes(bytes(data))
    with pytest.raises(RemoteCorrupt) as err:
        _clone(remote_dir, tmp_path / "b")
    assert "packs/" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "b").exists()     # the failed clone left nothing
    # fetched into an existing repository: nothing of it is stored either
    c = _ws_repo(tmp_path / "c")
    ops_remote.add_remote(c, "origin", remote_dir)
    with pytest.raises(RemoteCorrupt):
        ops_remote.fetch(c)
    with c.index.read() as txn:
        assert txn.count("chunks") == 0 and txn.count("commits") == 0


def test_tampered_record_bundle_is_refused(tmp_path, remote_dir):
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "f.txt", "x")
    snap(a, "one")
    ops_remote.add_remote(a, "origin", remote_dir)
    ops_remote.push(a)
    (bundle,) = Path(remote_dir, "records").iterdir()
    bundle.chmod(0o644)
    data = bytearray(bundle.read_bytes())
    data[-3] ^= 0x01
    bundle.write_bytes(bytes(data))
    with pytest.raises(RemoteCorrupt, match="records/"):
        _clone(remote_dir, tmp_path / "b")


def test_credentials_are_never_stored(tmp_path, remote_dir):
    a = _ws_repo(tmp_path / "a")
    with pytest.raises(UsageError, match="credential"):
        ops_remote.add_remote(a, "origin", remote_dir, {"secret": "s3cr3t"})
    assert not (Path(a.vfs_dir) / "remotes.toml").exists()


def test_cli_errors_are_one_line(tmp_path, cli, remote_dir):
    ws = tmp_path / "w"
    ws.mkdir()
    cli("init", cwd=ws)
    r = cli.fail("push", cwd=ws, code=2)
    assert "no remote" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    cli("remote", "add", "origin", remote_dir, cwd=ws)
    r = cli.fail("push", "nosuch", cwd=ws, code=2)
    assert "no remote named 'nosuch'" in r.stderr
    r = cli.fail("clone", str(tmp_path / "nothing-here"), str(tmp_path / "c"), cwd=tmp_path)
    assert "no versionfs remote" in r.stderr
    listed = json.loads(cli("remote", "list", "--json", cwd=ws).stdout)
    assert listed[0]["name"] == "origin" and listed[0]["url"] == remote_dir
    cli("remote", "remove", "origin", cwd=ws)
    assert json.loads(cli("remote", "list", "--json", cwd=ws).stdout) == []


def test_remote_gc_condemns_then_deletes_and_pushes_still_complete(tmp_path, remote_dir):
    from versionfs.ops.remote_gc import gc_remote
    a = _ws_repo(tmp_path / "a")
    old = os.urandom(300_000)
    write(tmp_path / "a", "old.bin", old)
    snap(a, "v1")
    ops_remote.add_remote(a, "origin", remote_dir)
    ops_remote.push(a)
    packs_v1 = {p.name for p in Path(remote_dir, "packs").rglob("*") if p.is_file()}
    # a new history that drops v1 (a forced push of an unrelated root)
    b = _ws_repo(tmp_path / "b")
    write(tmp_path / "b", "new.txt", "fresh")
    snap(b, "other")
    ops_remote.add_remote(b, "origin", remote_dir)
    ops_remote.push(b, force=True)
    first = gc_remote(b, "origin", grace=3600, now=1000.0)
    assert first.packs_deleted == 0 and first.condemned >= 1
    assert packs_v1 <= {p.name for p in Path(remote_dir, "packs").rglob("*") if p.is_file()}
    early = gc_remote(b, "origin", grace=3600, now=2000.0)   # within the grace: kept
    assert early.packs_deleted == 0
    late = gc_remote(b, "origin", grace=3600, now=5000.0)
    assert late.packs_deleted == len(packs_v1) and late.bytes_freed >= 300_000
    assert not packs_v1 & {p.name for p in Path(remote_dir, "packs").rglob("*")}
    refs = _remote_consistent(remote_dir, tmp_path / "check")
    assert set(refs) == {"remotes/o/main"}
    # a's state still believes v1's chunks are there: its next push notices the
    # consolidation and sends them again
    write(tmp_path / "a", "again.bin", old)
    snap(a, "v2")
    res = ops_remote.push(a, force=True)
    assert res.bytes >= 300_000
    _remote_consistent(remote_dir, tmp_path / "check2")


@pytest.mark.mount
def test_mount_a_directory_remote_given_as_a_path(tmp_path, cli, mounter):  # noqa: F811
    ws = tmp_path / "a"
    ws.mkdir()
    cli("init", cwd=ws)
    write(ws, "d/x.bin", os.urandom(5 << 20))
    cli("snapshot", "-m", "one", "--tag", "v1", cwd=ws)
    remote = tmp_path / "remote"
    cli("remote", "add", "origin", remote, cwd=ws)
    cli("push", "--all", cwd=ws)
    mp = mounter(f"{remote}@v1", "--cache-dir", tmp_path / "cache", "--cache-size", "32M")
    assert (mp / "d" / "x.bin").read_bytes() == (ws / "d" / "x.bin").read_bytes()
    listed = json.loads(cli("mounts", "--json").stdout)
    assert any(m["mountpoint"] == str(mp) and m["rev"] == "v1" for m in listed)
    (tmp_path / "elsewhere").mkdir()
    r = cli.fail("mount", f"{ws}@v1", tmp_path / "elsewhere", "--cache-size", "1G", code=2)
    assert "remote" in r.stderr
    cli("umount", mp)


def test_gc_remote_through_the_cli(tmp_path, cli, remote_dir):
    ws = tmp_path / "a"
    ws.mkdir()
    cli("init", cwd=ws)
    write(ws, "x.bin", os.urandom(100_000))
    cli("snapshot", "-m", "one", cwd=ws)
    cli("remote", "add", "origin", remote_dir, cwd=ws)
    cli("push", cwd=ws)
    first = json.loads(cli("gc", "--remote", "origin", "--grace", "0s", "--json", cwd=ws).stdout)
    assert first["packs_deleted"] == 0 and first["condemned"] == 0   # everything is live
    r = cli.fail("gc", "--remote", "origin", "--grace", "soon", cwd=ws, code=2)
    assert "duration" in r.stderr


def test_python_api_push_clone_and_lazy_open(tmp_path, remote):
    from versionfs import Repo as ApiRepo
    url, options = remote
    a = ApiRepo.init(str(tmp_path / "a"), params=SMALL)
    write(tmp_path / "a", "data/x.bin", os.urandom(200_000))
    a.snapshot(message="one", tag="v1")
    a.add_remote("origin", url, options)
    a.push(all_refs=True)
    assert [r.name for r in a.remotes()] == ["origin"]
    with ApiRepo.open_remote(url, options, cache_dir=str(tmp_path / "cache")) as r:
        with r.open("v1", "data/x.bin") as f:
            assert f.read() == (tmp_path / "a" / "data" / "x.bin").read_bytes()
        assert r.store.fetched_bytes >= 200_000
    b = ApiRepo.clone(url, str(tmp_path / "b"), options=options)
    assert b.resolve("v1") == a.resolve("v1")
    b.close()
    a.close()


def test_pull_refuses_to_overwrite_local_changes(tmp_path, remote_dir):
    from versionfs.errors import Conflict
    a = _ws_repo(tmp_path / "a")
    write(tmp_path / "a", "x.txt", "1")
    c1 = snap(a, "one")
    ops_remote.add_remote(a, "origin", remote_dir)
    ops_remote.push(a)
    b = _clone(remote_dir, tmp_path / "b")
    write(tmp_path / "a", "x.txt", "2")
    snap(a, "two")
    ops_remote.push(a)
    write(tmp_path / "b", "x.txt", "my local edit")
    with pytest.raises(Conflict, match="x.txt"):
        ops_remote.pull(b)
    assert b.resolve("main") == c1 and b.head() == c1
    assert (tmp_path / "b" / "x.txt").read_text() == "my local edit"
    # the data did arrive: once the edit is set aside, the pull only moves
    (tmp_path / "b" / "x.txt").write_text("1")
    res = ops_remote.pull(b)
    assert res.refs[0].status == "fast-forward" and res.chunks == 0
    assert (tmp_path / "b" / "x.txt").read_text() == "2"
