"""Real FUSE mounts through the command line, plus the pyfuse3 adapter called directly.

Every mount is made by ``versionfs mount`` in a subprocess and undone by the
``mounter`` fixture whatever happens: ``fusermount3 -u -z`` of its own mountpoint and
SIGTERM/SIGKILL of its own daemon pid. Nothing is left behind.
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from versionfs.repo import mounts
from versionfs.fuse.request import parse_spec
from versionfs.repo.repository import Repo
from versionfs.ops.snapshot import snapshot

pytestmark = pytest.mark.mount

if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
    pytest.skip("needs root, /dev/fuse and fusermount3", allow_module_level=True)

ODD = b"odd \xff\xfe name\x01"  # not UTF-8, with a space and a control byte
T0 = 1_500_000_000_123_456_789


# -- fixtures ----------------------------------------------------------------------------


def _put(path: Path | bytes, data: bytes, mode: int = 0o644, mtime_ns: int | None = None):
    path = os.fsencode(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _make_dataset(root: Path) -> None:
    rnd = random.Random(42)
    root.mkdir()
    _put(root / "small.txt", b"hello\n", 0o640, T0)
    _put(root / "twin1", b"same", 0o644, T0)
    _put(root / "twin2", b"same", 0o644, T0)
    _put(root / "data" / "big.bin", rnd.randbytes(9_000_000), 0o600)
    _put(root / "data" / "medium.bin", rnd.randbytes(3_000_001), 0o444)
    _put(root / "data" / "empty", b"")
    _put(root / "bin" / "tool.sh", b"#!/bin/sh\necho hi\n", 0o755)
    _put(os.path.join(os.fsencode(root), ODD), b"odd bytes")
    os.makedirs(root / "empty" / "nested" / "deeper")
    os.symlink("small.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.symlink("../data/big.bin", root / "bin" / "up")
    import numpy as np
    np.save(root / "arr.npy", np.arange(100_000, dtype=np.float64))
    db = sqlite3.connect(root / "table.db")
    db.execute("create table t (k integer primary key, v text)")
    db.executemany("insert into t values (?, ?)", [(i, f"value {i}") for i in range(5000)])
    db.commit()
    db.close()
    for dirpath, _, _ in os.walk(root, topdown=False):
        os.utime(dirpath, ns=(T0, T0))


@pytest.fixture
def ds(tmp_path):
    """A workspace with commits v1 and HEAD (v2); ``ds.v1`` is a copy of v1."""
    class Dataset:
        pass
    d = Dataset()
    d.ws = tmp_path / "ws"
    _make_dataset(d.ws)
    d.repo = Repo.init(str(d.ws))
    snapshot(d.repo, message="v1", tag="v1")
    d.v1 = tmp_path / "v1copy"
    subprocess.run(["cp", "-a", str(d.ws), str(d.v1)], check=True)
    shutil.rmtree(d.v1 / ".vfs")
    _put(d.ws / "small.txt", b"changed\n", 0o640)
    _put(d.ws / "new.txt", b"new\n")
    os.unlink(d.ws / "twin2")
    snapshot(d.repo, message="v2")
    yield d
    d.repo.close()


def _cleanup(mp: Path, pid: int | None) -> bool:
    """Unmount ``mp`` and stop its daemon, whatever state they are in; True if
    the daemon's state file outlived it (it should remove it on exit)."""
    state = mounts.read_state(str(mp))
    pid = pid or (state.pid if state else None)
    if mounts.find_mount(str(mp)) is not None:
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
    if pid and mounts.alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while mounts.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if mounts.alive(pid):
            os.kill(pid, signal.SIGKILL)
    stale = mounts.read_state(str(mp)) is not None
    for leftover in (".log", ".json"):  # a log kept for a warning, or a killed daemon's
        try:
            os.unlink(mounts.state_base(str(mp)) + leftover)
        except FileNotFoundError:
            pass
    return stale


def _processes_running(args: list[str]) -> list[int]:
    """Pids of processes whose command line holds ``args`` in a row."""
    want = b"\0".join(map(os.fsencode, args)) + b"\0"
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if want in f.read():
                    found.append(int(pid))
        except (OSError, ValueError):
            pass
    return found


@pytest.fixture
def mounter(cli, tmp_path):
    """``mount(spec, *options, env=None) -> mountpoint``; all undone at the end,
    always (``env``: variables added to the command's, and so the daemon's)."""
    made: list[list] = []

    def mount(spec, *options, cwd=None, env=None) -> Path:
        mp = tmp_path / f"mnt{len(made)}"
        mp.mkdir()
        made.append([mp, None])
        cli("mount", spec, mp, *options, cwd=cwd, env=env)
        state = mounts.read_state(str(mp))
        made[-1][1] = state.pid if state else None
        return mp

    mount.made = made
    yield mount
    stale = [_cleanup(mp, pid) for mp, pid in made]
    for (mp, pid), left in zip(made, stale):
        assert mounts.find_mount(str(mp)) is None, f"{mp} still mounted"
        assert not (pid and mounts.alive(pid)), f"daemon {pid} still running"
        assert not left, f"the daemon of {mp} did not remove its state file"


def _tree(root) -> dict:
    """{relative path: (mode, mtime_ns, size-or-None, content-or-target)}."""
    out = {}
    base = os.fsencode(root)
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d != b".vfs"]
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, base)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    body = hashlib.sha256(f.read()).hexdigest()
                out[rel] = (st.st_mode, st.st_mtime_ns, st.st_size, body)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = (st.st_mode, st.st_mtime_ns, st.st_size, os.readlink(full))
            else:
                out[rel] = (st.st_mode, st.st_mtime_ns, None, None)
    return out


# -- the mounted tree ---------------------------------------------------------------------


def test_mounted_commits_equal_the_originals(ds, mounter):
    head = mounter(f"{ds.ws}@HEAD")
    v1 = mounter(f"{ds.ws}@v1")
    assert _tree(head) == _tree(ds.ws)
    assert _tree(v1) == _tree(ds.v1)
    assert os.path.isdir(head / "empty" / "nested" / "deeper")
    assert os.listdir(head / "empty" / "nested" / "deeper") == []
    assert os.readlink(head / "dangling") == "/nonexistent/target"
    assert (head / "bin" / "up").read_bytes() == (ds.ws / "data" / "big.bin").read_bytes()


def test_random_range_reads(ds, mounter):
    mp = mounter(f"{ds.ws}@v1")
    want = (ds.v1 / "data" / "big.bin").read_bytes()
    n = len(want)
    rnd = random.Random(5)
    fd = os.open(mp / "data" / "big.bin", os.O_RDONLY)
    try:
        cases = [(0, 1), (n - 1, 1), (n - 1, 4096), (n, 10), (n + 4096, 10), (0, n + 10),
                 (n - 131072, 1 << 20)]
        cases += [(rnd.randrange(n), rnd.choice([1, 100, 4096, 65536, 1 << 20, 3 << 20]))
                  for _ in range(300)]
        for off, size in cases:
            assert os.pread(fd, size, off) == want[off: off + size], (off, size)
    finally:
        os.close(fd)


WRITES = {
    "create": lambda mp: open(mp / "new-file", "w"),
    "open for writing": lambda mp: open(mp / "small.txt", "r+b"),
    "append": lambda mp: open(mp / "small.txt", "ab"),
    "unlink": lambda mp: os.unlink(mp / "small.txt"),
    "rename": lambda mp: os.rename(mp / "small.txt", mp / "other"),
    "mkdir": lambda mp: os.mkdir(mp / "newdir"),
    "rmdir": lambda mp: os.rmdir(mp / "empty" / "nested" / "deeper"),
    "chmod": lambda mp: os.chmod(mp / "small.txt", 0o777),
    "chown": lambda mp: os.chown(mp / "small.txt", 1, 1),
    "utime": lambda mp: os.utime(mp / "small.txt", (1, 1)),
    "truncate": lambda mp: os.truncate(mp / "small.txt", 0),
    "symlink": lambda mp: os.symlink("x", mp / "newlink"),
    "link": lambda mp: os.link(mp / "small.txt", mp / "hardlink"),
    "mknod": lambda mp: os.mknod(mp / "fifo", 0o600 | stat.S_IFIFO),
    "setxattr": lambda mp: os.setxattr(mp / "small.txt", "user.x", b"1"),
    "removexattr": lambda mp: os.removexattr(mp / "small.txt", "user.versionfs.id"),
}


def test_every_write_fails_with_erofs(ds, mounter):
    mp = mounter(f"{ds.ws}@v1")
    for what, op in WRITES.items():
        with pytest.raises(OSError) as err:
            op(mp)
        assert err.value.errno == errno.EROFS, what
    assert _tree(mp) == _tree(ds.v1)


def test_xattrs(ds, mounter):
    (ds.ws / "by-run.txt").write_bytes(b"made by a run")
    run = hashlib.blake2b(b"a run", digest_size=32).digest()
    res = snapshot(ds.repo, message="v3", run=run)
    mp = mounter(f"{ds.ws}@v1")
    head = mounter(str(ds.ws) + "@HEAD")
    v1 = ds.repo.resolve("v1").hex().encode()
    names = set(os.listxattr(mp / "small.txt"))
    assert names == {"user.versionfs.id", "user.versionfs.commit"}
    entry = ds.repo.entry(ds.repo.resolve("v1"), "small.txt")
    assert os.getxattr(mp / "small.txt", "user.versionfs.id") == entry.id.hex().encode()
    assert os.getxattr(mp / "small.txt", "user.versionfs.commit") == v1
    assert os.getxattr(mp / "data", "user.versionfs.commit") == v1
    with pytest.raises(OSError) as err:
        os.getxattr(mp / "small.txt", "user.versionfs.run")
    assert err.value.errno == errno.ENODATA
    # the commit names a run, but no run record output this content: the run
    # attribute names the run that made a file's content (tests/test_lineage.py)
    assert ds.repo.commit(res.commit).run == run
    assert "user.versionfs.run" not in os.listxattr(head / "by-run.txt")
    assert os.getxattr(head, "user.versionfs.commit") == res.commit.hex().encode()


def test_standard_tools(ds, mounter, tmp_path):
    mp = mounter(f"{ds.ws}@HEAD")
    proc = subprocess.run(["diff", "-r", "--no-dereference", "--exclude=.vfs",
                           str(ds.ws), str(mp)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    subprocess.run(["cp", "-a", f"{mp}/.", str(tmp_path / "copy")], check=True)
    assert _tree(tmp_path / "copy") == _tree(ds.ws)
    (tmp_path / "untar").mkdir()
    tar = subprocess.run(["tar", "--format=posix", "-C", str(mp), "-cf", "-", "."],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-C", str(tmp_path / "untar"), "-xf", "-"], input=tar, check=True)
    assert _tree(tmp_path / "untar") == _tree(ds.ws)


def test_numpy_memmap_and_sqlite(ds, mounter):
    import numpy as np
    mp = mounter(f"{ds.ws}@v1")
    arr = np.load(mp / "arr.npy", mmap_mode="r")
    assert isinstance(arr, np.memmap)
    assert arr[99_999] == 99_999.0 and float(arr.sum()) == float(np.arange(100_000).sum())
    raw = np.memmap(mp / "data" / "big.bin", dtype=np.uint8, mode="r")
    assert raw[-5:].tobytes() == (ds.v1 / "data" / "big.bin").read_bytes()[-5:]
    db = sqlite3.connect(f"file:{mp / 'table.db'}?mode=ro&immutable=1", uri=True)
    try:
        assert db.execute("select count(*), max(v) from t where k > 10").fetchone() == \
            (4989, "value 999")
    finally:
        db.close()


# -- all versions, concurrency ----------------------------------------------------------


def test_all_versions_side_by_side(ds, mounter):
    mp = mounter(str(ds.ws))
    assert sorted(os.listdir(mp)) == ["HEAD", "commits", "heads", "tags"]
    assert os.listdir(mp / "tags") == ["v1"]
    assert os.listdir(mp / "heads") == ["main"]
    ids = sorted(e.id.hex() for e in ds.repo.log())
    assert sorted(os.listdir(mp / "commits")) == ids
    assert _tree(mp / "tags" / "v1") == _tree(ds.v1)
    assert _tree(mp / "HEAD") == _tree(ds.ws)
    assert _tree(mp / "commits" / ds.repo.resolve("v1").hex()) == _tree(ds.v1)
    # identical content in two commits is one inode; changed content is not
    assert os.stat(mp / "tags/v1/data/big.bin").st_ino == os.stat(mp / "HEAD/data/big.bin").st_ino
    assert os.stat(mp / "tags/v1/small.txt").st_ino != os.stat(mp / "HEAD/small.txt").st_ino


def test_mounts_keep_working_during_snapshots(ds, mounter):
    v1 = mounter(f"{ds.ws}@v1")
    every = mounter(str(ds.ws))
    want = _tree(ds.v1)
    errors: list[BaseException] = []
    done = threading.Event()

    def read_loop():
        try:
            while not done.is_set():
                assert _tree(v1) == want
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(3):
            _put(ds.ws / f"round{i}.bin", os.urandom(2_000_000 + i))
            snapshot(ds.repo, message=f"round {i}")
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    deadline = time.monotonic() + 10  # HEAD/ is rechecked every second
    while "round2.bin" not in os.listdir(every / "HEAD") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _tree(every / "HEAD") == _tree(ds.ws)
    assert len(os.listdir(every / "commits")) == 5


def _sha_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_many_concurrent_readers(ds, mounter):
    mp = mounter(f"{ds.ws}@HEAD")
    names = ["data/big.bin", "data/medium.bin", "arr.npy", "table.db", "small.txt"]
    want = {n: _sha_of(str(ds.ws / n)) for n in names}
    jobs = [names[i % len(names)] for i in range(40)]
    with concurrent.futures.ProcessPoolExecutor(8) as pool:
        got = list(pool.map(_sha_of, [str(mp / n) for n in jobs]))
    assert got == [want[n] for n in jobs]
    big = (ds.ws / "data" / "big.bin").read_bytes()

    def preads(seed):
        rnd = random.Random(seed)
        fd = os.open(mp / "data" / "big.bin", os.O_RDONLY)
        try:
            for _ in range(200):
                off, size = rnd.randrange(len(big)), rnd.randrange(1, 300_000)
                if os.pread(fd, size, off) != big[off: off + size]:
                    return False
        finally:
            os.close(fd)
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(preads, range(8)))


def test_several_mounts_and_the_mounts_listing(ds, mounter, cli):
    a = mounter(f"{ds.ws}@v1")
    b = mounter(f"{ds.ws}@HEAD")
    c = mounter(str(ds.ws))
    out = cli("mounts").stdout
    lines = {line.split("\t")[0]: line for line in out.splitlines()}
    assert f"\t{ds.ws}\tv1\t{ds.repo.resolve('v1').hex()[:12]}\t" in lines[str(a)]
    assert f"\t{ds.ws}\tHEAD\t" in lines[str(b)]
    assert "(all versions)" in lines[str(c)]
    assert (a / "small.txt").read_bytes() == b"hello\n"
    assert (b / "small.txt").read_bytes() == b"changed\n"


def test_gc_from_python_keeps_a_mounted_commit_nothing_else_reaches(ds, mounter, cli):
    import versionfs
    v2 = ds.repo.resolve("HEAD")
    want = _tree(ds.ws)  # the workspace is v2 (HEAD); read before mounting
    mp = mounter(f"{ds.ws}@{v2.hex()}")
    assert mounts.read_state(str(mp)).commit == v2.hex()
    # Move HEAD off main, then delete main: only the mount still serves v2.
    cli("branch", "other", "v1", cwd=ds.ws)
    cli("checkout", "other", cwd=ds.ws)
    cli("branch", "-D", "main", cwd=ds.ws)
    with versionfs.Repo.open(str(ds.ws)) as repo:
        assert repo.refs() == {"heads/other": repo.resolve("v1"), "tags/v1": repo.resolve("v1")}
        result = repo.gc()
        assert result.commits == 0 and result.chunks == 0
        with repo.index.read() as txn:
            assert txn.has("commits", v2)
    assert _tree(mp) == want  # every file, byte for byte (it was Input/output error)
    assert (mp / "small.txt").read_bytes() == b"changed\n"
    assert (mp / "new.txt").read_bytes() == b"new\n"


def test_big_files_and_big_directories(tmp_path, mounter):
    ws = tmp_path / "ws"
    ws.mkdir()
    huge = ws / "huge.bin"
    size = (4 << 30) + (300 << 20) + 7
    with open(huge, "wb") as f:  # sparse: zeros dedupe to a few chunks
        f.truncate(size)
        f.seek(4 << 30)
        f.write(b"MARK at 4 GiB")
        f.seek(size - 3)
        f.write(b"END")
    big_dir = ws / "many"
    big_dir.mkdir()
    for i in range(100_000):
        (big_dir / f"f{i:06d}").write_bytes(b"%d" % i)
    repo = Repo.init(str(ws))
    snapshot(repo, message="big")
    repo.close()
    mp = mounter(f"{ws}@HEAD")
    assert os.stat(mp / "huge.bin").st_size == size
    fd = os.open(mp / "huge.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 13, 4 << 30) == b"MARK at 4 GiB"
        assert os.pread(fd, 20, (4 << 30) - 7) == b"\0" * 7 + b"MARK at 4 GiB"
        assert os.pread(fd, 100, size - 3) == b"END"
        assert os.pread(fd, 100, size) == b""
    finally:
        os.close(fd)
    names = os.listdir(mp / "many")
    assert len(names) == 100_000 and len(set(names)) == 100_000
    assert sorted(names) == sorted(os.listdir(big_dir))
    assert (mp / "many" / "f099999").read_bytes() == b"99999"


def test_damaged_chunk_is_eio_and_the_mount_survives(ds, mounter):
    entry = ds.repo.entry(ds.repo.resolve("v1"), "data/big.bin")
    ref = ds.repo.chunks(entry)[1]
    loc = ds.repo.chunk_loc(ref.id)
    fd = os.open(ds.repo.store.blob_path(loc.blob_kind, loc.blob), os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, loc.offset)[0] ^ 1]), loc.offset)
    finally:
        os.close(fd)
    mp = mounter(f"{ds.ws}@v1")
    with open(mp / "data" / "big.bin", "rb") as f:
        with pytest.raises(OSError) as err:
            f.read()
    assert err.value.errno == errno.EIO
    log = Path(mounts.state_base(str(mp)) + ".log")
    assert "is damaged" in log.read_text()
    assert (mp / "small.txt").read_bytes() == b"hello\n"
    assert (mp / "data" / "medium.bin").read_bytes() == \
        (ds.v1 / "data" / "medium.bin").read_bytes()


def test_verify_off_reads_correct_bytes_at_random_offsets(ds, mounter):
    mp = mounter(f"{ds.ws}@v1", "--verify=off")
    want = (ds.v1 / "data" / "big.bin").read_bytes()
    rnd = random.Random(5)
    fd = os.open(mp / "data" / "big.bin", os.O_RDONLY)
    try:
        for _ in range(200):
            off = rnd.randrange(len(want))
            assert os.pread(fd, 4096, off) == want[off: off + 4096]
    finally:
        os.close(fd)
    assert (mp / "data" / "big.bin").read_bytes() == want
    assert (mp / "small.txt").read_bytes() == b"hello\n"


def test_verify_takes_chunk_or_off_only(ds, cli, tmp_path):
    (tmp_path / "mp").mkdir()
    res = cli.fail("mount", f"{ds.ws}@v1", tmp_path / "mp", "--verify=maybe", code=2)
    assert "'maybe' is not one of 'chunk', 'off'" in res.stderr
    assert mounts.find_mount(str(tmp_path / "mp")) is None
    assert "--verify [chunk|off]" in cli("mount", "--help").stdout


# -- lifecycle and errors -------------------------------------------------------------------


def _wait_gone(mp: Path, pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (mounts.find_mount(str(mp)) or mounts.alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounts.find_mount(str(mp)) is None
    assert not mounts.alive(pid)


def test_umount_and_signals_unmount_cleanly(ds, mounter, cli):
    for how in ("umount", signal.SIGTERM, signal.SIGINT):
        mp = mounter(f"{ds.ws}@v1")
        pid = mounter.made[-1][1]
        assert pid and mounts.alive(pid)
        if how == "umount":
            cli("umount", mp)
        else:
            os.kill(pid, how)
        _wait_gone(mp, pid)
        assert mounts.read_state(str(mp)) is None
        assert not os.path.exists(mounts.state_base(str(mp)) + ".log")  # clean: no log
        assert str(mp) not in cli("mounts").stdout
        assert os.listdir(mp) == []


def test_umount_refuses_a_busy_mount_unless_lazy(ds, mounter, cli):
    mp = mounter(f"{ds.ws}@v1")
    pid = mounter.made[-1][1]
    holder = subprocess.Popen(["sleep", "60"], cwd=mp)
    try:
        res = cli.fail("umount", mp, code=12)
        assert "is busy" in res.stderr and "--lazy" in res.stderr
        cli("umount", "--lazy", mp)
        assert mounts.find_mount(str(mp)) is None
    finally:
        holder.kill()
        holder.wait()
    _wait_gone(mp, pid)


def test_mount_failures_have_one_clear_line(ds, mounter, cli, tmp_path):
    empty = tmp_path / "empty-mp"
    empty.mkdir()

    def fails(*args, code, text, **kw):
        res = cli.fail("mount", *args, code=code, **kw)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], res.stderr
        assert mounts.find_mount(str(empty)) is None
        # the daemon forked before the checks is gone too (the command reaps it)
        assert not _processes_running(["mount", *map(str, args)]), args

    fails(f"{ds.ws}@v1", tmp_path / "missing", code=12, text="does not exist")
    fails(f"{ds.ws}@v1", ds.ws, code=12, text="is not empty")
    fails(f"{ds.ws}@nope", empty, code=4, text="unknown revision 'nope'")
    fails(f"{tmp_path}@v1", empty, code=3, text="not a versionfs repository")
    fails(f"{ds.ws}@v1", empty, code=12, text="fusermount3 not found",
          env={"PATH": str(tmp_path / "no-bin")})
    mp = mounter(f"{ds.ws}@v1")
    fails(f"{ds.ws}@HEAD", mp, code=12, text="is already mounted")
    res = cli.fail("umount", empty, code=12)
    assert "is not a versionfs mount" in res.stderr


def test_mount_without_dev_fuse(ds, tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("needs unshare")
    mp = tmp_path / "mp"
    mp.mkdir()
    script = ('mount -t tmpfs none /dev && exec "$0" -m versionfs mount "$1" "$2"')
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           sys.executable, f"{ds.ws}@v1", str(mp)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 12, proc.stderr
    assert "/dev/fuse is missing" in proc.stderr
    assert mounts.find_mount(str(mp)) is None


def test_foreground_mount_serves_until_signalled(ds, tmp_path):
    mp = tmp_path / "fg"
    mp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "versionfs", "mount", "-f",
                             f"{ds.ws}@v1", str(mp)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while mounts.find_mount(str(mp)) is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        assert (mp / "small.txt").read_bytes() == b"hello\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "mounted" in proc.stderr.read()
        assert mounts.find_mount(str(mp)) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _cleanup(mp, None)


def test_parse_spec(tmp_path):
    assert parse_spec("repo@v1") == ("repo", "v1")
    assert parse_spec("repo") == ("repo", None)
    assert parse_spec("@HEAD~2", "/r") == ("/r", "HEAD~2")
    assert parse_spec("/data/a@b/repo@tag") == ("/data/a@b/repo", "tag")
    assert parse_spec("/data/a@b/repo") == ("/data/a@b/repo", None)
    assert parse_spec("repo@") == ("repo@", None)
    odd = tmp_path / "run@2024"
    odd.mkdir()
    assert parse_spec(str(odd)) == (str(odd), None)


# -- the adapter, called directly ---------------------------------------------------------


class _BuggyView:
    def getattr(self, ino):
        raise ZeroDivisionError("a bug")

    def lookup(self, parent, name):
        from versionfs.errors import PathNotFound
        raise PathNotFound("no such name")


async def test_adapter_translates_errors_and_survives_bugs(caplog):
    import pyfuse3
    from versionfs.fuse.ops import Operations
    ops = Operations(_BuggyView())
    with caplog.at_level(logging.ERROR, logger="versionfs.fuse"):
        with pytest.raises(pyfuse3.FUSEError) as err:
            await ops.getattr(5, None)
    assert err.value.errno == errno.EIO
    assert "ZeroDivisionError: a bug" in caplog.text and "Traceback" in caplog.text
    with pytest.raises(pyfuse3.FUSEError) as err:
        await ops.lookup(1, b"x", None)
    assert err.value.errno == errno.ENOENT
    for call in (ops.unlink(1, b"x", None), ops.mkdir(1, b"d", 0o755, None),
                 ops.write(1, 0, b"x"), ops.setxattr(1, b"user.x", b"1", None),
                 ops.create(1, b"f", 0o644, os.O_WRONLY, None)):
        with pytest.raises(pyfuse3.FUSEError) as err:
            await call
        assert err.value.errno == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as err:
        await ops.open(2, os.O_RDWR, None)
    assert err.value.errno == errno.EROFS


# -- gc beneath a live mount --------------------------------------------------------------

# The daemon keeps 64 MiB of verified chunks and 128 open blobs. A chunk it verified
# before but no longer holds is read by range from its remembered place; to make that
# place vanish beneath it, more such chunks than open fds are needed: 400 files of
# 256 KiB (100 MiB), one pack each, each pack less than half live so gc rewrites all.
_LIVE = 256 << 10
_JUNK = 300 << 10
_PACKS = 400


def _sparse_packs_repo(ws: Path) -> tuple[Repo, str, dict[str, bytes]]:
    """A repository of ``_PACKS`` packs, each one file that a commit keeps and junk
    that nothing reaches any more; returns it, the one live commit (hex) and the
    files of that commit."""
    rng = random.Random(7)
    files = {}
    (ws / "d").mkdir(parents=True)
    repo = Repo.init(str(ws))
    for k in range(_PACKS):
        files[f"d/{k:03d}.bin"] = data = rng.randbytes(_LIVE)
        _put(ws / "d" / f"{k:03d}.bin", data)
        _put(ws / "junk.bin", rng.randbytes(_JUNK))
        snapshot(repo, message=f"step {k}")
    os.unlink(ws / "junk.bin")
    with repo.index.write() as txn:  # test setup: a root commit on a new branch
        txn.put("meta", b"HEAD", b"heads/fresh")
    live = snapshot(repo, message="only what is kept").commit
    with repo.index.write() as txn:
        txn.delete("refs", b"heads/main")  # the 140 junk versions are unreachable now
    return repo, live.hex(), files


def _read_uncached(path: Path) -> bytes:
    """The file's bytes from the daemon, not from the kernel's page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        out = bytearray()
        while chunk := os.read(fd, 1 << 20):
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def test_a_mount_serves_correct_bytes_while_gc_rewrites_the_packs(tmp_path, mounter, cli):
    ws = tmp_path / "ws"
    repo, live, files = _sparse_packs_repo(ws)
    repo.close()
    mp = mounter(f"{ws}@{live}")
    for rel, data in files.items():  # every chunk verified (and its location kept)
        assert _read_uncached(mp / rel) == data, rel
    result: dict = {}
    gc_run = threading.Thread(target=lambda: result.update(
        json=cli("gc", "--json", cwd=ws).stdout))
    gc_run.start()
    rounds = 0
    while gc_run.is_alive() or rounds == 0:  # reads race the rewrite
        for rel in list(files)[rounds % 7::7]:
            assert _read_uncached(mp / rel) == files[rel], rel
        rounds += 1
    gc_run.join()
    import json
    done = json.loads(result["json"])
    assert done["packs_rewritten"] >= _PACKS - 1, done  # the packs moved beneath the mount
    for rel, data in files.items():  # every old pack is gone: each read is re-located
        assert _read_uncached(mp / rel) == data, rel
