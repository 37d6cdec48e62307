"""Helpers shared by the benchmarks: timing, cold caches, disk usage, result tables.

Not thread-safe, and not part of the versionfs package (it imports nothing from it).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


def timeit(fn: Callable[[], object], repeat: int = 3,
           setup: Callable[[], object] | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs.

    ``setup()`` runs before each run, untimed (e.g. ``drop_caches`` for cold reads,
    or removing the previous run's output).
    """
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def drop_caches() -> bool:
    """Flush dirty data and drop the page, dentry and inode caches (needs root).

    Returns False, with a warning on stderr, when the caches could not be dropped, so
    a "cold" number is known to be warm.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as exc:
        print(f"warning: could not drop caches ({exc.strerror}); reads may be warm",
              file=sys.stderr)
        return False


def du_bytes(path: str) -> int:
    """Bytes allocated under ``path`` (``st_blocks``, each hard link counted once).

    Like ``du``, extents shared by reflink clones are counted once per file; use
    ``fs_used_bytes`` before and after to measure what a reflink store really costs.
    """
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(st: os.stat_result) -> None:
        nonlocal total
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512

    add(os.lstat(path))
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            add(os.lstat(os.path.join(dirpath, name)))
    return total


def fs_used_bytes(path: str) -> int:
    """Bytes in use on the filesystem holding ``path`` (after a sync)."""
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def run(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing loudly (with its stderr) if it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


# -- result tables --------------------------------------------------------------------


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


FORMATS: dict[str, Callable[[float], str]] = {
    "s": fmt_seconds,
    "B": fmt_bytes,
    "B/s": lambda v: fmt_bytes(v) + "/s",
    "": lambda v: f"{v:g}",
}


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement: versionfs against a baseline (``None`` when there is none)."""

    what: str
    versionfs: float
    baseline: float | None = None
    unit: str = "s"  # one of FORMATS

    def cells(self) -> list[str]:
        fmt = FORMATS[self.unit]
        base = "-" if self.baseline is None else fmt(self.baseline)
        if self.baseline:
            ratio = f"{self.versionfs / self.baseline:.2f}x"
        else:
            ratio = "-"
        return [self.what, fmt(self.versionfs), base, ratio]


def markdown_table(rows: Iterable[Row], baseline_name: str = "baseline") -> str:
    """A markdown table: what | versionfs | baseline | ratio (versionfs / baseline)."""
    header = ["what", "versionfs", baseline_name, "ratio"]
    body = [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(c) for c in body)])


def print_table(rows: Iterable[Row], baseline_name: str = "baseline",
                title: str | None = None) -> None:
    if title:
        print(f"\n### {title}\n")
    print(markdown_table(rows, baseline_name))


def begin(script: str) -> None:
    """What every benchmark does first: SIGTERM/SIGHUP become KeyboardInterrupt (so
    its ``finally`` blocks unmount and clean up), and its command line is printed."""
    import shlex
    import signal
    import sys

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    exe = os.path.relpath(sys.executable, root) if sys.executable.startswith(root) \
        else sys.executable
    print(f"$ {shlex.join([exe, os.path.relpath(os.path.abspath(script), root), *sys.argv[1:]])}\n")
