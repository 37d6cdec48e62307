"""Benchmark ``versionfs mount`` against the native filesystem, measured in one run.

Prints a markdown table of versionfs / native ratios with the issue's targets:

* cold sequential read of a BIG_MIB file (page cache dropped before each run, and a
  fresh daemon for each run), with the default ``--verify=chunk`` and ``--verify=off``
* warm re-read of it (page cache kept: the mount uses keep_cache)
* ``find`` and ``ls -lR`` over a FILES-file commit, cold and warm
* PREADS random 4 KiB preads in the big file: cold (fresh daemon, both verify
  modes), cold after the daemon verified every chunk once, and warm
* ``versionfs mount`` → a served ``ls`` of a MOUNT_FILES-file commit, with compiled
  modules cached as in an installed package, and without
* daemon RSS after ``find`` walked a WALK_FILES-file commit

The big file and the FILES tree are real files snapshotted with ``vfs snapshot``; the
MOUNT_FILES and WALK_FILES commits are written straight into a bare repository
(metadata only: the walk never reads content), which takes seconds instead of the
minutes a million real files would. Every number is the median of REPEAT runs.
Needs root (drop_caches, mounting).

Usage: python tools/bench/bench_mount.py [--dir D] [--big-mib N] [--files N]
           [--mount-files N] [--walk-files N] [--preads N] [--repeat N] [--small]
           [--keep] [--only reads|walks|mount|rss ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common import drop_caches, fmt_bytes, fmt_seconds  # noqa: E402

from versionfs.repo import mounts  # noqa: E402
from versionfs.records.hashing import hash_bytes  # noqa: E402
from versionfs.records.model import (  # noqa: E402
    Commit, Kind, ObjectId, TreeEntry, commit_id, encode_commit, encode_tree, make_tree,
    tree_id,
)
from versionfs.repo.repository import Repo  # noqa: E402

PY = [sys.executable, "-m", "versionfs"]


def sh(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, **kw)


def timed(fn, repeat: int, cold: bool, setup=None, teardown=None) -> float:
    """Median of ``repeat`` runs (the machine may be shared), dropping caches
    before each when ``cold``; ``setup()`` runs untimed before each run (e.g. a fresh
    mount, so nothing the daemon remembers from the last run helps) and its result
    is passed to ``fn`` and ``teardown``."""
    times = []
    for _ in range(repeat):
        arg = setup() if setup else None
        try:
            if cold:
                drop_caches()
            t = time.perf_counter()
            fn(arg) if setup else fn()
            times.append(time.perf_counter() - t)
        finally:
            if teardown:
                teardown(arg)
    return statistics.median(times)


# -- datasets ---------------------------------------------------------------------------


def make_big(ws: str, mib: int) -> None:
    os.makedirs(ws, exist_ok=True)
    path = os.path.join(ws, "big.bin")
    if not os.path.exists(path) or os.path.getsize(path) != mib << 20:
        rnd = random.Random(1)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(rnd.randbytes(1 << 20))
    _snapshot(ws)


def make_tree_ws(ws: str, files: int) -> None:
    rnd = random.Random(2)
    per_dir = 200
    for i in range(files):
        d = os.path.join(ws, f"d{i // per_dir:04d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}.dat"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(1024, 4096)))
    _snapshot(ws)


def _snapshot(ws: str) -> None:
    if not os.path.isdir(os.path.join(ws, ".vfs")):
        sh(PY + ["init", ws])
    sh(PY + ["snapshot", "-m", "bench"], cwd=ws)


def make_synthetic(path: str, files: int, per_dir: int = 1000) -> None:
    """A bare repository whose HEAD has ``files`` distinct files (metadata only)."""
    if os.path.exists(path):
        shutil.rmtree(path)
    repo = Repo.init(path, bare=True)
    dirs = []
    with repo.index.write() as txn:
        for d in range(0, files, per_dir):
            entries = [TreeEntry(f"f{i:07d}", Kind.FILE, 0o644, 100 + i % 5000, i,
                                 ObjectId(hash_bytes(b"%d" % i)))
                       for i in range(d, min(files, d + per_dir))]
            enc = encode_tree(make_tree(entries))
            tid = tree_id(enc)
            txn.put("trees", tid, enc)
            dirs.append(TreeEntry(f"d{d // per_dir:05d}", Kind.DIR, 0o755, 0, 0, tid))
        enc = encode_tree(make_tree(dirs))
        root = tree_id(enc)
        txn.put("trees", root, enc)
        c = encode_commit(Commit(root, (), time.time_ns(), "bench", f"{files} files"))
        cid = commit_id(c)
        txn.put("commits", cid, c)
        txn.set_ref("heads/main", cid)
    repo.close()


# -- mounts -----------------------------------------------------------------------------


class Mount:
    def __init__(self, spec: str, mp: str, *options: str):
        self.mp = mp
        os.makedirs(mp, exist_ok=True)
        t = time.perf_counter()
        sh(PY + ["mount", spec, mp, *options])
        self.mount_seconds = time.perf_counter() - t
        state = mounts.read_state(mp)
        self.pid = state.pid if state else None

    def rss(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def close(self) -> None:
        subprocess.run(PY + ["umount", self.mp], capture_output=True)
        if mounts.find_mount(self.mp) is not None:
            subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True)


def read_file(path: str) -> None:
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def preads(path: str, n: int) -> None:
    size = os.path.getsize(path)
    rnd = random.Random(3)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(n):
            os.pread(fd, 4096, rnd.randrange(size // 4096) * 4096)
    finally:
        os.close(fd)


def mount_to_ls(spec: str, mp: str, env: dict | None = None) -> float:
    os.makedirs(mp, exist_ok=True)
    t = time.perf_counter()
    sh(PY + ["mount", spec, mp], env=env)
    sh(["ls", mp])
    dt = time.perf_counter() - t
    sh(PY + ["umount", mp])
    return dt


def bytecode_env(cache_dir: str) -> dict:
    """The environment of an installed package: Python may cache compiled modules
    (pip compiles them at install; a shell with PYTHONDONTWRITEBYTECODE=1 makes every
    start compile versionfs from source). The cache goes to ``cache_dir``, never into
    the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    sh(PY[:1] + ["-c", "import versionfs.cli.commands, versionfs.fuse.serve"], env=env)
    return env


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/var/tmp/vfs-bench-mount")
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--mount-files", type=int, default=100_000)
    ap.add_argument("--walk-files", type=int, default=1_000_000)
    ap.add_argument("--preads", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small", action="store_true",
                    help="quick run: 128 MiB, 2,000 files, 10,000 and 50,000-file commits")
    ap.add_argument("--keep", action="store_true",
                    help="keep the datasets (several GB) for next time; by default "
                         "everything made under --dir is deleted at the end")
    ap.add_argument("--only", action="append", choices=("reads", "walks", "mount", "rss"),
                    help="run only these parts (repeatable)")
    a = ap.parse_args()
    if a.small:
        a.big_mib, a.files, a.mount_files, a.walk_files = 128, 2000, 10_000, 50_000
    os.makedirs(a.dir, exist_ok=True)
    big_ws, tree_ws = os.path.join(a.dir, "big"), os.path.join(a.dir, "tree")
    print(f"# bench_mount: {a.big_mib} MiB file, {a.files:,}-file tree, "
          f"{a.mount_files:,}-file mount, {a.walk_files:,}-file walk, "
          f"{a.preads} preads, median of {a.repeat}", file=sys.stderr)
    make_big(big_ws, a.big_mib)
    if not os.path.isdir(os.path.join(tree_ws, ".vfs")):
        make_tree_ws(tree_ws, a.files)
    make_synthetic(os.path.join(a.dir, "wide"), a.mount_files)
    make_synthetic(os.path.join(a.dir, "walk"), a.walk_files)
    rows = []
    parts = {"reads": lambda: bench_reads(a, big_ws), "walks": lambda: bench_walks(a, tree_ws),
             "mount": lambda: bench_mount_time(a), "rss": lambda: bench_rss(a)}
    try:
        for name, part in parts.items():
            if not a.only or name in a.only:
                rows += part()
    finally:
        if not a.keep:
            _remove_datasets(a.dir)
    print_rows(rows)


def _remove_datasets(top: str) -> None:
    """Delete what this benchmark made under ``top`` (and ``top`` once empty);
    mountpoints are only removed when empty, so a live mount is never touched."""
    for name in ("big", "tree", "wide", "walk", "pycache"):
        shutil.rmtree(os.path.join(top, name), ignore_errors=True)
    for name in os.listdir(top):
        if name.startswith("mnt"):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(top, name))
    with contextlib.suppress(OSError):
        os.rmdir(top)


def bench_reads(a, ws: str) -> list:
    native, size = os.path.join(ws, "big.bin"), a.big_mib << 20
    mp = os.path.join(a.dir, "mnt-big")

    def fresh(*options):
        """A new daemon per run: no chunk it cached or verified before helps."""
        return lambda: Mount(f"{ws}@HEAD", mp, *options)

    def on(fn):
        return lambda m: fn(os.path.join(m.mp, "big.bin"))

    def close(m):
        m.close()

    cold_n = timed(lambda: read_file(native), a.repeat, cold=True)
    cold_m = timed(on(read_file), a.repeat, True, fresh(), close)
    cold_off = timed(on(read_file), a.repeat, True, fresh("--verify=off"), close)
    rnd_n = timed(lambda: preads(native, a.preads), a.repeat, cold=True)
    rnd_m = timed(on(lambda p: preads(p, a.preads)), a.repeat, True, fresh(), close)
    rnd_off = timed(on(lambda p: preads(p, a.preads)), a.repeat, True,
                    fresh("--verify=off"), close)
    m = Mount(f"{ws}@HEAD", mp)
    try:
        mounted = os.path.join(m.mp, "big.bin")
        read_file(native)
        read_file(mounted)  # every chunk verified once by this daemon
        rnd_v = timed(lambda: preads(mounted, a.preads), a.repeat, cold=True)
        read_file(native)
        read_file(mounted)
        warm_n = timed(lambda: read_file(native), a.repeat, cold=False)
        warm_m = timed(lambda: read_file(mounted), a.repeat, cold=False)
        rnd_wn = timed(lambda: preads(native, a.preads), a.repeat, cold=False)
        rnd_wm = timed(lambda: preads(mounted, a.preads), a.repeat, cold=False)
    finally:
        m.close()
    n = a.preads
    return [
        (f"cold sequential read, {a.big_mib} MiB", size / cold_m, size / cold_n, "B/s",
         "≥ 0.60"),
        ("  the same, --verify=off", size / cold_off, size / cold_n, "B/s", ""),
        (f"warm re-read, {a.big_mib} MiB", size / warm_m, size / warm_n, "B/s", "≥ 0.80"),
        (f"{n} random 4 KiB preads, cold", n / rnd_m, n / rnd_n, "/s", "≥ 0.50"),
        ("  the same, --verify=off", n / rnd_off, n / rnd_n, "/s", "≥ 0.50"),
        ("  the same, chunks verified earlier by this mount", n / rnd_v, n / rnd_n, "/s",
         "≥ 0.50"),
        (f"{n} random 4 KiB preads, warm", n / rnd_wm, n / rnd_wn, "/s", "≥ 0.50"),
    ]


def bench_walks(a, ws: str) -> list:
    m = Mount(f"{ws}@HEAD", os.path.join(a.dir, "mnt-tree"))
    rows = []
    try:
        for tool, argv in (("find", ["find"]), ("ls -lR", ["ls", "-lR"])):
            for cold in (True, False):
                def walk(root):
                    subprocess.run(argv + [root], check=True, stdout=subprocess.DEVNULL)
                native = timed(lambda: walk(ws), a.repeat, cold)
                mounted = timed(lambda: walk(m.mp), a.repeat, cold)
                rows.append((f"{tool} over {a.files:,} files, {'cold' if cold else 'warm'}",
                             mounted, native, "s", "≤ 3x"))
    finally:
        m.close()
    return rows


def bench_mount_time(a) -> list:
    spec = os.path.join(a.dir, "wide") + "@HEAD"
    mp = os.path.join(a.dir, "mnt-wide")
    n = max(5, a.repeat)
    cached = bytecode_env(os.path.join(a.dir, "pycache"))
    times = [mount_to_ls(spec, mp, cached) for _ in range(n)]
    plain = [mount_to_ls(spec, mp) for _ in range(n)]
    return [(f"mount → served ls, {a.mount_files:,}-file commit", statistics.median(times),
             None, "s", "< 0.3 s"),
            (f"  (best of {n})", min(times), None, "s", ""),
            ("  the same, no bytecode cache (PYTHONDONTWRITEBYTECODE=1)",
             statistics.median(plain), None, "s", "")]


def bench_rss(a) -> list:
    m = Mount(os.path.join(a.dir, "walk") + "@HEAD", os.path.join(a.dir, "mnt-walk"))
    try:
        base = m.rss()
        t = time.perf_counter()
        subprocess.run(["find", m.mp], check=True, stdout=subprocess.DEVNULL)
        walk = time.perf_counter() - t
        after = m.rss()
    finally:
        m.close()
    return [
        (f"daemon RSS after walking {a.walk_files:,} files", after["VmRSS"], None, "B",
         "< 150 MB"),
        (f"  (anon {fmt_bytes(after['RssAnon'])}, file-backed "
         f"{fmt_bytes(after['RssFile'])}; {fmt_bytes(base['VmRSS'])} at mount; "
         f"walk took {fmt_seconds(walk)})", after["RssAnon"], None, "B", ""),
    ]


def print_rows(rows) -> None:
    def fmt(v, unit):
        if unit == "B/s":
            return fmt_bytes(v) + "/s"
        if unit == "/s":
            return f"{v:,.0f}/s"
        return fmt_bytes(v) if unit == "B" else fmt_seconds(v)

    print("| what | versionfs | native | ratio | target |")
    print("|---|---|---|---|---|")
    for what, mine, native, unit, target in rows:
        ratio = "-" if native is None else f"{mine / native:.2f}"
        if unit == "s" and native is not None:
            ratio += "x"
        print(f"| {what} | {fmt(mine, unit)} | {'-' if native is None else fmt(native, unit)}"
              f" | {ratio} | {target} |")


if __name__ == "__main__":
    main()
