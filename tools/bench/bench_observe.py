"""Benchmark observed reads: reading a whole tree through a mount, unobserved and observed.

The tree is ``gen_dataset.py``'s (FILES small files of 1-16 KiB in 200 directories;
no large files), snapshotted and mounted at HEAD. Each case reads every file once
in a child process — the observer tracks the descendants of this process — and is
measured unobserved and under an ``Observer`` alternately, REPEAT times each, so
drift of a shared machine falls on both alike:

* ``python, warm``: one Python process opens and reads every file; the page cache
  and the kernel's dentries are warm (keep_cache), so every open is a FUSE request
  and the read is not: the worst case for a per-open cost.
* ``python, cold``: the same after ``drop_caches`` (page cache, dentries, inodes)
  and on a fresh daemon, so every lookup and read reaches the daemon too.
* ``cat, warm``: ``xargs cat`` (a new process every few hundred files).

Prints medians, the observed / unobserved ratio of the same run (target ≤ 1.10) and
the ratio of the fastest runs (less sensitive to other load on a shared machine).
Needs root (mounting, drop_caches). Everything it makes under ``--dir`` is removed at
the end, and the mount is always unmounted.

Usage: python tools/bench/bench_observe.py [--dir D] [--files N] [--repeat N] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from common import drop_caches, fmt_seconds

from versionfs.repo import mounts
from versionfs.repo.observe import Observer

PY = [sys.executable, "-m", "versionfs"]
READ_ALL = """
import os, sys
n = 0
for top, dirs, files in os.walk(sys.argv[1]):
    for name in files:
        with open(os.path.join(top, name), "rb") as f:
            n += len(f.read())
print(n)
"""


# the daemons must run this tree's versionfs, as this process does
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}


def sh(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=ENV, **kw)


def make_tree(ws: str, files: int) -> None:
    if os.path.isdir(os.path.join(ws, ".vfs")):
        return
    sh([sys.executable, os.path.join(HERE, "gen_dataset.py"), ws,
        "--small-count", str(files), "--large-mib", "0"])
    shutil.rmtree(os.path.join(ws, "large"))
    sh(PY + ["init"], cwd=ws)
    sh(PY + ["snapshot", "-m", "bench"], cwd=ws)


class Mount:
    def __init__(self, ws: str, mp: str):
        self.mp = mp
        os.makedirs(mp, exist_ok=True)
        sh(PY + ["mount", "@HEAD", mp], cwd=ws)

    def close(self) -> None:
        subprocess.run(PY + ["umount", self.mp], capture_output=True, check=False, env=ENV)
        if mounts.find_mount(self.mp) is not None:
            subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True,
                           check=False)


def python_read(mp: str) -> None:
    sh([sys.executable, "-c", READ_ALL, mp])


def cat_read(mp: str) -> None:
    sh(["sh", "-c", f"find {mp} -type f -print0 | xargs -0 cat > /dev/null"])


def once(fn, mp: str, observed: bool, expect: int) -> float:
    start = time.perf_counter()
    if observed:
        with Observer(warn=lambda m: print("warning:", m, file=sys.stderr)) as obs:
            fn(mp)
            reads = obs.stop()
        if len(reads) != expect:
            raise RuntimeError(f"observed {len(reads)} files, expected {expect}")
    else:
        fn(mp)
    return time.perf_counter() - start


def case(name: str, fn, ws: str, mp: str, repeat: int, cold: bool, files: int) -> tuple:
    times: dict[bool, list[float]] = {False: [], True: []}
    m = Mount(ws, mp)
    try:
        fn(m.mp)  # warm-up (and, warm, fill the page cache)
        for i in range(repeat):
            for observed in (i % 2 == 0, i % 2 != 0):  # alternate which goes first
                if cold:
                    m.close()
                    drop_caches()
                    m = Mount(ws, mp)
                times[observed].append(once(fn, m.mp, observed, files))
    finally:
        m.close()
    return (name, statistics.median(times[False]), statistics.median(times[True]),
            min(times[False]), min(times[True]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/var/tmp/vfs-bench-observe")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the dataset for next time")
    a = ap.parse_args()
    ws, mp = os.path.join(a.dir, f"tree{a.files}"), os.path.join(a.dir, "mnt")
    print(f"# bench_observe: {a.files:,} files, median of {a.repeat}", file=sys.stderr)
    rows = []
    try:
        make_tree(ws, a.files)
        for name, fn, cold in (("python, warm", python_read, False),
                               ("python, cold", python_read, True),
                               ("cat, warm", cat_read, False)):
            rows.append(case(name, fn, ws, mp, a.repeat, cold, a.files))
            print(f"# {name} done", file=sys.stderr)
    finally:
        if not a.keep:
            shutil.rmtree(ws, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(mp)
        with contextlib.suppress(OSError):
            os.rmdir(a.dir)
    print(f"| read {a.files:,} files | unobserved | observed | ratio | ratio of minima |")
    print("|---|---|---|---|---|")
    for name, plain, seen, plain_min, seen_min in rows:
        print(f"| {name} | {fmt_seconds(plain)} | {fmt_seconds(seen)} | "
              f"{seen / plain:.3f} | {seen_min / plain_min:.3f} |")


if __name__ == "__main__":
    main()
