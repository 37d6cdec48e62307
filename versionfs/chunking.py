"""Content-defined chunking (FastCDC): cut bytes into chunks whose edges move with content.

An insertion or deletion inside a large file then changes only the chunks around it,
so a new version of the file costs only those chunks. The parameters are part of the
repository format: changing them changes every chunk id of newly cut files.
Thread-safe: a ``FastCDC`` object holds only its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass


# Files below this size are stored as one chunk (their id is the hash of the bytes).
CHUNK_THRESHOLD = 4 << 20
MIN_SIZE = 256 << 10
AVG_SIZE = 1 << 20
MAX_SIZE = 4 << 20


@dataclass(frozen=True, slots=True)
class ChunkParams:
    threshold: int = CHUNK_THRESHOLD
    min_size: int = MIN_SIZE
    avg_size: int = AVG_SIZE
    max_size: int = MAX_SIZE

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "min_size": self.min_size,
                "avg_size": self.avg_size, "max_size": self.max_size}


DEFAULT_PARAMS = ChunkParams()


def _fastcdc(params: ChunkParams):
    # Imported on first use: commands that never cut a file do not pay for it.
    from pyfastcdc.cy import FastCDC
    return FastCDC(avg_size=params.avg_size, min_size=params.min_size,
                   max_size=params.max_size)


def cut(data, params: ChunkParams = DEFAULT_PARAMS) -> list[tuple[int, int]]:
    """``(offset, length)`` of each chunk of ``data`` (bytes-like, e.g. an mmap).

    Data below the threshold is one chunk. Empty data has no chunks.
    """
    n = len(data)
    if n == 0:
        return []
    if n < params.threshold:
        return [(0, n)]
    cdc = _fastcdc(params)
    return [(c.offset, c.length) for c in cdc.cut_buf(data)]


def iter_cuts(data, params: ChunkParams = DEFAULT_PARAMS):
    """``(offset, length)`` of the chunks of ``data``, lazily and with no threshold rule.

    For resuming a cut at a known chunk edge of a larger file: the edges found are
    the ones cutting the whole file would find from that edge on.
    """
    cdc = _fastcdc(params)
    for c in cdc.cut_buf(data):
        yield c.offset, c.length


STREAM_BLOCK = 16 << 20


def iter_stream(read, params: ChunkParams = DEFAULT_PARAMS):
    """Yield the chunks of a stream as bytes-like objects, cut exactly as ``cut``
    would cut the whole stream (for streams at or above the threshold).

    ``read(n)`` returns up to ``n`` bytes, ``b""`` at the end. Cutting restarts at
    each chunk edge, so FastCDC finds the same edges whatever the block size, as long
    as a block holds more than ``max_size`` bytes.
    """
    cdc = _fastcdc(params)
    carry = b""
    while True:
        block = read(STREAM_BLOCK)
        if not block:
            if carry:
                yield carry
            return
        data = carry + block if carry else block
        view = memoryview(data)
        cuts = [(c.offset, c.length) for c in cdc.cut_buf(data)]
        for off, length in cuts[:-1]:
            yield view[off: off + length]
        off, _ = cuts[-1]
        carry = bytes(view[off:])
