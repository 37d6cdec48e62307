"""Property tests: any small tree snapshots and reads back exactly.

Hypothesis builds random trees (names with spaces and non-ASCII letters, random bytes,
exec bits, symlinks including dangling and absolute ones, empty directories, explicit
nanosecond mtimes), writes them, snapshots them through the Python API and checks
every entry of the commit against the source: content through ``Repo.open``, kind,
mode, size, mtime and link target through ``Repo.walk``. The commit is then checked
out into a fresh directory and the materialized tree compared with the source.
Files stay below the chunking threshold (larger ones are covered elsewhere).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from versionfs.api import Repo
from versionfs.records.model import Kind

SETTINGS = settings(max_examples=25, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

NAME_CHARS = "abcXYZ019 _-.,+=@#%'()[]{}~é日ß€Ωñ"


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int
    mtime_ns: int


@dataclass(frozen=True)
class Link:
    target: str
    mtime_ns: int


@dataclass(frozen=True)
class Dir:
    children: dict
    mode: int
    mtime_ns: int


mtimes = st.integers(min_value=10**9, max_value=4 * 10**18)  # 1970 … 2096, any ns
names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..", ".vfs", ".vfsignore"))
files = st.builds(File, st.binary(max_size=4096),
                  st.sampled_from([0o644, 0o755, 0o600, 0o700, 0o444, 0o750]), mtimes)
links = st.builds(Link, st.one_of(
    st.text(NAME_CHARS + "/", min_size=1, max_size=30),      # relative, maybe dangling
    st.text(NAME_CHARS, min_size=1, max_size=10).map(lambda t: "/" + t),  # absolute
    st.just(".."), st.just("../../outside")), mtimes)


def dirs(children):
    return st.builds(Dir, st.dictionaries(names, children, max_size=5),
                     st.sampled_from([0o755, 0o700, 0o750]), mtimes)


trees = st.dictionaries(
    names, st.recursive(st.one_of(files, links), dirs, max_leaves=12), max_size=6)


def materialize(root: str, tree: dict) -> None:
    for name, node in tree.items():
        path = os.path.join(root, name)
        if isinstance(node, File):
            with open(path, "wb") as f:
                f.write(node.data)
            os.chmod(path, node.mode)
            os.utime(path, ns=(node.mtime_ns, node.mtime_ns))
        elif isinstance(node, Link):
            os.symlink(node.target, path)
            os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)
        else:
            os.mkdir(path)
            materialize(path, node.children)
            os.chmod(path, node.mode)
            os.utime(path, ns=(node.mtime_ns, node.mtime_ns))  # after its children


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for name, node in tree.items():
        path = prefix + name
        out[path] = node
        if isinstance(node, Dir):
            out.update(flatten(node.children, path + "/"))
    return out


def check_commit(repo: Repo, rev: str, tree: dict) -> None:
    want = flatten(tree)
    got = dict(repo.walk(repo.commit(repo.resolve(rev)).tree))
    assert set(got) == set(want)
    for path, node in want.items():
        e = got[path]
        assert e.mtime_ns == node.mtime_ns, path
        if isinstance(node, File):
            assert e.kind is Kind.FILE and e.mode == node.mode and e.size == len(node.data)
            with repo.open(rev, path) as f:
                assert f.read() == node.data, path
        elif isinstance(node, Link):
            assert e.kind is Kind.SYMLINK and e.target == node.target.encode(), path
        else:
            assert e.kind is Kind.DIR and e.mode == node.mode, path


def check_directory(root: str, tree: dict) -> None:
    """A checked-out directory holds exactly ``tree`` (a workspace's own ``.vfs``
    aside)."""
    want = flatten(tree)
    found = set()
    for dirpath, dnames, fnames in os.walk(root):
        if dirpath == root:
            dnames[:] = [d for d in dnames if d != ".vfs"]
        for n in dnames + fnames:
            found.add(os.path.relpath(os.path.join(dirpath, n), root))
    assert found == set(want)
    for path, node in want.items():
        full = os.path.join(root, path)
        st_ = os.lstat(full)
        assert st_.st_mtime_ns == node.mtime_ns, path
        if isinstance(node, File):
            assert stat.S_ISREG(st_.st_mode) and stat.S_IMODE(st_.st_mode) == node.mode, path
            with open(full, "rb") as f:
                assert f.read() == node.data, path
        elif isinstance(node, Link):
            assert stat.S_ISLNK(st_.st_mode) and os.readlink(full) == node.target, path
        else:
            assert stat.S_ISDIR(st_.st_mode) and stat.S_IMODE(st_.st_mode) == node.mode, path


def scratch(parent) -> str:
    return tempfile.mkdtemp(prefix="prop-", dir=str(parent))


@SETTINGS
@given(tree=trees)
def test_any_tree_snapshots_reads_back_and_checks_out(storage, tree):
    base = scratch(storage)
    try:
        ws = os.path.join(base, "ws")
        os.mkdir(ws)
        materialize(ws, tree)
        with Repo.init(ws) as repo:
            res = repo.snapshot(message="prop")
            assert res.created
            assert res.files == sum(isinstance(n, File) for n in flatten(tree).values())
            check_commit(repo, "HEAD", tree)
            again = repo.snapshot(message="again")
            assert not again.created and again.commit == res.commit
            assert repo.status().empty
            out = os.path.join(base, "out")
            repo.checkout("HEAD", into=out)
            check_directory(out, tree)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(history=st.lists(trees, min_size=2, max_size=4))
def test_every_version_of_a_history_reads_back(ext4_dir, history):
    """The same workspace rewritten several times: each snapshot records exactly
    that version, and every earlier one still reads back (and checks out) intact."""
    base = scratch(ext4_dir)
    try:
        ws = os.path.join(base, "ws")
        os.mkdir(ws)
        commits = []
        with Repo.init(ws) as repo:
            for tree in history:
                for name in os.listdir(ws):
                    if name != ".vfs":
                        p = os.path.join(ws, name)
                        if os.path.isdir(p) and not os.path.islink(p):
                            shutil.rmtree(p)
                        else:
                            os.unlink(p)
                materialize(ws, tree)
                commits.append(repo.snapshot(message="v", allow_empty=True).commit)
            for cid, tree in zip(commits, history):
                check_commit(repo, cid.hex(), tree)
            out = os.path.join(base, "first")
            repo.checkout(commits[0].hex(), into=out)
            check_directory(out, history[0])
            # and the workspace itself (clean: it equals HEAD) goes back to the first
            repo.checkout(commits[0].hex())
            check_directory(ws, history[0])
            assert repo.status().empty
    finally:
        shutil.rmtree(base, ignore_errors=True)
