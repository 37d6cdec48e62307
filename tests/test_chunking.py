"""Content-defined chunking: streamed cuts equal whole-buffer cuts."""

from __future__ import annotations

import io
import random

import pytest

from versionfs.records import chunking

MIB = 1 << 20


@pytest.mark.parametrize("size", [
    chunking.CHUNK_THRESHOLD,                    # exactly the threshold
    chunking.STREAM_BLOCK,                       # exactly one block
    chunking.STREAM_BLOCK + 1,                   # one byte into the second block
    2 * chunking.STREAM_BLOCK + 3 * MIB + 7,     # several blocks, a ragged end
])
def test_streamed_cuts_equal_whole_cuts(size):
    data = random.Random(size).randbytes(size)
    whole = [data[o:o + n] for o, n in chunking.cut(data)]
    src = io.BytesIO(data)
    streamed = [bytes(c) for c in chunking.iter_stream(src.readinto)]
    assert streamed == whole
    assert b"".join(streamed) == data


def test_resumed_cuts_equal_whole_cuts():
    """Cutting from any edge on gives the edges cutting the whole buffer gives."""
    data = random.Random(3).randbytes(24 * MIB)
    whole = chunking.cut(data)
    start = whole[5][0]
    resumed = [(start + o, n) for o, n in chunking.iter_cuts(memoryview(data)[start:])]
    assert resumed == whole[5:]


def test_small_data_is_one_chunk():
    assert chunking.cut(b"abc") == [(0, 3)]
    assert chunking.cut(b"") == []
