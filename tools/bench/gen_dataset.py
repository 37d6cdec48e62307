"""Generate the benchmark dataset, deterministically from a seed.

v1 (default): ``small/dNN/sNN/fNNNNNN.bin``: SMALL_COUNT files of 1-16 KiB spread over
200 leaf directories (10 x 20), plus ``large/big0.bin`` and ``large/big1.bin`` of
LARGE_MIB MiB each. All content is random (incompressible, no repeated blocks).

``--v2`` turns an existing v1 tree into v2, in place: rewrites 1% of the small files,
deletes 0.5%, adds 0.5% (``aNNNNNN.bin``), overwrites 64 KiB in the middle of
``big0.bin`` and appends 8 MiB to ``big1.bin``.

``--files N [--dirs D]`` makes the scale tree instead (issue 9): N files of 100-1,500
bytes named ``dNNNNN/fNNNNNNNN.bin``, file i in directory i * D // N (default D =
N / 1000, at least 1), nothing else. Each file is a 16-byte header naming (seed, i,
version) followed by a slice of one shared random buffer at a per-file offset, so
every file is distinct and the tree is the same for the same (N, D, seed); 1,000,000
files take well under a minute on ext4 (one os.open/os.write/os.close per file).
``--files N [--dirs D] --v2`` rewrites 1% of those files in place (new content and
size; the same N, D and seed must be given) and prints how many.

Usage: python tools/bench/gen_dataset.py DIR [--v2] [--small-count N] [--large-mib M]
                                         [--seed S]
       python tools/bench/gen_dataset.py DIR --files N [--dirs D] [--seed S] [--v2]
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


# -- the scale tree (--files N) ------------------------------------------------------

SCALE_MIN, SCALE_MAX = 100, 1500
SCALE_BUF = 1 << 22  # the shared random buffer; file slices start anywhere in it
SCALE_V2_SHARE = 0.01


def scale_dirs(files: int, dirs: int | None) -> int:
    return max(1, min(files, dirs if dirs is not None else files // 1000))


def scale_path(root: str, i: int, files: int, dirs: int) -> str:
    return os.path.join(root, f"d{i * dirs // files:05d}", f"f{i:08d}.bin")


def _scale_params(seed: int, files: int, salt: int) -> tuple[bytes, bytes]:
    """(buffer, per-file parameters): 4 random bytes per file, 2 for the size and 2
    for the buffer offset, all from SHAKE-128 keyed by (seed, salt)."""
    buf = hashlib.shake_128(f"{seed}:scale-buffer".encode()).digest(SCALE_BUF + SCALE_MAX)
    params = hashlib.shake_128(f"{seed}:scale-params:{salt}".encode()).digest(4 * files)
    return buf, params


def _write_scale_files(root: str, indices, files: int, dirs: int, seed: int,
                       version: int, flags: int) -> int:
    """Write file i for each i in ``indices``; bytes written."""
    buf, params = _scale_params(seed, files, version)
    view = memoryview(buf)
    span = SCALE_MAX - SCALE_MIN + 1
    step = SCALE_BUF >> 16  # 2-byte offsets cover the buffer in 64 B steps
    header = f"{seed:04x}{version:02x}".encode()[:6].ljust(6, b"-")
    total = 0
    open_, write, close, join = os.open, os.write, os.close, os.path.join
    dnames = [join(root, f"d{k:05d}") for k in range(dirs)]
    for i in indices:
        p = params[4 * i:4 * i + 4]
        size = SCALE_MIN + int.from_bytes(p[:2], "little") % span
        off = int.from_bytes(p[2:], "little") * step
        fd = open_(join(dnames[i * dirs // files], f"f{i:08d}.bin"), flags, 0o644)
        try:
            # 16-byte header: unique per (seed, version, file), then the slice.
            write(fd, header + b"%010d" % i + view[off:off + size - 16])
        finally:
            close(fd)
        total += size
    return total


def make_scale(root: str, files: int, dirs: int | None, seed: int) -> None:
    d = scale_dirs(files, dirs)
    for k in range(d):
        os.mkdir(os.path.join(root, f"d{k:05d}"))
    total = _write_scale_files(root, range(files), files, d, seed, 0,
                               os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    print(f"scale v1: {files} files ({total / 2**20:.1f} MiB) in {d} dirs")


def scale_v2_indices(files: int, seed: int) -> list[int]:
    """The sorted indices of the files ``--v2`` rewrites (1%, at least one)."""
    n = max(1, round(files * SCALE_V2_SHARE))
    return sorted(random.Random(seed * 7919 + 3).sample(range(files), n))


def make_scale_v2(root: str, files: int, dirs: int | None, seed: int) -> list[str]:
    """Rewrite 1% of the scale tree's files in place; their paths."""
    d = scale_dirs(files, dirs)
    picked = scale_v2_indices(files, seed)
    for i in (0, files - 1):
        if not os.path.isfile(scale_path(root, i, files, d)):
            sys.exit(f"gen_dataset: {root} does not hold a --files {files} --dirs {d} "
                     "tree (make it without --v2 first, with the same --files/--dirs)")
    try:
        total = _write_scale_files(root, picked, files, d, seed, 1,
                                   os.O_WRONLY | os.O_TRUNC)
    except FileNotFoundError as exc:
        sys.exit(f"gen_dataset: {exc.filename} is missing: {root} is not the --files "
                 f"{files} --dirs {d} tree")
    print(f"scale v2: rewrote {len(picked)} of {files} files ({total / 2**20:.1f} MiB)")
    return [scale_path(root, i, files, d) for i in picked]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--v2", action="store_true", help="mutate an existing v1 tree into v2")
    ap.add_argument("--small-count", type=int, default=20_000)
    ap.add_argument("--large-mib", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", type=int,
                    help="make the many-small-files scale tree of N files instead")
    ap.add_argument("--dirs", type=int, help="directories of the scale tree (N/1000)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.files is not None and args.files < 1:
        sys.exit("gen_dataset: --files needs N >= 1")
    if args.files is not None and args.v2:
        make_scale_v2(args.dir, args.files, args.dirs, args.seed)
    elif args.v2:
        make_v2(args.dir, args.seed)
    else:
        os.makedirs(args.dir, exist_ok=True)
        if os.listdir(args.dir):
            sys.exit(f"gen_dataset: {args.dir} is not empty; v1 needs an empty directory")
        if args.files is not None:
            make_scale(args.dir, args.files, args.dirs, args.seed)
        else:
            make_v1(args.dir, args.small_count, args.large_mib, args.seed)
    print(f"done in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
