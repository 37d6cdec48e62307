"""Block hashes: the index's ``blocks`` table, so a read can verify 16 KiB of a chunk.

A chunk longer than one block (``records.hashing.BLOCK_SIZE``, 16 KiB) may have an
entry in the ``blocks`` database: chunk id → one byte, the log2 of the block size,
then the ``BLOCK_DIGEST``-byte digest of each block of the chunk in order
(``hashing.block_hashes``). A read of 4 KiB then reads and hashes the one block
holding it instead of the whole ~1 MiB chunk (``reader.ChunkReader.read_blocks``).

The trust chain: an entry is a pure function of the chunk's bytes, like the chunk id,
and it is only ever computed from bytes that were hashed into the chunk's id in the
same breath (a snapshot or pull storing the chunk) or that matched the id when read
(a mount's first whole read of a chunk that had none, a lazy store's fetch). So an
entry is never stale: gc deletes the entries of the chunks it deletes, an orphan left
behind by a concurrent writer is still right for that chunk id, and a chunk without
an entry (stored by an older versionfs) is read and verified whole, as before.
Entries whose block size is not this version's are treated as absent.

Writers: besides snapshots (inside their one transaction), any process may add
entries without the repository lock (a mount daemon does): an entry contradicts
nothing, and LMDB serializes write transactions. Thread-safety: ``BlockTable`` may
be shared by threads.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import CorruptObject
from ..records.hashing import BLOCK_DIGEST, BLOCK_SHIFT, BLOCK_SIZE
from .index import Index, Txn

DB = "blocks"


def block_count(length: int) -> int:
    """How many blocks a chunk of ``length`` bytes has (the last may be short)."""
    return (length + BLOCK_SIZE - 1) >> BLOCK_SHIFT


def encode(digests: bytes) -> bytes:
    """The stored value for a chunk whose block digests are ``digests``."""
    return bytes([BLOCK_SHIFT]) + digests


def decode(raw: bytes | None) -> bytes | None:
    """The digests of a stored value; None for no value or another block size.
    ``CorruptObject`` when the value is malformed."""
    if raw is None:
        return None
    if len(raw) < 1 + 2 * BLOCK_DIGEST or (len(raw) - 1) % BLOCK_DIGEST:
        raise CorruptObject(f"a block hash entry of {len(raw)} bytes is malformed; "
                            "run 'vfs fsck'")
    return raw[1:] if raw[0] == BLOCK_SHIFT else None


def problem(raw: bytes, length: int) -> str | None:
    """Why a stored value cannot be the entry of a chunk of ``length`` bytes, or
    None when it can (fsck)."""
    try:
        digests = decode(raw)
    except CorruptObject:
        return f"is malformed ({len(raw)} bytes)"
    if digests is None:
        return None  # another block size: not ours to judge
    if len(digests) != block_count(length) * BLOCK_DIGEST:
        return (f"has {len(digests) // BLOCK_DIGEST} block hashes for a chunk of "
                f"{block_count(length)} blocks")
    return None


def read(txn: Txn, cid: bytes) -> bytes | None:
    """The block digests of chunk ``cid`` in ``txn``, or None (see ``decode``)."""
    return decode(txn.get(DB, cid))


def record(txn: Txn, cid: bytes, digests: bytes) -> None:
    """Add the entry of chunk ``cid`` in ``txn`` (kept if one is there)."""
    if digests:
        txn.put(DB, cid, encode(digests), overwrite=False)


class BlockTable:
    """The block hashes of one index (``get``; ``put`` in its own transaction)."""

    def __init__(self, index: Index):
        self.index = index

    def get(self, cid: bytes) -> bytes | None:
        """The block digests of chunk ``cid``, or None when it has none here.
        ``CorruptObject`` when its entry is malformed."""
        with self.index.read() as txn:
            return decode(txn.get(DB, cid))

    def get_many(self, cids) -> dict[bytes, bytes | None]:
        """``get`` of each of ``cids`` in one read transaction (a malformed entry
        reads as None: fsck reports it)."""
        out: dict[bytes, bytes | None] = {}
        with self.index.read() as txn:
            for cid in cids:
                try:
                    out[cid] = decode(txn.get(DB, cid))
                except CorruptObject:
                    out[cid] = None
        return out

    def put(self, items: Mapping[bytes, bytes]) -> None:
        """Record ``{chunk id: digests}`` in one write transaction (entries already
        there are kept). ``VfsError`` when the index cannot be written."""
        with self.index.write() as txn:
            for cid, digests in items.items():
                record(txn, cid, digests)
