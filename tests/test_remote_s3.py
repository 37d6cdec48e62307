"""Remotes over the S3 protocol (moto's server on 127.0.0.1, see tests/s3server.py),
a lazy FUSE mount of a remote version that moves only what it reads, two pushers
racing on an in-process store with an atomic compare-and-swap (and on one that
ignores conditions, through the lock), and a server failing requests."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from fake_remote import FakeStore
from repo_helpers import make_repo, read_workspace, snap, write
from test_mount import mounter  # noqa: F401  (the fixture)
from versionfs.errors import RemoteRejected, RemoteUnavailable
from versionfs.ops import remote as ops_remote
from versionfs.remote.backend import Backend


def _endpoint(options: dict) -> dict:
    """The fixture's options without credentials (those come from the environment,
    which the s3 fixtures set to dummy values)."""
    return {"endpoint_url": options["endpoint_url"]}


def test_s3_push_clone_pull_fetch_through_the_cli(s3_url, cli, tmp_path):
    url, options = s3_url
    ws = tmp_path / "a"
    ws.mkdir()
    cli("init", cwd=ws)
    write(ws, "data/big.bin", os.urandom(6 << 20))
    write(ws, "data/labels.csv", "id,label\n1,cat\n")
    cli("snapshot", "-m", "one", cwd=ws)
    added = cli("remote", "add", "origin", url, "-o",
                f"endpoint_url={options['endpoint_url']}", cwd=ws)
    assert "conditional writes" in added.stdout
    out = json.loads(cli("push", "--json", cwd=ws).stdout)
    assert out["refs"][0]["status"] == "created" and out["bytes"] >= 6 << 20
    again = json.loads(cli("push", "--json", cwd=ws).stdout)
    assert (again["chunks"], again["records"]) == (0, 0)
    cli("clone", url, str(tmp_path / "b"), "-o", f"endpoint_url={options['endpoint_url']}",
        cwd=tmp_path)
    b = tmp_path / "b"
    assert read_workspace(b) == read_workspace(ws)
    write(ws, "data/labels.csv", "id,label\n1,cat\n2,dog\n")
    cli("snapshot", "-m", "two", cwd=ws)
    cli("tag", "v2", cwd=ws)
    cli("push", "origin", "main", "v2", cwd=ws)
    pulled = json.loads(cli("pull", "--json", cwd=b).stdout)
    assert pulled["refs"][0]["status"] == "fast-forward"
    assert (b / "data/labels.csv").read_text().endswith("2,dog\n")
    assert pulled["bytes"] < 1 << 20      # the big file did not travel again
    cli("fetch", cwd=b)
    assert "two" in cli("log", "--oneline", "v2", cwd=b).stdout
    cli("fsck", cwd=b)
    # credentials on the command line are refused, never written down
    r = cli.fail("remote", "add", "other", url, "-o", "secret=abc", cwd=ws, code=2)
    assert "credential" in r.stderr
    assert "abc" not in (Path(ws) / ".vfs" / "remotes.toml").read_text()


@pytest.mark.mount
def test_lazy_mount_reads_a_remote_version_moving_only_what_it_reads(
        s3_url, s3_traffic, cli, tmp_path, mounter):  # noqa: F811
    url, options = s3_url
    ws = tmp_path / "a"
    ws.mkdir()
    cli("init", cwd=ws)
    big = hashlib.shake_256(b"lazy").digest(256 << 20)   # fixed data: fixed chunk edges
    write(ws, "big.bin", big)
    write(ws, "small.txt", "hello remote\n")
    cli("snapshot", "-m", "one", cwd=ws)
    cli("tag", "v1", cwd=ws)
    ep = f"endpoint_url={options['endpoint_url']}"
    cli("remote", "add", "origin", url, "-o", ep, cwd=ws)
    cli("push", "--all", cwd=ws)
    cache = tmp_path / "cache"
    moved = []
    for _ in range(2):
        # the second mount shares the first one's chunk cache
        s3_traffic.reset()
        mp = mounter(f"{url}@v1", "-o", ep, "--cache-dir", cache, "--cache-size", "64M")
        assert (mp / "small.txt").read_text() == "hello remote\n"
        with open(mp / "big.bin", "rb") as f:
            f.seek(100 << 20)
            assert f.read(1 << 20) == big[100 << 20: 101 << 20]
        cli("umount", mp)    # waits for the daemon: its read-ahead is counted too
        moved.append(s3_traffic.get_bytes)
    print(f"lazy mount: 1 MiB read of 256 MiB moved {moved[0]} bytes, again {moved[1]}")
    # 1 MiB read: its chunk or two and a small read-ahead, not the 256 MiB file
    assert moved[0] < 24 << 20, f"{moved[0] / 2**20:.1f} MiB moved for a 1 MiB read"
    # the second mount finds the chunks it reads in the cache: it never fetches them
    assert moved[1] < moved[0], moved


def _two_clones(tmp_path):
    """Repositories a and b with one shared commit on the remote."""
    a = make_repo(tmp_path / "a")
    write(tmp_path / "a", "x.txt", "base")
    snap(a, "base")
    ops_remote.add_remote(a, "origin", "fake://shared")
    ops_remote.push(a)
    b = ops_remote.clone("fake://shared", str(tmp_path / "b"))[0]
    return a, b


@pytest.mark.parametrize("honour", [True, False], ids=["conditional", "lock"])
def test_two_pushers_never_lose_each_others_commits(tmp_path, monkeypatch, honour):
    store = FakeStore(honour_conditions=honour)
    cas = "conditional" if honour else "lock"
    monkeypatch.setattr(ops_remote, "open_backend",
                        lambda conf: Backend(conf.url, store=store, cas=cas))
    import versionfs.remote.backend as backend_mod
    real_init = backend_mod.Backend.__init__

    def init(self, url, options=None, **kw):   # clone opens its own Backend
        kw.setdefault("store", store)
        kw.setdefault("cas", cas)
        real_init(self, url, options, **kw)
    monkeypatch.setattr(backend_mod.Backend, "__init__", init)
    a, b = _two_clones(tmp_path)
    write(tmp_path / "a", "x.txt", "from a")
    snap(a, "a")
    write(tmp_path / "b", "x.txt", "from b")
    cb = snap(b, "b")
    # b's push lands while a is between reading the ref and writing it
    gate, done = threading.Event(), threading.Event()

    def before_put(name):
        if name.endswith("refs/heads/main") and threading.current_thread().name == "a" \
                and not gate.is_set():
            gate.set()
            done.wait(30)
    store.before_put = before_put
    errors = {}

    def push_a():
        try:
            ops_remote.push(a)
        except RemoteRejected as exc:
            errors["a"] = exc
    t = threading.Thread(target=push_a, name="a")
    t.start()
    if honour:
        assert gate.wait(30)
        ops_remote.push(b)          # lands first
        done.set()
        t.join(30)
        assert isinstance(errors.get("a"), RemoteRejected)   # a re-read and refused
    else:
        # a holds the ref lock while it is held up: b's push runs meanwhile and must
        # wait for the lock (or see a's commit first); either way a lands, b is refused
        assert gate.wait(30)
        tb = threading.Thread(target=lambda: errors.setdefault(
            "b", _refused(lambda: ops_remote.push(b))), name="b")
        tb.start()
        done.set()
        t.join(30)
        tb.join(60)
        assert "a" not in errors and isinstance(errors.get("b"), RemoteRejected)
    head = store.objects[[n for n in store.objects if n.endswith("refs/heads/main")][0]][0]
    landed = bytes.fromhex(head.decode().strip())
    assert landed == (cb if honour else a.resolve("main"))
    # whoever was refused pulls nothing lost: the remote has the other's commit whole
    c = make_repo(tmp_path / "c")
    ops_remote.add_remote(c, "origin", "fake://shared")
    ops_remote.fetch(c)
    assert c.resolve("origin/main") == landed


def _refused(fn):
    try:
        fn()
    except RemoteRejected as exc:
        return exc
    return None


def test_flaky_server_is_ridden_out_then_a_dead_one_is_one_line(s3_url, s3_traffic, cli,
                                                               tmp_path):
    url, options = s3_url
    ws = tmp_path / "a"
    ws.mkdir()
    cli("init", cwd=ws)
    write(ws, "f.bin", os.urandom(3 << 20))
    cli("snapshot", "-m", "one", cwd=ws)
    ep = f"endpoint_url={options['endpoint_url']}"
    cli("remote", "add", "origin", url, "-o", ep, cwd=ws)
    s3_traffic.fail_fraction(0.15, seed=7)
    cli("push", cwd=ws)
    s3_traffic.stop_failing()
    assert any(r.injected for r in s3_traffic.requests)
    cli("clone", url, str(tmp_path / "b"), "-o", ep, cwd=tmp_path)
    assert (tmp_path / "b" / "f.bin").read_bytes() == (ws / "f.bin").read_bytes()
    s3_traffic.fail_next(10_000, 503)
    r = cli.fail("fetch", cwd=tmp_path / "b", code=RemoteUnavailable.exit_code)
    assert len(r.stderr.strip().splitlines()) == 1 and "tries" in r.stderr
