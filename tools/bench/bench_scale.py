"""Benchmark of versionfs on many small files (issue 9), each figure beside a baseline.

The tree is ``gen_dataset.py --files N``: N files of 100-1,500 bytes in N/1000
directories, made in a fresh directory under --dir (an ext4 directory under /var/tmp
by default; the filesystem is printed). Every figure is the wall time of a whole
command as a user runs it (``python -m versionfs ...`` in a subprocess: start-up,
interpreter exit and freeing memory included) and the command's peak RSS (from
``os.wait4``, which covers the child and any children it waited for). Baselines run
in the same run on the same tree:

* snapshot v1, cold  vs  ``tar cf - . | cat > /dev/null`` and ``cp -a`` (+ ``sync -f``)
* snapshot with nothing changed (cold, warm) and ``vfs status`` (warm)  vs  a bare
  Python ``os.scandir`` + ``os.lstat`` walk of the tree (a subprocess, cold / warm)
* snapshot after rewriting 1% of the files (``gen_dataset.py --v2``), cold  vs  the
  walk plus reading the changed files, cold
* ``vfs diff HEAD~1 HEAD --stat``  vs  ``vfs --version`` (the fixed start-up cost)
* ``vfs checkout HEAD~1`` and back to the branch, cold  vs  the walk plus reading
  the changed files (what a checkout of them must at least touch)
* with the change journal (``vfs watch start``): the nothing-changed snapshot and
  status (warm, cold) against the walk and the issue's < 1 s, then ``vfs status``
  and a snapshot after rewriting 1% of the files spread over every directory, and
  1% confined to 1% of the directories, against ``VFS_JOURNAL=0 vfs status`` and
  the walk plus reading the changed files (all cold); the watcher's RSS
* through ``versionfs mount WS@HEAD``: ``find MP | wc -l`` and ``ls -lR MP``, cold (a
  fresh mount) and warm  vs  native ``find``/``ls -lR`` of the workspace (``.vfs``
  pruned), and the daemon's RSS after the cold ``find`` (VmRSS, VmHWM of its pid
  from ``versionfs mounts --json``); skipped with a message when FUSE is absent.
  ``--stock-too`` measures the mount rows a second time with ``VFS_STOCK_PYFUSE3=1``
  (the daemon serves as with the stock pyfuse3: no listing cache, every entry with
  its attributes), so the gain of third_party/pyfuse3's patches shows in one run

Cold = ``sync; echo 3 > /proc/sys/vm/drop_caches`` first (needs root; the output
says when it did not work). The table gives the issue's targets for 1,000,000 files
beside each row; targets that grow with the tree (snapshot v1 ≤ 60 s) are scaled by
N / 1,000,000, ratios and memory caps are kept as they are. Each figure is one run
unless --repeat R (then the median of R, for the phases that can be repeated).
``--profile K`` adds a cProfile of one more nothing-changed snapshot (top K entries
by own time and by cumulative time). Everything made is removed at the end (the
mount unmounted first) unless --keep.

Usage: python tools/bench/bench_scale.py [--files N] [--dirs D] [--dir DIR]
           [--repeat R] [--profile K] [--no-cp] [--keep] [--stock-too]
           [--only snapshot|nochange|change|diff|checkout|mount|journal ...]
Quick check: python tools/bench/bench_scale.py --files 5000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import pstats
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import gen_dataset  # noqa: E402
from bench_repo import machine_info  # noqa: E402
from common import drop_caches, fmt_bytes, fmt_seconds, begin  # noqa: E402

VFS = [sys.executable, "-m", "versionfs"]
RACY_WAIT = 0.3  # > the scanner's 100 ms racy window, so files get stat cache entries
PHASES = ("snapshot", "nochange", "change", "diff", "checkout", "mount", "journal")
MB = 1_000_000
FULL = 1_000_000  # the tree size the targets are stated for

# A bare walk: os.scandir recursion, one os.lstat per file (.vfs at the top pruned).
# With a second argument, a file listing paths to read in full afterwards.
WALK_SCRIPT = """\
import os, sys
root = sys.argv[1]
n = 0
stack = [root]
while stack:
    d = stack.pop()
    with os.scandir(d) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                if not (d == root and e.name == ".vfs"):
                    stack.append(e.path)
            else:
                os.lstat(e.path)
                n += 1
read = 0
if len(sys.argv) > 2:
    with open(sys.argv[2]) as f:
        for p in f.read().splitlines():
            with open(p, "rb") as g:
                read += len(g.read())
print(n, read)
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- running commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    wall: float
    rss: int  # peak RSS of the child (and the children it waited for), bytes
    stdout: str


TIME = "/usr/bin/time"


def run(argv: list[str] | str, cwd: str | None = None, capture: bool = False,
        env: dict | None = None) -> Run:
    """Run a command (a string runs through ``sh -c``), timing it until it has exited
    and been reaped; fail loudly with its stderr if it fails.

    The peak RSS comes from GNU time's ``%M`` (the rusage of its child, which
    includes the children that child waited for, so a shell pipeline's largest
    process). Not from our own ``wait4``: a child forked (or vforked) from this
    process inherits this process's high-water mark at exec, which would be a floor
    under every figure."""
    argv = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", prefix="vfs-bench-rss-") as rss:
        full = [TIME, "-q", "-f", "%M", "-o", rss.name, *argv] if HAVE_TIME else argv
        start = time.perf_counter()
        proc = subprocess.run(full, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=out if capture else subprocess.DEVNULL, stderr=err,
                              env={**os.environ, **env} if env else None)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace")
            raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}):\n{text}")
        out.seek(0)
        kib = rss.read().split()
        peak = int(kib[-1]) * 1024 if HAVE_TIME and kib else 0
        return Run(wall, peak, out.read().decode(errors="replace"))


HAVE_TIME = os.access(TIME, os.X_OK)


def vfs(ws: str, *args: str, capture: bool = False, env: dict | None = None) -> Run:
    return run([*VFS, *args], cwd=ws, capture=capture, env=env)


def median_run(fn, repeat: int, setup=None) -> Run:
    """The run of median wall time of ``repeat`` runs of ``fn`` (``setup`` before each,
    untimed); its RSS is the largest of them."""
    runs = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        runs.append(fn())
    runs.sort(key=lambda r: r.wall)
    mid = runs[(len(runs) - 1) // 2]
    return Run(mid.wall, max(r.rss for r in runs), mid.stdout)


# -- results ----------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    mine: Run
    base: Run | None
    base_name: str
    targets: list[tuple[str, bool]] = field(default_factory=list)
    shown: str | None = None  # the versionfs cell, when it is not ``mine.wall``

    def ratio_target(self, limit: float) -> Row:
        assert self.base is not None
        self.targets.append((f"≤ {limit:g}x", self.mine.wall <= limit * self.base.wall))
        return self

    def time_target(self, limit: float) -> Row:
        self.targets.append((f"≤ {fmt_seconds(limit)}", self.mine.wall <= limit))
        return self

    def rss_target(self, limit_mb: float) -> Row:
        self.targets.append((f"RSS ≤ {limit_mb:g} MB", self.mine.rss <= limit_mb * MB))
        return self


def print_table(rows: list[Row]) -> None:
    print("| what | versionfs | peak RSS | baseline | baseline | its RSS | ratio "
          "| target (1M files) | |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = r.base
        ratio = f"{r.mine.wall / b.wall:.2f}x" if b and b.wall else "-"
        rss = fmt_bytes(r.mine.rss) if r.mine.rss else "-"
        cells = [r.what, r.shown or fmt_seconds(r.mine.wall), rss, r.base_name or "-",
                 fmt_seconds(b.wall) if b else "-",
                 fmt_bytes(b.rss) if b and b.rss else "-", ratio,
                 ", ".join(t for t, _ in r.targets) or "-",
                 ", ".join("met" if ok else "**missed**" for _, ok in r.targets) or "-"]
        print("| " + " | ".join(cells) + " |")


# -- the benchmark ----------------------------------------------------------------------


class Bench:
    def __init__(self, args, top: str):
        self.a = args
        self.top = top
        self.ws = os.path.join(top, "ws")
        self.mp = os.path.join(top, "mnt")
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.mounted = False
        self.cold_ok = True
        self.changed: list[str] = []
        self._walk_read: Run | None = None
        self.profile_out: list[str] = []
        self.daemon_rss: dict[str, int] = {}
        self.own_drops = 0

    def want(self, phase: str) -> bool:
        return not self.a.only or phase in self.a.only

    def cold(self) -> None:
        self.own_drops += 1
        if not drop_caches():
            self.cold_ok = False

    def walk(self, *extra: str) -> Run:
        return run([sys.executable, "-c", WALK_SCRIPT, self.ws, *extra], capture=True)

    def repeat(self, fn, setup=None) -> Run:
        return median_run(fn, self.a.repeat, setup)

    # phases -------------------------------------------------------------------------

    def generate(self) -> None:
        log(f"generating {self.a.files:,} files in {self.ws}")
        os.makedirs(self.ws)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            gen_dataset.make_scale(self.ws, self.a.files, self.a.dirs, self.a.seed)
        t = time.perf_counter() - start
        n_dirs = gen_dataset.scale_dirs(self.a.files, self.a.dirs)
        size = sum(e.stat().st_size for d in os.scandir(self.ws)
                   for e in os.scandir(d.path))
        self.notes.append(f"tree: {self.a.files:,} files in {n_dirs:,} directories, "
                          f"{fmt_bytes(size)} (`gen_dataset.py --files {self.a.files}`, "
                          f"seed {self.a.seed}), generated in {t:.1f} s")
        vfs(self.ws, "init")
        time.sleep(RACY_WAIT)

    def snapshot_v1(self) -> None:
        want = self.want("snapshot")
        cp = None
        if want:
            log("baselines of snapshot v1: tar | cat, cp -a (cold)")
            self.cold()
            tar = run("tar cf - --exclude=./.vfs . | cat > /dev/null", cwd=self.ws)
        if want and not self.a.no_cp:
            copy = os.path.join(self.top, "copy")
            self.cold()
            cp = run(f"cp -a {shlex.quote(self.ws)} {shlex.quote(copy)} && "
                     f"sync -f {shlex.quote(copy)}")
            rm = run(["rm", "-rf", copy])
            os.sync()
            self.notes.append(f"removing the `cp -a` copy took {fmt_seconds(rm.wall)}")
        log("snapshot v1 (cold)")
        self.cold()
        snap = vfs(self.ws, "snapshot", "--json", "-m", "v1", "--tag", "v1", capture=True)
        out = json.loads(snap.stdout)
        self.notes.append(f"snapshot v1: {fmt_seconds(snap.wall)} wall, "
                          f"{fmt_seconds(out['seconds'])} reported; read "
                          f"{out['files_read']:,} files, stored "
                          f"{fmt_bytes(out['bytes_stored'])}")
        if want:
            scale = self.a.files / FULL
            self.rows.append(Row("snapshot v1, cold", snap, tar, "`tar cf - . | cat`")
                             .ratio_target(1.15).time_target(60 * scale).rss_target(400))
            if cp is not None:
                self.rows.append(Row("  the same", snap, cp, "`cp -a` + `sync -f`"))
        time.sleep(RACY_WAIT)

    def nochange(self) -> None:
        if not self.want("nochange"):
            return
        log("nothing changed: walk, snapshot, status")
        snap = [*VFS, "snapshot", "--json", "-m", "again"]
        walk_c = self.repeat(self.walk, self.cold)
        snap_c = self.repeat(lambda: run(snap, cwd=self.ws, capture=True), self.cold)
        self.check_nothing_read(snap_c, "cold")
        self.walk()
        walk_w = self.repeat(self.walk)
        snap_w = self.repeat(lambda: run(snap, cwd=self.ws, capture=True))
        self.check_nothing_read(snap_w, "warm")
        status = self.repeat(lambda: vfs(self.ws, "status"))
        status_c = self.repeat(lambda: vfs(self.ws, "status"), self.cold)
        walk_name = "scandir+lstat walk"
        self.rows += [
            Row("snapshot, nothing changed, cold", snap_c, walk_c, walk_name + ", cold")
            .ratio_target(1.5),
            Row("snapshot, nothing changed, warm", snap_w, walk_w, walk_name + ", warm")
            .ratio_target(1.5),
            Row("`vfs status`, nothing changed, warm", status, walk_w,
                walk_name + ", warm").ratio_target(1.5),
            Row("`vfs status`, nothing changed, cold", status_c, walk_c,
                walk_name + ", cold").ratio_target(1.5),
        ]
        if self.a.profile:
            self.profile_nochange()

    def check_nothing_read(self, r: Run, label: str) -> None:
        out = json.loads(r.stdout)
        if out["created"] or out["files_read"]:
            self.notes.append(f"WARNING: the {label} nothing-changed snapshot created="
                              f"{out['created']} and read {out['files_read']} files")
        else:
            self.notes.append(f"nothing-changed snapshot ({label}): "
                              f"{fmt_seconds(r.wall)} wall, {fmt_seconds(out['seconds'])} "
                              "reported, no file read")

    def profile_nochange(self) -> None:
        prof = os.path.join(self.top, "nochange.prof")
        run([sys.executable, "-m", "cProfile", "-o", prof, "-m", "versionfs", "snapshot",
             "-m", "again"], cwd=self.ws)
        pkg = os.path.dirname(importlib.util.find_spec("versionfs").origin)
        for key in ("tottime", "cumulative"):
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            if key == "tottime":
                st.strip_dirs().sort_stats(key).print_stats(self.a.profile)
            else:  # versionfs's own functions only (not click's and runpy's frames)
                st.sort_stats(key).print_stats(pkg + os.sep, self.a.profile)
            lines = buf.getvalue().replace(pkg + os.sep, "").splitlines()
            start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
            total = next((ln.strip() for ln in lines if "function calls" in ln), "")
            label = key if key == "tottime" else "cumulative time, versionfs functions"
            self.profile_out.append(f"\n#### nothing-changed snapshot, by {label} "
                                    f"({total})\n\n```\n" +
                                    "\n".join(lines[start:start + self.a.profile + 1]) +
                                    "\n```")

    def change(self) -> None:
        if not (self.want("change") or self.want("diff") or self.want("checkout")):
            return
        log("rewriting 1% of the files (gen_dataset --v2)")
        with contextlib.redirect_stdout(sys.stderr):
            self.changed = gen_dataset.make_scale_v2(self.ws, self.a.files, self.a.dirs,
                                                     self.a.seed)
        time.sleep(RACY_WAIT)
        if self.want("change") or self.want("checkout"):
            self.walk_read()
        self.cold()
        log("snapshot v2 (cold)")
        snap = vfs(self.ws, "snapshot", "--json", "-m", "v2", "--tag", "v2", capture=True)
        out = json.loads(snap.stdout)
        self.notes.append(f"snapshot v2 after rewriting {len(self.changed):,} files: "
                          f"{fmt_seconds(snap.wall)} wall, {fmt_seconds(out['seconds'])} "
                          f"reported; read {out['files_read']:,} files "
                          f"({fmt_bytes(out['bytes_read'])})")
        if out["files_read"] != len(self.changed):
            self.notes.append(f"WARNING: snapshot v2 read {out['files_read']} files, "
                              f"{len(self.changed)} were rewritten")
        if self.want("change"):
            self.rows.append(Row(f"snapshot after a 1% change ({len(self.changed):,} "
                                 "files), cold", snap, self.walk_read(),
                                 "walk + read changed, cold").ratio_target(1.0))
        time.sleep(RACY_WAIT)

    def walk_read(self) -> Run:
        if self._walk_read is None:
            listing = os.path.join(self.top, "changed.txt")
            with open(listing, "w") as f:
                f.write("\n".join(self.changed) + "\n")
            self._walk_read = self.repeat(lambda: self.walk(listing), self.cold)
        return self._walk_read

    def diff(self) -> None:
        if not self.want("diff"):
            return
        log("vfs diff HEAD~1 HEAD --stat")
        d = self.repeat(lambda: vfs(self.ws, "diff", "HEAD~1", "HEAD", "--stat",
                                    capture=True))
        start = self.repeat(lambda: vfs(self.ws, "--version"))
        self.notes.append("diff --stat printed: " +
                          "; ".join(" ".join(ln.split()) for ln in d.stdout.splitlines()))
        self.rows.append(Row("`vfs diff HEAD~1 HEAD --stat`", d, start, "`vfs --version`")
                         .time_target(2).rss_target(300))

    def checkout(self) -> None:
        if not self.want("checkout"):
            return
        branch = "main"
        runs = {"to": [], "back": []}
        for _ in range(self.a.repeat):
            self.cold()
            runs["to"].append(vfs(self.ws, "checkout", "HEAD~1", "--json", capture=True))
            self.cold()
            runs["back"].append(vfs(self.ws, "checkout", branch, "--json", capture=True))
        base = self.walk_read()
        for key, label in (("to", "`vfs checkout HEAD~1`, cold"),
                           ("back", f"`vfs checkout {branch}` (back), cold")):
            rs = sorted(runs[key], key=lambda r: r.wall)
            mid = rs[(len(rs) - 1) // 2]
            r = Run(mid.wall, max(x.rss for x in rs), mid.stdout)
            out = json.loads(r.stdout)
            self.notes.append(f"{label}: wrote {out['files_written']:,} files, "
                              f"{fmt_seconds(out['seconds'])} reported")
            self.rows.append(Row(label, r, base, "walk + read changed, cold")
                             .time_target(3).rss_target(300))

    def mount(self) -> None:
        if not self.want("mount"):
            return
        why = fuse_missing()
        if why:
            print(f"\nmount: skipped ({why})")
            self.notes.append(f"mount rows skipped: {why}")
            return
        log("find / ls -lR, native and through the mount")
        find_n = f"find {shlex.quote(self.ws)} -name .vfs -prune -o -print | wc -l"
        ls_n = f"ls -lR -I .vfs {shlex.quote(self.ws)} > /dev/null"
        nfc = self.repeat(lambda: run(find_n, capture=True), self.cold)
        run(find_n)
        nfw = self.repeat(lambda: run(find_n))
        nlc = self.repeat(lambda: run(ls_n), self.cold)
        run(ls_n)
        nlw = self.repeat(lambda: run(ls_n))
        self.mount_rows(nfc, nfw, nlc, nlw, "")
        if self.a.stock_too:
            log("the same through a mount served as with the stock pyfuse3")
            os.environ["VFS_STOCK_PYFUSE3"] = "1"
            try:
                self.mount_rows(nfc, nfw, nlc, nlw, ", stock pyfuse3")
            finally:
                del os.environ["VFS_STOCK_PYFUSE3"]

    def mount_rows(self, nfc: Run, nfw: Run, nlc: Run, nlw: Run, how: str) -> None:
        find_m = f"find {shlex.quote(self.mp)} | wc -l"
        ls_m = f"ls -lR {shlex.quote(self.mp)} > /dev/null"
        rss: dict[str, int] = {}

        def fresh():
            self.umount()
            self.do_mount()
            self.cold()

        def find_cold():
            fresh()
            r = run(find_m, capture=True)
            rss.update(daemon_rss(self.daemon_pid()))
            return r

        mfc = median_run(find_cold, self.a.repeat)
        run(find_m)
        mfw = self.repeat(lambda: run(find_m, capture=True))
        mlc = self.repeat(lambda: run(ls_m), fresh)
        run(ls_m)
        mlw = self.repeat(lambda: run(ls_m))
        self.umount()
        n_native, n_mount = int(nfc.stdout.split()[0]), int(mfc.stdout.split()[0])
        if n_native != n_mount:
            self.notes.append(f"WARNING: find listed {n_mount:,} entries through the mount"
                              f"{how}, {n_native:,} natively")
        else:
            self.notes.append(f"find listed {n_mount:,} entries, native and mounted{how}")
        self.rows += [
            Row(f"`find MP | wc -l`, cold (fresh mount){how}", mfc, nfc, "native `find`, cold")
            .ratio_target(3),
            Row(f"`find MP | wc -l`, warm{how}", mfw, nfw, "native `find`, warm")
            .ratio_target(3),
            Row(f"`ls -lR MP`, cold (fresh mount){how}", mlc, nlc, "native `ls -lR`, cold")
            .ratio_target(3),
            Row(f"`ls -lR MP`, warm{how}", mlw, nlw, "native `ls -lR`, warm").ratio_target(3),
        ]
        if not how:
            self.daemon_rss = rss
        vm = rss.get("VmRSS", 0)
        row = Row(f"mount daemon after the cold `find`{how}: VmRSS (peak: VmHWM)",
                  Run(0.0, rss.get("VmHWM", 0), ""), None, "", shown=fmt_bytes(vm))
        row.targets.append(("VmRSS ≤ 150 MB", vm <= 150 * MB))
        self.rows.append(row)

    def journal(self) -> None:
        """With ``vfs watch start``: nothing-changed snapshot and status, then a 1%
        change spread over every directory and one confined to 1% of them."""
        if not self.want("journal"):
            return
        log("change journal: vfs watch start")
        started = vfs(self.ws, "watch", "start", "--json", capture=True)
        info = json.loads(started.stdout)
        self.notes.append(f"`vfs watch start`: {fmt_seconds(started.wall)} wall, watching "
                          f"{info['watched']:,} directories ({info['unwatched_count']} "
                          "unwatched)")
        try:
            self._journal_rows(info["pid"])
        finally:
            vfs(self.ws, "watch", "stop")

    def _journal_rows(self, pid: int) -> None:
        snap = [*VFS, "snapshot", "--json", "-m", "journal"]
        log("journal: the first snapshot (walks, records every directory)")
        first = run(snap, cwd=self.ws, capture=True)
        self.walk()
        walk_w = self.repeat(self.walk)
        walk_c = self.repeat(self.walk, self.cold)
        self.rows.append(Row("journal: first snapshot after `watch start`, warm", first,
                             walk_w, "scandir+lstat walk, warm"))
        log("journal: nothing changed")
        snap_w = self.repeat(lambda: run(snap, cwd=self.ws, capture=True))
        self.check_nothing_read(snap_w, "warm, journal")
        status_w = self.repeat(lambda: vfs(self.ws, "status"))
        snap_c = self.repeat(lambda: run(snap, cwd=self.ws, capture=True), self.cold)
        status_c = self.repeat(lambda: vfs(self.ws, "status"), self.cold)
        version = self.repeat(lambda: vfs(self.ws, "--version"))
        self.notes.append(f"journal: `vfs --version` (start-up and exit alone, the floor "
                          f"of every command) took {fmt_seconds(version.wall)}")
        walk = "scandir+lstat walk"
        self.rows += [
            Row("journal: snapshot, nothing changed, warm", snap_w, walk_w,
                walk + ", warm").time_target(1.0),
            Row("journal: `vfs status`, nothing changed, warm", status_w, walk_w,
                walk + ", warm").time_target(1.0),
            Row("journal: snapshot, nothing changed, cold", snap_c, walk_c,
                walk + ", cold").time_target(1.0),
            Row("journal: `vfs status`, nothing changed, cold", status_c, walk_c,
                walk + ", cold").time_target(1.0),
        ]
        d = gen_dataset.scale_dirs(self.a.files, self.a.dirs)
        n = self.a.files
        spread = gen_dataset.scale_v2_indices(n, self.a.seed + 1)
        k = max(1, d // 100)
        confined = range(k * n // d)
        for label, picked, version in (
                (f"1% change spread over the directories ({len(spread):,} files)",
                 spread, 3),
                (f"change confined to {k} of {d:,} directories ({len(confined):,} files)",
                 confined, 4)):
            self._journal_change(label, picked, version, d)
        rss = daemon_rss(pid)
        row = Row("journal: the watcher after all this: VmRSS (peak: VmHWM)",
                  Run(0.0, rss.get("VmHWM", 0), ""), None, "",
                  shown=fmt_bytes(rss.get("VmRSS", 0)))
        self.rows.append(row)

    def _journal_change(self, label: str, picked, version: int, d: int) -> None:
        log(f"journal: {label}")
        gen_dataset._write_scale_files(self.ws, picked, self.a.files, d, self.a.seed,
                                       version, os.O_WRONLY | os.O_TRUNC)
        time.sleep(RACY_WAIT)
        paths = [gen_dataset.scale_path(self.ws, i, self.a.files, d) for i in picked]
        listing = os.path.join(self.top, f"changed-{version}.txt")
        with open(listing, "w") as f:
            f.write("\n".join(paths) + "\n")
        base = self.repeat(lambda: self.walk(listing), self.cold)
        plain = self.repeat(lambda: vfs(self.ws, "status", env={"VFS_JOURNAL": "0"}),
                            self.cold)
        status = self.repeat(lambda: vfs(self.ws, "status"), self.cold)
        self.cold()
        snap = vfs(self.ws, "snapshot", "--json", "-m", label, capture=True)
        time.sleep(RACY_WAIT)
        out = json.loads(snap.stdout)
        if out["files_read"] != len(paths):
            self.notes.append(f"WARNING: the journal snapshot after the {label} read "
                              f"{out['files_read']} files, {len(paths)} were rewritten")
        self.rows += [
            Row(f"journal: `vfs status` after a {label}, cold", status, plain,
                "`VFS_JOURNAL=0 vfs status`, cold"),
            Row(f"journal: snapshot after a {label}, cold", snap, base,
                "walk + read changed, cold"),
        ]

    # mount helpers ------------------------------------------------------------------

    def do_mount(self) -> None:
        os.makedirs(self.mp, exist_ok=True)
        vfs(self.ws, "mount", f"{self.ws}@HEAD", self.mp)
        self.mounted = True

    def daemon_pid(self) -> int:
        rows = json.loads(vfs(self.ws, "mounts", "--json", capture=True).stdout)
        for r in rows:
            if os.path.realpath(r["mountpoint"]) == os.path.realpath(self.mp):
                return r["pid"]
        raise RuntimeError(f"no versionfs mount at {self.mp} in `versionfs mounts`")

    def umount(self) -> None:
        if not self.mounted:
            return
        proc = subprocess.run([*VFS, "umount", self.mp], capture_output=True, text=True)
        if proc.returncode != 0 and os.path.ismount(self.mp):
            log(f"versionfs umount failed ({proc.stderr.strip()}); detaching lazily")
            subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True)
        self.mounted = False



def daemon_rss(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3"
    if importlib.util.find_spec("pyfuse3") is None:
        return "pyfuse3 is not installed"
    return None


def fs_of(path: str) -> str:
    proc = subprocess.run(["findmnt", "-n", "-T", path, "-o", "FSTYPE,SOURCE,TARGET"],
                          capture_output=True, text=True)
    return " ".join(proc.stdout.split()) or "?"


def _drops() -> int:
    """How often the page cache was dropped since boot (any process), or -1."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("drop_pagecache "):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _pyfuse3_note() -> str:
    try:
        import importlib.metadata as md
        version = md.version("pyfuse3")
    except Exception:
        return "- pyfuse3: not installed"
    patched = "+versionfs" in version
    return (f"- pyfuse3 {version}" + ("" if patched else " (stock: listings are not "
                                      "cached; see third_party/pyfuse3)"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dirs", type=int, help="directories (default files / 1000)")
    ap.add_argument("--dir", default="/var/tmp",
                    help="where the temporary tree goes (default /var/tmp)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="profile a nothing-changed snapshot, print the top K entries")
    ap.add_argument("--only", action="append", choices=PHASES,
                    help="measure only these phases (repeatable; the snapshots the "
                         "others need still run)")
    ap.add_argument("--no-cp", action="store_true",
                    help="skip the `cp -a` baseline of snapshot v1 (and removing its "
                         "copy: minutes at 1,000,000 files)")
    ap.add_argument("--keep", action="store_true", help="keep the tree and repository")
    ap.add_argument("--stock-too", action="store_true",
                    help="measure the mount rows again as with the stock pyfuse3 "
                         "(VFS_STOCK_PYFUSE3=1)")
    a = ap.parse_args(argv)

    begin(__file__)
    for line in machine_info():
        print(line)
    print(_pyfuse3_note())
    top = tempfile.mkdtemp(prefix="vfs-bench-scale-", dir=a.dir)
    print(f"- filesystem of {a.dir}: {fs_of(top)}")
    # Commands run as from an installed package: modules compiled once (into a cache
    # under the run's directory, removed with it), not at every start.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(top, "pycache")
    print("- modules compiled once, as in an installed package")
    if not HAVE_TIME:
        print(f"- no {TIME}: peak RSS is not measured (shown as -)")
    b = Bench(a, top)
    start = time.perf_counter()
    drops_before = _drops()
    try:
        b.generate()
        b.snapshot_v1()
        b.nochange()
        b.change()
        b.diff()
        b.checkout()
        b.mount()
        b.journal()
    finally:
        b.umount()
        if a.keep:
            log(f"--keep: left {top}")
        else:
            t = time.perf_counter()
            subprocess.run(["rm", "-rf", top])
            log(f"removed {top} in {time.perf_counter() - t:.1f} s")
    print(f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.perf_counter() - start:.0f} s")
    foreign = _drops() - drops_before - b.own_drops
    if drops_before >= 0 and foreign > 0:
        print(f"- caches were dropped {foreign} times by other processes during the run: "
              "some warm figures may be partly cold")
    if not b.cold_ok:
        print("- WARNING: caches could not be dropped: the cold figures are warm")
    else:
        print("- cold = `sync; echo 3 > /proc/sys/vm/drop_caches` before the run (worked)")
    print("- one run per figure" if a.repeat == 1 else f"- medians of {a.repeat} runs")
    print()
    print_table(b.rows)
    print()
    for n in b.notes:
        print(f"- {n}")
    if b.daemon_rss:
        print("- mount daemon after the cold find: " +
              ", ".join(f"{k} {fmt_bytes(v)}" for k, v in b.daemon_rss.items()))
    for p in b.profile_out:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
