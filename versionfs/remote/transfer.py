"""Moving chunk bytes: pack and upload the chunks a remote lacks, fetch the ones
this side lacks by byte range.

* **Upload** reads each chunk through the one read path (verified: a damaged local
  chunk is never sent), appends it to a pack of about ``PACK_TARGET`` bytes, ends the
  pack with its footer index (``layout.pack_footer``) and uploads it under the BLAKE3
  of its bytes; several packs travel at once. Nothing names a pack before it is
  complete on the remote: the caller writes the index file only after every pack.
* **Download** groups the wanted chunks by pack, sorts them by offset and asks the
  backend for their ranges in batches (the backend coalesces neighbours into one
  request); batches run in parallel. Every chunk is checked against its id before it
  is handed on: a tampered or truncated remote object is reported by name and never
  stored.

Progress is reported in bytes through a callback. Thread-safety: each call uses its
own pool; ``sink`` is called from the calling thread only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..errors import RemoteCorrupt
from ..records.hashing import hash_bytes
from ..records.model import ObjectId
from . import layout
from .layout import PackEntry

PACK_TARGET = 32 << 20
BATCH_BYTES = 16 << 20
Progress = Callable[[int], None]


def upload(backend, chunks: Iterable[tuple[bytes, int]], read: Callable[[bytes], bytes],
           *, progress: Progress | None = None, workers: int = 4,
           pack_target: int = PACK_TARGET) -> dict[bytes, tuple[int, list[PackEntry]]]:
    """Pack and upload ``chunks`` (id, length), reading each with ``read``; returns
    the packs written: pack id → (size, entries)."""
    done: dict[bytes, tuple[int, list[PackEntry]]] = {}
    pending = set()
    with ThreadPoolExecutor(workers, "vfs-push") as pool:
        def send(parts: list[bytes], entries: list[PackEntry]) -> None:
            parts.append(layout.pack_footer(entries))
            data = b"".join(parts)
            pid = layout.content_id(data)
            done[pid] = (len(data), entries)
            pending.add(pool.submit(_put, backend, layout.pack_name(pid), data,
                                    sum(e.length for e in entries), progress))
            while len(pending) >= workers * 2:  # bound memory: packs waiting in RAM
                _drain(pending, FIRST_COMPLETED)

        parts: list[bytes] = []
        entries: list[PackEntry] = []
        size = 0
        for cid, _length in chunks:
            data = read(cid)
            entries.append(PackEntry(cid, size, len(data)))
            parts.append(data)
            size += len(data)
            if size >= pack_target:
                send(parts, entries)
                parts, entries, size = [], [], 0
        if entries:
            send(parts, entries)
        while pending:
            _drain(pending, FIRST_COMPLETED)
    return done


def _put(backend, name: str, data: bytes, payload: int, progress) -> None:
    backend.write(name, data)
    if progress:
        progress(payload)


def _drain(pending: set, how) -> None:
    finished, _ = wait(pending, return_when=how)
    for f in finished:
        pending.discard(f)
        f.result()  # re-raise the first failure


def download(backend, wanted: Iterable[tuple[bytes, bytes, int, int]],
             sink: Callable[[bytes, bytes], None], *, progress: Progress | None = None,
             workers: int = 8, batch_bytes: int = BATCH_BYTES) -> int:
    """Fetch ``wanted`` (chunk id, pack id, offset, length), verify each and give it
    to ``sink(cid, data)``; returns the bytes fetched."""
    by_pack: dict[bytes, list[tuple[int, int, bytes]]] = defaultdict(list)
    for cid, pid, off, length in wanted:
        by_pack[pid].append((off, length, cid))
    batches = []
    for pid, rows in by_pack.items():
        rows.sort()
        batch, size = [], 0
        for row in rows:
            batch.append(row)
            size += row[1]
            if size >= batch_bytes:
                batches.append((pid, batch))
                batch, size = [], 0
        if batch:
            batches.append((pid, batch))
    total = 0
    if not batches:
        return 0
    with ThreadPoolExecutor(min(workers, len(batches)), "vfs-pull") as pool:
        pending = set()
        it = iter(batches)
        for pid, batch in it:
            pending.add(pool.submit(_fetch_batch, backend, pid, batch))
            if len(pending) >= workers * 2:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                pending.discard(f)
                for cid, data in f.result():
                    sink(cid, data)
                    total += len(data)
                    if progress:
                        progress(len(data))
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(_fetch_batch, backend, *nxt))
    return total


def _fetch_batch(backend, pid: bytes, batch) -> list[tuple[bytes, bytes]]:
    name = layout.pack_name(pid)
    datas = backend.read_ranges(name, [(off, length) for off, length, _ in batch])
    out = []
    for (off, length, cid), data in zip(batch, datas):
        if len(data) != length or hash_bytes(data) != cid:
            raise RemoteCorrupt(
                f"chunk {ObjectId(cid).short} in remote object {name} is damaged "
                f"({'truncated' if len(data) != length else 'its bytes do not match its id'});"
                " nothing of it was stored; repair the remote (push again from a good copy)",
                object_id=cid)
        out.append((cid, data))
    return out
