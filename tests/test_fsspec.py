"""``versionfs://``: the fsspec filesystem over real repositories, read by real pandas
and pyarrow; the URL grammar; errors by class and text; a damaged chunk; the entry
point as setuptools builds it; the docs example as written."""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from repo_helpers import flip_byte, write
from versionfs.fsspec import VersionFileSystem, parse_url
from versionfs.fsspec.filesystem import MAX_OPEN
from versionfs.ops.snapshot import snapshot
from versionfs.records.model import Kind
from versionfs.repo.repository import Repo
from versionfs.repo.revisions import rev_splits

ROOT = Path(__file__).resolve().parent.parent
BIG = 9 << 20  # default chunking: a chunked file of several ~1 MiB chunks


@pytest.fixture(autouse=True)
def registered():
    """The protocol as the installed entry point registers it (the shared test
    environment is an older install); instances are closed and dropped after."""
    fsspec.register_implementation("versionfs", VersionFileSystem, clobber=True)
    yield
    for fs in list(VersionFileSystem._cache.values()):
        fs.close()
    VersionFileSystem.clear_instance_cache()


def _snap(repo: Repo, message: str, tag: str) -> bytes:
    cid = snapshot(repo, message=message, allow_empty=True).commit
    with repo.index.write() as txn:
        txn.set_ref(f"tags/{tag}", cid)
    return cid


class Versions:
    """A workspace with two tagged versions (v1, v2) of a CSV, a parquet table,
    nested directories, a chunked binary and symbolic links."""

    def __init__(self, ws: Path):
        self.ws = ws
        self.repo = Repo.init(str(ws))  # default chunking: 4 MiB threshold
        rnd = random.Random(7)
        self.big = rnd.randbytes(BIG)
        self.frames = {"v1": pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}),
                       "v2": pd.DataFrame({"x": [10, 20], "y": ["p", "q"]})}
        for tag in ("v1", "v2"):
            frame = self.frames[tag]
            write(ws, "data/train.csv", frame.to_csv(index=False))
            (ws / "data").mkdir(exist_ok=True)
            frame.to_parquet(ws / "data/table.parquet")
            if tag == "v1":
                write(ws, "data/big.bin", self.big)
                write(ws, "a/b/c/deep.txt", "deep\n")
                write(ws, "a/b/side.txt", "side\n")
                write(ws, "img@2x.png", b"\x89PNG at 2x")
                os.symlink("data/train.csv", ws / "link.csv")
                os.symlink("a/b", ws / "linkdir")
                os.symlink("/etc/hostname", ws / "outside")
                os.symlink("../../../x", ws / "a/escape")
            _snap(self.repo, tag, tag)

    def url(self, rev: str, path: str = "") -> str:
        return f"versionfs://{self.ws}@{rev}/{path}"

    def close(self):
        self.repo.close()


@pytest.fixture
def versions(tmp_path):
    v = Versions(tmp_path / "ws")
    yield v
    v.close()


def _fresh(**kw) -> VersionFileSystem:
    return VersionFileSystem(skip_instance_cache=True, **kw)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# -- pandas and pyarrow ----------------------------------------------------------------


def test_pandas_reads_csv_of_two_versions(versions):
    v1 = pd.read_csv(versions.url("v1", "data/train.csv"))
    v2 = pd.read_csv(versions.url("v2", "data/train.csv"))
    pd.testing.assert_frame_equal(v1, versions.frames["v1"])
    pd.testing.assert_frame_equal(v2, versions.frames["v2"])
    head = pd.read_csv(f"versionfs://{versions.ws}/data/train.csv")  # no @rev: HEAD
    pd.testing.assert_frame_equal(head, versions.frames["v2"])


def test_pandas_reads_parquet_of_two_versions(versions):
    v1 = pd.read_parquet(versions.url("v1", "data/table.parquet"))
    v2 = pd.read_parquet(versions.url("v2", "data/table.parquet"))
    pd.testing.assert_frame_equal(v1, versions.frames["v1"])
    pd.testing.assert_frame_equal(v2, versions.frames["v2"])
    assert not v1.equals(v2)


def test_relative_repository_and_storage_options(versions, monkeypatch):
    monkeypatch.chdir(versions.ws.parent)
    frame = pd.read_csv("versionfs://ws@v1/data/train.csv",
                        storage_options={"verify": "off"})
    pd.testing.assert_frame_equal(frame, versions.frames["v1"])


def test_rooted_filesystem_and_text_mode(versions):
    fs = fsspec.filesystem("versionfs", repo=str(versions.ws), rev="v1")
    with fs.open("data/train.csv", "r") as f:
        assert f.read() == versions.frames["v1"].to_csv(index=False)
    head = fsspec.filesystem("versionfs", repo=str(versions.ws))
    assert head.cat("data/train.csv") == versions.frames["v2"].to_csv(index=False).encode()


# -- ranges of a chunked file ----------------------------------------------------------


def test_open_seek_and_read_ranges_across_chunk_boundaries(versions):
    repo = versions.repo
    entry = repo.entry(repo.resolve("v1"), "data/big.bin")
    chunks = repo.chunks(entry)
    assert len(chunks) >= 4
    edges, pos = [], 0
    for c in chunks[:-1]:
        pos += c.length
        edges.append(pos)
    big = versions.big
    for block_size in (None, 100_000):
        with fsspec.open(versions.url("v1", "data/big.bin"), "rb",
                         block_size=block_size) as f:
            assert f.size == BIG
            for edge in edges:
                for start, n in ((edge - 1, 2), (edge - 5000, 70_000), (edge, 1)):
                    f.seek(start)
                    assert f.read(n) == big[start:start + n], (edge, start, n)
            f.seek(-10, io.SEEK_END)
            assert f.read() == big[-10:]
            f.seek(edges[0] - 3)
            assert f.read(edges[2] - edges[0] + 6) == big[edges[0] - 3:edges[2] + 3]
            f.seek(0)
            assert f.read() == big


def test_cat_file_and_cat_ranges(versions):
    fs = fsspec.filesystem("versionfs")
    big, url = versions.big, f"{versions.ws}@v1/data/big.bin"
    assert fs.cat_file(url) == big
    assert fs.cat_file(url, 1 << 20, (3 << 20) + 17) == big[1 << 20:(3 << 20) + 17]
    assert fs.cat_file(url, -100) == big[-100:]
    assert fs.cat_file(url, 5, -5) == big[5:-5]
    assert fs.cat_file(url, BIG + 10) == b""
    csv1 = versions.frames["v1"].to_csv(index=False).encode()
    csv2 = versions.frames["v2"].to_csv(index=False).encode()
    got = fs.cat_ranges([url, url, f"{versions.ws}@v1/data/train.csv",
                         f"{versions.ws}@v2/data/train.csv"],
                        [0, 4_000_000, 2, 0], [10, 6_500_000, None, 4])
    assert got == [big[:10], big[4_000_000:6_500_000], csv1[2:], csv2[:4]]


# -- listing -------------------------------------------------------------------------------


def test_ls_info_find_walk_on_nested_directories(versions):
    fs = fsspec.filesystem("versionfs")
    base = f"{versions.ws}@v1"
    top = {e["name"]: e for e in fs.ls(base)}
    assert sorted(top) == sorted(f"{base}/{n}" for n in (
        "a", "data", "img@2x.png", "link.csv", "linkdir", "outside"))
    assert top[f"{base}/a"]["type"] == "directory"
    png = top[f"{base}/img@2x.png"]
    assert (png["type"], png["size"], png["islink"]) == ("file", 10, False)
    assert png["mode"] & 0o777 == (versions.ws / "img@2x.png").stat().st_mode & 0o777
    assert fs.ls(f"{base}/a/b", detail=False) == [f"{base}/a/b/c", f"{base}/a/b/side.txt"]
    assert fs.ls(f"{base}/a/b/side.txt", detail=False) == [f"{base}/a/b/side.txt"]
    info = fs.info(f"{base}/data/big.bin")
    assert (info["name"], info["type"], info["size"]) == (f"{base}/data/big.bin", "file", BIG)
    assert fs.info(base)["type"] == "directory"
    assert fs.isdir(f"{base}/a/b/c") and not fs.isdir(f"{base}/a/b/side.txt")
    assert fs.isfile(f"{base}/a/b/side.txt")
    assert fs.exists(f"{base}/a/b/c/deep.txt") and not fs.exists(f"{base}/a/nope")
    assert fs.find(f"{base}/a") == [f"{base}/a/b/c/deep.txt", f"{base}/a/b/side.txt",
                                    f"{base}/a/escape"]
    walked = {root: (sorted(dirs), sorted(files)) for root, dirs, files in fs.walk(base)}
    assert walked[f"{base}/a/b"] == (["c"], ["side.txt"])
    assert walked[base][0] == ["a", "data"]  # links are not descended
    assert fs.glob(f"{base}/data/*.csv") == [f"{base}/data/train.csv"]
    rooted = fsspec.filesystem("versionfs", repo=str(versions.ws), rev="v1")
    assert rooted.ls("a/b", detail=False) == ["a/b/c", "a/b/side.txt"]
    assert rooted.find("", withdirs=False)[:2] == ["a/b/c/deep.txt", "a/b/side.txt"]
    assert rooted.info("")["type"] == "directory"


def test_ukey_is_the_content_id_vfs_shows(versions, cli):
    fs = fsspec.filesystem("versionfs")
    for rev in ("v1", "v2"):
        for path in ("data/train.csv", "data/big.bin", "a/b"):
            shown = json.loads(cli("show", f"{rev}:{path}", "--json",
                                   cwd=versions.ws).stdout)
            key = fs.ukey(f"{versions.ws}@{rev}/{path}")
            assert key == shown["id"]
            assert fs.info(f"{versions.ws}@{rev}/{path}")["id"] == key
            assert fs.checksum(f"{versions.ws}@{rev}/{path}") == int(key, 16)
    assert fs.ukey(f"{versions.ws}@v1/data/big.bin") == fs.ukey(f"{versions.ws}@v2/data/big.bin")
    assert fs.ukey(f"{versions.ws}@v1/data/train.csv") != \
        fs.ukey(f"{versions.ws}@v2/data/train.csv")


def test_symbolic_links_inside_are_followed_outside_are_only_links(versions):
    fs = fsspec.filesystem("versionfs", repo=str(versions.ws), rev="v1")
    listed = {e["name"]: e for e in fs.ls("")}
    assert listed["link.csv"]["type"] == "link"
    assert listed["link.csv"]["destination"] == "data/train.csv"
    info = fs.info("link.csv")
    assert (info["type"], info["islink"], info["size"]) == \
        ("file", True, len(versions.frames["v1"].to_csv(index=False)))
    assert fs.cat("link.csv") == fs.cat("data/train.csv")
    pd.testing.assert_frame_equal(pd.read_csv(versions.url("v1", "link.csv")),
                                  versions.frames["v1"])
    assert fs.info("linkdir")["type"] == "directory"
    assert fs.ls("linkdir", detail=False) == ["linkdir/c", "linkdir/side.txt"]
    assert fs.cat("linkdir/c/deep.txt") == b"deep\n"
    for name, target in (("outside", "/etc/hostname"), ("a/escape", "../../../x")):
        info = fs.info(name)
        assert (info["type"], info["destination"]) == ("link", target)
        with pytest.raises(FileNotFoundError) as got:
            fs.cat(name)
        assert "points outside version" in _one_line(got.value)


def test_a_branch_that_moves_is_seen_and_an_open_file_keeps_its_content(versions):
    fs = fsspec.filesystem("versionfs")
    url = f"{versions.ws}@main/data/train.csv"
    before = versions.frames["v2"].to_csv(index=False).encode()
    with fs.open(url) as f:
        write(versions.ws, "data/train.csv", "moved\n")
        snapshot(versions.repo, message="three")
        assert fs.cat(url) == b"moved\n"
        assert f.read() == before


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("path,cls,text", [
    ("@v1/data/nope.csv", FileNotFoundError, "path 'data/nope.csv' does not exist"),
    ("@v1/data/train.csv/x", NotADirectoryError, "is not a directory"),
    ("@v9/data/train.csv", FileNotFoundError, "unknown revision 'v9'; did you mean"),
    ("@v1/../etc/passwd", FileNotFoundError, "may not contain '..'"),
])
def test_errors_are_one_line_builtin_oserrors(versions, path, cls, text):
    fs = fsspec.filesystem("versionfs")
    for call in (fs.cat, fs.info, fs.ls, fs.open, fs.ukey):
        with pytest.raises(cls) as got:
            call(f"{versions.ws}{path}")
        assert text in _one_line(got.value)
        assert type(got.value.__cause__).__module__ == "versionfs.errors"


def test_not_a_repository_directory_opened_and_writes(versions, tmp_path):
    fs = fsspec.filesystem("versionfs")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError) as got:
        pd.read_csv(f"versionfs://{tmp_path}/plain@v1/x.csv")
    assert "no versionfs repository in" in _one_line(got.value)
    with pytest.raises(IsADirectoryError) as got:
        fs.open(f"{versions.ws}@v1/data")
    assert "'data' is a directory" in _one_line(got.value)
    with pytest.raises(IsADirectoryError):
        fs.cat_file(f"{versions.ws}@v1/a/b")
    for write_call in (lambda: fs.open(f"{versions.ws}@v1/new.csv", "wb"),
                       lambda: fs.open(f"{versions.ws}@v1/data/train.csv", "ab"),
                       lambda: fs.pipe_file(f"{versions.ws}@v1/x", b"x"),
                       lambda: fs.rm(f"{versions.ws}@v1/data/train.csv"),
                       lambda: fs.mkdir(f"{versions.ws}@v1/new"),
                       lambda: versions.frames["v1"].to_csv(versions.url("v1", "out.csv"))):
        with pytest.raises(PermissionError) as got:
            write_call()
        assert "versionfs:// is read-only" in _one_line(got.value)
    with pytest.raises(Exception) as got:
        VersionFileSystem(verify="sometimes", skip_instance_cache=True)
    assert "verify must be one of chunk, off" in _one_line(got.value)


def _read_all(fs, url: str) -> bytes:
    with fs.open(url) as f:
        return f.read()


def test_a_damaged_chunk_is_an_error_never_wrong_bytes(versions):
    repo = versions.repo
    entry = repo.entry(repo.resolve("v1"), "data/big.bin")
    chunks = repo.chunks(entry)
    victim = chunks[2]
    loc = repo.chunk_loc(victim.id)
    flip_byte(repo.store.blob_path(loc.blob_kind, loc.blob), loc.offset + 100)
    start = chunks[0].length + chunks[1].length
    fs = _fresh()
    url = f"{versions.ws}@v1/data/big.bin"
    assert fs.cat_file(url, 0, 1000) == versions.big[:1000]  # other chunks still read
    for read in (lambda: fs.cat_file(url, start + 200, start + 300),
                 lambda: fs.cat_file(url),
                 lambda: _read_all(fs, url)):
        with pytest.raises(OSError) as got:
            read()
        assert got.value.errno == errno.EIO
        assert re.search(r"chunk \w+ in blob \w+ is damaged", _one_line(got.value))
    with pytest.raises(OSError):
        pd.read_csv(versions.url("v1", "data/big.bin"))
    fs.close()


# -- resources and threads ---------------------------------------------------------------


def _fds() -> int:
    gc.collect()  # what earlier tests left to the collector goes first
    return len(os.listdir("/proc/self/fd"))


def test_open_repositories_are_bounded_and_closed(tmp_path):
    repos = []
    for i in range(MAX_OPEN + 2):
        ws = tmp_path / f"r{i}"
        r = Repo.init(str(ws))
        write(ws, "f.txt", f"repo {i}\n")
        _snap(r, "one", "v1")
        r.close()
        repos.append(ws)
    before = _fds()
    fs = _fresh()
    held = fs.open(f"{repos[0]}@v1/f.txt")
    for ws in repos:
        assert fs.cat(f"{ws}@v1/f.txt") == f"repo {repos.index(ws)}\n".encode()
        assert len(fs._pool) <= MAX_OPEN + 1  # + the one the open file holds
    assert held.read() == b"repo 0\n"
    held.close()
    fs.close()
    assert _fds() == before
    fs = _fresh()
    assert fs.cat(f"{repos[1]}@v1/f.txt") == b"repo 1\n"
    del fs
    gc.collect()
    assert _fds() == before


def test_threads_share_one_filesystem(versions):
    fs = _fresh(repo=str(versions.ws), rev="v1")
    big, errors = versions.big, []

    def reader(seed):
        rnd = random.Random(seed)
        try:
            with fs.open("data/big.bin", block_size=1 << 18) as f:
                for _ in range(30):
                    start = rnd.randrange(BIG)
                    n = rnd.randrange(1, 3 << 20)
                    f.seek(start)
                    assert f.read(n) == big[start:start + n]
            assert fs.cat_file("data/big.bin", 12345, 2_345_678) == big[12345:2_345_678]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    fs.close()


# -- the URL grammar ---------------------------------------------------------------------


def test_rev_splits():
    assert rev_splits("repo@v1") == [("repo", "v1", "")]
    assert rev_splits("repo@v1/a/b") == []
    assert rev_splits("repo@v1/a/b", path=True) == [("repo", "v1", "a/b")]
    assert rev_splits("/d/a@b/repo@HEAD~2/x@2x", path=True) == [
        ("/d/a", "b", "repo@HEAD~2/x@2x"), ("/d/a@b/repo", "HEAD~2", "x@2x"),
        ("/d/a@b/repo@HEAD~2/x", "2x", "")]
    assert rev_splits("repo@/x", path=True) == []


def test_url_grammar(tmp_path, monkeypatch):
    odd = tmp_path / "run@3" / "repo"
    Repo.init(str(odd)).close()
    u = parse_url(f"{odd}@v1/img@2x.png")
    assert (u.repo, u.rev, u.path, u.base) == (str(odd), "v1", "img@2x.png", f"{odd}@v1")
    u = parse_url(f"{odd}/sub/x.csv")
    assert (u.repo, u.rev, u.path, u.base) == (str(odd), None, "sub/x.csv", str(odd))
    assert parse_url(f"{odd}/sub/x.csv").child("y") == f"{odd}/sub/x.csv/y"
    u = parse_url(f"{odd}@HEAD~2")
    assert (u.rev, u.path, u.name()) == ("HEAD~2", "", f"{odd}@HEAD~2")
    monkeypatch.chdir(odd.parent)
    u = parse_url("repo@main/a")
    assert (u.repo, u.rev, u.path, u.name("b")) == (str(odd), "main", "a", "repo@main/b")
    monkeypatch.chdir(odd)
    u = parse_url("@v2/a/b")
    assert (u.repo, u.rev, u.path, u.name()) == (str(odd), "v2", "a/b", "@v2/a/b")
    assert parse_url("a/b").name() == "a/b"
    u = parse_url("s3://bucket/prefix@v1/data/x@2x.csv")
    assert (u.repo, u.rev, u.path, u.remote) == ("s3://bucket/prefix", "v1", "data/x@2x.csv",
                                                 True)
    u = parse_url("memory://store/")
    assert (u.repo, u.rev, u.path, u.remote) == ("memory://store", None, "", True)


def test_reads_a_version_of_a_remote(versions, cli, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    cli("remote", "add", "origin", f"file://{remote}", cwd=versions.ws)
    cli("push", "origin", "--all", cwd=versions.ws)
    cache = tmp_path / "cache"
    url = f"versionfs://file://{remote}@v1/data/train.csv"
    opts = {"cache_dir": str(cache), "cache_size": 64 << 20}
    pd.testing.assert_frame_equal(pd.read_csv(url, storage_options=opts),
                                  versions.frames["v1"])
    fs = fsspec.filesystem("versionfs", **opts)
    assert fs.cat_file(f"file://{remote}@v1/data/big.bin", 100, 5 << 20) == \
        versions.big[100:5 << 20]
    assert fs.ukey(f"file://{remote}@v2/data/train.csv") == \
        fsspec.filesystem("versionfs").ukey(f"{versions.ws}@v2/data/train.csv")


# -- installation and docs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    """The package metadata setuptools builds from pyproject.toml (an egg-info
    directory, which importlib.metadata reads like an installed distribution)."""
    out = tmp_path_factory.mktemp("meta")
    p = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()",
                        "-q", "egg_info", "--egg-base", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    return out


def _env(metadata: Path) -> dict:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
           + os.environ.get("PATH", "")}
    env["PYTHONPATH"] = os.pathsep.join([str(metadata), str(ROOT)])
    return env


def test_the_entry_point_registers_the_protocol(metadata, tmp_path):
    code = ("import fsspec, versionfs.fsspec as v\n"
            "cls = fsspec.get_filesystem_class('versionfs')\n"
            "print(cls is v.VersionFileSystem, fsspec.filesystem('versionfs').protocol)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(metadata),
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "versionfs"]


def test_the_docs_example_runs_as_written(metadata, tmp_path):
    """The shell block makes demo/; the Python block (named by its first line) runs
    in it with versionfs found through its entry point, no registration."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", (ROOT / "docs/fsspec.md").read_text(),
                        flags=re.DOTALL)
    assert [lang for lang, _ in blocks] == ["sh", "python"]
    env = _env(metadata)
    p = subprocess.run(["bash", "-euc", blocks[0][1]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    demo = tmp_path / "demo"
    name = blocks[1][1].splitlines()[0].removeprefix("# ").strip()
    (demo / name).write_text(blocks[1][1])
    p = subprocess.run([sys.executable, name], cwd=demo, env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    printed = [line.split("#")[1].strip() for line in blocks[1][1].splitlines()
               if line.strip().startswith("print(") and "#" in line]
    assert p.stdout.splitlines() == printed


def test_a_link_loop_is_an_error(tmp_path):
    ws = tmp_path / "loop"
    repo = Repo.init(str(ws))
    os.symlink("b", ws / "a")
    os.symlink("a", ws / "b")
    _snap(repo, "loop", "v1")
    repo.close()
    fs = fsspec.filesystem("versionfs", repo=str(ws), rev="v1")
    assert fs.info("a")["type"] == "link"
    with pytest.raises(FileNotFoundError) as got:
        fs.cat("a")
    assert "symbolic link 'a' (-> b) in 'a' loops in version" in _one_line(got.value)
