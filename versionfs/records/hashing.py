"""BLAKE3 hashing: the only module that imports blake3.

Content ids (chunks, small files) are the plain BLAKE3-256 of the bytes, so
``b3sum`` of a small file prints its versionfs id. Record ids add a type prefix
(see ``model``). Block hashes (``block_hashes``) are what lets a read check 16 KiB
of a chunk instead of all of it: the first 16 bytes of the BLAKE3 of each
``BLOCK_SIZE`` piece of a chunk, so ``b3sum`` of a block's bytes starts with its
digest. Thread-safe: blake3 hashers are per call and release the GIL on large inputs.
"""

from __future__ import annotations

from blake3 import blake3

# Above this size a single hash is spread over threads (blake3's own pool).
_PARALLEL_MIN = 1 << 20

# Block hashes: one BLOCK_DIGEST-byte digest per BLOCK_SIZE piece of a chunk (the last
# piece may be shorter). 16 KiB: a cold 16 KiB pread costs ~1.3x a 4 KiB one here,
# 64 KiB ~1.8x, and below 16 KiB blake3 loses its SIMD speed (4 us per 4 KiB call,
# 5.7 us per 16 KiB: docs/benchmarks.md). 16 bytes = 128 bits: a damaged block
# passing unnoticed is a 2^-128 chance.
BLOCK_SHIFT = 14
BLOCK_SIZE = 1 << BLOCK_SHIFT
BLOCK_DIGEST = 16


def hash_bytes(data) -> bytes:
    """BLAKE3-256 digest of a bytes-like object (bytes, memoryview, mmap slice)."""
    if len(data) >= _PARALLEL_MIN:
        return blake3(data, max_threads=blake3.AUTO).digest()
    return blake3(data).digest()


def hasher():
    """An incremental BLAKE3 hasher with ``update`` and ``digest``."""
    return blake3()


def block_hash(data) -> bytes:
    """The ``BLOCK_DIGEST``-byte digest of one block's bytes."""
    return blake3(data).digest(BLOCK_DIGEST)


def block_hashes(data) -> bytes:
    """The digests of every ``BLOCK_SIZE`` piece of ``data``, concatenated (one
    ``BLOCK_DIGEST``-byte digest per piece, in order); ``b""`` when ``data`` is one
    block or less (the chunk's own id checks it as cheaply)."""
    n = len(data)
    if n <= BLOCK_SIZE:
        return b""
    view = memoryview(data)
    step, size = BLOCK_SIZE, BLOCK_DIGEST
    return b"".join([blake3(view[i: i + step]).digest(size) for i in range(0, n, step)])


def hash_many(items) -> list[bytes]:
    """BLAKE3-256 digests of many small byte strings (one call, no per-item checks):
    the mount hashes every entry of a tree this way."""
    return [blake3(x).digest() for x in items]
