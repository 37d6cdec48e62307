#!/usr/bin/env python3
"""Benchmark ``vfs run``: its overhead over running the command directly, and a
cache hit restoring a large output on reflink XFS, each beside a baseline measured
in the same run.

* overhead: a command writing one small output, run directly (``sh -c``) and
  through ``vfs run --force`` (which records the run and snapshots the output);
  ``vfs --version`` is shown too (interpreter start-up, which any CLI pays).
  Target: ``vfs run`` ≤ direct + 0.15 s + snapshotting the outputs.
* cache hit: a run writes a ``--large-mib`` output; then, repeatedly, the output is
  deleted and ``vfs run`` restores it from the cache. Baselines: ``cp --reflink``
  and a plain ``cp`` of the same file. Target: ≤ 0.2 s for 1 GiB on XFS.

Everything lives on a fresh loop-mounted XFS image (root needed), removed at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_repo import VFS, log, med, xfs_mount  # noqa: E402
from common import fmt_seconds  # noqa: E402


def timed(argv, cwd, repeat, setup=None) -> list[float]:
    out = []
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        p = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    size = max(4 << 30, (args.large_mib << 20) * 4)
    with xfs_mount(args.workdir, size, args.keep) as root:
        ws = os.path.join(root, "ws")
        os.makedirs(ws)
        subprocess.run([*VFS, "init"], cwd=ws, check=True, capture_output=True)
        small = ["sh", "-c", "echo hello > out.txt"]
        direct = timed(small, ws, args.repeat)
        startup = timed([*VFS, "--version"], ws, args.repeat)
        os.unlink(os.path.join(ws, "out.txt"))  # written directly: not committed
        through = timed([*VFS, "run", "--force", "-o", "out.txt", "--", *small], ws,
                        args.repeat)
        snap = timed([*VFS, "snapshot", "--allow-empty", "out.txt"], ws, args.repeat)
        over = med(through) - med(direct)
        log("overhead measured")

        big = ["python3", "-c",
               "import os\nb = os.urandom(1 << 20)\n"
               f"with open('big.bin', 'wb') as f:\n    [f.write(b) for _ in range({args.large_mib})]\n"]
        t0 = time.perf_counter()
        subprocess.run([*VFS, "run", "-o", "big.bin", "--", *big], cwd=ws, check=True,
                       capture_output=True)
        first = time.perf_counter() - t0
        target = os.path.join(ws, "big.bin")
        copy = os.path.join(root, "copy.bin")

        def rm_out():
            os.unlink(target)
            subprocess.run(["sync"], check=True)

        def rm_copy():
            if os.path.exists(copy):
                os.unlink(copy)
            subprocess.run(["sync"], check=True)

        hit = timed([*VFS, "run", "-o", "big.bin", "--", *big], ws, args.repeat, rm_out)
        reflink = timed(["cp", "--reflink=always", target, copy], root, args.repeat, rm_copy)
        plain = timed(["cp", "--reflink=never", target, copy], root, args.repeat, rm_copy)
        rm_copy()
        p = subprocess.run([*VFS, "run", "-o", "big.bin", "--", *big], cwd=ws,
                           capture_output=True, text=True)
        assert "cached: run" in p.stderr, p.stderr

    mib = args.large_mib
    print(f"\n## vfs run (medians of {args.repeat}; XFS loop image)\n")
    print("| measure | time | baseline | ratio / difference |")
    print("|---|---|---|---|")
    print(f"| `vfs --version` (start-up) | {fmt_seconds(med(startup))} | | |")
    print(f"| small command directly | {fmt_seconds(med(direct))} | | |")
    print(f"| `vfs snapshot out.txt` | {fmt_seconds(med(snap))} | | |")
    print(f"| `vfs run --force` of it | {fmt_seconds(med(through))} | direct "
          f"{fmt_seconds(med(direct))} | +{over:.3f} s (target ≤ 0.15 s + snapshot "
          f"{med(snap):.3f} s = {0.15 + med(snap):.3f} s: "
          f"{'met' if over <= 0.15 + med(snap) else 'MISSED'}) |")
    print(f"| first run writing {mib} MiB | {fmt_seconds(first)} | | |")
    print(f"| cache hit restoring {mib} MiB | {fmt_seconds(med(hit))} | cp --reflink "
          f"{fmt_seconds(med(reflink))}, cp {fmt_seconds(med(plain))} | "
          f"{med(hit) / med(reflink):.1f}x reflink cp, {med(hit) / med(plain):.2f}x cp "
          f"(target ≤ 0.2 s: {'met' if med(hit) <= 0.2 else 'MISSED'}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
