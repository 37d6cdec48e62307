"""BLAKE3 hashing: the only module that imports blake3.

Content ids (chunks, small files) are the plain BLAKE3-256 of the bytes, so
``b3sum`` of a small file prints its versionfs id. Record ids add a type prefix
(see ``model``). Thread-safe: blake3 hashers are per call and release the GIL on
large inputs.
"""

from __future__ import annotations

from blake3 import blake3

# Above this size a single hash is spread over threads (blake3's own pool).
_PARALLEL_MIN = 1 << 20


def hash_bytes(data) -> bytes:
    """BLAKE3-256 digest of a bytes-like object (bytes, memoryview, mmap slice)."""
    if len(data) >= _PARALLEL_MIN:
        return blake3(data, max_threads=blake3.AUTO).digest()
    return blake3(data).digest()


def hasher():
    """An incremental BLAKE3 hasher with ``update`` and ``digest``."""
    return blake3()


def hash_many(items) -> list[bytes]:
    """BLAKE3-256 digests of many small byte strings (one call, no per-item checks):
    the mount hashes every entry of a tree this way."""
    return [blake3(x).digest() for x in items]
