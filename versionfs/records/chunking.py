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


def iter_stream(readinto, params: ChunkParams = DEFAULT_PARAMS):
    """Yield the chunks of a stream as memoryviews, cut exactly as ``cut`` would cut
    the whole stream (for streams at or above the threshold).

    ``readinto(view)`` fills a writable memoryview and returns the byte count, 0 at
    the end. One buffer is reused: a yielded view is valid only until the next one
    is asked for. Cutting restarts at each chunk edge, so FastCDC finds the same
    edges whatever the block size, as long as a block holds more than ``max_size``.
    """
    cdc = _fastcdc(params)
    buf = bytearray(STREAM_BLOCK + params.max_size)
    view = memoryview(buf)
    have = 0
    eof = False
    while True:
        while not eof and have < len(buf):
            n = readinto(view[have:])
            if n == 0:
                eof = True
            have += n
        if have == 0:
            return
        data = view[:have]
        cuts = [(c.offset, c.length) for c in cdc.cut_buf(data)]
        if eof:
            for off, length in cuts:
                yield data[off: off + length]
            return
        for off, length in cuts[:-1]:
            yield data[off: off + length]
        off = cuts[-1][0]
        buf[: have - off] = buf[off:have]   # the unfinished last chunk starts the next block
        have -= off
