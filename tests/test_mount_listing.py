"""Listing through a mount: the patched pyfuse3, the kernel's listing cache, files
listed by name only, and readdir offsets, through real mounts.

What the daemon is asked is read from its own debug log (``versionfs mount --debug``
makes libfuse log every request): a listing served from the kernel's cache sends
``OPENDIR`` but no ``READDIRPLUS``; a file listed by name only is looked up
(``LOOKUP``) when it is first stat-ed. Every mount is undone by the ``mounter``
fixture of test_mount.py.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import stat
import struct
from pathlib import Path

import pytest

from versionfs.fuse import ops
from versionfs.fuse.ops import ListingPolicy
from versionfs.ops.snapshot import snapshot
from versionfs.repo import mounts
from versionfs.repo.repository import Repo

from test_mount import mounter  # noqa: F401  (the fixture)

HAVE_MOUNT = os.geteuid() == 0 and os.path.exists("/dev/fuse")
needs_mount = pytest.mark.skipif(not HAVE_MOUNT, reason="needs root and /dev/fuse")
# what the patched pyfuse3 does; without it test_setup_built_the_patched_pyfuse3 fails
needs_patch = pytest.mark.skipif(not (ops.CACHE_READDIR and ops.READDIR_NAMES),
                                 reason="pyfuse3 is not the patched build (or "
                                        "VFS_STOCK_PYFUSE3 is set)")
T0 = 1_600_000_000_000_000_000


def test_setup_built_the_patched_pyfuse3():
    import pyfuse3
    missing = []
    if not hasattr(pyfuse3.FileInfo, "cache_readdir"):
        missing.append("FileInfo.cache_readdir (0001)")
    if "lookup" not in inspect.signature(pyfuse3.readdir_reply).parameters:
        missing.append("readdir_reply(lookup=False) (0002)")
    assert not missing, (f"pyfuse3 {pyfuse3.__version__} lacks {', '.join(missing)}: run "
                         "scripts/setup.sh, which builds it with third_party/pyfuse3/*.patch")


# -- the policy on its own ----------------------------------------------------------------


class _Tree:
    """What ``ListingPolicy.start`` reads of a tree: its length, ndirs and inos."""

    def __init__(self, files: int, dirs: int = 0):
        self.inos = [1 << 62 | i for i in range(files)] + [0] * dirs
        self.ndirs = dirs

    def __len__(self):
        return len(self.inos)


def test_policy_names_until_files_are_looked_up_then_attributes():
    dropped = []
    p = ListingPolicy(dropped.extend)
    for ino in (10, 11, 12):
        p.start(ino, _Tree(1000, 2))
    assert p.names and p.named == {10: 1002, 11: 1002, 12: 1002}
    for _ in range(p.SWITCH_LOOKUPS - 1):
        p.file_lookup()
    assert p.names and not dropped
    p.file_lookup()
    # attributes from now on, and the listings cached by name are dropped
    assert not p.names and sorted(dropped) == [10, 11, 12] and not p.named
    p.start(13, _Tree(1000))
    assert 13 not in p.named


def test_policy_probes_with_a_few_entries_and_comes_back_to_names():
    p = ListingPolicy(lambda inos: None)
    p.start(1, _Tree(10))
    for _ in range(p.SWITCH_LOOKUPS):
        p.file_lookup()
    assert not p.names
    ino = 100
    while not p.named:  # attributes until PROBE_AFTER entries were listed
        ino += 1
        p.start(ino, _Tree(4096))
    assert p.named == {ino: p.PROBE_ENTRIES} and (ino - 100) * 4096 >= p.PROBE_AFTER
    # a walker that stats what it lists looks the probe's files up: attributes stay
    for _ in range(p.PROBE_HITS):
        p.file_lookup()
    p.start(ino + 1, _Tree(10))
    assert not p.names and ino not in p.named
    while not p.named:
        ino += 1
        p.start(ino, _Tree(4096))
    # one that does not (find, os.walk): names again from the next listing on
    p.start(ino + 1, _Tree(10))
    assert p.names and p.named == {ino: p.PROBE_ENTRIES, ino + 1: 10}


def test_policy_without_the_patch_always_lists_attributes():
    p = ListingPolicy(lambda inos: None, names=False)
    for ino in range(1, 100):
        p.start(ino, _Tree(4096))
    assert not p.names and not p.named


def test_policy_remembers_a_bounded_number_of_directories():
    p = ListingPolicy(lambda inos: None)
    p.MAX_NAMED = 8
    for ino in range(1, 20):
        p.start(ino, _Tree(3))
    assert list(p.named) == list(range(12, 20))


# -- through a mount ------------------------------------------------------------------------


def _put(path: Path, data: bytes, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def tree(tmp_path):
    """A workspace with one commit: ``many/`` of 3,000 files (and two subdirectories
    and a symlink among them), ``few/`` of 120 files, ``top.txt``."""
    ws = tmp_path / "ws"
    for i in range(3000):
        _put(ws / "many" / f"f{i:05d}", b"x" * (i % 700), T0 + i)
    _put(ws / "many" / "sub" / "inner.txt", b"inner", T0)
    (ws / "many" / "zz-empty").mkdir()
    os.symlink("f00001", ws / "many" / "link")
    for i in range(120):
        _put(ws / "few" / f"g{i:03d}.bin", bytes([i]) * i, T0 - i)
    _put(ws / "top.txt", b"top\n", T0)
    repo = Repo.init(str(ws))
    snapshot(repo, message="one")
    repo.close()
    return ws


def _expected(ws: Path) -> dict:
    """{relative path: (type, mode, size, mtime_ns)} of the workspace, .vfs left out."""
    out = {}
    for dirpath, dirs, files in os.walk(ws):
        dirs[:] = [d for d in dirs if d != ".vfs"]
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            size = None if stat.S_ISDIR(st.st_mode) else st.st_size
            out[os.path.relpath(full, ws)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                              size, st.st_mtime_ns)
    return out


def _names(mp: Path) -> dict:
    """{relative path: (d_ino, d_type)} as readdir gives them (os.scandir: no stat)."""
    out = {}
    stack = [str(mp)]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                kind = stat.S_IFDIR if e.is_dir(follow_symlinks=False) else \
                    stat.S_IFLNK if e.is_symlink() else stat.S_IFREG
                out[os.path.relpath(e.path, mp)] = (e.inode(), kind)
                if kind == stat.S_IFDIR:
                    stack.append(e.path)
    return out


def _files_only(listing: dict) -> dict:
    """A listing with directories' inode numbers left out: a directory the kernel
    forgot (memory pressure, a drop_caches anywhere) comes back with a new one, and
    then the daemon has the kernel drop the listings that named the old one."""
    return {rel: (0 if kind == stat.S_IFDIR else ino, kind)
            for rel, (ino, kind) in listing.items()}


def _stat_all(mp: Path, paths) -> dict:
    out = {}
    for rel in paths:
        st = os.lstat(mp / rel)
        size = None if stat.S_ISDIR(st.st_mode) else st.st_size
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), size, st.st_mtime_ns,
                    st.st_ino)
    return out


def _drops() -> tuple[int, int]:
    """How often any process dropped the page cache and the dentry/inode cache."""
    with open("/proc/vmstat") as f:
        got = dict(line.split() for line in f)
    return int(got.get("drop_pagecache", 0)), int(got.get("drop_slab", 0))


def _undisturbed(step):
    """``step()``'s result, from a run during which no process dropped the kernel's
    caches (other jobs on the machine may, every few seconds: what is asserted about
    the kernel's cache would then not hold). Three tries, else the test is skipped."""
    for _ in range(3):
        before = _drops()
        out = step()
        if _drops() == before:
            return out
    pytest.skip("another process dropped the kernel's caches during every try")


class _Requests:
    """Counts of the requests a ``--debug`` mount's daemon logged so far."""

    def __init__(self, mp: Path):
        self.log = mounts.state_base(str(mp)) + ".log"

    def count(self, opcode: str) -> int:
        with open(self.log, errors="replace") as f:
            return sum(1 for line in f if f"opcode: {opcode} (" in line)


@needs_mount
@needs_patch
def test_listings_from_the_daemon_and_from_the_kernels_cache_agree(tree, mounter):
    want = _expected(tree)
    mp = mounter(f"{tree}@HEAD", "--debug")
    asked = _Requests(mp)
    first = _names(mp)
    assert set(first) == set(want)
    assert {rel: kind for rel, (_, kind) in first.items()} == \
        {rel: kind for rel, (kind, *_) in want.items()}
    assert asked.count("READDIRPLUS") > 0
    # the same walk again: from the kernel's cache (a commit never changes)
    listed, again, now = _undisturbed(
        lambda: (asked.count("READDIRPLUS"), _names(mp), asked.count("READDIRPLUS")))
    assert _files_only(again) == _files_only(first)
    assert now == listed
    # every attribute, and the inode numbers readdir gave, once stat-ed
    got = _stat_all(mp, sorted(want))
    assert {rel: v[:4] for rel, v in got.items()} == want
    assert {rel: 0 if v[0] == stat.S_IFDIR else v[4] for rel, v in got.items()} == \
        {rel: ino for rel, (ino, _) in _files_only(again).items()}
    # the files of many/ went by name (find's walk does not stat), so the stats
    # above were lookups; enough of them turn attributes on, and the listings the
    # kernel cached by name are dropped: the next walk lists them again, with
    # attributes, and finds the same
    assert asked.count("LOOKUP") >= 3000
    assert _files_only(_names(mp)) == _files_only(first)
    assert asked.count("READDIRPLUS") > listed
    lookups, got, now = _undisturbed(
        lambda: (asked.count("LOOKUP"), _stat_all(mp, sorted(want)), asked.count("LOOKUP")))
    assert {rel: v[:4] for rel, v in got.items()} == want
    assert now == lookups  # every entry came with its attributes


@needs_mount
@needs_patch
def test_a_stat_walk_on_a_fresh_mount_gets_attributes_after_a_few_lookups(tree, mounter):
    want = _expected(tree)

    def walk():  # as ls -lR: list a directory, then stat each entry; a fresh mount
        mp = mounter(f"{tree}@HEAD", "--debug")
        got = {}
        for dirpath, dirs, files in os.walk(mp):
            dirs.sort()
            for name in sorted(dirs + files):
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                size = None if stat.S_ISDIR(st.st_mode) else st.st_size
                got[os.path.relpath(full, mp)] = (stat.S_IFMT(st.st_mode),
                                                 stat.S_IMODE(st.st_mode), size,
                                                 st.st_mtime_ns)
        return got, _Requests(mp).count("LOOKUP")

    got, lookups = _undisturbed(walk)
    assert got == want
    # few/ (listed first) went by name and was looked up file by file; many/ came
    # with attributes: far fewer lookups than files
    assert 120 <= lookups < 1000


def _getdents(fd: int, size: int) -> list[tuple[int, int, int, bytes]]:
    """One getdents64 call with a ``size``-byte buffer: [(d_ino, d_off, d_type, name)]."""
    nr = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine)
    if nr is None:
        pytest.skip("getdents64's system call number is known for x86_64 and aarch64 only")
    buf = ctypes.create_string_buffer(size)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    n = libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), buf, ctypes.c_uint(size))
    if n < 0:
        raise OSError(ctypes.get_errno(), "getdents64")
    out, pos, raw = [], 0, buf.raw[:n]
    while pos < n:
        d_ino, d_off, reclen, d_type = struct.unpack_from("<QqHB", raw, pos)
        name = raw[pos + 19: pos + reclen].split(b"\0", 1)[0]
        out.append((d_ino, d_off, d_type, name))
        pos += reclen
    return out


def _read_dir(path: Path, size: int, start: int | None = None) -> list[tuple]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if start is not None:
            os.lseek(fd, start, os.SEEK_SET)
        out = []
        while batch := _getdents(fd, size):
            out += batch
        return out
    finally:
        os.close(fd)


@needs_mount
@pytest.mark.parametrize("stock", [pytest.param(False, marks=needs_patch), True],
                         ids=["patched", "stock"])
def test_small_reads_and_seeks_resume_at_the_right_entry(tree, mounter, stock):
    # stock: served as with the stock pyfuse3 (nothing cached, all with attributes)
    mp = mounter(f"{tree}@HEAD", "--debug", env={"VFS_STOCK_PYFUSE3": "1"} if stock else None)
    asked = _Requests(mp)
    want = sorted([".", ".."] + os.listdir(tree / "many"))
    # 4 KiB at a time: each request of the kernel resumes where the last ended
    small = _read_dir(mp / "many", 4096)
    assert sorted(e[3].decode() for e in small) == want
    assert len({e[1] for e in small}) == len(small)  # every d_off distinct
    by_name = {e[3]: e for e in small}
    # the inode numbers and types readdir gives are those stat gives (directories'
    # numbers may change in between: see _files_only)
    for name in (b"f00000", b"f02999", b"sub", b"link", b"zz-empty"):
        st = os.lstat(mp / "many" / os.fsdecode(name))
        assert by_name[name][2] == stat.S_IFMT(st.st_mode) >> 12
        if not stat.S_ISDIR(st.st_mode):
            assert by_name[name][0] == st.st_ino
    # from any d_off on, the rest in order: served by the daemon, then the cache
    # (directories' inode numbers left out: see _files_only)
    def files_only(entries):
        return [(0 if t == 4 else ino, off, t, name) for ino, off, t, name in entries]

    def rereads():
        listed = asked.count("READDIRPLUS")
        for k in (0, 1, 2, 777, len(small) - 2):
            rest = _read_dir(mp / "many", 4096, start=small[k][1])
            assert files_only(rest) == files_only(small[k + 1:]), k
        assert files_only(_read_dir(mp / "many", 1 << 20)) == files_only(small)
        return asked.count("READDIRPLUS") - listed

    if stock:
        assert rereads() > 6  # no listing cache: every read goes to the daemon
    else:
        assert _undisturbed(rereads) == 0
    # past the last entry: nothing (the kernel asks the daemon, which says so)
    assert _read_dir(mp / "many", 4096, start=small[-1][1]) == []
