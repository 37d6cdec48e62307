"""Benchmark the disk chunk cache (``remote.cache.ChunkDiskCache``) against plain files
written and read the same way, measured in one run.

Rows (N chunks of SIZE bytes, median of REPEAT runs, each on a fresh cache root):

* put, with the default fsync before rename, against writing each chunk to its own
  file with ``open``/``write``/``fsync`` (no tmp, no rename, no tally)
* put with ``fsync=False``, against the same without fsync
* put with eviction (the bound at half the chunks), against put without
* locate + load of every chunk, page cache warm, against ``open``/``read``/``close``

Usage: python tools/bench/bench_cache.py [--dir D] [--chunks N] [--size BYTES]
           [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common import fmt_bytes, timeit  # noqa: E402

from versionfs.records.hashing import hash_bytes  # noqa: E402
from versionfs.remote.cache import ChunkDiskCache  # noqa: E402


def chunks(n: int, size: int) -> list[tuple[bytes, bytes]]:
    out = []
    for k in range(n):
        data = os.urandom(size)
        out.append((hash_bytes(data), data))
    return out


def plain_write(root: str, items, fsync: bool) -> None:
    os.makedirs(root, exist_ok=True)
    for cid, data in items:
        with open(os.path.join(root, cid.hex()), "wb") as f:
            f.write(data)
            if fsync:
                os.fsync(f.fileno())


def plain_read(root: str, items) -> None:
    for cid, _ in items:
        with open(os.path.join(root, cid.hex()), "rb") as f:
            f.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/var/tmp/vfs-bench-cache")
    ap.add_argument("--chunks", type=int, default=256)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    items = chunks(a.chunks, a.size)
    total = a.chunks * a.size
    root = os.path.join(a.dir, "root")

    def fresh():
        shutil.rmtree(a.dir, ignore_errors=True)
        os.makedirs(a.dir)

    def put(**kw):
        cache = ChunkDiskCache(root, kw.pop("max_bytes", 1 << 40), min_free=0, **kw)
        for cid, data in items:
            cache.put(cid, data)
        cache.close()

    rows = []
    try:
        rows.append(("put, fsync", timeit(lambda: put(), a.repeat, fresh),
                     timeit(lambda: plain_write(root, items, True), a.repeat, fresh)))
        rows.append(("put, fsync=False", timeit(lambda: put(fsync=False), a.repeat, fresh),
                     timeit(lambda: plain_write(root, items, False), a.repeat, fresh)))
        rows.append(("put, fsync=False, evicting (bound: half)",
                     timeit(lambda: put(fsync=False, max_bytes=total // 2), a.repeat, fresh),
                     timeit(lambda: put(fsync=False), a.repeat, fresh)))
        fresh()
        put(fsync=False)
        cache = ChunkDiskCache(root, 1 << 40, min_free=0)

        def read_all():
            for cid, _ in items:
                cache.load(cache.locate(cid))

        read_all()
        plain_write(os.path.join(a.dir, "plain"), items, False)
        plain_read(os.path.join(a.dir, "plain"), items)
        rows.append(("locate + load, warm", timeit(read_all, a.repeat),
                     timeit(lambda: plain_read(os.path.join(a.dir, "plain"), items),
                            a.repeat)))
        cache.close()
    finally:
        shutil.rmtree(a.dir, ignore_errors=True)
    print(f"# bench_cache: {a.chunks} chunks of {fmt_bytes(a.size)}, median of {a.repeat}")
    print("| what | cache | baseline | ratio |")
    print("|---|---|---|---|")
    for what, mine, base in rows:
        print(f"| {what} | {fmt_bytes(total / mine)}/s | {fmt_bytes(total / base)}/s | "
              f"{base / mine:.2f} |")


if __name__ == "__main__":
    main()
