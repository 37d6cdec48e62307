"""Benchmark of a no-op ``vfs repro``: one stage depending on a large directory.

A workspace gets ``data/`` with --files small files (default 100,000 of 100-500
bytes, 1,000 per directory; deterministic) and a ``vfs.yaml`` with one stage
that reads ``data`` and writes ``count.txt``. ``vfs repro`` runs once to record
the stage; then the no-op ``vfs repro`` (nothing changed: "up to date") is timed,
median of --repeat runs, through the command line in a subprocess (interpreter
start-up included, shown as its own row). Baselines from the same run: the bare
Python ``os.scandir`` + ``lstat`` walk of ``data/`` (what any "did anything change"
check must at least do) and, when a ``dvc`` executable is on PATH (it usually is
not; this script never installs it), ``dvc status`` on a copy of the same tree
with the same stage after ``dvc repro``.

Usage: python tools/bench/bench_repro.py [--files N] [--repeat R] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, print_table, run, timeit  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STAGE_CMD = "find data -type f | wc -l > count.txt"


def vfs(*args, cwd) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "versionfs", *args], cwd=cwd)


def make_workspace(root: str, files: int) -> str:
    ws = os.path.join(root, "ws")
    os.makedirs(ws)
    for i in range(files):
        d = os.path.join(ws, "data", f"d{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
            f.write(hashlib.shake_128(b"%d" % i).digest(100 + i % 400))
    with open(os.path.join(ws, "vfs.yaml"), "w") as f:
        f.write(f"stages:\n  count:\n    cmd: {STAGE_CMD}\n    deps: [data]\n"
                "    outs: [count.txt]\n")
    return ws


def walk(path: str) -> int:
    n = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for de in it:
                os.lstat(de.path)
                n += 1
                if de.is_dir(follow_symlinks=False):
                    stack.append(de.path)
    return n


def dvc_status(root: str, ws: str, repeat: int) -> float | None:
    dvc = shutil.which("dvc")
    if dvc is None:
        return None
    d = os.path.join(root, "dvc")
    shutil.copytree(os.path.join(ws, "data"), os.path.join(d, "data"))
    with open(os.path.join(d, "dvc.yaml"), "w") as f:
        f.write(f"stages:\n  count:\n    cmd: {STAGE_CMD}\n    deps: [data]\n"
                "    outs: [count.txt]\n")
    run(["git", "init", "-q"], cwd=d)
    run([dvc, "init", "-q"], cwd=d)
    run([dvc, "repro", "-q"], cwd=d)
    return timeit(lambda: run([dvc, "status"], cwd=d), repeat)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="where to build (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the workspace")
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench-repro-", dir=args.workdir)
    try:
        t = time.perf_counter()
        ws = make_workspace(root, args.files)
        print(f"generated {args.files} files in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        vfs("init", cwd=ws)
        t = time.perf_counter()
        vfs("repro", cwd=ws)
        print(f"first repro (hash, run, snapshot) {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        out = vfs("repro", "--json", cwd=ws).stdout
        assert '"up to date"' in out, out
        noop = timeit(lambda: vfs("repro", cwd=ws), args.repeat)
        startup = timeit(lambda: vfs("--version", cwd=ws), args.repeat)
        walked = timeit(lambda: walk(os.path.join(ws, "data")), args.repeat)
        rows = [Row(f"no-op vfs repro, 1 stage, {args.files} files (vs scandir+lstat walk)",
                    noop, walked),
                Row("CLI start-up (vfs --version)", startup),
                Row("no-op vfs repro minus start-up (vs walk)", noop - startup, walked)]
        dvc = dvc_status(root, ws, args.repeat)
        if dvc is not None:
            rows.append(Row("no-op vfs repro (vs dvc status)", noop, dvc))
        else:
            print("dvc not on PATH: no dvc status row", file=sys.stderr)
        print_table(rows, "baseline", title=f"no-op repro, {args.files} files")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
