"""Generate the benchmark dataset, deterministically from a seed.

v1 (default): ``small/dNN/sNN/fNNNNNN.bin``: SMALL_COUNT files of 1-16 KiB spread over
200 leaf directories (10 x 20), plus ``large/big0.bin`` and ``large/big1.bin`` of
LARGE_MIB MiB each. All content is random (incompressible, no repeated blocks).

``--v2`` turns an existing v1 tree into v2, in place: rewrites 1% of the small files,
deletes 0.5%, adds 0.5% (``aNNNNNN.bin``), overwrites 64 KiB in the middle of
``big0.bin`` and appends 8 MiB to ``big1.bin``.

Usage: python tools/bench/gen_dataset.py DIR [--v2] [--small-count N] [--large-mib M]
                                         [--seed S]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time

BLOCK = 8 << 20
TOP_DIRS, SUB_DIRS = 10, 20
OVERWRITE = 64 << 10
APPEND = 8 << 20


def leaf_dirs(root: str) -> list[str]:
    return [os.path.join(root, "small", f"d{i:02d}", f"s{j:02d}")
            for i in range(TOP_DIRS) for j in range(SUB_DIRS)]


def stream(seed: int, label: str, size: int):
    """Deterministic random blocks of up to 8 MiB; SHAKE-128 keyed by (seed, label, n)."""
    n = 0
    while size > 0:
        length = min(BLOCK, size)
        yield hashlib.shake_128(f"{seed}:{label}:{n}".encode()).digest(length)
        size -= length
        n += 1


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def small_size(rng: random.Random) -> int:
    return rng.randint(1 << 10, 16 << 10)


def make_v1(root: str, small_count: int, large_mib: int, seed: int) -> None:
    rng = random.Random(seed)
    dirs = leaf_dirs(root)
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    total = 0
    for i in range(small_count):
        size = small_size(rng)
        write_file(os.path.join(dirs[i % len(dirs)], f"f{i:06d}.bin"), rng.randbytes(size))
        total += size
    print(f"v1: {small_count} small files ({total / 2**20:.1f} MiB) in {len(dirs)} dirs")
    os.makedirs(os.path.join(root, "large"), exist_ok=True)
    for k in range(2):
        path = os.path.join(root, "large", f"big{k}.bin")
        with open(path, "wb") as f:
            for block in stream(seed, f"big{k}", large_mib << 20):
                f.write(block)
        print(f"v1: {path} ({large_mib} MiB)")


def small_files(root: str) -> list[str]:
    out = []
    for d in leaf_dirs(root):
        if os.path.isdir(d):
            out += [os.path.join(d, n) for n in os.listdir(d)]
    return sorted(out)


def make_v2(root: str, seed: int) -> None:
    files = small_files(root)
    big0, big1 = (os.path.join(root, "large", f"big{k}.bin") for k in range(2))
    if not files or not (os.path.isfile(big0) and os.path.isfile(big1)):
        sys.exit(f"gen_dataset: {root} does not hold a v1 tree (run without --v2 first)")
    rng = random.Random(seed * 7919 + 2)
    n_mod = max(1, round(len(files) * 0.01))
    n_del = max(1, round(len(files) * 0.005))
    n_add = max(1, round(len(files) * 0.005))
    picked = rng.sample(files, n_mod + n_del)
    for path in picked[:n_mod]:
        write_file(path, rng.randbytes(small_size(rng)))
    for path in picked[n_mod:]:
        os.unlink(path)
    dirs = leaf_dirs(root)
    for i in range(n_add):
        path = os.path.join(rng.choice(dirs), f"a{i:06d}.bin")
        write_file(path, rng.randbytes(small_size(rng)))
    print(f"v2: modified {n_mod}, deleted {n_del}, added {n_add} small files")

    middle = (os.path.getsize(big0) // 2) & ~4095
    with open(big0, "r+b") as f:
        f.seek(middle)
        f.write(next(stream(seed, "v2-overwrite", OVERWRITE)))
    print(f"v2: overwrote {OVERWRITE >> 10} KiB of {big0} at offset {middle}")
    with open(big1, "ab") as f:
        for block in stream(seed, "v2-append", APPEND):
            f.write(block)
    print(f"v2: appended {APPEND >> 20} MiB to {big1}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--v2", action="store_true", help="mutate an existing v1 tree into v2")
    ap.add_argument("--small-count", type=int, default=20_000)
    ap.add_argument("--large-mib", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.v2:
        make_v2(args.dir, args.seed)
    else:
        os.makedirs(args.dir, exist_ok=True)
        if os.listdir(args.dir):
            sys.exit(f"gen_dataset: {args.dir} is not empty; v1 needs an empty directory")
        make_v1(args.dir, args.small_count, args.large_mib, args.seed)
    print(f"done in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
