"""Benchmark of the repository core: snapshot, re-snapshot, v2, checkout, storage.

Every figure is printed next to a baseline measured in the same run (copying or
reading the same bytes with standard tools), as a markdown table per filesystem:
XFS with reflinks (a sparse image loop-mounted for the run, always unmounted,
detached and deleted afterwards) and the ordinary filesystem (ext4 here).

The dataset comes from ``gen_dataset.py``: v1 = SMALL_COUNT files of 1-16 KiB plus
two LARGE_MIB MiB files; v2 rewrites 1% of the small files, deletes 0.5%, adds 0.5%,
overwrites 64 KiB inside one large file and appends 8 MiB to the other.

versionfs is timed through its command line (``sys.executable -m versionfs``) in a
subprocess, so every versionfs figure includes interpreter start-up and imports (the
"CLI start-up" row shows how much that is). Cold runs flush and drop the page,
dentry and inode caches first (``sync; echo 3 > /proc/sys/vm/drop_caches``: needs
root). Each figure is the median of --repeat runs. ``cp`` baselines end with
``sync -f`` on the destination, since a snapshot is durable when it returns.

Usage: python tools/bench/bench_repo.py [--fs xfs|ext4|both] [--workdir DIR]
           [--small-count N] [--large-mib M] [--repeat R] [--warm] [--keep]
Quick check: python tools/bench/bench_repo.py --small-count 2000 --large-mib 64
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import common  # noqa: E402
import gen_dataset  # noqa: E402
from common import (  # noqa: E402
    Row, drop_caches, du_bytes, fmt_bytes, fmt_seconds, fs_used_bytes, begin,
)

common.FORMATS.setdefault("GB/s", lambda v: f"{v / 1e9:.2f} GB/s")
common.FORMATS.setdefault("x", lambda v: f"{v:.3f}x")

VFS = [sys.executable, "-m", "versionfs"]
SBIN_ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
RACY_WAIT = 0.3  # > the scanner's 100 ms racy window, so v1 files get stat cache entries

WALK_SCRIPT = """\
import os, sys
root = sys.argv[1]
n = 0
for d, dirs, files in os.walk(root):
    if d == root and ".vfs" in dirs:
        dirs.remove(".vfs")
    for f in files:
        os.lstat(os.path.join(d, f))
        n += 1
print(n)
"""


# -- small helpers ----------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    return common.run(argv, cwd=cwd, env=SBIN_ENV, stdin=subprocess.DEVNULL)


def vfs(ws: str, *args: str) -> subprocess.CompletedProcess:
    """The versionfs CLI in workspace ``ws`` (its cwd, so PATHS resolve there)."""
    return common.run([*VFS, *args], cwd=ws, stdin=subprocess.DEVNULL)


def rmtree(path: str) -> None:
    if os.path.lexists(path):
        # Blobs and their fan-out dirs may be read-only.
        subprocess.run(["chmod", "-R", "u+w", path], capture_output=True)
        shutil.rmtree(path)


def cold() -> None:
    drop_caches()


def warm(path: str | None = None) -> None:
    """Warm-run setup: read ``path`` into the page cache, then flush pending writes
    (the previous run's deletions) so the timed run does not pay for them."""
    if path is not None:
        warm_up(path)
    os.sync()


def warm_up(path: str) -> None:
    read_ranges([(p, 0, os.path.getsize(p)) for p in
                 (os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)])


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(fn: Callable[[], object], repeat: int,
            setup: Callable[[], object] | None = None) -> list[float]:
    """Seconds of each of ``repeat`` runs of ``fn`` (``setup`` untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        times.append(timed(fn)[0])
    return times


def fs_type(path: str) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                          text=True).stdout.strip() or "?"


def read_ranges(ranges: list[tuple[str, int, int]]) -> int:
    """Read each (path, offset, length) once, 1 MiB at a time; bytes read."""
    total = 0
    for path, off, length in ranges:
        fd = os.open(path, os.O_RDONLY)
        try:
            end = off + length
            while off < end:
                data = os.pread(fd, min(1 << 20, end - off), off)
                if not data:
                    break
                off += len(data)
                total += len(data)
        finally:
            os.close(fd)
    return total


def tree_stat(root: str) -> dict[str, tuple[int, int, int]]:
    """rel path -> (ino, size, mtime_ns) for every file under ``root`` but .vfs."""
    out = {}
    for d, dirs, files in os.walk(root):
        if d == root and ".vfs" in dirs:
            dirs.remove(".vfs")
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def logical_bytes(root: str) -> int:
    return sum(v[1] for v in tree_stat(root).values())


def checkout_available() -> tuple[str | None, list[str]]:
    """(None, extra args) when ``vfs checkout`` can be used, else (why not, [])."""
    if importlib.util.find_spec("versionfs.ops.checkout") is None:
        return "checkout not available", []
    proc = subprocess.run([*VFS, "checkout", "--help"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return "checkout not available", []
    return None, (["--json"] if "--json" in proc.stdout else [])


# -- result rows ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NARow:
    """A figure that could not be measured; the reason goes in the versionfs column."""

    what: str
    reason: str
    baseline: float | None = None
    unit: str = "s"

    def cells(self) -> list[str]:
        base = "-" if self.baseline is None else common.FORMATS[self.unit](self.baseline)
        return [self.what, f"n/a ({self.reason})", base, "-"]


@dataclass
class FsResult:
    kind: str
    fstype: str
    rows: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    def sample(self, name: str, times: list[float]) -> None:
        self.samples.append(f"{name}: " + ", ".join(f"{t:.3f}" for t in times) + " s")


def med(times: list[float]) -> float:
    return statistics.median(times)


def target(res: FsResult, name: str, value: float, limit: float, unit: str,
           higher_is_better: bool = False, op: str = "<") -> None:
    fmt = common.FORMATS[unit]
    ok = value >= limit if higher_is_better else value <= limit
    op = "≥" if higher_is_better else op
    if ok:
        res.targets.append(f"- {name}: {fmt(value)} (target {op} {fmt(limit)}): met")
    else:
        factor = limit / value if higher_is_better else value / limit
        res.targets.append(f"- {name}: {fmt(value)} (target {op} {fmt(limit)}): "
                           f"**missed**, {factor:.2f}x off")


# -- filesystems ----------------------------------------------------------------------


@contextlib.contextmanager
def xfs_mount(workdir: str, size: int, keep: bool) -> Iterator[str]:
    """A fresh reflink-capable XFS on a sparse image under ``workdir``, loop-mounted.

    Always unmounted, its loop device detached and the image deleted on the way out
    (unless ``keep``), whatever happened inside.
    """
    image = mountpoint = None
    mounted = False
    try:
        fd, image = tempfile.mkstemp(prefix="vfs-bench-xfs-", suffix=".img", dir=workdir)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        sh(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", image])
        mountpoint = tempfile.mkdtemp(prefix="vfs-bench-xfs-mnt-", dir=workdir)
        sh(["mount", "-o", "loop", image, mountpoint])
        mounted = True
        log(f"xfs: {image} ({fmt_bytes(size)} sparse) mounted on {mountpoint}")
        yield mountpoint
    finally:
        if keep and mounted:
            log(f"--keep: left {image} mounted on {mountpoint}")
        else:
            _destroy_mount(image, mountpoint)


def _loop_devices_of(image: str) -> list[str]:
    proc = subprocess.run(["losetup", "-j", image], capture_output=True, text=True,
                          env=SBIN_ENV)
    return [line.split(":", 1)[0] for line in proc.stdout.splitlines() if ":" in line]


def _destroy_mount(image: str | None, mountpoint: str | None) -> None:
    if mountpoint and os.path.ismount(mountpoint):
        for attempt in range(5):
            if subprocess.run(["umount", mountpoint], capture_output=True,
                              env=SBIN_ENV).returncode == 0:
                break
            time.sleep(0.5 * (attempt + 1))
        else:
            log(f"umount {mountpoint} failed (busy); detaching it lazily")
            subprocess.run(["umount", "-l", mountpoint], capture_output=True, env=SBIN_ENV)
    if image:
        for dev in _loop_devices_of(image):  # only devices backed by our image
            subprocess.run(["losetup", "-d", dev], capture_output=True, env=SBIN_ENV)
    if mountpoint and os.path.isdir(mountpoint) and not os.path.ismount(mountpoint):
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
    if image:
        with contextlib.suppress(OSError):
            os.unlink(image)
    left = _loop_devices_of(image) if image else []
    log(f"xfs: unmounted and removed {image}" + (f" (still attached: {left})" if left else ""))


@contextlib.contextmanager
def plain_dir(workdir: str, keep: bool) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vfs-bench-ext4-", dir=workdir)
    try:
        yield path
    finally:
        if keep:
            log(f"--keep: left {path}")
        else:
            rmtree(path)
            log(f"removed {path}")


# -- the benchmark on one filesystem --------------------------------------------------


def bench_fs(kind: str, root: str, args) -> FsResult:
    res = FsResult(kind, fs_type(root))
    reflinks = kind == "xfs"
    rep = args.repeat
    src = os.path.join(root, "src")
    dst = os.path.join(root, "copy")

    log(f"{kind}: generating v1 in {src}")
    os.makedirs(src)
    with contextlib.redirect_stdout(sys.stderr):
        gen_dataset.make_v1(src, args.small_count, args.large_mib, args.seed)
    small_dir, large_dir = os.path.join(src, "small"), os.path.join(src, "large")
    large_bytes = logical_bytes(large_dir)
    small_bytes = logical_bytes(small_dir)
    v1_du = du_bytes(src)
    v1_bytes = large_bytes + small_bytes
    n_small = len(tree_stat(small_dir))
    res.notes.append(f"v1: {n_small} small files ({fmt_bytes(small_bytes)}) + 2 large files "
                     f"({fmt_bytes(large_bytes)}); {fmt_bytes(v1_bytes)} logical, "
                     f"{fmt_bytes(v1_du)} allocated (du)")

    def fresh_repo() -> None:
        rmtree(os.path.join(src, ".vfs"))
        vfs(src, "init")

    def clear_dst() -> None:
        rmtree(dst)

    modes = [("cold", True)] + ([("warm", False)] if args.warm else [])
    internal: dict[str, list[float]] = defaultdict(list)

    def snap(ws: str, key: str, *argv: str) -> dict:
        out = json.loads(vfs(ws, "snapshot", "--json", *argv).stdout)
        internal[key].append(out["seconds"])
        return out

    # 1. large files -------------------------------------------------------------
    for mode, is_cold in modes:
        log(f"{kind}: snapshot large/ ({mode}) x{rep}")

        def setup_vfs(is_cold=is_cold):
            fresh_repo()
            cold() if is_cold else warm(large_dir)

        def setup_cp(is_cold=is_cold):
            clear_dst()
            cold() if is_cold else warm(large_dir)

        t_vfs = measure(lambda: snap(src, f"large {mode}", "large", "-m", "large"), rep,
                        setup_vfs)
        res.sample(f"vfs snapshot large/ ({mode})", t_vfs)
        what = f"snapshot `large/` ({fmt_bytes(large_bytes)}), {mode}"
        if reflinks:
            t = measure(lambda: (sh(["cp", "--reflink=always", "-r", large_dir, dst]),
                                 sh(["sync", "-f", dst])), rep, setup_cp)
            res.sample(f"cp --reflink=always -r large ({mode})", t)
            res.rows.append(Row(f"{what} vs `cp --reflink=always -r`",
                                large_bytes / med(t_vfs), large_bytes / med(t), "GB/s"))
        t = measure(lambda: (sh(["cp", "-a", "--reflink=never", large_dir, dst]),
                             sh(["sync", "-f", dst])), rep, setup_cp)
        res.sample(f"cp -a --reflink=never large ({mode})", t)
        res.rows.append(Row(f"{what} vs `cp -a --reflink=never`",
                            large_bytes / med(t_vfs), large_bytes / med(t), "GB/s"))
        t = measure(lambda: subprocess.run("cat large/* > /dev/null", shell=True, cwd=src,
                                           check=True), rep,
                    cold if is_cold else (lambda: warm(large_dir)))
        res.sample(f"cat large/* ({mode})", t)
        res.rows.append(Row(f"{what} vs `cat large/* > /dev/null`",
                            large_bytes / med(t_vfs), large_bytes / med(t), "GB/s"))
        if is_cold:
            target(res, f"large-file snapshot ({kind}, cold)", large_bytes / med(t_vfs),
                   1e9, "GB/s", higher_is_better=True)
    clear_dst()

    # 2. small files -------------------------------------------------------------
    for mode, is_cold in modes:
        log(f"{kind}: snapshot small/ ({mode}) x{rep}")

        def setup_vfs(is_cold=is_cold):
            fresh_repo()
            cold() if is_cold else warm(small_dir)

        def setup_cp(is_cold=is_cold):
            clear_dst()
            cold() if is_cold else warm(small_dir)

        t_vfs = measure(lambda: snap(src, f"small {mode}", "small", "-m", "small"), rep,
                        setup_vfs)
        res.sample(f"vfs snapshot small/ ({mode})", t_vfs)
        what = f"snapshot `small/` ({n_small} files, {fmt_bytes(small_bytes)}), {mode}"
        t = measure(lambda: (sh(["cp", "-a", "--reflink=never", small_dir, dst]),
                             sh(["sync", "-f", dst])), rep, setup_cp)
        res.sample(f"cp -a --reflink=never small ({mode})", t)
        res.rows.append(Row(f"{what} vs `cp -a --reflink=never`", med(t_vfs), med(t)))
        # ``tar cf /dev/null`` would not read the files (GNU tar skips them): pipe it.
        t = measure(lambda: subprocess.run("tar cf - small | cat > /dev/null", shell=True,
                                           cwd=src, check=True), rep,
                    cold if is_cold else (lambda: warm(small_dir)))
        res.sample(f"tar cf - small | cat ({mode})", t)
        res.rows.append(Row(f"{what} vs `tar cf - small \\| cat > /dev/null`",
                            med(t_vfs), med(t)))
        if is_cold:
            target(res, f"small-file snapshot ({kind}, cold)", med(t_vfs), 3.0, "s")
    clear_dst()
    rmtree(os.path.join(src, ".vfs"))

    # 3. lifecycle: v1, no-change, v2, checkout, storage -------------------------
    ws = os.path.join(root, "ws")
    per = defaultdict(list)
    storage = []
    v2_info = {}
    co_reason, co_args = checkout_available()
    co_info: dict[str, dict] = {}
    for i in range(rep):
        log(f"{kind}: lifecycle run {i + 1}/{rep}: copy v1, snapshot v1, no-change, v2, "
            "checkout")
        rmtree(ws)
        cold()
        t, _ = timed(lambda: (sh(["cp", "-a", "--reflink=auto", src, ws]),
                              sh(["sync", "-f", ws])))
        per["cp v1"].append(t)
        vfs(ws, "init")
        time.sleep(RACY_WAIT)
        df0 = fs_used_bytes(ws)
        cold()
        t, _ = timed(lambda: snap(ws, "v1 full", "-m", "v1", "--tag", "v1"))
        per["v1 full"].append(t)
        df1 = fs_used_bytes(ws)

        # no change
        cold()
        t, out = timed(lambda: snap(ws, "no-change cold", "-m", "again"))
        if out["created"] or out["files_read"]:
            log(f"warning: no-change snapshot created={out['created']} read "
                f"{out['files_read']} files")
        per["nochange cold"].append(t)
        snap(ws, "no-change warm", "-m", "again")  # prime
        warm()
        per["nochange warm"].append(timed(lambda: snap(ws, "no-change warm", "-m",
                                                        "again"))[0])
        walk = [sys.executable, "-c", WALK_SCRIPT, ws]
        cold()
        per["walk cold"].append(timed(lambda: sh(walk))[0])
        sh(walk)
        warm()
        per["walk warm"].append(timed(lambda: sh(walk))[0])

        # v2
        before = tree_stat(ws)
        with contextlib.redirect_stdout(sys.stderr):
            gen_dataset.make_v2(ws, args.seed)
        after = tree_stat(ws)
        changed_small = [p for p, v in after.items() if p.startswith("small" + os.sep)
                         and before.get(p) != v]
        big0, big1 = os.path.join("large", "big0.bin"), os.path.join("large", "big1.bin")
        middle = (before[big0][1] // 2) & ~4095
        ranges = [(os.path.join(ws, p), 0, after[p][1]) for p in changed_small]
        changed = ranges + [(os.path.join(ws, big0), middle, gen_dataset.OVERWRITE),
                            (os.path.join(ws, big1), before[big1][1],
                             after[big1][1] - before[big1][1])]
        whole = ranges + [(os.path.join(ws, big0), 0, after[big0][1]),
                          (os.path.join(ws, big1), 0, after[big1][1])]
        v2_info = {
            "modified+added small": len(changed_small),
            "deleted small": len(set(before) - set(after)),
            "changed bytes": sum(r[2] for r in changed),
            "bytes of changed files": sum(r[2] for r in whole),
        }
        df2 = fs_used_bytes(ws)
        cold()
        t, out = timed(lambda: snap(ws, "v2", "-m", "v2", "--tag", "v2"))
        per["v2"].append(t)
        v2_info["versionfs read"] = out["bytes_read"]
        v2_info["versionfs files read"] = out["files_read"]
        v2_info["versionfs stored"] = out["bytes_stored"]
        df3 = fs_used_bytes(ws)
        cold()
        per["read changed"].append(timed(lambda: read_ranges(changed))[0])
        cold()
        per["read changed files"].append(timed(lambda: read_ranges(whole))[0])
        storage.append({"du": du_bytes(os.path.join(ws, ".vfs")),
                        "df": (df1 - df0) + (df3 - df2),
                        "logical v2": sum(v[1] for v in after.values())})

        # checkout
        if co_reason is not None:
            co_reason, co_args = checkout_available()
        if co_reason is None:
            try:
                for rev, key in (("v1", "co v2->v1"), ("v2", "co v1->v2")):
                    cold()
                    t, proc = timed(lambda: vfs(ws, "checkout", rev, *co_args))
                    per[key].append(t)
                    if co_args:
                        co_info[key] = json.loads(proc.stdout)
                    got = tree_stat(ws)
                    want = before if rev == "v1" else after
                    if {p: v[1] for p, v in got.items()} != {p: v[1] for p, v in want.items()}:
                        log(f"warning: after checkout {rev} the workspace does not hold {rev}")
                        res.notes.append(f"WARNING: after `vfs checkout {rev}` the "
                                         f"workspace did not match {rev} (names/sizes)")
                cold()
                t, out = timed(lambda: snap(ws, "after checkout", "-m", "again"))
                per["nochange after checkout"].append(t)
                co_info["snapshot after checkout"] = out
                if args.warm:
                    for rev, key in (("v1", "co v2->v1 warm"), ("v2", "co v1->v2 warm")):
                        per[key].append(timed(lambda: vfs(ws, "checkout", rev))[0])
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()
                co_reason = "checkout failed: " + (first[-1] if first else "?")[:80]
                log(co_reason)
        rmtree(dst)
        os.makedirs(dst)
        cold()
        per["cp v2"].append(timed(lambda: (
            sh(["cp", "-a", "--reflink=auto", os.path.join(ws, "small"),
                os.path.join(ws, "large"), dst]),
            sh(["sync", "-f", dst])))[0])
        rmtree(dst)
        rmtree(ws)

    for key, times in per.items():
        res.sample(key, times)
    m = {k: med(v) for k, v in per.items()}
    cp_label = "`cp -a` (reflink=auto)" if reflinks else "`cp -a`"
    res.rows.append(Row(f"snapshot whole v1 (small + large), cold vs {cp_label} of v1",
                        m["v1 full"], m["cp v1"]))
    res.rows.append(Row("re-snapshot, nothing changed, cold vs os.walk+lstat (python)",
                        m["nochange cold"], m["walk cold"]))
    res.rows.append(Row("re-snapshot, nothing changed, warm vs os.walk+lstat (python)",
                        m["nochange warm"], m["walk warm"]))
    target(res, f"no-change re-snapshot ({kind}, cold)", m["nochange cold"], 0.3, "s")
    target(res, f"no-change re-snapshot ({kind}, warm)", m["nochange warm"], 0.3, "s")
    cb = v2_info["changed bytes"]
    res.rows.append(Row(f"snapshot v2, cold vs reading the {fmt_bytes(cb)} changed once",
                        m["v2"], m["read changed"]))
    res.rows.append(Row(f"snapshot v2, cold vs reading the changed files in full "
                        f"({fmt_bytes(v2_info['bytes of changed files'])})",
                        m["v2"], m["read changed files"]))
    target(res, f"v2 snapshot ({kind}, cold; 1 s + read changed bytes)", m["v2"],
           1.0 + m["read changed"], "s")
    res.notes.append(
        f"v2: {v2_info['modified+added small']} small files modified or added, "
        f"{v2_info['deleted small']} deleted, 64 KiB overwritten in big0, 8 MiB appended to "
        f"big1: {fmt_bytes(cb)} changed bytes in "
        f"{fmt_bytes(v2_info['bytes of changed files'])} of changed files; versionfs read "
        f"{fmt_bytes(v2_info['versionfs read'])} in {v2_info['versionfs files read']} files "
        f"and stored {fmt_bytes(v2_info['versionfs stored'])} new")
    if co_reason is None:
        for key, label in (("co v2->v1", "v2 → v1"), ("co v1->v2", "v1 → v2")):
            res.rows.append(Row(f"checkout {label}, cold vs {cp_label} of the v2 tree",
                                m[key], m["cp v2"]))
            target(res, f"checkout {label} ({kind}, cold)", m[key], 1.0, "s")
        if args.warm:
            for key, label in (("co v2->v1 warm", "v2 → v1"), ("co v1->v2 warm", "v1 → v2")):
                res.rows.append(Row(f"checkout {label}, warm vs {cp_label} of the v2 tree "
                                    "(cold)", m[key], m["cp v2"]))
        res.rows.append(Row("re-snapshot right after checkout v2, cold vs os.walk+lstat",
                            m["nochange after checkout"], m["walk cold"]))
        for key, label in (("co v2->v1", "v2 → v1"), ("co v1->v2", "v1 → v2")):
            c = co_info.get(key)
            if c:
                res.notes.append(
                    f"checkout {label} (last run): {c['files_written']} files written, "
                    f"{c['files_removed']} removed, {c['files_updated']} metadata only; "
                    f"copied {fmt_bytes(c['bytes_written'])}, cloned "
                    f"{fmt_bytes(c['bytes_cloned'])}; internal {fmt_seconds(c['seconds'])}")
        after_co = co_info.get("snapshot after checkout")
        if after_co:
            res.notes.append(
                f"snapshot right after checkout v2 (last run): created={after_co['created']},"
                f" read {after_co['files_read']} files ({fmt_bytes(after_co['bytes_read'])})"
                " (0 means checkout left the stat cache valid)")
    else:
        for label in ("v2 → v1", "v1 → v2"):
            res.rows.append(NARow(f"checkout {label}, cold vs {cp_label} of the v2 tree",
                                  co_reason, m["cp v2"]))
        res.targets.append(f"- checkout ({kind}): n/a ({co_reason})")

    du_vfs = med([s["du"] for s in storage])
    df_vfs = med([s["df"] for s in storage])
    res.rows.append(Row("storage: `.vfs` after v1+v2, du (st_blocks) vs v1 workspace du",
                        du_vfs, v1_du, "B"))
    df_label = "truth with reflinks" if reflinks else \
        "shared root filesystem: others' writes add noise"
    res.rows.append(Row(f"storage: df used delta of the two snapshots ({df_label}) vs v1 "
                        "workspace du", df_vfs, v1_du, "B"))
    if reflinks:
        res.notes.append("du counts extents shared by reflink clones once per file (objects "
                         "share them with the workspace), so it over-counts on XFS; the df "
                         "delta (used bytes before/after each snapshot, workspace edits "
                         "excluded) is what the snapshots really cost")
    else:
        target(res, f"storage v1+v2 / v1 ({kind}, du)", du_vfs / v1_du, 1.02, "x", op="≤")
        res.notes.append(f"storage against the v1 logical size ({fmt_bytes(v1_bytes)}, "
                         f"file sizes summed): {du_vfs / v1_bytes:.3f}x")
    res.notes.append(
        f"internal snapshot times (the JSON `seconds`, without interpreter start-up), "
        f"medians: " + ", ".join(f"{k} {fmt_seconds(med(v))}" for k, v in internal.items()))
    return res


# -- main -----------------------------------------------------------------------------


def machine_info() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "?"
    cp = subprocess.run(["cp", "--version"], capture_output=True,
                        text=True).stdout.splitlines()[:1]
    return [
        f"- nproc: {os.cpu_count()} ({cpu}), RAM {fmt_bytes(mem)}",
        f"- kernel: {platform.release()}",
        f"- python: {platform.python_version()} ({sys.executable})",
        f"- versionfs: git {git}; {cp[0] if cp else 'cp ?'}",
        f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def startup_rows(repeat: int) -> list:
    vfs_t = measure(lambda: common.run([*VFS, "--version"]), repeat + 2)
    py_t = measure(lambda: common.run([sys.executable, "-c", "pass"]), repeat + 2)
    vfs_c = measure(lambda: common.run([*VFS, "--version"]), repeat, cold)
    py_c = measure(lambda: common.run([sys.executable, "-c", "pass"]), repeat, cold)
    return [Row("CLI start-up: `vfs --version`, warm vs `python -c pass`", med(vfs_t),
                med(py_t)),
            Row("CLI start-up: `vfs --version`, cold vs `python -c pass`", med(vfs_c),
                med(py_c))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fs", choices=["xfs", "ext4", "both"], default="both")
    ap.add_argument("--workdir", default="/var/tmp",
                    help="where the XFS image and the ext4 directory go (default /var/tmp)")
    ap.add_argument("--small-count", type=int, default=20_000)
    ap.add_argument("--large-mib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warm", action="store_true",
                    help="also measure warm-cache runs (no-change is always measured both)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the XFS mount, image and data directories for inspection")
    args = ap.parse_args(argv)

    if importlib.util.find_spec("versionfs") is None:
        sys.exit(f"bench_repo: versionfs is not importable by {sys.executable}; "
                 "run with the project's venv (.venv/bin/python)")
    if os.geteuid() != 0:
        print("warning: not root: caches cannot be dropped and XFS cannot be mounted",
              file=sys.stderr)

    begin(__file__)
    for line in machine_info():
        print(line)
    large_total = 2 * args.large_mib << 20
    dataset = large_total + args.small_count * (9 << 10)
    kinds = ["xfs", "ext4"] if args.fs == "both" else [args.fs]
    results = []
    start = time.perf_counter()
    for kind in kinds:
        if kind == "xfs":
            size = max(4 << 30, 5 * dataset + (1 << 30))
            ctx = xfs_mount(args.workdir, size, args.keep)
        else:
            ctx = plain_dir(args.workdir, args.keep)
        with ctx as root:
            results.append(bench_fs(kind, root, args))

    print(f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.perf_counter() - start:.0f} s")
    print("\nversionfs is timed through its CLI (`python -m versionfs ...` in a "
          "subprocess), so each versionfs figure includes interpreter start-up and "
          "imports; see the start-up row. Medians of "
          f"{args.repeat} runs; cold = `sync; echo 3 > /proc/sys/vm/drop_caches` before "
          "each run; `cp` baselines include `sync -f` of the copy. ratio = versionfs / "
          "baseline: for times lower is better, for GB/s higher is better.")
    common.print_table(startup_rows(args.repeat), title="Start-up")
    for r in results:
        common.print_table(r.rows, title=f"{r.kind} ({r.fstype})")
        print()
        for n in r.notes:
            print(f"- {n}")
        print("\nTargets:\n")
        for t in r.targets:
            print(t)
    print("\nAll runs (seconds):\n")
    for r in results:
        for s in r.samples:
            print(f"- {r.kind}: {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
