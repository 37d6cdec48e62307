"""Benchmark remotes (push, clone, incremental push, no-op push, lazy mount) against
s3fs moving the same files to and from the same S3 server, measured in one run.

The server is moto's ThreadedMotoServer on 127.0.0.1 with the tests' traffic-counting
middleware (tests/s3server.py), started in this process and stopped at the end. Both
sides are clients in their own process: versionfs through its CLI (``python -m
versionfs``, so start-up is included, as users see it), the baseline through a small
s3fs script (``python -c``, its imports included too). AWS credentials are the dummy
``testing`` ones; nothing reaches AWS.

Rows (median of REPEAT runs where a run can be repeated):

1. ``vfs push --all`` of a DATASET_MIB dataset (big0 = 1/2, big1 = 1/4, big2 = 1/8 of
   it, the last 1/8 in small files of 1-64 KiB) into an empty remote, against s3fs
   ``put(recursive=True)`` of the same files to another prefix.
2. ``vfs clone`` of it into a fresh directory, against s3fs ``get(recursive=True)``.
3. bytes the server received (PUT bodies) for the push of v2, which overwrites 10.5
   MiB in the middle of big0, against 10.5 MiB, and against what s3fs ``put`` of the
   changed file sends.
4. a push of a SMALL_FILES-file dataset, then a second push with nothing new: its wall
   time (target < 1 s, against ``vfs --version``) and how many requests it made.
5. ``versionfs mount s3://...@v1`` (lazy, a fresh cache dir, page cache dropped):
   time to the first 4 KiB of big0 and sequential throughput of all of it, against
   s3fs ``cat_file`` of the same object (a 4 KiB range, then the whole object). Needs
   FUSE; skipped with a message without /dev/fuse or fusermount3.

Everything is made in a temporary directory under --dir and removed at the end; the
mount is unmounted by its mountpoint (``versionfs umount``).

Usage: python tools/bench/bench_remote.py [--quick] [--dataset-mib N]
           [--small-files N] [--repeat N] [--dir D] [--only push|clone|delta|noop|mount ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from common import drop_caches, fmt_bytes, fmt_seconds  # noqa: E402
from s3server import AWS_ENV, AWS_UNSET, S3Server  # noqa: E402

MiB = 1 << 20
VFS = [sys.executable, "-m", "versionfs"]
DELTA = 10 * MiB + MiB // 2

# The s3fs side, run as its own process (as versionfs is): prints JSON timings.
S3FS_SCRIPT = r"""
import json, sys, time
import s3fs
op, endpoint, a, b = sys.argv[1:5]
fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
out = {}
if op == "put":
    fs.put(a, b, recursive=True)
elif op == "get":
    fs.get(a, b, recursive=True)
elif op == "read":
    fs.info(a)  # the connection is up, as the mount's is
    t = time.perf_counter()
    first = fs.cat_file(a, start=0, end=4096)
    out["ttfb"] = time.perf_counter() - t
    t = time.perf_counter()
    with fs.open(a, "rb") as f:
        f.read(4096)
    out["ttfb_open"] = time.perf_counter() - t
    t = time.perf_counter()
    whole = fs.cat_file(a)
    out["whole"] = time.perf_counter() - t
    assert whole[:4096] == first and len(whole) == int(b)
print(json.dumps(out))
"""


def sh(argv, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def timed(argv, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = sh(argv, **kw)
    return time.perf_counter() - t, proc


def s3fs(op: str, endpoint: str, a: str, b: str = "-") -> tuple[float, dict]:
    secs, proc = timed([sys.executable, "-c", S3FS_SCRIPT, op, endpoint, a, b])
    return secs, json.loads(proc.stdout)


def median(xs) -> float:
    return statistics.median(xs)


# -- datasets ---------------------------------------------------------------------------


def write_random(path: str, size: int, rnd: random.Random) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(rnd.randbytes(n))
            left -= n


def make_dataset(data: str, total: int) -> dict[str, int]:
    """big0..2 and small/ under ``data``; returns the sizes of the big files."""
    rnd = random.Random(1)
    os.makedirs(os.path.join(data, "small"))
    bigs = {"big0.bin": total // 2, "big1.bin": total // 4, "big2.bin": total // 8}
    for name, size in bigs.items():
        write_random(os.path.join(data, name), size, rnd)
    left, i = total - sum(bigs.values()), 0
    while left > 0:
        n = min(left, rnd.randrange(1024, 64 * 1024))
        with open(os.path.join(data, "small", f"s{i:05d}.dat"), "wb") as f:
            f.write(rnd.randbytes(n))
        left -= n
        i += 1
    return bigs


def make_small_files(data: str, count: int) -> int:
    rnd = random.Random(2)
    total = 0
    for i in range(count):
        d = os.path.join(data, f"d{i // 500:03d}")
        if i % 500 == 0:
            os.makedirs(d)
        n = rnd.randrange(512, 4096)
        with open(os.path.join(d, f"f{i:06d}.dat"), "wb") as f:
            f.write(rnd.randbytes(n))
        total += n
    return total


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files)


# -- the run ----------------------------------------------------------------------------


class Bench:
    def __init__(self, a, top: str, server: S3Server):
        self.a, self.top, self.server = a, top, server
        self.endpoint = server.endpoint
        self.traffic = server.traffic
        import boto3
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        self.ws = os.path.join(top, "ws")
        self.rows: list = []
        self.notes: list[str] = []
        self.mounted: list[str] = []

    def opt(self) -> list[str]:
        return ["-o", f"endpoint_url={self.endpoint}"]

    def vfs(self, *args, cwd=None) -> tuple[float, subprocess.CompletedProcess]:
        return timed(VFS + list(args), cwd=cwd)

    def bucket(self, name: str) -> str:
        self.s3.create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                self.s3.delete_object(Bucket=name, Key=item["Key"])
        self.s3.delete_bucket(Bucket=name)

    # -- 1. push ----------------------------------------------------------------------

    def setup_v1(self) -> None:
        data = os.path.join(self.ws, "data")
        self.bigs = make_dataset(data, self.a.dataset_mib * MiB)
        self.total = tree_bytes(data)
        sh(VFS + ["init", self.ws])
        self.vfs("snapshot", "-m", "v1", "-t", "v1", cwd=self.ws)
        self.bucket("bench")

    def push_rows(self) -> None:
        data = os.path.join(self.ws, "data")
        mine, base, inner = [], [], []
        for r in range(self.a.repeat):
            bucket = "bench" if r == 0 else self.bucket(f"rep{r}")
            name = "origin" if r == 0 else f"rep{r}"
            self.vfs("remote", "add", name, f"s3://{bucket}/repo", *self.opt(), cwd=self.ws)

            def ours():
                secs, proc = self.vfs("push", name, "--all", "--json", cwd=self.ws)
                mine.append(secs)
                inner.append(json.loads(proc.stdout)["seconds"])

            def theirs():
                base.append(s3fs("put", self.endpoint, data + "/", f"s3://{bucket}/plain/")[0])

            for fn in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
                fn()
            if r:
                self.vfs("remote", "remove", name, cwd=self.ws)
                self.drop_bucket(bucket)
        n = self.a.dataset_mib
        self.rows.append((f"push of a {n} MiB dataset (`vfs push --all`, s3fs `put`)",
                          self.total / median(mine), self.total / median(base), "B/s",
                          "≥ 0.80"))
        self.notes.append(f"push: `vfs push` wall {fmt_seconds(median(mine))} (internal "
                          f"{fmt_seconds(median(inner))}), s3fs put wall "
                          f"{fmt_seconds(median(base))}; runs {_list(mine)} / {_list(base)}")

    # -- 2. clone ---------------------------------------------------------------------

    def clone_rows(self) -> None:
        mine, base, inner = [], [], []
        for r in range(self.a.repeat):
            dest, got = os.path.join(self.top, "clone"), os.path.join(self.top, "got")

            def ours():
                secs, proc = self.vfs("clone", "s3://bench/repo", dest, *self.opt(), "--json")
                mine.append(secs)
                inner.append(json.loads(proc.stdout)["seconds"])

            def theirs():
                base.append(s3fs("get", self.endpoint, "s3://bench/plain/", got + "/")[0])

            for fn in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
                fn()
            assert tree_bytes(os.path.join(dest, "data")) == self.total
            assert tree_bytes(got) == self.total
            shutil.rmtree(dest)
            shutil.rmtree(got)
        self.rows.append(("clone of it (`vfs clone`, s3fs `get`)",
                          self.total / median(mine), self.total / median(base), "B/s", ""))
        self.notes.append(f"clone: `vfs clone` wall {fmt_seconds(median(mine))} (internal "
                          f"{fmt_seconds(median(inner))}), s3fs get wall "
                          f"{fmt_seconds(median(base))}; runs {_list(mine)} / {_list(base)}")

    # -- 3. v2 ------------------------------------------------------------------------

    def delta_rows(self) -> None:
        big0 = os.path.join(self.ws, "data", "big0.bin")
        with open(big0, "r+b") as f:
            f.seek(self.bigs["big0.bin"] // 2)
            f.write(random.Random(3).randbytes(DELTA))
        self.vfs("snapshot", "-m", "v2", "-t", "v2", cwd=self.ws)
        self.traffic.reset()
        secs, proc = self.vfs("push", "origin", "--all", "--json", cwd=self.ws)
        got = self.traffic.put_bytes
        res = json.loads(proc.stdout)
        puts = self.traffic.count("PUT")
        self.traffic.reset()
        s3fs("put", self.endpoint, big0, "s3://bench/plain/big0.bin")
        file_level = self.traffic.put_bytes
        self.rows.append(("v2 push (10.5 MiB overwritten): bytes the server received",
                          got, DELTA, "B", "≤ changed chunks + metadata"))
        self.rows.append(("  the same, against s3fs `put` of the changed file",
                          got, file_level, "B", ""))
        self.notes.append(f"v2 push: {res['chunks']} new chunks, "
                          f"{fmt_bytes(res['bytes'])} of chunk bytes, "
                          f"{fmt_bytes(got - res['bytes'])} of pack footers, index, "
                          f"records and refs in {puts} PUTs; wall {fmt_seconds(secs)}")

    # -- 4. many small files, push with nothing new ------------------------------------

    def noop_rows(self) -> None:
        n = self.a.small_files
        ws = os.path.join(self.top, "small-ws")
        data = os.path.join(ws, "data")
        size = make_small_files(data, n)
        sh(VFS + ["init", ws])
        self.vfs("snapshot", "-m", "small", cwd=ws)
        self.bucket("small")
        self.vfs("remote", "add", "origin", "s3://small/repo", *self.opt(), cwd=ws)
        first, _ = self.vfs("push", "origin", "--all", cwd=ws)
        put, _ = s3fs("put", self.endpoint, data + "/", "s3://small/plain/")
        self.rows.append((f"first push of {n:,} small files ({fmt_bytes(size)}), s3fs `put`",
                          first, put, "s", ""))
        noop, reqs = [], []
        for _ in range(max(3, self.a.repeat)):
            self.traffic.reset()
            secs, _ = self.vfs("push", "origin", "--all", cwd=ws)
            noop.append(secs)
            reqs.append(len(self.traffic.requests))
        startup = median([self.vfs("--version")[0] for _ in range(3)])
        self.rows.append((f"push with nothing new, {n:,} files (baseline: `vfs --version`)",
                          median(noop), startup, "s", "< 1 s"))
        self.rows.append(("  requests it made", median(reqs), None, "n", ""))
        # as an installed package runs: compiled modules cached (pip compiles them; a
        # shell with PYTHONDONTWRITEBYTECODE=1 makes every start compile versionfs)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = os.path.join(self.top, "pycache")
        sh(VFS + ["push", "origin", "--all"], cwd=ws, env=env)
        cached = median([timed(VFS + ["push", "origin", "--all"], cwd=ws, env=env)[0]
                         for _ in range(max(3, self.a.repeat))])
        startup = median([timed(VFS + ["--version"], env=env)[0] for _ in range(3)])
        self.rows.append(("  the same, bytecode cached (as installed)", cached, startup, "s",
                          "< 1 s"))
        shutil.rmtree(ws)
        self.drop_bucket("small")

    # -- 5. lazy mount ------------------------------------------------------------------

    def mount_rows(self) -> None:
        if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
            self.notes.append("lazy mount: skipped (needs /dev/fuse and fusermount3)")
            print("bench_remote: lazy mount skipped: no /dev/fuse or fusermount3",
                  file=sys.stderr)
            return
        size = self.bigs["big0.bin"]
        mp = os.path.join(self.top, "mnt")
        os.makedirs(mp)
        ttfb, whole, mount_s, fetched, gets = [], [], [], [], []
        b_ttfb, b_open, b_whole = [], [], []
        for r in range(self.a.repeat):
            cache = os.path.join(self.top, "cache")

            def ours():
                drop_caches()
                secs, _ = self.vfs("mount", "s3://bench/repo@v1", mp, *self.opt(),
                                   "--cache-dir", cache, "--cache-size", "1G")
                self.mounted.append(mp)
                mount_s.append(secs)
                try:
                    self.traffic.reset()
                    buf = bytearray(MiB)
                    t = time.perf_counter()
                    with open(os.path.join(mp, "data", "big0.bin"), "rb", buffering=0) as f:
                        assert len(f.read(4096)) == 4096
                        ttfb.append(time.perf_counter() - t)
                        n = 4096
                        while got := f.readinto(buf):
                            n += got
                    whole.append(time.perf_counter() - t)
                    fetched.append(self.traffic.get_bytes)
                    gets.append(self.traffic.count("GET", "/packs/"))
                    assert n == size
                finally:
                    self.umount(mp)
                    shutil.rmtree(cache)

            def theirs():
                _, out = s3fs("read", self.endpoint, "s3://bench/plain/big0.bin", str(size))
                b_ttfb.append(out["ttfb"])
                b_open.append(out["ttfb_open"])
                b_whole.append(out["whole"])

            for fn in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
                fn()
        os.rmdir(mp)
        mib = size // MiB
        self.rows.append((f"lazy mount @v1, cold: first 4 KiB of a {mib} MiB file "
                          "(s3fs `cat_file` of 4 KiB)", median(ttfb), median(b_ttfb), "s", ""))
        self.rows.append(("  sequential read of all of it (s3fs `cat_file`)",
                          size / median(whole), size / median(b_whole), "B/s", ""))
        self.notes.append(f"lazy mount: `versionfs mount` took {fmt_seconds(median(mount_s))};"
                          f" bytes fetched for the whole file {fmt_bytes(median(fetched))} "
                          f"of {fmt_bytes(size)} in {median(gets):.0f} range GETs of packs; "
                          f"s3fs `open().read(4096)` (readahead, 50 MiB blocks) "
                          f"{fmt_seconds(median(b_open))}; runs ttfb "
                          f"{_list(ttfb)} / {_list(b_ttfb)}, whole {_list(whole)} / "
                          f"{_list(b_whole)}")

    def umount(self, mp: str) -> None:
        subprocess.run(VFS + ["umount", mp], capture_output=True)
        if os.path.ismount(mp):
            subprocess.run(VFS + ["umount", "-z", mp], capture_output=True)
        if not os.path.ismount(mp) and mp in self.mounted:
            self.mounted.remove(mp)


def _list(xs) -> str:
    return "[" + ", ".join(fmt_seconds(x) for x in xs) + "]"


def print_rows(rows, notes) -> None:
    def fmt(v, unit):
        if unit == "B/s":
            return fmt_bytes(v) + "/s"
        if unit == "n":
            return f"{v:,.0f}"
        return fmt_bytes(v) if unit == "B" else fmt_seconds(v)

    print("| what | versionfs | baseline (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for what, mine, base, unit, target in rows:
        ratio = "-" if base is None else f"{mine / base:.2f}"
        if unit in ("s", "B") and base is not None:
            ratio += "x"
        print(f"| {what} | {fmt(mine, unit)} | {'-' if base is None else fmt(base, unit)}"
              f" | {ratio} | {target} |")
    print()
    for note in notes:
        print(f"* {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--dataset-mib", type=int, default=512)
    ap.add_argument("--small-files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="a 64 MiB dataset, 5,000 small files, one run of each")
    ap.add_argument("--only", action="append",
                    choices=("push", "clone", "delta", "noop", "mount"),
                    help="run only these parts (repeatable; push always runs first)")
    a = ap.parse_args()
    if a.quick:
        a.dataset_mib, a.small_files, a.repeat = 64, 5000, 1
    for name, value in AWS_ENV.items():
        os.environ[name] = value
    for name in AWS_UNSET:
        os.environ.pop(name, None)
    # the CLI of this tree, wherever it is run from
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    load0 = os.getloadavg()
    print(f"# bench_remote: {a.dataset_mib} MiB dataset, {a.small_files:,} small files, "
          f"median of {a.repeat}; load average {load0[0]:.2f} {load0[1]:.2f}",
          file=sys.stderr)
    top = tempfile.mkdtemp(prefix="vfs-bench-remote-", dir=a.dir)
    server = S3Server()
    server.start()
    bench = Bench(a, top, server)
    t0 = time.perf_counter()
    try:
        bench.setup_v1()
        parts = [("push", bench.push_rows), ("clone", bench.clone_rows),
                 ("mount", bench.mount_rows), ("delta", bench.delta_rows),
                 ("noop", bench.noop_rows)]
        for name, part in parts:
            if name == "push" or not a.only or name in a.only:
                print(f"# {name} ...", file=sys.stderr)
                part()
    finally:
        for mp in list(bench.mounted):
            bench.umount(mp)
        bench.s3.close()
        server.stop()
        if bench.mounted:
            print(f"bench_remote: could not unmount {bench.mounted}; {top} left in place",
                  file=sys.stderr)
        else:
            shutil.rmtree(top, ignore_errors=True)
    load1 = os.getloadavg()
    bench.notes.append(f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the "
                       f"end; {fmt_seconds(time.perf_counter() - t0)} in all")
    print_rows(bench.rows, bench.notes)


if __name__ == "__main__":
    main()
